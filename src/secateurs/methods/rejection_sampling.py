"""Item-level rejection sampling (the baseline CARDS is compared against).

Sample whole responses one after another; accept response k with probability
min(1, exp((r - r_star) / beta)) (soft, the paper's) or iff r >= r_star (hard); after max_retries
rejections, as the authors' code, draw one more response, score it without testing it, and return
the best-scoring of the max_retries + 1. Prompts run together in one batch: each round draws
`proposals` responses per unresolved prompt, checked in order as the sequential method would.
Sample k of a prompt uses Best-of-N's key for sample k, so the first sample equals plain sampling
with the same sampling settings.

Cost: a round's proposals after the accepted one are drawn and scored but the sequential method
would never have drawn them. The cost counts the work done (every proposal); the details say how
many candidates were drawn (`candidates_drawn`) and how many the sequential method draws
(`candidates_sequential`, the accepted one's index + 1), with the sequential method's token and RM
counts (`sequential_tokens_generated`, `sequential_rm_calls`), the figures to compare with the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SecateursError
from .acceptance import TargetedConfig, TargetedPolicy, accepts
from .base import option, register


@dataclass
class RejectionSamplingConfig(TargetedConfig):
    proposals: int = option(4, "CARDS / rejection sampling: candidates proposed per prompt at once, checked "
                               "in order")

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.proposals, int) or isinstance(self.proposals, bool) or self.proposals < 1:
            raise SecateursError(f"proposals must be an integer >= 1, got {self.proposals!r}")

    def rows_per_prompt(self) -> int:
        return self.proposals


@register("rejection-sampling", RejectionSamplingConfig,
          "sample whole responses until one is accepted against r_star (item-level baseline)")
class RejectionSampling(TargetedPolicy):
    def begin(self) -> None:
        self.seen = []  # rejected candidates
        self.batches = []  # every round's candidates (lists the scheduler fills as they get rows)
        self.offset = 0
        self._draw()

    def _draw(self) -> None:
        """The next `proposals` candidates (sample indices go on counting, so each is fresh), never more
        than the sequential method's max_retries + 1."""
        count = min(self.config.proposals, self.config.max_retries + 1 - self.offset)
        self.batch = self.ctx.sample(range(self.offset, self.offset + count))
        self.batches.append(self.batch)
        self.offset += count

    def on_result(self, stopped) -> None:
        for s in self.batch:  # checked in order: the first accepted wins
            if len(self.seen) >= self.config.max_retries:
                # Retry cap, as the authors' code: this candidate is scored, not tested, and the best
                # of all max_retries + 1 is the answer (ties: the earliest).
                best = max(self.seen + [s], key=lambda c: (c.reward, -c.sample))
                self.ctx.finish(self._outcome(best, s, rejections=len(self.seen)))
                return
            if accepts(s.reward, self.r_star, self.config, self.ctx.key, s.sample + 1, self.scale):
                self.ctx.finish(self._outcome(s, s, rejections=s.sample))
                return
            self.seen.append(s)
        self._draw()

    def _outcome(self, seq, last, rejections: int):
        """`seq`: the answer; `last`: the last candidate the sequential method draws."""
        drawn = [c for batch in self.batches for c in batch]
        sequential = drawn[:last.sample + 1]
        return self.outcome(seq, accepted_index=seq.sample, rejections=rejections, r_star=self.r_star,
                            r_star_calibration_rewards=self.calibration_rewards,
                            candidates_drawn=len(drawn), candidates_sequential=len(sequential),
                            sequential_tokens_generated=sum(c.length for c in sequential),
                            sequential_rm_calls=len(sequential))
