"""Best-of-N: sample N complete responses, score each with the RM, return the best.

The prompt is prefilled once and its N samples start from that cache (never re-prefilled); when
N exceeds the free rows, the remaining samples take rows as others finish. Sample j of a prompt
always draws the same tokens for a given seed, whatever else shares the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SecateursError
from .base import DecodingConfig, MethodPolicy, option, register


@dataclass
class BestOfNConfig(DecodingConfig):
    n: int = option(16, "samples per prompt (Best-of-N); initial candidates B0 (Speculative Rejection)")

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.n, int) or isinstance(self.n, bool) or self.n < 1:
            raise SecateursError(f"n must be an integer >= 1, got {self.n!r}")

    def rows_per_prompt(self) -> int:
        return self.n


@register("best-of-n", BestOfNConfig, "sample N responses, return the one the RM scores highest")
class BestOfN(MethodPolicy):
    def start(self) -> None:
        self.samples = self.ctx.sample(range(self.config.n))

    def on_idle(self, stopped) -> None:
        # Every sample finished and was scored; the first of equal rewards wins.
        rewards = [s.reward for s in self.samples]
        best = max(range(len(rewards)), key=lambda i: rewards[i])
        self.ctx.finish(self.outcome(self.samples[best], best_index=best, candidate_rewards=rewards,
                                     candidate_lengths=[s.length for s in self.samples]))
