"""CARDS' reward-scale settings (acceptance_scale, prefix_calibration) and honest compute
(positions computed beside LM tokens), on the tiny policy with rewards whose answers are known."""

import pytest

from secateurs.methods.best_of_n import BestOfNConfig
from secateurs.methods.cards import CardsConfig, prefix_lengths
from secateurs.methods.rejection_sampling import RejectionSamplingConfig
from secateurs.policy import Policy
from secateurs.prompts import make_prompts
from secateurs.rewards import CallableReward, Reward
from secateurs.runner import run_prompts

PROMPTS = make_prompts(["how do i make tea", "give me a good tip for sleep", "what is green"])
FLAT = CallableReward(lambda p, r: 2.0, name="flat")  # every prefix scores what the whole scores


class PartialPenalty(Reward):
    """2.0 for a complete response, 1.0 for an unfinished one: partial scores are 1 lower, always."""

    name = "test:partial-penalty"

    def _score(self, prompts, responses, partial):
        return [1.0 if partial else 2.0] * len(responses), [1] * len(responses)


def checksum(prompt, response):  # deterministic, varies from candidate to candidate
    return (sum(map(ord, response)) % 97) / 97


CHECKSUM = CallableReward(checksum, name="checksum")
CHECKSUM_X100 = CallableReward(lambda p, r: 100 * checksum(p, r), name="checksum-x100")


def run(policy, reward, method, config, prompts=PROMPTS):
    return run_prompts(prompts, method, config, policy, reward)




@pytest.mark.parametrize("settings", [dict(acceptance="hard"), dict(acceptance="hard", proposals=3),
                                      dict(acceptance="soft", acceptance_scale="spread")])
def test_a_threshold_below_the_reward_accepts_every_segment_and_above_rejects_every_one(endless, settings):
    common = dict(max_new_tokens=24, max_retries=3, **settings)
    for r in run(endless, FLAT, "cards", CardsConfig(r_star=1.75, **common)):
        assert r.details["segments"] > 1
        assert r.details["rejections_per_segment"] == [0] * r.details["segments"]
    # Above: tau(t) >= r0 = (r(x) + r_star) / 2 > 2 everywhere. Soft acceptance on the spread scale
    # (a flat reward's unit is 1e-3 of it) accepts with probability exp(-0.125 / 0.0014) ~ 0.
    for r in run(endless, FLAT, "cards", CardsConfig(r_star=2.25, **common)):
        assert r.details["rejections_per_segment"] == [3] * r.details["segments"]


def test_prefix_calibration_measures_the_partial_penalty_and_removes_it(endless):
    common = dict(acceptance="hard", r_star_weight=1.0, max_new_tokens=24, max_retries=3)  # tau(t) = r_star
    lengths = prefix_lengths(4, 24)
    assert lengths == [4, 8, 16]
    on = run(endless, PartialPenalty(), "cards", CardsConfig(r_star=1.5, prefix_calibration="on", **common))
    for r in on:
        assert r.details["prefix_gaps"] == [(t, 1.0) for t in lengths]  # measured: every sample is longer
        assert r.details["rejections_per_segment"] == [0] * r.details["segments"]
        # r(x), 4 calibration samples, their prefixes at 3 lengths, one check per segment
        assert r.cost.rm_calls == 1 + 4 + 4 * len(lengths) + r.details["segments"]
    # without it, a partial candidate (1.0) never reaches r_star 1.5; only the last, complete one does
    for r in run(endless, PartialPenalty(), "cards", CardsConfig(r_star=1.5, **common)):
        assert r.details["prefix_gaps"] == []
        assert r.details["rejections_per_segment"] == [3] * (r.details["segments"] - 1) + [0]
    # and the shift is the measured gap, no more: r_star above the final reward still rejects all
    for r in run(endless, PartialPenalty(), "cards", CardsConfig(r_star=2.25, prefix_calibration="on", **common)):
        assert r.details["rejections_per_segment"] == [3] * r.details["segments"]


def _decisions(results):
    return [(r.response, r.details.get("rejections_per_segment", r.details.get("rejections"))) for r in results]


