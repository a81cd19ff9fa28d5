"""Speculative Rejection (Sun et al., NeurIPS 2024): Best-of-N quality at a fraction of its cost.

Start n (B0) candidates per prompt. Decode until the prompt's KV budget is full (the decision
point), score every partial response with the RM as if complete, pool the live candidates with
those already finished, keep the top round((1 - alpha) * |pool|), and let only unfinished
survivors decode on; the freed memory lets them run about 1 / (1 - alpha) times longer before the
next decision. Repeat until no candidate is live or max_new_tokens is reached, and answer with
the best-scoring complete response in the final pool.

Beyond the authors' code: rejected rows are pruned from the KV cache in place (no re-prefill, no
text round trip); several prompts run in one batch, each rejecting only among its own candidates
and on its own schedule; a prompt that finishes frees its rows for the next prompt's candidates.

The budget. Each prompt gets `kv_budget_tokens` cache tokens (its live rows x their lengths,
prompt included, as each candidate holds its own copy). If not given, it is derived from
`memory_gib` (bytes / KV bytes per token, shared by the prompts in flight); else from the
backend's KV capacity (on a GPU, 90% of its free memory, as in the paper); on a CPU, whose RAM
would let the decision point never come,
it is n x (prompt length + first_decision_tokens): the budget the paper's B0 rule (the largest
batch that fits a short run) would give, so the method behaves as on a memory-bound GPU.
`decision_tokens` replaces the budget by an explicit schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import SecateursError
from .base import DecodingConfig, MethodPolicy, option, register

# Each decode segment is at least this long (the paper sizes B0 so a short run of >= 8 tokens
# fits); it also bounds the scoring cost when rounding keeps every candidate.
MIN_SEGMENT_TOKENS = 8


@dataclass
class SpeculativeRejectionConfig(DecodingConfig):
    n: int = option(64, "samples per prompt (Best-of-N); initial candidates B0 (Speculative Rejection)")
    alpha: float = option(0.5, "Speculative Rejection: fraction rejected at each decision point, in [0, 1)")
    kv_budget_tokens: int | None = option(None, "Speculative Rejection: KV-cache tokens per prompt (live rows x "
                                                "their lengths); default: derived from memory")
    memory_gib: float | None = option(None, "Speculative Rejection: KV memory (GiB) for the prompts in flight, "
                                            "instead of kv_budget_tokens")
    decision_tokens: tuple[int, ...] | None = option(None, "Speculative Rejection: explicit response lengths to "
                                                           "reject at (e.g. 16,32,64), instead of a budget")
    first_decision_tokens: int = option(16, "Speculative Rejection: on a CPU, the default budget is full this "
                                            "many tokens in")

    def validate(self) -> None:
        super().validate()
        for name in ("n", "first_decision_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SecateursError(f"{name} must be an integer >= 1, got {value!r}")

        def real(x) -> bool:  # a finite number (not a bool, a string, NaN or infinity)
            return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

        def integer(x) -> bool:
            return isinstance(x, int) and not isinstance(x, bool)

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
        if self.n > self.max_batch_rows:
            raise SecateursError(f"n={self.n} candidates decode together (each decision ranks all of them), but "
                                 f"max_batch_rows is {self.max_batch_rows}: lower --n or raise --max-batch-rows")

    def rows_per_prompt(self) -> int:
        return self.n

    def in_flight(self) -> int:
        """Prompts decoding at once, which share a memory budget."""
        return max(1, self.max_batch_rows // self.n)


def keep_count(pool: int, alpha: float) -> int:
    """round((1 - alpha) * pool), halves rounded up, and at least one."""
    return max(1, math.floor((1 - alpha) * pool + 0.5))


@register("speculative-rejection", SpeculativeRejectionConfig,
          "Best-of-N quality, cheaper: score partial responses and drop the weak ones early (Sun et al. 2024)")
class SpeculativeRejection(MethodPolicy):
    def start(self) -> None:
        self.budget = self._budget()
        self.length = 0  # response length of the live candidates (they decode in lockstep)
        self.finished = []  # finished candidates not rejected (they compete at every decision)
        self.decision_points: list[int] = []
        self.survivors: list[int] = []
        # Step 1: B0 candidates; candidate j is Best-of-N's sample j.
        self.live = self.ctx.sample(range(self.config.n), until=self._next_decision(self.config.n), gang=True)

    def _budget(self) -> int | None:
        config, prompt_len = self.config, self.ctx.prompt_len
        if config.decision_tokens is not None:
            return None
        capacity = self.ctx.kv_capacity_tokens()
        if config.kv_budget_tokens is not None:
            budget = config.kv_budget_tokens
        elif config.memory_gib is not None:
            budget = int(config.memory_gib * 2**30 / self.ctx.kv_bytes_per_token() / config.in_flight())
        elif capacity is not None:  # as the paper: the decision point is where device memory is full
            budget = capacity // config.in_flight()
        else:
            budget = config.n * (prompt_len + config.first_decision_tokens)
        if budget < config.n * (prompt_len + 1):
            raise SecateursError(
                f"KV budget of {budget} tokens per prompt is too small for one decode step of n={config.n} "
                f"candidates of a {prompt_len}-token prompt (needs >= {config.n * (prompt_len + 1)})"
            )
        return budget

    def _next_decision(self, live: int) -> int:
        """Step 2: the response length at which the live candidates fill the budget."""
        config = self.config
        if config.decision_tokens is not None:
            later = [t for t in config.decision_tokens if t > self.length]
            return min(later[0] if later else config.max_new_tokens, config.max_new_tokens)
        full_at = self.budget // live - self.ctx.prompt_len
        return min(max(full_at, self.length + MIN_SEGMENT_TOKENS), config.max_new_tokens)

    def on_idle(self, stopped) -> None:
        # Every candidate that stopped was scored: finished ones as complete, the others (at the
        # decision point) as partial responses, as if complete (step 3).
        self.finished += sorted((s for s in stopped if s.finished), key=lambda s: s.sample)
        live = [s for s in self.live if not s.finished]
        if live:
            self.length = live[0].length
            # Step 4: pool = live + finished; keep the top round((1 - alpha) * |pool|) by score.
            pool = sorted(live + self.finished, key=lambda s: -s.reward)  # stable: ties keep pool order
            kept = pool[:keep_count(len(pool), self.config.alpha)]
            kept_ids = {id(s) for s in kept}
            self.ctx.release([s for s in live if id(s) not in kept_ids])
            self.finished = [s for s in kept if s.finished]
            live = [s for s in live if id(s) in kept_ids]
            self.decision_points.append(self.length)
            self.survivors.append(len(kept))
        self.live = live
        if live:  # Step 5: only unfinished survivors decode on
            self.ctx.extend(live, until=self._next_decision(len(live)))
        else:  # Step 6: the best complete response in the final pool
            self.ctx.finish(self._answer())

    def _answer(self):
        best = max(self.finished, key=lambda s: (s.reward, -s.sample))  # ties: lowest index, as Best-of-N
        return self.outcome(best, candidates=self.config.n, kv_budget_tokens=self.budget,
                            rounds=len(self.decision_points), decision_points=self.decision_points,
                            survivors_per_round=self.survivors, best_index=best.sample,
                            final_pool_rewards={s.sample: s.reward for s in sorted(self.finished, key=lambda s: s.sample)})
