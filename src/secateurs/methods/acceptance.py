"""Reward thresholds and accept / reject tests shared by CARDS and item-level rejection sampling."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from ..errors import SecateursError
from ..sampling import SamplingParams, child_key, uniform
from .base import DecodingConfig, MethodPolicy, option

# Calibration samples use keys far from the method's own samples, so they are independent of them.
_CALIBRATION_OFFSET = 1 << 20


@dataclass
class RewardTarget:
    """r_star and acceptance settings of one run (see docs/algorithms.md)."""

    r_star: float | str = option("auto", "CARDS / rejection sampling: target reward, or 'auto' to calibrate it "
                                         "per prompt")
    beta: float = option(0.7, "CARDS / rejection sampling: sampling and soft-acceptance temperature")
    acceptance: str = option("soft", "CARDS / rejection sampling: 'soft' accepts w.p. min(1, exp((r - tau) / "
                                     "beta)), 'hard' iff r >= tau")
    max_retries: int = option(20, "CARDS / rejection sampling: rejections before the best seen is taken")
    r_star_samples: int = option(4, "auto r_star: plainly sampled responses per prompt")
    r_star_margin: float = option(0.5, "auto r_star = mean + margin x std of their rewards")

    def validate_target(self) -> None:
        def real(x) -> bool:  # a finite number (not a bool, a string, NaN or infinity)
            return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

        def integer(x) -> bool:
            return isinstance(x, int) and not isinstance(x, bool)

        if not (self.r_star == "auto" or real(self.r_star)):
            raise SecateursError(f"r_star must be a finite number or 'auto', got {self.r_star!r}")
        if not (real(self.beta) and self.beta > 0):
            raise SecateursError(f"beta must be a finite number > 0, got {self.beta!r}")
        if not isinstance(self.acceptance, str) or self.acceptance not in ("soft", "hard"):
            raise SecateursError(f"acceptance must be 'soft' or 'hard', got {self.acceptance!r}")
        if not integer(self.max_retries) or self.max_retries < 1:
            raise SecateursError(f"max_retries must be an integer >= 1, got {self.max_retries!r}")
        if not integer(self.r_star_samples) or self.r_star_samples < 2:
            raise SecateursError(f"r_star_samples must be an integer >= 2, got {self.r_star_samples!r}")
        if not real(self.r_star_margin):
            raise SecateursError(f"r_star_margin must be a finite number, got {self.r_star_margin!r}")


@dataclass
class TargetedConfig(DecodingConfig, RewardTarget):
    """Settings of the methods that accept against r_star (CARDS, rejection sampling): they sample at
    temperature beta with top-k 40, as the CARDS paper does."""

    temperature: float | None = option(None, "sampling temperature (0: greedy); CARDS / rejection sampling: "
                                             "default beta")
    top_k: int = option(40, "sample from the k most likely tokens (0: off)")

    def validate(self) -> None:
        self.validate_target()  # first: the sampling check in super() uses beta
        super().validate()

    def sampling(self) -> SamplingParams:
        return SamplingParams(self.beta if self.temperature is None else self.temperature, self.top_k, self.top_p)


def accepts(reward: float, threshold: float, target: RewardTarget, key: int, counter: int) -> bool:
    """The acceptance test; the soft one draws its uniform from (key, counter), so it is reproducible."""
    if target.acceptance == "hard":
        return reward >= threshold
    return uniform(key, counter) < min(1.0, math.exp(min(0.0, (reward - threshold) / target.beta)))


class TargetedPolicy(MethodPolicy):
    """A method that accepts against r_star: with r_star 'auto' it first samples `r_star_samples`
    complete responses per prompt with the method's own sampling settings and sets r_star = mean +
    r_star_margin * (population) std of their rewards. The paper sets r_star "a little above the
    average reward of a reference method"; this is that, measured on the RM at hand, and its LM and
    RM cost is part of the prompt's cost. Then `begin()`; later events go to `on_result()`."""

    def start(self) -> None:
        if self.config.r_star == "auto":
            self.calibration = self.ctx.sample(range(self.config.r_star_samples),
                                               key=child_key(self.ctx.key, _CALIBRATION_OFFSET))
        else:
            self.calibration = None
            self.r_star, self.calibration_rewards = float(self.config.r_star), []
            self.begin()

    def on_idle(self, stopped) -> None:
        if self.calibration is not None:
            self.calibration_rewards = [s.reward for s in self.calibration]
            self.r_star = (statistics.fmean(self.calibration_rewards)
                           + self.config.r_star_margin * statistics.pstdev(self.calibration_rewards))
            self.calibration = None
            self.begin()
        else:
            self.on_result(stopped)

    def begin(self) -> None:
        raise NotImplementedError

    def on_result(self, stopped) -> None:
        raise NotImplementedError