@pytest.mark.parametrize("method,config", [
    ("cards", dict(proposals=2, prefix_calibration="on")),
    ("cards", dict(acceptance="hard", r_star_margin=1.0)),
    ("rejection-sampling", dict(proposals=2, r_star_margin=1.0)),
])
def test_the_spread_scale_makes_the_same_decisions_for_a_reward_and_100_times_it(endless, method, config):
    config_class = CardsConfig if method == "cards" else RejectionSamplingConfig
    spread = config_class(max_new_tokens=16, max_retries=6, acceptance_scale="spread", **config)
    once, hundred = run(endless, CHECKSUM, method, spread), run(endless, CHECKSUM_X100, method, spread)
    assert _decisions(once) == _decisions(hundred)
    total = sum(sum(d[1]) if isinstance(d[1], list) else d[1] for d in _decisions(once))
    assert total > 0  # decisions were really taken
    for a, b in zip(once, hundred):
        assert b.details.get("reward_unit", 100.0) == pytest.approx(100 * a.details.get("reward_unit", 1.0))
    if config.get("acceptance") != "hard":  # the literal setting is not scale-free: the same beta decides otherwise
        literal = config_class(max_new_tokens=16, max_retries=6, acceptance_scale="literal", **config)
        assert _decisions(run(endless, CHECKSUM, method, literal)) != \
               _decisions(run(endless, CHECKSUM_X100, method, literal))


def test_positions_computed_equal_lm_tokens_when_no_row_sits_out(endless):
    # one prompt (no prefill padding), every sample runs to max_new_tokens together
    [r] = run(endless, FLAT, "best-of-n", BestOfNConfig(n=4, max_new_tokens=12), prompts=PROMPTS[:1])
    c = r.cost
    assert c.lm_positions_prefilled == c.lm_tokens_prefilled > 0
    assert c.lm_positions_decoded == c.lm_tokens_decoded == 4 * 11
    assert c.lm_positions == c.lm_tokens


def test_cards_rows_waiting_for_their_proposals_leave_the_forward(tiny_policy):
    # Proposals that hit EOS early wait for the others to end their segment; unsliced, their
    # masked columns cost 1.56x the tokens fed here.
    stopping = Policy(tiny_policy.model, tiny_policy.tokenizer)
    stopping.stop_token_ids = frozenset(range(8, 20))
    config = CardsConfig(max_new_tokens=32, proposals=4, entropy_threshold=99.0, max_segment_tokens=8,
                         acceptance="hard", r_star=0.6, max_retries=3)
    results = run(stopping, CHECKSUM, "cards", config)
    tokens = sum(r.cost.lm_tokens_decoded for r in results)
    positions = sum(r.cost.lm_positions_decoded for r in results)
    assert tokens > 100
    assert tokens <= positions < 1.1 * tokens
    # the answers are those of one prompt at a time (no batching effect from the slicing)
    alone = [run(stopping, CHECKSUM, "cards", config, prompts=[p])[0] for p in PROMPTS]
    assert [r.response for r in results] == [r.response for r in alone]


def test_forced_segments_do_not_pad_the_other_rows(tiny_policy):
    # At the retry cap the best segment is forced back (several tokens to feed); rows of other
    # prompts feeding one token in that step must not be padded to its width. EOS now and then
    # puts the prompts out of step with each other.
    stopping = Policy(tiny_policy.model, tiny_policy.tokenizer)
    stopping.stop_token_ids = frozenset(range(8, 11))  # unsplit, positions were 1.18x tokens here
    config = CardsConfig(max_new_tokens=32, acceptance="hard", r_star=1e9, max_retries=3, entropy_threshold=99.0,
                         max_segment_tokens=8)
    results = run(stopping, CHECKSUM, "cards", config)
    tokens = sum(r.cost.lm_tokens_decoded for r in results)
    positions = sum(r.cost.lm_positions_decoded for r in results)
    assert sum(r.details["segments"] for r in results) > 3 and tokens > 60
    assert tokens <= positions < 1.1 * tokens
