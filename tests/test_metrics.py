"""The paper's comparison metrics against hand-computed values."""

import math

import pytest

from secateurs.metrics import equivalent_compute, improvement_score


def test_improvement_score():
    ref = [1.0, 3.0, 2.0]
    assert improvement_score(3.0, ref) == 100.0  # the reference's best
    assert improvement_score(1.0, ref) == 0.0  # its worst
    assert improvement_score(2.5, ref) == 75.0
    assert improvement_score(4.0, ref) == 150.0
    assert improvement_score(5.0, [2.0, 2.0]) == 100.0


def test_equivalent_compute_interpolates_in_log_compute():
    curve = [(1.0, 10.0), (4.0, 20.0), (16.0, 25.0)]
    assert equivalent_compute(curve, 15.0) == (pytest.approx(2.0), "interpolated")  # halfway in log(1..4)
    assert equivalent_compute(curve, 22.5) == (pytest.approx(8.0), "interpolated")
    assert equivalent_compute(curve, 20.0)[0] == pytest.approx(4.0)
    assert equivalent_compute(curve, 30.0) == (16.0, "above")
    assert equivalent_compute(curve, 5.0) == (1.0, "below")
    value, how = equivalent_compute([(2.0, 1.0), (8.0, 3.0)], 2.0)
    assert how == "interpolated" and math.isclose(value, 4.0)
