"""Bench statistics against hand-computed values."""

import numpy as np
import pytest

from secateurs.bench.spec import BenchSpec, Cell, cells_from_yaml, parse_method_spec
from secateurs.bench.stats import (distinct_n, mean_interval, resample_indices, speedup, win_rates,
                                   win_tie_lose)
from secateurs.errors import SecateursError


def test_bootstrap_interval_brackets_the_mean_and_is_reproducible():
    values = [1.0, 2.0, 3.0, 4.0]
    idx = resample_indices(4, 2000, seed=0)
    a = mean_interval(values, idx)
    assert a.value == 2.5 and a.low < 2.5 < a.high and 1.0 <= a.low and a.high <= 4.0
    assert mean_interval(values, resample_indices(4, 2000, seed=0)) == a
    same = mean_interval([2.0] * 4, idx)
    assert (same.low, same.high) == (2.0, 2.0)
    # the identity resample gives the plain mean
    assert mean_interval(values, np.arange(4)[None, :]).low == 2.5


def test_win_tie_lose_with_a_margin():
    out = win_tie_lose([1.0, 1.05, 0.5, 2.0], [1.0, 1.0, 1.0, 1.0], margin=0.1)
    assert out.tolist() == [0, 0, -1, 1]
    rates = win_rates(out, np.arange(4)[None, :])
    assert (rates["win"], rates["tie"], rates["lose"]) == (0.25, 0.5, 0.25)
    assert rates["net"]["value"] == 0.0 and rates["no_difference"]
    clear = win_rates(np.array([1, 1, 1, 1]), resample_indices(4, 500, 0))
    assert not clear["no_difference"] and clear["net"]["ci_low"] == 1.0


def test_distinct_n():
    assert distinct_n(["a b a b", "a c"], 1) == 3 / 6
    assert distinct_n(["a b a b", "a c"], 2) == 3 / 4  # ab, ba, ab | ac
    assert distinct_n([""], 2) == 0.0


def test_speedup_interpolates_and_labels_no_difference():
    # Best-of-N curve: compute 1 -> score 10, compute 4 -> score 20 (per prompt, identical prompts)
    curve_c = [[1.0, 1.0], [4.0, 4.0]]
    curve_s = [[10.0, 10.0], [20.0, 20.0]]
    idx = resample_indices(2, 200, 0)
    fast = speedup(curve_c, curve_s, compute=[1.0, 1.0], score=[15.0, 15.0], idx=idx)
    assert fast["value"] == pytest.approx(2.0) and fast["bound"] == "interpolated" and not fast["no_difference"]
    same = speedup(curve_c, curve_s, compute=[2.0, 2.0], score=[15.0, 15.0], idx=idx)
    assert same["value"] == pytest.approx(1.0) and same["no_difference"]
    beyond = speedup(curve_c, curve_s, compute=[2.0, 2.0], score=[25.0, 25.0], idx=idx)
    assert beyond["bound"] == "above" and beyond["value"] == pytest.approx(2.0)


def test_method_specs_expand_to_cells():
    assert [c.name for c in parse_method_spec("best-of-n:n=1,2,4")] == ["best-of-n n=1", "best-of-n n=2", "best-of-n n=4"]
    cells = parse_method_spec("speculative-rejection:n=8:alpha=0.5,0.9")
    assert [c.options for c in cells] == [(("n", 8), ("alpha", 0.5)), (("n", 8), ("alpha", 0.9))]
    assert parse_method_spec("cards") == [Cell("cards")]
    assert [c.name for c in cells_from_yaml(["cards", {"best-of-n": {"n": [2, 4]}}])] == \
        ["cards", "best-of-n n=2", "best-of-n n=4"]
    with pytest.raises(SecateursError, match="bad method spec"):
        parse_method_spec("best-of-n:n")


@pytest.mark.parametrize("cells, extra, message", [
    ("no-such-method", {}, "unknown method 'no-such-method'"),
    ("best-of-n:m=3", {}, "unknown option 'm' for method 'best-of-n'"),
    ("speculative-rejection:alpha=1.5", {}, "alpha must be in [0, 1), got 1.5"),
    ("best-of-n:n=0", {}, "n must be an integer >= 1, got 0"),
    ("best-of-n:n=2", {"reference": "cards"}, "reference method 'cards' is not in this run"),
])
def test_bad_specs_fail_before_any_model(cells, extra, message, tmp_path):
    spec = BenchSpec(prompts=None, cells=parse_method_spec(cells), out=tmp_path, **extra)
    with pytest.raises(SecateursError) as err:
        spec.validate()
    assert message in str(err.value)
