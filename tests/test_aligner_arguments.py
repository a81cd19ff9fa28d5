"""Aligner's arguments and lifetime: bad ones fail at once in one line; nothing submitted waits forever."""

import asyncio

import pytest

from secateurs.aligner import Aligner
from secateurs.errors import SecateursError


@pytest.mark.parametrize("rows", [0, -3, 2.5, True, "8"])
def test_max_batch_rows_below_one_or_not_an_integer_is_refused_at_once(tiny_policy, rows):
    with pytest.raises(SecateursError, match=f"max_batch_rows must be an integer >= 1, got {rows!r}"):
        Aligner(tiny_policy, "sentiment", max_batch_rows=rows)


def test_submit_after_close_fails_at_once(tiny_policy):
    aligner = Aligner(tiny_policy, "sentiment", max_batch_rows=4)
    assert asyncio.run(aligner.submit("hi there", method="sampling", max_new_tokens=2)).response is not None
    aligner.close()

    async def late():
        return await asyncio.wait_for(aligner.submit("hi there", method="sampling", max_new_tokens=2), 10)

    with pytest.raises(SecateursError, match="this Aligner is closed"):
        asyncio.run(late())


def test_close_fails_what_is_still_waiting(endless):
    aligner = Aligner(endless, "sentiment", max_batch_rows=4)

    async def scenario():
        task = asyncio.ensure_future(aligner.submit("hi there", method="best-of-n", n=2, max_new_tokens=200))
        while not aligner.scheduler.active:
            await asyncio.sleep(0.01)
        await asyncio.get_running_loop().run_in_executor(None, aligner.close)
        return await asyncio.wait_for(task, 10)

    with pytest.raises(SecateursError, match="closed before this prompt was answered"):
        asyncio.run(scenario())


def test_reward_takes_what_align_takes_a_plain_function_or_a_spec(tiny_policy):
    def length(prompt, response):
        return float(len(response))

    for reward in (length, "sentiment", None):
        aligner = Aligner(tiny_policy, reward, max_batch_rows=4)
        result = asyncio.run(aligner.submit("hi there", method="best-of-n", n=2, max_new_tokens=3))
        aligner.close()
        if reward is length:
            assert result.reward == float(len(result.response))


@pytest.mark.parametrize("policy, reward, named", [(42, "sentiment", "policy must be"),
                                                    (None, 42, "reward must be")])
def test_bad_policy_or_reward_is_one_line_naming_it(tiny_policy, policy, reward, named):
    with pytest.raises(SecateursError, match=named):
        Aligner(tiny_policy if policy is None else policy, reward)


@pytest.mark.parametrize("seed", [1.0, "1", True, None])
def test_a_seed_that_is_not_an_integer_is_refused_at_submit(tiny_policy, seed):
    """seed=1.0 or "1" would key other draws than seed=1 (the rule align() and the CLI already follow)."""
    aligner = Aligner(tiny_policy, "sentiment", max_batch_rows=4)
    try:
        with pytest.raises(SecateursError, match=f"^seed must be an integer, got {seed!r}"):
            asyncio.run(aligner.submit("how do i make tea", method="sampling", seed=seed, max_new_tokens=2))
    finally:
        aligner.close()


def test_a_numpy_seed_answers_as_the_same_int(tiny_policy):
    import numpy as np

    aligner = Aligner(tiny_policy, "sentiment", max_batch_rows=4)
    try:
        async def both():
            options = dict(method="sampling", max_new_tokens=6, prompt_id="p")
            return (await aligner.submit("how do i make tea", seed=np.int64(5), **options),
                    await aligner.submit("how do i make tea", seed=5, **options))
        numpy_seed, int_seed = asyncio.run(both())
    finally:
        aligner.close()
    assert numpy_seed.response == int_seed.response and numpy_seed.seed == 5
