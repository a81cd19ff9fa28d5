"""Comparison metrics from the Speculative Rejection paper (see docs/algorithms.md).

- improvement score, per prompt: 100 * (1 + (r - max r_ref) / (max r_ref - min r_ref)), where
  r_ref are the rewards of the reference Best-of-N's candidates for that prompt; the reference
  itself scores 100. Averaged over prompts.
- speedup: place a method's score on the Best-of-N score-versus-compute curve, interpolating
  linearly in log(compute), and divide that compute by the method's own compute.
"""

from __future__ import annotations

import math
from typing import Sequence


def improvement_score(reward: float, reference_rewards: Sequence[float]) -> float:
    hi, lo = max(reference_rewards), min(reference_rewards)
    if hi == lo:  # every reference candidate scored the same: no scale to measure on
        return 100.0 if reward >= hi else 0.0
    return 100.0 * (1.0 + (reward - hi) / (hi - lo))


def equivalent_compute(curve: Sequence[tuple[float, float]], score: float) -> tuple[float, str]:
    """Compute Best-of-N needs to reach `score`, from its (compute, score) curve.

    Returns (compute, how): how is "interpolated", or "above" / "below" when the score lies outside
    the curve (compute is then the curve's end: a lower / upper bound).
    """
    points = sorted(curve)
    if score >= points[-1][1] and all(score > s for _, s in points[:-1]):
        # at or beyond the best: the largest N's compute is a lower bound unless scores tie exactly
        return points[-1][0], ("interpolated" if score == points[-1][1] else "above")
    if score <= points[0][1]:
        return points[0][0], ("interpolated" if score == points[0][1] else "below")
    # first segment (in increasing compute) that crosses the score
    for (c0, s0), (c1, s1) in zip(points, points[1:]):
        if min(s0, s1) <= score <= max(s0, s1) and s0 != s1:
            t = (score - s0) / (s1 - s0)
            return math.exp(math.log(c0) + t * (math.log(c1) - math.log(c0))), "interpolated"
    return points[-1][0], "above"
