"""CARDS, item-level rejection sampling and ARGS on the tiny policy."""

import math

import pytest

from secateurs.errors import SecateursError
from secateurs.methods.acceptance import accepts
from secateurs.methods.args import ArgsConfig
from secateurs.methods.cards import CardsConfig, threshold
from secateurs.methods.rejection_sampling import RejectionSamplingConfig
from secateurs.methods.sampling import SamplingConfig
from secateurs.policy import Policy
from secateurs.prompts import make_prompts
from secateurs.rewards import CallableReward, load_reward
from secateurs.runner import run_prompts

PROMPTS = make_prompts(["how do i make tea", "give me a good tip for sleep", "what is green"])
ALWAYS = CallableReward(lambda p, r: 1e6, name="always")


def run(policy, reward, method, config, prompts=PROMPTS):
    return run_prompts(prompts, method, config, policy, reward)




def test_cards_with_an_always_accepting_reward_is_plain_sampling(endless):
    plain = run(endless, ALWAYS, "sampling", SamplingConfig(temperature=0.7, top_k=40, max_new_tokens=40))
    segmented = run(endless, ALWAYS, "cards", CardsConfig(r_star=0.0, max_new_tokens=40, entropy_threshold=0.5))
    for a, b in zip(plain, segmented):
        assert a.response == b.response
        assert b.details["segments"] > 1  # it really was cut into segments
        assert all(n == 0 for n in b.details["rejections_per_segment"])
        assert sum(b.details["segment_lengths"]) == b.response_tokens


def test_segments_follow_the_entropy_rule(endless):
    # the tiny random model is near-uniform: entropy ~ log(vocab) > 3 nats, so every segment is cut
    # at min_segment_tokens; an unreachable threshold cuts only at max_segment_tokens
    short = run(endless, ALWAYS, "cards", CardsConfig(r_star=0.0, max_new_tokens=30, min_segment_tokens=4))
    long = run(endless, ALWAYS, "cards", CardsConfig(r_star=0.0, max_new_tokens=30, entropy_threshold=99.0,
                                                        min_segment_tokens=4, max_segment_tokens=7))
    for r in short:
        assert all(n == 4 for n in r.details["segment_lengths"][:-1])
    for r in long:
        assert all(n == 7 for n in r.details["segment_lengths"][:-1])


@pytest.mark.parametrize("proposals", [1, 2, 3])
def test_retry_cap_is_honoured_and_the_best_candidate_is_taken(endless, proposals):
    calls = []

    def score(prompt, response):
        value = (sum(map(ord, response)) % 97) / 10  # deterministic, varies per candidate
        calls.append((response, value))
        return value

    reward = CallableReward(score, name="checksum")
    # proposals 2: the 4th candidate is the second slot of round 2; 3: round 2 draws one slot only
    config = CardsConfig(r_star=1e9, acceptance="hard", max_retries=3, max_new_tokens=16, proposals=proposals)
    [result] = run(endless, reward, "cards", config, prompts=PROMPTS[:1])
    d = result.details
    assert d["rejections_per_segment"] == [3] * d["segments"]
    segment_calls = calls[1:]  # the first call scores the prompt alone, r(x)
    # as the authors' code: after 3 rejections a 4th candidate is scored untested; the best of the 4 wins
    assert len(segment_calls) == 4 * d["segments"]
    for k, accepted in enumerate(d["accepted_rewards"]):
        assert accepted == max(v for _, v in segment_calls[4 * k:4 * k + 4])
    assert result.reward == d["accepted_rewards"][-1]


def test_cards_stops_at_eos_mid_segment(tiny_policy):
    stopping = Policy(tiny_policy.model, tiny_policy.tokenizer)
    stopping.stop_token_ids = frozenset(range(8, 60))
    config = CardsConfig(r_star=0.0, max_new_tokens=60, entropy_threshold=99.0, max_segment_tokens=64)
    for r in run(stopping, ALWAYS, "cards", config):
        ids = stopping.tokenizer(r.response)["input_ids"]
        assert r.finish_reason == "eos" and r.response_tokens < 60 and r.details["segments"] == 1
        assert not set(ids) & stopping.stop_token_ids  # the stop token ended it and is not in the text


def test_a_candidate_ending_at_eos_is_tested_against_r_star(tiny_policy, endless):
    # r(x) = 0 (the prompt alone), r_star = 10: tau(t) = 5 + 5 t / 60 < 7 for t < 24
    seven = CallableReward(lambda p, r: 7.0 if r else 0.0, name="seven")
    config = CardsConfig(r_star=10.0, max_new_tokens=60, acceptance="hard", max_retries=3, entropy_threshold=99.0)
    stopping = Policy(tiny_policy.model, tiny_policy.tokenizer)
    stopping.stop_token_ids = frozenset(range(8, 60))  # every candidate ends at EOS within a few tokens
    for r in run(stopping, seven, "cards", config):
        # a complete answer scoring 7 < r_star fails, however short: only the retry cap ends the prompt
        assert r.finish_reason == "eos" and r.response_tokens < 24
        assert r.details["rejections_per_segment"] == [3]
    # an unfinished segment still meets the lower tau(t): 7 passes at t <= 24
    for r in run(endless, seven, "cards", CardsConfig(r_star=10.0, max_new_tokens=60, acceptance="hard",
                                                     max_retries=3, min_segment_tokens=4)):
        assert r.details["rejections_per_segment"][0] == 0


