"""Item-level rejection sampling (the baseline CARDS is compared against).

Sample whole responses one after another; accept response k with probability
min(1, exp((r - r_star) / beta)) (soft, the paper's) or iff r >= r_star (hard); after max_retries
rejections, return the best response seen. Prompts run together in one batch: each round draws
`proposals` responses per unresolved prompt, checked in order as the sequential method would.
Sample k of a prompt uses Best-of-N's key for sample k, so the first sample equals plain sampling
with the same sampling settings.
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
        self.offset = 0
        self._draw()

    def _draw(self) -> None:
        """The next `proposals` candidates (sample indices go on counting, so each is fresh)."""
        count = min(self.config.proposals, self.config.max_retries - self.offset)
        self.batch = self.ctx.sample(range(self.offset, self.offset + count))
        self.offset += count

    def on_result(self, stopped) -> None:
        for s in self.batch:  # checked in order: the first accepted wins
            if accepts(s.reward, self.r_star, self.config, self.ctx.key, s.sample + 1, self.scale):
                self.ctx.finish(self._outcome(s, rejections=s.sample))
                return
            self.seen.append(s)
            if len(self.seen) >= self.config.max_retries:
                best = max(self.seen, key=lambda c: (c.reward, -c.sample))
                self.ctx.finish(self._outcome(best, rejections=len(self.seen)))
                return
        self._draw()

    def _outcome(self, seq, rejections: int):
        return self.outcome(seq, accepted_index=seq.sample, rejections=rejections, r_star=self.r_star,
                            r_star_calibration_rewards=self.calibration_rewards)
