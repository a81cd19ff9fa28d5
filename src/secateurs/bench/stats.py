"""Statistics for a bench: bootstrap confidence intervals over prompts, win / tie / lose, diversity,
and the speedup against Best-of-N at equal score with its interval."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..metrics import equivalent_compute


@dataclass
class Interval:
    value: float
    low: float
    high: float

    def includes(self, x: float) -> bool:
        return self.low <= x <= self.high

    def to_dict(self) -> dict:
        return {"value": self.value, "ci_low": self.low, "ci_high": self.high}


def resample_indices(n_prompts: int, resamples: int, seed: int) -> np.ndarray:
    """Bootstrap resamples of prompt indices [resamples, n_prompts], reproducible from the seed."""
    return np.random.default_rng(seed).integers(0, n_prompts, size=(resamples, n_prompts))


def mean_interval(values: Sequence[float], idx: np.ndarray, level: float = 0.95) -> Interval:
    v = np.asarray(values, dtype=float)
    means = v[idx].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return Interval(float(v.mean()), float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail)))


def win_tie_lose(scores: Sequence[float], reference: Sequence[float], margin: float) -> np.ndarray:
    """Per prompt: +1 win (score > reference + margin), -1 lose (score < reference - margin), 0 tie."""
    diff = np.asarray(scores, dtype=float) - np.asarray(reference, dtype=float)
    return np.where(diff > margin, 1, np.where(diff < -margin, -1, 0))


def win_rates(outcomes: np.ndarray, idx: np.ndarray) -> dict:
    """Win / tie / lose rates and the interval of (win rate - lose rate); 'no difference' if it holds 0."""
    net = mean_interval(outcomes.astype(float), idx)
    return {
        "win": float((outcomes == 1).mean()), "tie": float((outcomes == 0).mean()),
        "lose": float((outcomes == -1).mean()), "net": net.to_dict(),
        "no_difference": net.includes(0.0),
    }


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams / all n-grams over every response (words, lower-cased); 0 if there are none."""
    grams = []
    for text in texts:
        words = re.findall(r"\w+", text.lower())
        grams += list(zip(*[words[i:] for i in range(n)]))
    return len(set(grams)) / len(grams) if grams else 0.0


def speedup(curve_compute: Sequence[Sequence[float]], curve_score: Sequence[Sequence[float]],
            compute: Sequence[float], score: Sequence[float], idx: np.ndarray, level: float = 0.95) -> dict:
    """Best-of-N compute needed for the method's score over the method's compute, with a bootstrap
    interval. curve_*: per Best-of-N cell, per-prompt values. 'no difference' if the interval holds 1."""
    cc = [np.asarray(c, dtype=float) for c in curve_compute]
    cs = [np.asarray(s, dtype=float) for s in curve_score]
    mc, ms = np.asarray(compute, dtype=float), np.asarray(score, dtype=float)

    def one(rows) -> tuple[float, str]:
        curve = [(c[rows].mean(), s[rows].mean()) for c, s in zip(cc, cs)]
        needed, how = equivalent_compute(curve, ms[rows].mean())
        return needed / mc[rows].mean(), how

    value, how = one(np.arange(len(mc)))
    samples = np.array([one(rows)[0] for rows in idx])
    tail = (1 - level) / 2 * 100
    interval = Interval(value, float(np.percentile(samples, tail)), float(np.percentile(samples, 100 - tail)))
    return {**interval.to_dict(), "bound": how, "no_difference": interval.includes(1.0)}
