"""CARDS, Cascade Reward Sampling (Li et al., arXiv 2406.16306): segment-level rejection sampling.

The response grows segment by segment. A segment is sampled (temperature beta, top-k 40) until,
before some token, the next-token entropy (nats, full vocabulary, temperature-1 logits) reaches
entropy_threshold once the segment has min_segment_tokens, or it reaches max_segment_tokens, or
EOS. The RM scores prompt + accepted prefix + segment; the segment is accepted against the cascade
threshold

    tau_r(t) = min(r0 + t * (r_star - r0) / max_new_tokens, r_star),  r0 = (1 - w) r(x) + w r_star

(t = response length with the segment, r(x) = the RM score of the prompt alone), softly with
probability min(1, exp((r - tau_r) / beta)) or hard (r >= tau_r). A candidate that ended at EOS is
a complete answer and is tested against r_star itself, whatever its length. A rejected segment is resampled
from the same accepted prefix; after max_retries rejections one more candidate is drawn and, as in
the authors' code, the best-scoring of the max_retries + 1 is accepted untested.

Beyond the authors' code: the KV cache is kept, and a rejected row is rewound to its accepted
prefix (one token recomputed) instead of recomputing the whole sequence every token; many prompts
run in one batch, each at its own segment and retry count; the RM reads text with its own
tokenizer and template. With `proposals` > 1, each prompt samples that many segments at once from
its accepted prefix and takes the first accepted in order (the sequential method's distribution,
using the batch; proposals after the winner are wasted work).

The paper's alpha (the weight w of r_star in r0) is the option `r_star_weight` here, so that
`alpha` means one thing across methods (Speculative Rejection's rejection rate).

Two settings the paper does not have (both off by default, which is the paper's method):
- `acceptance_scale spread` (methods/acceptance.py): beta and the r_star margin in units of the
  prompt's reward std, measured on the calibration samples, so any RM scale gives the same decisions.
- `prefix_calibration on`: many RMs score an unfinished response lower (or higher) than the
  response it becomes; the paper's tau(t) rises from r0 to compensate by assumption. Here the gap
  is measured: the calibration samples' first t tokens are scored (as partial responses, counted
  in the cost) at t = min_segment_tokens, doubling, below max_new_tokens, and
  gap(t) = mean over samples longer than t of (final reward - partial score); a candidate scored as
  partial is then compared with tau(t) - gap(t) (gap interpolated linearly in t, held constant
  beyond the measured points). A candidate that finished is scored as complete and gets no shift.
"""

from __future__ import annotations

import bisect
import statistics
from dataclasses import dataclass

import torch

from ..backends.base import BATCH_INVARIANT, KV_PRUNE, REWIND, STOP_RULE, StepView
from ..errors import SecateursError
from .acceptance import R_STAR_HELP, TargetedConfig, TargetedPolicy, accepts
from .base import integer, option, real, register


@dataclass
class CardsConfig(TargetedConfig):
    # dataset: one r* per prompt set, as the authors; measured against auto (benchmarks/cards.py, README):
    # higher reward at lower cost, the calibration paid once instead of 4 full samples per prompt.
    r_star: float | str = option("dataset", R_STAR_HELP)
    entropy_threshold: float = option(3.0, "CARDS: end a segment before a token whose next-token entropy "
                                           "(nats) is at least this")
    min_segment_tokens: int = option(4, "CARDS: shortest segment")
    max_segment_tokens: int = option(64, "CARDS: longest segment")
    r_star_weight: float = option(0.5, "CARDS: weight w of r_star in the first threshold r0 = (1 - w) r(x) + "
                                       "w r_star (the paper's alpha)")
    proposals: int = option(1, "CARDS / rejection sampling: candidates proposed per prompt at once, checked "
                               "in order")
    prefix_calibration: str = option("off", "CARDS: 'on' measures how much lower the RM scores a response's "
                                            "first t tokens than the whole (calibration samples, extra RM calls "
                                            "counted) and lowers tau(t) for partial candidates by that gap")

    def validate(self) -> None:
        super().validate()
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
        if not isinstance(self.prefix_calibration, str) or self.prefix_calibration not in ("on", "off"):
            raise SecateursError(f"prefix_calibration must be 'on' or 'off', got {self.prefix_calibration!r}")
        if integer(self.max_batch_rows) and self.proposals > self.max_batch_rows:
            raise SecateursError(f"proposals={self.proposals} decode together but max_batch_rows is "
                                 f"{self.max_batch_rows}: lower --proposals or raise --max-batch-rows")

    def rows_per_prompt(self) -> int:
        return self.proposals

    def needs_calibration(self) -> bool:
        return super().needs_calibration() or self.prefix_calibration == "on"


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


