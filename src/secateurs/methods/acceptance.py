"""Reward thresholds and accept / reject tests shared by CARDS and item-level rejection sampling.

Acceptance scale. The papers state beta and r_star in the RM's own units (CARDS: beta 0.7, r_star
8.5 for a Llama RM whose scores spread over several units). `acceptance_scale literal` keeps that
(the paper's setting). `acceptance_scale spread` reads beta as a fraction of the reward's spread
for this prompt: the soft test accepts with min(1, exp((r - tau) / (beta * s))), s = the
(population) std of the rewards of the calibration samples (the ones `r_star auto` draws; drawn
for this alone when r_star is a number, their cost counted), so an RM scaled by 100 makes the same
decisions. With r_star auto, r_star = mean + r_star_margin * s in both settings.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from ..calibration import refuse_unresolved
from ..errors import SecateursError
from ..sampling import SamplingParams, child_key, uniform
from .base import DecodingConfig, MethodPolicy, integer, option, real

R_STAR_HELP = ("CARDS / rejection sampling: target reward; a number, 'auto' (calibrated per prompt) or 'dataset' "
               "(calibrated once on the first r_star_prompts prompts: the authors' one r* per set; a request "
               "served alone runs it as auto)")
# Calibration samples use keys far from the method's own samples, so they are independent of them.
_CALIBRATION_OFFSET = 1 << 20


@dataclass
class RewardTarget:
    """r_star and acceptance settings of one run (see docs/algorithms.md)."""

    r_star: float | str = option("auto", R_STAR_HELP)
    beta: float = option(0.7, "CARDS / rejection sampling: sampling and soft-acceptance temperature")
    acceptance: str = option("soft", "CARDS / rejection sampling: 'soft' accepts w.p. min(1, exp((r - tau) / "
                                     "beta)), 'hard' iff r >= tau")
    max_retries: int = option(20, "CARDS / rejection sampling: rejections after which one more candidate "
                                     "is drawn untested and the best of them all is taken (the authors')")
    r_star_samples: int = option(4, "auto / dataset r_star: plainly sampled responses per prompt")
    r_star_margin: float = option(0.5, "auto r_star = mean + margin x std of their rewards (dataset: the mean "
                                       "of all, the mean of the prompts' std)")
    r_star_prompts: int = option(8, "dataset r_star: prompts it is calibrated on")
    acceptance_scale: str = option("literal", "CARDS / rejection sampling: 'literal' takes beta in reward units "
                                              "(the paper's); 'spread' in units of the prompt's reward std, "
                                              "measured on the r_star_samples calibration samples")

    def validate_target(self) -> None:
        if not (self.r_star in ("auto", "dataset") or real(self.r_star)):
            raise SecateursError(f"r_star must be a finite number, 'auto' or 'dataset', got {self.r_star!r}")
        if not integer(self.r_star_prompts) or self.r_star_prompts < 1:
            raise SecateursError(f"r_star_prompts must be an integer >= 1, got {self.r_star_prompts!r}")
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
        if not isinstance(self.acceptance_scale, str) or self.acceptance_scale not in ("literal", "spread"):
            raise SecateursError(f"acceptance_scale must be 'literal' or 'spread', got {self.acceptance_scale!r}")

    def needs_calibration(self) -> bool:
        """Calibration samples are drawn for r_star auto and for the spread scale."""
        return self.r_star == "auto" or self.acceptance_scale == "spread"


@dataclass
class TargetedConfig(DecodingConfig, RewardTarget):
    """Settings of the methods that accept against r_star (CARDS, rejection sampling): they sample at
    temperature beta with top-k 40, as the CARDS paper does."""

    temperature: float | None = option(None, "", shown="beta")  # "": the general help (DecodingConfig's)
    top_k: int = option(40, "")

    def validate(self) -> None:
        self.validate_target()  # first: the sampling check in super() uses beta
        super().validate()

    def sampling(self) -> SamplingParams:
        return SamplingParams(self.beta if self.temperature is None else self.temperature, self.top_k, self.top_p)


def accepts(reward: float, threshold: float, target: RewardTarget, key: int, counter: int,
            scale: float = 1.0) -> bool:
    """The acceptance test; the soft one draws its uniform from (key, counter), so it is reproducible.
    `scale`: the reward unit beta is expressed in (1: the reward's own; the spread setting: its std)."""
    if target.acceptance == "hard":
        return reward >= threshold
    return uniform(key, counter) < min(1.0, math.exp(min(0.0, (reward - threshold) / (target.beta * scale))))


def spread(rewards: list[float]) -> float:
    """The reward unit of the spread setting: the population std of the calibration rewards. If they are
    all equal, a thousandth of their magnitude (still proportional to the reward's scale), or 1 at zero."""
    s = statistics.pstdev(rewards)
    if s > 0:
        return s
    m = max(abs(r) for r in rewards)
    return 1e-3 * m if m > 0 else 1.0


class TargetedPolicy(MethodPolicy):
    """A method that accepts against r_star: with r_star 'auto' it first samples `r_star_samples`
    complete responses per prompt with the method's own sampling settings and sets r_star = mean +
    r_star_margin * (population) std of their rewards. The paper sets r_star "a little above the
    average reward of a reference method"; this is that, measured on the RM at hand, and its LM and
    RM cost is part of the prompt's cost. The same samples give the spread scale (`self.scale`).
    Then `begin()` (with `self.calibration_samples` still readable); later events go to `on_result()`."""

    def start(self) -> None:
        refuse_unresolved(self.config)  # a run sets r_star dataset to its number before scheduling (calibration.py)
        self.calibration_samples, self.calibration_rewards, self.scale = [], [], 1.0
        if self.config.needs_calibration():
            self.calibration = self.ctx.sample(range(self.config.r_star_samples),
                                               key=child_key(self.ctx.key, _CALIBRATION_OFFSET))
        else:
            self.calibration = None
            self.r_star = float(self.config.r_star)
            self.begin()

    def on_idle(self, stopped) -> None:
        if self.calibration is not None:
            self.calibration_samples, self.calibration = self.calibration, None
            self.calibration_rewards = rewards = [s.reward for s in self.calibration_samples]
            if self.config.acceptance_scale == "spread":
                self.scale = spread(rewards)
            if self.config.r_star == "auto":
                # literal: the reward's own std (as before); spread: the same unit the test uses
                unit = self.scale if self.config.acceptance_scale == "spread" else statistics.pstdev(rewards)
                self.r_star = statistics.fmean(rewards) + self.config.r_star_margin * unit
            else:
                self.r_star = float(self.config.r_star)
            self.begin()
        else:
            self.on_result(stopped)

    def begin(self) -> None:
        raise NotImplementedError

    def on_result(self, stopped) -> None:
        raise NotImplementedError
