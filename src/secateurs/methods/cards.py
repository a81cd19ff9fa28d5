"""CARDS, Cascade Reward Sampling (Li et al., arXiv 2406.16306): segment-level rejection sampling.

The response grows segment by segment. A segment is sampled (temperature beta, top-k 40) until,
before some token, the next-token entropy (nats, full vocabulary, temperature-1 logits) reaches
entropy_threshold once the segment has min_segment_tokens, or it reaches max_segment_tokens, or
EOS. The RM scores prompt + accepted prefix + segment; the segment is accepted against the cascade
threshold

    tau_r(t) = min(r0 + t * (r_star - r0) / max_new_tokens, r_star),  r0 = (1 - alpha) r(x) + alpha r_star

(t = response length with the segment, r(x) = the RM score of the prompt alone), softly with
probability min(1, exp((r - tau_r) / beta)) or hard (r >= tau_r). A rejected segment is resampled
from the same accepted prefix; after max_retries rejections the best one seen is accepted.

Beyond the authors' code: the KV cache is kept, and a rejected row is rewound to its accepted
prefix (one token recomputed) instead of recomputing the whole sequence every token; many prompts
run in one batch, each at its own segment and retry count; the RM reads text with its own
tokenizer and template. With `proposals` > 1, each prompt samples that many segments at once from
its accepted prefix and takes the first accepted in order (the sequential method's distribution,
using the batch; proposals after the winner are wasted work).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..engine import RolloutBatch, StepView
from ..errors import SecateursError
from ..rewards import metered_score, metered_score_mixed
from .acceptance import TargetedConfig, accepts, r_stars
from .base import Outcome, register


@dataclass
class CardsConfig(TargetedConfig):
    entropy_threshold: float = 3.0  # tau_u: cut a segment before a token this uncertain (nats)
    min_segment_tokens: int = 4
    max_segment_tokens: int = 64
    alpha: float = 0.5  # weight of r_star in the starting threshold r0
    proposals: int = 1  # segments proposed per prompt at once; the first accepted in order wins

    def validate(self) -> None:
        super().validate()
        if not self.entropy_threshold > 0:
            raise SecateursError(f"entropy_threshold must be > 0, got {self.entropy_threshold}")
        if not isinstance(self.min_segment_tokens, int) or self.min_segment_tokens < 1:
            raise SecateursError(f"min_segment_tokens must be an integer >= 1, got {self.min_segment_tokens!r}")
        if not isinstance(self.max_segment_tokens, int) or self.max_segment_tokens < self.min_segment_tokens:
            raise SecateursError(f"max_segment_tokens ({self.max_segment_tokens!r}) must be an integer >= "
                                 f"min_segment_tokens ({self.min_segment_tokens})")
        if not 0 <= self.alpha <= 1:
            raise SecateursError(f"alpha must be in [0, 1], got {self.alpha}")
        if not isinstance(self.proposals, int) or self.proposals < 1:
            raise SecateursError(f"proposals must be an integer >= 1, got {self.proposals!r}")

    def rows_per_prompt(self) -> int:
        return self.proposals


@dataclass
class _Best:
    score: float
    tokens: list[int]
    logprobs: list[float]


@dataclass
class _PromptState:
    r0: float
    r_star: float
    accepted: int = 0  # accepted response length
    retries: int = 0
    checks: int = 0  # acceptance draws used (the soft test's counter)
    best: _Best | None = None
    done: bool = False
    segment_lengths: list[int] = field(default_factory=list)
    rejections: list[int] = field(default_factory=list)
    accepted_rewards: list[float] = field(default_factory=list)


def threshold(state: _PromptState, length: int, max_new_tokens: int) -> float:
    """tau_r(t): rises linearly from r0 to r_star over max_new_tokens."""
    return min(state.r0 + length * (state.r_star - state.r0) / max_new_tokens, state.r_star)


class SegmentCutter:
    """The stop rule that ends each row's current segment: before a token whose next-token entropy
    is >= entropy_threshold once the segment has min_segment_tokens, or at max_segment_tokens.

    Segments are counted from each row's accepted length, so rows need not start their segments
    together: the batch is extended in short chunks and a prompt is decided as soon as all its
    proposals have ended, while other rows keep decoding (no row waits for the longest segment).
    """

    def __init__(self, config: CardsConfig, size: int):
        self.config = config
        self.start = torch.zeros(size, dtype=torch.long)  # accepted length of each row
        self.ended = torch.zeros(size, dtype=torch.bool)

    def __call__(self, view: StepView) -> torch.Tensor:
        length = view.response_tokens - self.start[view.rows]
        stop = length >= self.config.max_segment_tokens
        long_enough = length >= self.config.min_segment_tokens
        if long_enough.any():
            stop |= long_enough & (view.entropy.cpu() >= self.config.entropy_threshold)
        self.ended[view.rows[stop]] = True
        return stop

    def keep(self, rows: list[int]) -> None:
        self.start, self.ended = self.start[rows], self.ended[rows]


@register("cards", CardsConfig, "segment-level rejection sampling, segments cut at uncertain tokens (Li et al. 2024)")
def cards(prompts, prompt_ids, keys, policy, reward, config: CardsConfig, meter) -> list[Outcome]:
    targets = r_stars(prompts, prompt_ids, keys, policy, reward, config, meter)
    groups = list(range(len(prompts)))
    r_prompt = metered_score(reward, meter, prompts, [""] * len(prompts), groups)  # r(x): the prompt alone
    states = [_PromptState((1 - config.alpha) * rx + config.alpha * rs, rs) for rx, (rs, _) in zip(r_prompt, targets)]

    batch = RolloutBatch.prefill(policy, prompt_ids, keys, config.sampling(), config.max_new_tokens, meter=meter)
    batch.fork(config.proposals)  # slot i of a prompt samples with Best-of-N's key for sample i
    owner = [p for p in groups for _ in range(config.proposals)]  # prompt of each row
    outcomes: list[Outcome | None] = [None] * len(prompts)
    cutter = SegmentCutter(config, batch.size)

    while batch.size:
        batch.extend(config.min_segment_tokens, stop_rule=cutter)
        finished = batch.finished.tolist()
        ended = (cutter.ended | batch.finished).tolist()
        ready = sorted({owner[r] for r in range(batch.size)} -
                       {owner[r] for r in range(batch.size) if not ended[r]})  # every proposal has ended
        if not ready:
            continue
        lengths = batch.response_lengths().tolist()
        decide = [r for r in range(batch.size) if owner[r] in ready]
        texts = [policy.decode(batch.response_ids(r)) for r in decide]
        scores = dict(zip(decide, metered_score_mixed(reward, meter, [prompts[owner[r]] for r in decide], texts,
                                                      [owner[r] for r in decide],
                                                      partial=[not finished[r] for r in decide])))

        rewinds: list[int] = []
        for p in ready:
            slots = [r for r in decide if owner[r] == p]
            state = states[p]
            winner = None
            for r in slots:  # the first accepted proposal, in order, wins
                tau = threshold(state, lengths[r], config.max_new_tokens)
                state.checks += 1
                if accepts(scores[r], tau, config, keys[p], state.checks):
                    winner = r
                    break
                state.retries += 1
                segment = batch.response_ids(r)[state.accepted:]
                if state.best is None or scores[r] > state.best.score:
                    state.best = _Best(scores[r], segment, batch.logprobs[r][state.accepted:])
                if state.retries >= config.max_retries:
                    break
            if winner is None and state.retries >= config.max_retries:
                # Retry cap: restore the best segment seen into the first slot and accept it.
                winner = slots[0]
                batch.rewind([winner], [state.accepted])
                batch.force(winner, state.best.tokens, state.best.logprobs)
                scores[winner] = state.best.score
                lengths[winner] = state.accepted + len(state.best.tokens)
            if winner is None:
                rewinds += slots
                continue
            state.segment_lengths.append(lengths[winner] - state.accepted)
            state.rejections.append(state.retries)
            state.accepted_rewards.append(scores[winner])
            state.accepted, state.retries, state.best = lengths[winner], 0, None
            if batch.finished[winner] or state.accepted >= config.max_new_tokens:
                state.done = True
                ids = batch.response_ids(winner)
                outcomes[p] = Outcome(policy.decode(ids), ids, scores[winner], batch.finish_reasons[winner] or "length",
                                      details=_details(state, targets[p][1], r_prompt[p], config))
            else:
                others = [r for r in slots if r != winner]
                batch.copy_rows(others, [winner] * len(others))  # every slot continues from the accepted prefix
        for r in rewinds:
            batch.rewind([r], [states[owner[r]].accepted])
        for r in decide:  # a new segment starts at the accepted length
            cutter.start[r], cutter.ended[r] = states[owner[r]].accepted, False
        live = [r for r in range(batch.size) if not states[owner[r]].done]
        if len(live) < batch.size:
            batch.keep(live)
            cutter.keep(live)
            owner = [owner[r] for r in live]
    return outcomes


def _details(state: _PromptState, calibration: list[float], r_prompt: float, config: CardsConfig) -> dict:
    return {
        "r_star": state.r_star,
        "r_star_calibration_rewards": calibration,
        "r_prompt": r_prompt,
        "r0": state.r0,
        "segments": len(state.segment_lengths),
        "segment_lengths": state.segment_lengths,
        "mean_segment_tokens": sum(state.segment_lengths) / max(1, len(state.segment_lengths)),
        "rejections_per_segment": state.rejections,
        "accepted_rewards": state.accepted_rewards,
        "acceptance": config.acceptance,
    }
