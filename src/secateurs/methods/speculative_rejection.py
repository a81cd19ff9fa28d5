"""Speculative Rejection (Sun et al., NeurIPS 2024): Best-of-N quality at a fraction of its cost.

Start B0 candidates per prompt. Decode until the prompt's KV budget is full (the decision point),
score every partial response with the RM as if complete, pool the live candidates with those
already finished, keep the top round((1 - alpha) * |pool|) (ties: finished first), and let only unfinished survivors
decode on; the freed memory lets them run about 1 / (1 - alpha) times longer before the next
decision. Repeat until no candidate is live or max_new_tokens is reached, and answer with the
best-scoring complete response in the final pool.

Beyond the authors' code: rejected rows are pruned from the KV cache in place (no re-prefill, no
text round trip); several prompts run in one batch, each rejecting only among its own candidates
and on its own schedule; a prompt that finishes frees its rows for the next prompt's candidates.

B0 (`authors_b0`). Without `n`, B0 comes from the KV budget M (tokens): the largest batch for
which the prompt plus a short run of 8 tokens fits, capped at 1000: B0 = min(M // (P + 8), 1000).
Their code (github.com/Zanette-Labs/SpeculativeRejection, `generate` in speculative_rejection.py)
starts from B0 = min(2 a / (P + b), 1000), with a / (L + b) a per-model fit of the batch that fits
length L, and shrinks it by 10% while fewer than 8 new tokens fit. Where the formula exceeds what
fits (short prompts) theirs lands up to 10% below ours; where it is below what fits (long prompts:
the fit, measured with their code's overheads, falls faster in P than the KV memory does), no
shrinking happens and theirs keeps the formula's smaller batch while ours is the memory maximum.
Without their per-model a and b the formula cannot be reproduced for other models, so the memory
maximum it approximates is used. B0 is capped at max_batch_rows (rows decode together); the budget
is then scaled to those rows (M x B0 / rule's B0) so the decisions fall where the rule's B0 would
put them, and the details say so. With `n`, B0 = n.

The budget M (KV-cache tokens of one prompt: its live rows x their lengths, prompt included, as
each candidate holds its own copy), in order of precedence:
- `decision_tokens`: an explicit schedule instead of a budget (B0 still comes from the default budget
  when n is absent);
- `kv_budget_tokens`;
- `memory_gib`: bytes / KV bytes per token, shared by the prompts in flight (max_batch_rows // n
  of them; with n absent each prompt is sized alone, as the authors run one prompt at a time);
- with `n` given: n x (P + first_decision_tokens), so the first decision comes that many tokens in
  (a budget of all device memory would put it past max_new_tokens whenever n candidates fit at
  full length: Best-of-n at full cost); on a GPU never more than its free memory allows;
- else the device: on a GPU its free memory less the authors' 15 GiB reserve, measured as theirs
  (admission.kv_budget_bytes: after torch.cuda.empty_cache, free + reserved - allocated, the rows
  of earlier prompts counted as free, so B0 never depends on the prompts before); on a CPU, whose
  RAM would never bring a decision, B0 is the rule's on CPU_KV_BUDGET_TOKENS (at most max_batch_rows)
  and the budget B0 x (P + first_decision_tokens), so the first decision falls first_decision_tokens
  in, as with n given.

The final pool (`final_pool`): finished candidates compete for the kept slots at every decision.
'authors' (the default, their code): a finished candidate that survived one decision stays
eligible for the answer even if a later decision drops it. 'survivors' (the paper's algorithm read
literally): the answer is the best of the finished candidates still kept at the end. Decoding is
identical; 'survivors' can only lower the answer's reward, when a finished candidate lost its slot
to partial responses whose scores fell once complete.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..errors import SecateursError
from .base import DecodingConfig, MethodPolicy, integer, option, real, register

log = logging.getLogger(__name__)

# Each decode segment is at least this long (the authors size B0 so a short run of >= 8 tokens
# fits); it also bounds the scoring cost when rounding keeps every candidate.
MIN_SEGMENT_TOKENS = 8
# The authors' cap on B0.
MAX_B0 = 1000
# KV-cache tokens per prompt on a CPU when nothing else sets the budget: 4096 tokens (180 MiB for
# the default policy, SmolLM2-135M in float32 at 45 KiB per token). With a typical 40-80 token
# prompt the rule gives B0 of 46-85 (the old default n was 64), so a default run costs about
# what it did, while the decisions come where this memory fills, as on a GPU.
CPU_KV_BUDGET_TOKENS = 4096
FINAL_POOLS = ("authors", "survivors")


@dataclass
class SpeculativeRejectionConfig(DecodingConfig):
    # auto: B0 from the KV budget by the authors' rule, min(budget // (prompt + 8), 1000), at most max_batch_rows
    n: int | None = option(None, "samples per prompt (Best-of-N); initial candidates B0 (Speculative Rejection)")
    alpha: float = option(0.5, "Speculative Rejection: fraction rejected at each decision point, in [0, 1)")
    kv_budget_tokens: int | None = option(None, "Speculative Rejection: KV-cache tokens per prompt (live rows x "
                                                "their lengths); default: derived from memory")
    memory_gib: float | None = option(None, "Speculative Rejection: KV memory (GiB) for the prompts in flight, "
                                            "instead of kv_budget_tokens")
    decision_tokens: tuple[int, ...] | None = option(None, "Speculative Rejection: explicit response lengths to "
                                                           "reject at (e.g. 16,32,64), instead of a budget")
    # 32: where the default reward's partial scores start to rank a prompt's candidates as their final ones do
    # (within-prompt Spearman 0.56; 0.36 at 16) and where n=16 reached Best-of-16's reward (README, benchmarks/).
    first_decision_tokens: int = option(32, "Speculative Rejection: where the first decision falls when memory "
                                            "does not set it (n given and no budget: n x (prompt + this); on a "
                                            "CPU: B0 x (prompt + this))")
    final_pool: str = option("authors", "Speculative Rejection: answer from the finished candidates that survived "
                                        "any decision ('authors', their code) or only those still kept at the end "
                                        "('survivors')")

    def validate(self) -> None:
        super().validate()
        for name in ("n", "first_decision_tokens"):
            value = getattr(self, name)
            if value is None and name == "n":
                continue
            if not integer(value) or value < 1:
                raise SecateursError(f"{name} must be an integer >= 1, got {value!r}")
        if not (real(self.alpha) and 0 <= self.alpha < 1):
            raise SecateursError(f"alpha must be in [0, 1), got {self.alpha!r}")
        if self.kv_budget_tokens is not None and not (integer(self.kv_budget_tokens) and self.kv_budget_tokens >= 1):
            raise SecateursError(f"kv_budget_tokens must be >= 1 and an integer, got {self.kv_budget_tokens!r}")
        if self.memory_gib is not None and not (real(self.memory_gib) and self.memory_gib > 0):
            raise SecateursError(f"memory_gib must be a finite number > 0, got {self.memory_gib!r}")
        if self.decision_tokens is not None:
            points = tuple(self.decision_tokens) if isinstance(self.decision_tokens, (tuple, list)) else ()
            if not points or any(not integer(t) or t < 1 for t in points) or list(points) != sorted(set(points)):
                raise SecateursError(f"decision_tokens must be increasing integers >= 1, got {self.decision_tokens!r}")
            self.decision_tokens = points
        if self.final_pool not in FINAL_POOLS:
            raise SecateursError(f"final_pool must be one of {', '.join(FINAL_POOLS)}, got {self.final_pool!r}")
        if self.n is not None and integer(self.max_batch_rows) and self.n > self.max_batch_rows:
            raise SecateursError(f"n={self.n} candidates decode together (each decision ranks all of them), but "
                                 f"max_batch_rows is {self.max_batch_rows}: lower --n or raise --max-batch-rows")

    def rows_per_prompt(self) -> int:
        # B0 from memory is known only once the prompt's length is: reserve all rows (one prompt at a time).
        return self.n if self.n is not None else self.max_batch_rows

    def memory_bounded(self) -> bool:
        """Its B0 and decisions come from the device's free memory (no n, budget or schedule given): on a GPU
        its KV cache never exceeds what is free less the reserve, whatever max_batch_rows is."""
        return self.n is None and self.kv_budget_tokens is None and self.memory_gib is None \
            and self.decision_tokens is None

    def in_flight(self) -> int:
        """Prompts decoding at once, which share a memory budget (one when B0 fills the memory)."""
        return max(1, self.max_batch_rows // self.n) if self.n is not None else 1


def keep_count(pool: int, alpha: float) -> int:
    """round((1 - alpha) * pool) as the authors' Python computes it (halves to even: 62 of 125 and 2 of
    5 at alpha 0.5), and at least one."""
    return max(1, round((1 - alpha) * pool))


def authors_b0(budget: int, prompt_len: int) -> int:
    """The authors' B0: the largest batch whose prompt plus MIN_SEGMENT_TOKENS fits the budget, at most MAX_B0."""
    return min(budget // (prompt_len + MIN_SEGMENT_TOKENS), MAX_B0)


@register("speculative-rejection", SpeculativeRejectionConfig,
          "Best-of-N quality, cheaper: score partial responses and drop the weak ones early (Sun et al. 2024)")
class SpeculativeRejection(MethodPolicy):
    def start(self) -> None:
        self.b0, self.b0_rule, self.budget, self.budget_source = self._plan()
        self.length = 0  # response length of the live candidates (they decode in lockstep)
        self.finished = []  # finished candidates not rejected (they compete at every decision)
        self.ever_kept = {}  # sample -> finished candidate that survived a decision ('authors' final pool)
        self.decision_points: list[int] = []
        self.survivors: list[int] = []
        first = self._next_decision(self.b0)
        self.no_decision = None
        if first >= self.config.max_new_tokens:
            self.no_decision = self._why_no_decision()
            self._warn_once(self.no_decision)
        # Step 1: B0 candidates; candidate j is Best-of-N's sample j.
        self.live = self.ctx.sample(range(self.b0), until=first, gang=True)

    def _device_budget(self) -> tuple[int, str]:
        """Tokens of the device's memory for one prompt: memory_gib, a GPU's free memory, or the CPU figure."""
        config = self.config
        if config.memory_gib is not None:
            return (int(config.memory_gib * 2**30 / self.ctx.kv_bytes_per_token() / config.in_flight()),
                    f"memory_gib={config.memory_gib}")
        capacity = self.ctx.kv_capacity_tokens()
        if capacity is not None:  # as the paper: the decision point is where device memory is full
            return capacity // config.in_flight(), "free GPU memory - reserve"
        return CPU_KV_BUDGET_TOKENS, f"CPU default ({CPU_KV_BUDGET_TOKENS} tokens)"

    def _plan(self) -> tuple[int, int | None, int | None, str]:
        """(B0, the rule's B0 or None, budget tokens or None, where the budget came from)."""
        config, prompt_len = self.config, self.ctx.prompt_len
        if config.kv_budget_tokens is not None:
            budget, source = config.kv_budget_tokens, "kv_budget_tokens"
        elif config.n is not None and config.memory_gib is None and config.decision_tokens is None:
            budget, source = config.n * (prompt_len + config.first_decision_tokens), \
                f"n x (prompt + first_decision_tokens={config.first_decision_tokens})"
            capacity = self.ctx.kv_capacity_tokens()
            if capacity is not None and capacity // config.in_flight() < budget:
                budget, source = capacity // config.in_flight(), "free GPU memory - reserve"
        else:
            budget, source = self._device_budget()
        b0, rule = config.n, None
        if b0 is None:
            rule = authors_b0(budget, prompt_len)
            if rule < 1:
                raise SecateursError(f"KV budget of {budget} tokens ({source}) is too small for one candidate of a "
                                     f"{prompt_len}-token prompt plus {MIN_SEGMENT_TOKENS} tokens "
                                     f"(needs >= {prompt_len + MIN_SEGMENT_TOKENS})")
            b0 = min(rule, config.max_batch_rows)
            if source.startswith("CPU default"):
                # A CPU's RAM never fills: the budget is set so the first decision comes first_decision_tokens in,
                # where partial scores start to predict final ones (benchmarks/prefix_correlation.py), not the 8
                # tokens in that the rule's B0 alone would give.
                budget, source = b0 * (prompt_len + config.first_decision_tokens), \
                    f"CPU: B0 x (prompt + first_decision_tokens={config.first_decision_tokens})"
            elif b0 < rule and config.decision_tokens is None:
                # Fewer rows than the rule's B0: give them the same share of memory each, so the
                # decisions fall where the rule's B0 would put them.
                budget, source = budget * b0 // rule, f"{source}, x {b0}/{rule} (B0 capped at max_batch_rows)"
        if config.decision_tokens is not None:
            return b0, rule, None, f"decision_tokens={list(config.decision_tokens)}"
        if budget < b0 * (prompt_len + 1):
            raise SecateursError(
                f"KV budget of {budget} tokens per prompt ({source}) is too small for one decode step of n={b0} "
                f"candidates of a {prompt_len}-token prompt (needs >= {b0 * (prompt_len + 1)})"
            )
        return b0, rule, budget, source

    def _next_decision(self, live: int) -> int:
        """Step 2: the response length at which the live candidates fill the budget."""
        config = self.config
        if config.decision_tokens is not None:
            later = [t for t in config.decision_tokens if t > self.length]
            return min(later[0] if later else config.max_new_tokens, config.max_new_tokens)
        full_at = self.budget // live - self.ctx.prompt_len
        return min(max(full_at, self.length + MIN_SEGMENT_TOKENS), config.max_new_tokens)

    def _why_no_decision(self) -> str:
        config = self.config
        if self.budget is None:
            return (f"no decision point: every decision_tokens entry is >= max_new_tokens={config.max_new_tokens}; "
                    f"this is Best-of-{self.b0}")
        if self.budget_source.startswith("n x"):
            # This budget grows with n, so raising n moves nothing: the first decision falls at
            # first_decision_tokens whatever n is.
            advice = (f"set first_decision_tokens (--first-decision-tokens) below max_new_tokens, e.g. "
                      f"{max(1, config.max_new_tokens // 2)}")
        else:  # a fixed budget: more candidates, or less memory, fill it sooner
            advice = "lower kv_budget_tokens / memory_gib, or raise n"
        return (f"no decision point: a KV budget of {self.budget} tokens ({self.budget_source}) holds all "
                f"{self.b0} candidates of this {self.ctx.prompt_len}-token prompt past max_new_tokens="
                f"{config.max_new_tokens}; this is Best-of-{self.b0} at full cost ({advice})")

    def _warn_once(self, message: str) -> None:
        """One line per run (its config), not one per prompt."""
        if not getattr(self.config, "_warned_no_decision", False):
            self.config._warned_no_decision = True
            log.warning("warning: speculative-rejection on prompt %r: %s", self.ctx.prompt.id, message)

    def on_idle(self, stopped) -> None:
        # Every candidate that stopped was scored: finished ones as complete, the others (at the
        # decision point) as partial responses, as if complete (step 3).
        self.finished += sorted((s for s in stopped if s.finished), key=lambda s: s.sample)
        live = [s for s in self.live if not s.finished]
        if live:
            self.length = live[0].length
            # Step 4: pool = live + finished; keep the top round((1 - alpha) * |pool|) by score.
            # stable: on a tie a finished candidate ranks first (as the authors' code), then by index
            pool = sorted(self.finished + live, key=lambda s: -s.reward)
            kept = pool[:keep_count(len(pool), self.config.alpha)]
            kept_ids = {id(s) for s in kept}
            self.ctx.release([s for s in live if id(s) not in kept_ids])
            self.finished = [s for s in kept if s.finished]
            self.ever_kept.update((s.sample, s) for s in self.finished)
            live = [s for s in live if id(s) in kept_ids]
            self.decision_points.append(self.length)
            self.survivors.append(len(kept))
        self.live = live
        if live:  # Step 5: only unfinished survivors decode on
            self.ctx.extend(live, until=self._next_decision(len(live)))
        else:  # Step 6: the best complete response in the final pool
            self.ctx.finish(self._answer())

    def _answer(self):
        pool = {s.sample: s for s in self.finished}
        if self.config.final_pool == "authors":
            pool = {**self.ever_kept, **pool}
        pool = [pool[j] for j in sorted(pool)]
        best = max(pool, key=lambda s: (s.reward, -s.sample))  # ties: lowest index, as Best-of-N
        details = dict(candidates=self.b0, b0=self.b0, b0_rule=self.b0_rule, kv_budget_tokens=self.budget,
                       budget_source=self.budget_source, rounds=len(self.decision_points),
                       decision_points=self.decision_points, survivors_per_round=self.survivors,
                       best_index=best.sample, final_pool=self.config.final_pool,
                       final_pool_rewards={s.sample: s.reward for s in pool})
        if self.no_decision:
            details["no_decision"] = self.no_decision
        return self.outcome(best, **details)
