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
`memory_gib` (bytes / KV bytes per token, shared by the prompts in flight); on a GPU, from 90% of
its free memory, as in the paper; on a CPU, whose RAM would let the decision point never come,
it is n x (prompt length + first_decision_tokens): the budget the paper's B0 rule (the largest
batch that fits a short run) would give, so the method behaves as on a memory-bound GPU.
`decision_tokens` replaces the budget by an explicit schedule.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import torch

from ..engine import RolloutBatch
from ..errors import SecateursError
from ..rewards import metered_score_mixed
from .base import DecodingConfig, Outcome, register

# Each decode segment is at least this long (the paper sizes B0 so a short run of >= 8 tokens
# fits); it also bounds the scoring cost when rounding keeps every candidate.
MIN_SEGMENT_TOKENS = 8


@dataclass
class SpeculativeRejectionConfig(DecodingConfig):
    n: int = 64  # B0: initial candidates per prompt
    alpha: float = 0.5  # rejection rate at each decision point, in [0, 1) (paper sweeps 0.1..0.9; 0.5 headline)
    kv_budget_tokens: int | None = None  # KV-cache tokens per prompt; None: derived (module doc)
    memory_gib: float | None = None  # KV memory for all prompts in flight, instead of kv_budget_tokens
    decision_tokens: tuple[int, ...] | None = None  # explicit response lengths to reject at, instead of a budget
    first_decision_tokens: int = 16  # default budget: n candidates fill it this many tokens in
    prompts_in_flight: int | None = None  # prompts decoded together; None: max(1, max_batch_rows // n)

    def validate(self) -> None:
        super().validate()
        for name in ("n", "first_decision_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SecateursError(f"{name} must be an integer >= 1, got {value!r}")
        if not 0 <= self.alpha < 1:
            raise SecateursError(f"alpha must be in [0, 1), got {self.alpha}")
        if self.kv_budget_tokens is not None and self.kv_budget_tokens < 1:
            raise SecateursError(f"kv_budget_tokens must be >= 1, got {self.kv_budget_tokens}")
        if self.memory_gib is not None and not self.memory_gib > 0:
            raise SecateursError(f"memory_gib must be > 0, got {self.memory_gib}")
        if self.prompts_in_flight is not None and self.prompts_in_flight < 1:
            raise SecateursError(f"prompts_in_flight must be >= 1, got {self.prompts_in_flight}")
        if self.decision_tokens is not None:
            points = tuple(self.decision_tokens)
            if not points or any(not isinstance(t, int) or t < 1 for t in points) or list(points) != sorted(set(points)):
                raise SecateursError(f"decision_tokens must be increasing integers >= 1, got {self.decision_tokens!r}")
            self.decision_tokens = points

    def rows_per_prompt(self) -> int:
        return self.n

    def in_flight(self) -> int:
        return self.prompts_in_flight or max(1, self.max_batch_rows // self.n)

    def prompts_per_call(self) -> int:
        # Several times the prompts in flight, so a finished prompt's rows can go to the next one.
        return 4 * self.in_flight()


@dataclass
class _Candidate:
    index: int  # j: sample index (same key as Best-of-N's sample j)
    score: float
    text: str
    ids: list[int]
    reason: str | None


@dataclass
class _PromptState:
    prompt_len: int
    budget: int | None
    length: int = 0  # response length of its live rows (they decode in lockstep)
    live: int = 0
    next_decision: int = 0
    finished: list[_Candidate] = field(default_factory=list)  # finished, not rejected
    decision_points: list[int] = field(default_factory=list)
    survivors: list[int] = field(default_factory=list)


def _budget(config: SpeculativeRejectionConfig, policy, prompt_len: int) -> int | None:
    if config.decision_tokens is not None:
        return None
    if config.kv_budget_tokens is not None:
        budget = config.kv_budget_tokens
    elif config.memory_gib is not None:
        budget = int(config.memory_gib * 2**30 / policy.kv_bytes_per_token() / config.in_flight())
    elif policy.device.type == "cuda":  # as the paper: the decision point is where GPU memory is full
        free, _ = torch.cuda.mem_get_info(policy.device)
        budget = int(0.9 * free / policy.kv_bytes_per_token() / config.in_flight())
    else:
        budget = config.n * (prompt_len + config.first_decision_tokens)
    if budget < config.n * (prompt_len + 1):
        raise SecateursError(
            f"KV budget of {budget} tokens per prompt is too small for one decode step of n={config.n} "
            f"candidates of a {prompt_len}-token prompt (needs >= {config.n * (prompt_len + 1)})"
        )
    return budget


def _next_decision(state: _PromptState, config: SpeculativeRejectionConfig) -> int:
    if config.decision_tokens is not None:
        later = [t for t in config.decision_tokens if t > state.length]
        return min(later[0] if later else config.max_new_tokens, config.max_new_tokens)
    full_at = state.budget // state.live - state.prompt_len  # response length at which the budget is full
    return min(max(full_at, state.length + MIN_SEGMENT_TOKENS), config.max_new_tokens)


def keep_count(pool: int, alpha: float) -> int:
    """round((1 - alpha) * pool), halves rounded up, and at least one."""
    return max(1, math.floor((1 - alpha) * pool + 0.5))


@register("speculative-rejection", SpeculativeRejectionConfig,
          "Best-of-N quality, cheaper: score partial responses and drop the weak ones early (Sun et al. 2024)")
def speculative_rejection(prompts, prompt_ids, keys, policy, reward, config: SpeculativeRejectionConfig,
                          meter) -> list[Outcome]:
    states = {p: _PromptState(len(ids), _budget(config, policy, len(ids))) for p, ids in enumerate(prompt_ids)}
    queue = deque(range(len(prompts)))
    outcomes: list[Outcome | None] = [None] * len(prompts)
    batch = RolloutBatch(policy, config.sampling(), config.max_new_tokens, meter)
    labels: list[tuple[int, int]] = []  # (prompt, sample index) of each batch row
    active: set[int] = set()
    while queue or active:
        while queue and len(active) < config.in_flight():  # fill free slots with the next prompts
            p = queue.popleft()
            newcomer = RolloutBatch.prefill(policy, [prompt_ids[p]], [keys[p]], config.sampling(),
                                            config.max_new_tokens, groups=[p], meter=meter)
            newcomer.fork(config.n)  # child j gets Best-of-N's key for sample j
            batch.append(newcomer)
            labels += [(p, j) for j in range(config.n)]
            state = states[p]
            state.live = config.n
            state.next_decision = _next_decision(state, config)
            active.add(p)

        step = min(states[p].next_decision - states[p].length for p in active)
        batch.extend(step)
        for p in active:
            states[p].length += step

        # Rows to score: every row that just finished (as complete) and every live row of a prompt
        # at its decision point (as partial).
        finished = batch.finished.tolist()
        deciding = {p for p in active if states[p].length >= states[p].next_decision}
        rows = [r for r in range(batch.size) if finished[r] or labels[r][0] in deciding]
        texts = [policy.decode(batch.response_ids(r)) for r in rows]
        groups = [labels[r][0] for r in rows]
        scores = metered_score_mixed(reward, meter, [prompts[g] for g in groups], texts, groups,
                                     partial=[not finished[r] for r in rows])
        live_scored: dict[int, list[tuple[int, float]]] = {p: [] for p in deciding}
        for i, r in enumerate(rows):
            p, j = labels[r]
            if finished[r]:
                states[p].finished.append(_Candidate(j, scores[i], texts[i], batch.response_ids(r),
                                                     batch.finish_reasons[r]))
                states[p].live -= 1
            else:
                live_scored[p].append((r, scores[i]))

        rejected_rows: set[int] = set()
        for p in deciding:
            state = states[p]
            if not live_scored[p]:
                continue
            # pool = live candidates + finished survivors; keep the top ones by score
            pool = [(s, "live", r) for r, s in live_scored[p]] + [(c.score, "done", c) for c in state.finished]
            kept = sorted(pool, key=lambda e: -e[0])[:keep_count(len(pool), config.alpha)]
            kept_live = {e[2] for e in kept if e[1] == "live"}
            rejected_rows |= {r for r, _ in live_scored[p] if r not in kept_live}
            state.finished = [e[2] for e in kept if e[1] == "done"]
            state.live = len(kept_live)
            state.decision_points.append(state.length)
            state.survivors.append(len(kept))

        live_rows = [r for r in range(batch.size) if not finished[r] and r not in rejected_rows]
        if len(live_rows) < batch.size:
            batch.keep(live_rows)  # prunes the KV cache in place
            labels = [labels[r] for r in live_rows]

        for p in list(active):
            state = states[p]
            if state.live == 0:
                outcomes[p] = _answer(state, config)
                active.discard(p)
            elif p in deciding:
                state.next_decision = _next_decision(state, config)
    return outcomes


def _answer(state: _PromptState, config: SpeculativeRejectionConfig) -> Outcome:
    best = max(state.finished, key=lambda c: (c.score, -c.index))  # ties: lowest index, as Best-of-N
    return Outcome(best.text, best.ids, best.score, best.reason, details={
        "candidates": config.n,
        "kv_budget_tokens": state.budget,
        "rounds": len(state.decision_points),
        "decision_points": state.decision_points,
        "survivors_per_round": state.survivors,
        "best_index": best.index,
        "final_pool_rewards": {c.index: c.score for c in sorted(state.finished, key=lambda c: c.index)},
    })
