"""CARDS, Cascade Reward Sampling (Li et al., arXiv 2406.16306): segment-level rejection sampling.

The response grows segment by segment. A segment is sampled (temperature beta, top-k 40) until,
before some token, the next-token entropy (nats, full vocabulary, temperature-1 logits) reaches
entropy_threshold once the segment has min_segment_tokens, or it reaches max_segment_tokens, or
EOS. The RM scores prompt + accepted prefix + segment; the segment is accepted against the cascade
threshold

    tau_r(t) = min(r0 + t * (r_star - r0) / max_new_tokens, r_star),  r0 = (1 - w) r(x) + w r_star

(t = response length with the segment, r(x) = the RM score of the prompt alone), softly with
probability min(1, exp((r - tau_r) / beta)) or hard (r >= tau_r). A rejected segment is resampled
from the same accepted prefix; after max_retries rejections the best one seen is accepted.

Beyond the authors' code: the KV cache is kept, and a rejected row is rewound to its accepted
prefix (one token recomputed) instead of recomputing the whole sequence every token; many prompts
run in one batch, each at its own segment and retry count; the RM reads text with its own
tokenizer and template. With `proposals` > 1, each prompt samples that many segments at once from
its accepted prefix and takes the first accepted in order (the sequential method's distribution,
using the batch; proposals after the winner are wasted work).

The paper's alpha (the weight w of r_star in r0) is the option `r_star_weight` here, so that
`alpha` means one thing across methods (Speculative Rejection's rejection rate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..backends.base import BATCH_INVARIANT, KV_PRUNE, REWIND, STOP_RULE, StepView
from ..errors import SecateursError
from .acceptance import TargetedConfig, TargetedPolicy, accepts
from .base import option, register


@dataclass
class CardsConfig(TargetedConfig):
    entropy_threshold: float = option(3.0, "CARDS: end a segment before a token whose next-token entropy "
                                           "(nats) is at least this")
    min_segment_tokens: int = option(4, "CARDS: shortest segment")
    max_segment_tokens: int = option(64, "CARDS: longest segment")
    r_star_weight: float = option(0.5, "CARDS: weight w of r_star in the first threshold r0 = (1 - w) r(x) + "
                                       "w r_star (the paper's alpha)")
    proposals: int = option(1, "CARDS / rejection sampling: candidates proposed per prompt at once, checked "
                               "in order (rejection sampling's default: 4)")

    def validate(self) -> None:
        super().validate()

        def real(x) -> bool:  # a finite number (not a bool, a string, NaN or infinity)
            return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

        def integer(x) -> bool:
            return isinstance(x, int) and not isinstance(x, bool)

        if not (real(self.entropy_threshold) and self.entropy_threshold > 0):
            raise SecateursError(f"entropy_threshold must be > 0 and finite, got {self.entropy_threshold!r}")
        if not integer(self.min_segment_tokens) or self.min_segment_tokens < 1:
            raise SecateursError(f"min_segment_tokens must be an integer >= 1, got {self.min_segment_tokens!r}")
        if not integer(self.max_segment_tokens) or self.max_segment_tokens < self.min_segment_tokens:
            raise SecateursError(f"max_segment_tokens ({self.max_segment_tokens!r}) must be an integer >= "
                                 f"min_segment_tokens ({self.min_segment_tokens})")
        if not (real(self.r_star_weight) and 0 <= self.r_star_weight <= 1):
            raise SecateursError(f"r_star_weight must be in [0, 1], got {self.r_star_weight!r}")
        if not integer(self.proposals) or self.proposals < 1:
            raise SecateursError(f"proposals must be an integer >= 1, got {self.proposals!r}")
        if self.proposals > self.max_batch_rows:
            raise SecateursError(f"proposals={self.proposals} decode together but max_batch_rows is "
                                 f"{self.max_batch_rows}: lower --proposals or raise --max-batch-rows")

    def rows_per_prompt(self) -> int:
        return self.proposals


@dataclass(frozen=True)
class SegmentCutter:
    """The stop rule that ends a sequence's current segment: before a token whose next-token entropy
    is >= entropy_threshold once the segment has min_segment_tokens, or at max_segment_tokens.
    Segments count from each sequence's `segment_start` tag (its accepted length), so rows of
    different prompts segment on their own clocks. Equal cutters share one entropy computation."""

    entropy_threshold: float
    min_segment_tokens: int
    max_segment_tokens: int

    def __call__(self, view: StepView) -> torch.Tensor:
        length = torch.tensor([s.length - s.tags["segment_start"] for s in view.seqs])
        stop = length >= self.max_segment_tokens
        long_enough = length >= self.min_segment_tokens
        if long_enough.any():
            stop |= long_enough & (view.entropy >= self.entropy_threshold)
        return stop


def threshold(r0: float, r_star: float, length: int, max_new_tokens: int) -> float:
    """tau_r(t): rises linearly from r0 to r_star over max_new_tokens."""
    return min(r0 + length * (r_star - r0) / max_new_tokens, r_star)


@dataclass
class _Best:
    score: float
    tokens: list[int]
    logprobs: list[float]


@register("cards", CardsConfig, "segment-level rejection sampling, segments cut at uncertain tokens (Li et al. 2024)")
class Cards(TargetedPolicy):
    needs = frozenset({BATCH_INVARIANT, KV_PRUNE, STOP_RULE, REWIND})

    def begin(self) -> None:
        config = self.config
        self.r_prompt = self.ctx.score([""])[0]  # r(x): the prompt alone
        self.r0 = (1 - config.r_star_weight) * self.r_prompt + config.r_star_weight * self.r_star
        self.accepted = 0  # accepted response length
        self.retries = 0
        self.checks = 0  # acceptance draws used (the soft test's counter)
        self.best: _Best | None = None
        self.segment_lengths: list[int] = []
        self.rejections: list[int] = []
        self.accepted_rewards: list[float] = []
        cutter = SegmentCutter(config.entropy_threshold, config.min_segment_tokens, config.max_segment_tokens)
        # Slot i samples with Best-of-N's key for sample i; a rejected slot is rewound, so it keeps its cache.
        self.slots = self.ctx.sample(range(config.proposals), stop_rule=cutter, gang=True, keep_finished=True)
        for s in self.slots:
            s.tags["segment_start"] = 0

    def on_result(self, stopped) -> None:
        """Every proposal's segment has ended and been scored (with the accepted prefix)."""
        config, ctx = self.config, self.ctx
        winner = None
        for s in self.slots:  # the first accepted proposal, in order, wins
            self.checks += 1
            if accepts(s.reward, threshold(self.r0, self.r_star, s.length, config.max_new_tokens), config, ctx.key,
                       self.checks):
                winner = s
                break
            self.retries += 1
            if self.best is None or s.reward > self.best.score:
                self.best = _Best(s.reward, s.tokens[self.accepted:], s.logprobs[self.accepted:])
            if self.retries >= config.max_retries:
                break
        if winner is None and self.retries >= config.max_retries:
            # Retry cap: restore the best segment seen into the first slot and accept it.
            winner = self.slots[0]
            ctx.rewind(winner, self.accepted)
            ctx.force(winner, self.best.tokens, self.best.logprobs)
            winner.reward = self.best.score
        if winner is None:  # rejected: every slot goes back to the accepted prefix and tries again
            for s in self.slots:
                ctx.rewind(s, self.accepted)
            self._next_segment()
            return
        self.segment_lengths.append(winner.length - self.accepted)
        self.rejections.append(self.retries)
        self.accepted_rewards.append(winner.reward)
        self.accepted, self.retries, self.best = winner.length, 0, None
        ctx.progress(winner.tokens)  # an accepted segment is final: a server streams it now
        if winner.finished or self.accepted >= config.max_new_tokens:
            winner.finish_reason = winner.finish_reason or "length"
            ctx.finish(self.outcome(winner, **self._details()))
            return
        for s in self.slots:  # every slot continues from the accepted prefix
            if s is not winner:
                ctx.copy(s, winner)
        self._next_segment()

    def _next_segment(self) -> None:
        for s in self.slots:
            s.tags["segment_start"] = self.accepted
        self.ctx.extend(self.slots)

    def _details(self) -> dict:
        return {
            "r_star": self.r_star,
            "r_star_calibration_rewards": self.calibration_rewards,
            "r_prompt": self.r_prompt,
            "r0": self.r0,
            "segments": len(self.segment_lengths),
            "segment_lengths": self.segment_lengths,
            "mean_segment_tokens": sum(self.segment_lengths) / max(1, len(self.segment_lengths)),
            "rejections_per_segment": self.rejections,
            "accepted_rewards": self.accepted_rewards,
            "acceptance": self.config.acceptance,
        }