def prefix_lengths(min_segment_tokens: int, max_new_tokens: int) -> list[int]:
    """Where the partial-vs-final gap is measured: min_segment_tokens, doubling, below max_new_tokens."""
    out, t = [], min_segment_tokens
    while t < max_new_tokens:
        out.append(t)
        t *= 2
    return out


def interpolate(points: list[tuple[int, float]], t: int) -> float:
    """Piecewise-linear in t through sorted (t, value) points, constant beyond the ends (0 if none)."""
    if not points:
        return 0.0
    ts = [p[0] for p in points]
    i = bisect.bisect_left(ts, t)
    if i == 0:
        return points[0][1]
    if i == len(points):
        return points[-1][1]
    (t0, v0), (t1, v1) = points[i - 1], points[i]
    return v0 + (t - t0) * (v1 - v0) / (t1 - t0)


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
        self.prefix_gaps = self._measure_prefix_gaps() if config.prefix_calibration == "on" else []
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
        self.drawn = self.slots

    def on_result(self, stopped) -> None:
        """Every proposal drawn this round has ended its segment and been scored (with the accepted prefix)."""
        config, ctx = self.config, self.ctx
        winner = None
        for s in self.drawn:  # candidates in the sequential method's order: the first accepted wins
            if self.retries >= config.max_retries:
                # Retry cap, as the authors' code: the candidate after max_retries rejections is taken
                # untested if it beats the best rejected one (the best of max_retries + 1).
                winner = s
                if self.best.score >= s.reward:  # ties: the earlier candidate, as max() over a list
                    ctx.rewind(s, self.accepted)
                    ctx.force(s, self.best.tokens, self.best.logprobs)
                    s.reward = self.best.score
                break
            self.checks += 1
            if accepts(s.reward, self._threshold(s), config, ctx.key, self.checks, self.scale):
                winner = s
                break
            self.retries += 1
            if self.best is None or s.reward > self.best.score:
                self.best = _Best(s.reward, s.tokens[self.accepted:], s.logprobs[self.accepted:])
        if winner is None:  # rejected: every slot goes back to the accepted prefix and tries again
            for s in self.slots:
                ctx.rewind(s, self.accepted)
            # past the cap only one more candidate is needed (the sequential method's next one)
            self._next_segment(self.slots[:1] if self.retries >= config.max_retries else self.slots)
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
        self._next_segment(self.slots)

    def _threshold(self, seq) -> float:
        if seq.finished:
            # A complete answer is judged as one: tau(t) < r_star at its length would give short
            # answers a more lenient bar than full-length ones (the authors' loop never stops at EOS).
            return self.r_star
        tau = threshold(self.r0, self.r_star, seq.length, self.config.max_new_tokens)
        return tau - interpolate(self.prefix_gaps, seq.length) if seq.scored_partial else tau

    def _measure_prefix_gaps(self) -> list[tuple[int, float]]:
        """(t, mean final - partial score of the first t tokens) over the calibration samples longer than t."""
        samples = self.calibration_samples
        asked = [(t, s) for t in prefix_lengths(self.config.min_segment_tokens, self.config.max_new_tokens)
                 for s in samples if s.length > t]
        scores = self.ctx.score([self.ctx.decode(s.tokens[:t]) for t, s in asked], partial=True)
        gaps: dict[int, list[float]] = {}
        for (t, s), partial in zip(asked, scores):
            gaps.setdefault(t, []).append(s.reward - partial)
        return [(t, statistics.fmean(g)) for t, g in sorted(gaps.items())]

    def _next_segment(self, slots) -> None:
        for s in self.slots:
            s.tags["segment_start"] = self.accepted
        self.drawn = slots
        self.ctx.extend(slots)

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
            "acceptance_scale": self.config.acceptance_scale,
            "reward_unit": self.scale,
            "prefix_gaps": self.prefix_gaps,
        }
