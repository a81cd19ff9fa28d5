"""Counter-based sampling: the right distribution, the right filters, reproducible per key."""

import pytest
import torch

from secateurs.errors import SecateursError
from secateurs.sampling import SamplingParams, child_key, prompt_key, sample_tokens

LOGITS = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])


def draw(params, n=20000, logits=LOGITS):
    keys = torch.tensor([child_key(7, i) for i in range(n)])
    return sample_tokens(logits.expand(n, -1), params, keys, torch.zeros(n, dtype=torch.long))


def test_frequencies_match_the_tempered_softmax():
    for temperature in (1.0, 0.7):
        counts = torch.bincount(draw(SamplingParams(temperature, top_k=0)), minlength=6).double()
        expected = (LOGITS / temperature).softmax(-1).double() * counts.sum()
        assert ((counts - expected).abs() <= 4 * expected.sqrt() + 5).all(), (counts, expected)


def test_top_k_and_top_p_exclude_the_tail():
    assert set(draw(SamplingParams(top_k=2)).tolist()) == {0, 1}
    probs = LOGITS.softmax(-1)  # [0.56, 0.21, 0.13, ...]: top_p 0.7 keeps the first two
    assert probs[0] < 0.7 < probs[:2].sum()
    assert set(draw(SamplingParams(top_k=0, top_p=0.7)).tolist()) == {0, 1}
    assert set(draw(SamplingParams(top_k=0, top_p=0.01)).tolist()) == {0}


def test_greedy_and_reproducible():
    assert draw(SamplingParams(temperature=0), n=5).tolist() == [0] * 5
    a, b = draw(SamplingParams(), n=50), draw(SamplingParams(), n=50)
    assert torch.equal(a, b)
    keys = torch.tensor([prompt_key(0, "x")] * 50)
    draws = torch.arange(50)
    varied = sample_tokens(LOGITS.expand(50, -1), SamplingParams(top_k=0), keys, draws)
    assert len(set(varied.tolist())) > 2  # successive draws of one row differ
    assert prompt_key(0, "x") != prompt_key(1, "x") != prompt_key(0, "y")


@pytest.mark.parametrize("kwargs", [{"temperature": -1}, {"top_k": -1}, {"top_p": 0}, {"top_p": 1.5}])
def test_invalid_parameters_are_named(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(SecateursError, match=name):
        SamplingParams(**kwargs)
