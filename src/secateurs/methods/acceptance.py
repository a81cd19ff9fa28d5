"""Reward thresholds and accept / reject tests shared by CARDS and item-level rejection sampling."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from ..errors import SecateursError
from ..sampling import SamplingParams, child_key, uniform
from .base import DecodingConfig

# Calibration samples use keys far from the method's own samples, so they are independent of them.
_CALIBRATION_OFFSET = 1 << 20


@dataclass
class RewardTarget:
    """r_star and acceptance settings of one run (see docs/algorithms.md)."""

    r_star: float | str = "auto"  # target reward; "auto": calibrate per prompt (calibrate_r_star)
    beta: float = 0.7  # temperature of the soft acceptance (and of sampling)
    acceptance: str = "soft"  # "soft": accept w.p. min(1, exp((r - tau) / beta)); "hard": r >= tau
    max_retries: int = 20  # after this many rejections of one segment / response, take the best seen
    r_star_samples: int = 4  # auto r_star: plainly sampled responses per prompt
    r_star_margin: float = 0.5  # auto r_star = mean + margin * std of their rewards

    def validate_target(self) -> None:
        if not (self.r_star == "auto" or (isinstance(self.r_star, (int, float)) and math.isfinite(self.r_star))):
            raise SecateursError(f"r_star must be a finite number or 'auto', got {self.r_star!r}")
        if not self.beta > 0:
            raise SecateursError(f"beta must be > 0, got {self.beta}")
        if self.acceptance not in ("soft", "hard"):
            raise SecateursError(f"acceptance must be 'soft' or 'hard', got {self.acceptance!r}")
        if not isinstance(self.max_retries, int) or self.max_retries < 1:
            raise SecateursError(f"max_retries must be an integer >= 1, got {self.max_retries!r}")
        if not isinstance(self.r_star_samples, int) or self.r_star_samples < 2:
            raise SecateursError(f"r_star_samples must be an integer >= 2, got {self.r_star_samples!r}")


@dataclass
class TargetedConfig(DecodingConfig, RewardTarget):
    """Settings of the methods that accept against r_star (CARDS, rejection sampling): they sample at
    temperature beta with top-k 40, as the CARDS paper does."""

    temperature: float | None = None  # sampling temperature; None: beta
    top_k: int = 40

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


def calibrate_r_star(prompts, prompt_ids, keys, policy, reward, config, meter) -> list[tuple[float, list[float]]]:
    """Auto r_star per prompt: sample `r_star_samples` complete responses with the method's own
    sampling settings, score them, and set r_star = mean + r_star_margin * (population) std. The
    paper sets r_star "a little above the average reward of a reference method"; this is that,
    measured on the RM at hand. Its LM and RM cost is part of the prompt's cost."""
    from .best_of_n import sample_n

    calibration_keys = [child_key(k, _CALIBRATION_OFFSET) for k in keys]
    out = []
    for candidates in sample_n(prompts, prompt_ids, calibration_keys, policy, reward, config, meter,
                               config.r_star_samples):
        rewards = [c[2] for c in candidates]
        out.append((statistics.fmean(rewards) + config.r_star_margin * statistics.pstdev(rewards), rewards))
    return out


def r_stars(prompts, prompt_ids, keys, policy, reward, config, meter) -> list[tuple[float, list[float]]]:
    """(r_star, calibration rewards) per prompt."""
    if config.r_star == "auto":
        return calibrate_r_star(prompts, prompt_ids, keys, policy, reward, config, meter)
    return [(float(config.r_star), []) for _ in prompts]
