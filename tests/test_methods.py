"""Best-of-N and plain sampling through the runner, on the tiny policy and a real packaged reward."""

import pytest

from secateurs.methods import BestOfNConfig, SamplingConfig
from secateurs.prompts import make_prompts
from secateurs.rewards import CallableReward, load_reward
from secateurs.runner import run_prompts

PROMPTS = make_prompts(["how do i make tea", "give me a good tip for sleep", "what is green", "thank you"])


@pytest.fixture(scope="module")
def reward():
    return load_reward("sentiment+civility")


def run(policy, reward, method, prompts=PROMPTS, seed=0, **options):
    config = (BestOfNConfig if method == "best-of-n" else SamplingConfig)(**options)
    return run_prompts(prompts, method, config, policy, reward, seed=seed)


def test_best_of_n_returns_the_best_scored_candidate(tiny_policy, reward):
    results = run(tiny_policy, reward, "best-of-n", n=6, max_new_tokens=12)
    for r in results:
        rewards = r.details["candidate_rewards"]
        assert len(rewards) == 6
        assert r.reward == max(rewards) == rewards[r.details["best_index"]]
        # the response really is the one that got that reward
        assert reward.score([p for p in PROMPTS if p.id == r.id], [r.response]) == pytest.approx([r.reward])


def test_sampling_is_best_of_n_sample_zero_and_never_beats_it(tiny_policy, reward):
    plain = run(tiny_policy, reward, "sampling", max_new_tokens=12)
    best = run(tiny_policy, reward, "best-of-n", n=5, max_new_tokens=12)
    for p, b in zip(plain, best):
        assert p.reward == b.details["candidate_rewards"][0]
        assert b.reward >= p.reward


def test_results_do_not_depend_on_chunking_or_prompt_batching(tiny_policy, reward):
    wide = run(tiny_policy, reward, "best-of-n", n=5, max_new_tokens=10, max_batch_rows=64)
    narrow = run(tiny_policy, reward, "best-of-n", n=5, max_new_tokens=10, max_batch_rows=3)
    one_by_one = [run(tiny_policy, reward, "best-of-n", prompts=[p], n=5, max_new_tokens=10)[0] for p in PROMPTS]
    for a, b, c in zip(wide, narrow, one_by_one):
        assert a.response == b.response == c.response
        assert a.details["candidate_rewards"] == b.details["candidate_rewards"] == c.details["candidate_rewards"]
    other_seed = run(tiny_policy, reward, "best-of-n", seed=1, n=5, max_new_tokens=10)
    assert [r.response for r in other_seed] != [r.response for r in wide]


def test_prefill_is_counted_once_whatever_n(tiny_policy, reward):
    prefilled = {}
    for n in (1, 4, 16):
        results = run(tiny_policy, reward, "best-of-n", n=n, max_new_tokens=6, max_batch_rows=8)
        prefilled[n] = [r.cost.lm_tokens_prefilled for r in results]
    assert prefilled[1] == prefilled[4] == prefilled[16]
    assert prefilled[1] == [len(tiny_policy.encode(p)) for p in PROMPTS]


def test_costs_add_up(tiny_policy):
    words = CallableReward(lambda p, r: len(r.split()), name="words")
    results = run(tiny_policy, words, "best-of-n", n=4, max_new_tokens=8)
    for r in results:
        c = r.cost
        assert c.rm_calls == 4
        assert c.rm_tokens == pytest.approx(sum(r.details["candidate_rewards"]))  # callables count words
        assert 4 <= c.tokens_generated <= 32
        assert c.lm_tokens_decoded == c.tokens_generated - 4  # each row's last token is never fed
        assert c.lm_forward_calls >= 1 and c.seconds >= c.lm_seconds + c.rm_seconds > 0
        assert c.peak_memory_bytes > 0
        assert r.config["n"] == 4 and r.seed == 0 and r.method == "best-of-n"