def test_parallel_proposals_agree_with_the_sequential_rule(tiny_policy):
    reward = load_reward("sentiment+civility")
    for proposals in (1, 3):
        results = run(tiny_policy, reward, "cards", CardsConfig(max_new_tokens=24, proposals=proposals,
                                                                 r_star_samples=2, acceptance="hard", r_star="auto"))
        for r in results:
            d = r.details
            assert math.isfinite(d["r_star"]) and len(d["r_star_calibration_rewards"]) == 2
            assert sum(d["segment_lengths"]) == r.response_tokens
            assert all(0 <= n <= 20 for n in d["rejections_per_segment"])
            # auto r_star is mean + 0.5 std of the calibration samples
            cal = d["r_star_calibration_rewards"]
            mean = sum(cal) / 2
            assert d["r_star"] == pytest.approx(mean + 0.5 * abs(cal[0] - cal[1]) / 2)


def test_threshold_schedule():
    assert threshold(1.0, 3.0, 0, 100) == 1.0
    assert threshold(1.0, 3.0, 50, 100) == 2.0
    assert threshold(1.0, 3.0, 100, 100) == 3.0
    assert threshold(1.0, 3.0, 150, 100) == 3.0


def test_hard_acceptance_is_reward_at_least_the_threshold():
    hard = CardsConfig(acceptance="hard")
    assert accepts(1.5, 1.5, hard, key=0, counter=1)  # the paper: accept iff r >= tau
    assert not accepts(math.nextafter(1.5, 0), 1.5, hard, key=0, counter=1)
    assert accepts(math.nextafter(1.5, 2), 1.5, hard, key=0, counter=1)


def test_cards_results_do_not_depend_on_batching(tiny_policy):
    reward = load_reward("sentiment")
    config = CardsConfig(r_star=0.2, max_new_tokens=20, acceptance="hard", max_retries=4)
    together = run(tiny_policy, reward, "cards", config)
    alone = [run(tiny_policy, reward, "cards", config, prompts=[p])[0] for p in PROMPTS]
    assert [r.response for r in together] == [r.response for r in alone]


def test_rejection_sampling_takes_first_accepted_or_best(tiny_policy):
    plain = run(tiny_policy, ALWAYS, "sampling", SamplingConfig(temperature=0.7, top_k=40, max_new_tokens=12))
    accepted = run(tiny_policy, ALWAYS, "rejection-sampling", RejectionSamplingConfig(r_star=0.0, max_new_tokens=12))
    assert [a.response for a in accepted] == [p.response for p in plain]
    assert all(a.details["accepted_index"] == 0 for a in accepted)
    # 4 proposals were drawn and scored; the sequential method draws 1
    assert [(a.details["candidates_drawn"], a.details["candidates_sequential"]) for a in accepted] == [(4, 1)] * len(accepted)
    assert all(a.details["sequential_rm_calls"] == 1 and a.cost.rm_calls == 4 for a in accepted)
    assert [a.details["sequential_tokens_generated"] for a in accepted] == [a.response_tokens for a in accepted]
    never = CallableReward(lambda p, r: len(r) / 100, name="length")
    capped = run(tiny_policy, never, "rejection-sampling",
                 RejectionSamplingConfig(r_star=1e9, max_retries=5, proposals=2, max_new_tokens=12))
    for r in capped:
        # as the authors' code: 5 rejections, then a 6th candidate scored untested, the best of the 6 taken
        assert r.details["rejections"] == 5 and r.cost.rm_calls == 6
        assert 0 <= r.details["accepted_index"] < 6
        assert r.details["candidates_drawn"] == r.details["candidates_sequential"] == 6


def test_args_picks_logit_plus_weighted_reward(tiny_policy):
    reward = load_reward("sentiment")
    [greedy] = run(tiny_policy, reward, "sampling", SamplingConfig(temperature=0, max_new_tokens=8), PROMPTS[:1])
    [guided_zero] = run(tiny_policy, reward, "args", ArgsConfig(weight=0.0, max_new_tokens=8, top_k=5), PROMPTS[:1])
    assert guided_zero.response == greedy.response  # w = 0: plain greedy decoding
    [guided] = run(tiny_policy, reward, "args", ArgsConfig(weight=1.5, max_new_tokens=8, top_k=5), PROMPTS[:1])
    assert guided.cost.rm_calls == 5 * guided.response_tokens + 1  # k candidates per step + the final score


@pytest.mark.parametrize("config, options, message", [
    (CardsConfig, {"entropy_threshold": 0}, "entropy_threshold must be > 0"),
    (CardsConfig, {"min_segment_tokens": 8, "max_segment_tokens": 4}, "max_segment_tokens (4) must be an integer >= min_segment_tokens (8)"),
    (CardsConfig, {"acceptance": "maybe"}, "acceptance must be 'soft' or 'hard', got 'maybe'"),
    (CardsConfig, {"beta": 0}, "beta must be a finite number > 0, got 0"),
    (CardsConfig, {"r_star": "high"}, "r_star must be a finite number, 'auto' or 'dataset'"),
    (CardsConfig, {"max_retries": 0}, "max_retries must be an integer >= 1"),
    (RejectionSamplingConfig, {"beta": -1}, "beta must be a finite number > 0"),
    (ArgsConfig, {"top_k": 0}, "top_k must be >= 1"),
])
def test_invalid_config_is_named(config, options, message):
    with pytest.raises(SecateursError) as err:
        config(**options)
    assert message in str(err.value)
