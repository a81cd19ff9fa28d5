"""Reward adapters: a real (tiny, random) HF RM with its own tokenizer, callables, sums, packaged scorers."""

import math
import sys
import types

import pytest

from secateurs.errors import RewardError, SecateursError
from secateurs.meter import Meter
from secateurs.prompts import make_prompt
from secateurs.rewards import (CallableReward, HFReward, WeightedSum, load_reward, metered_score)

P = [make_prompt("how do i make tea", "a"), make_prompt("give me a tip for sleep", "b"),
     make_prompt("what is green", "c")]
R = ["heat the water and add a green leaf", "go to bed at the same time every night", "a colour"]


def test_hf_rm_reads_with_its_own_tokenizer(tiny_rm_folder, tiny_policy):
    rm = HFReward(tiny_rm_folder)
    assert rm.tokenizer.vocab_size != tiny_policy.tokenizer.vocab_size
    scores, tokens = rm.score_with_tokens(P, R)
    assert all(math.isfinite(s) for s in scores) and len(set(scores)) == 3
    # characters: the RM read the prompt and response text itself, not policy token ids
    assert tokens[0] >= len(P[0].text) + len(R[0])


def test_hf_rm_scores_do_not_depend_on_batching_or_padding(tiny_rm_folder):
    rm = HFReward(tiny_rm_folder, batch_size=3)
    together = rm.score(P, R)
    alone = [rm.score([p], [r])[0] for p, r in zip(P, R)]
    assert together == pytest.approx(alone, abs=1e-5)


def test_hf_rm_uses_its_chat_template(tiny_rm_folder, tmp_path):
    import shutil

    from transformers import AutoTokenizer

    folder = tmp_path / "rm"
    shutil.copytree(tiny_rm_folder, folder)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}|{% endfor %}"
    tok.save_pretrained(folder)
    rm = HFReward(folder)
    ids = rm.encode(P[0], R[0])
    assert rm.tokenizer.decode(ids).replace(" ", "") == f"<user>{P[0].text}|<assistant>{R[0]}|".replace(" ", "")
    assert math.isfinite(rm.score(P[:1], R[:1])[0])


def test_callable_and_weighted_sum():
    length = CallableReward(lambda prompt, response: len(response), name="length")
    overlap = CallableReward(lambda prompts, responses: [len(set(p.split()) & set(r.split()))
                                                          for p, r in zip(prompts, responses)], batched=True)
    total = WeightedSum([(0.5, length), (2.0, overlap)])
    expected = [0.5 * len(r) + 2.0 * len(set(p.text.split()) & set(r.split())) for p, r in zip(P, R)]
    assert total.score(P, R) == pytest.approx(expected)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_reward_is_an_error_naming_the_value_and_prompt(bad):
    reward = CallableReward(lambda p, r: bad if r == "a colour" else 1.0, name="flaky")
    with pytest.raises(RewardError, match=rf"flaky.*{bad}.*'c'"):
        reward.score(P, R)


def test_wrong_number_of_scores_is_an_error():
    with pytest.raises(RewardError, match="returned 1 scores for 3"):
        CallableReward(lambda ps, rs: [1.0], batched=True).score(P, R)


def test_metered_score_counts_calls_and_tokens():
    meter = Meter()
    meter.open("a"), meter.open("b")
    metered_score(CallableReward(lambda p, r: 1.0), meter, P, R, groups=["a", "b", "b"])
    assert [c.rm_calls for c in meter.costs.values()] == [1, 2]
    assert [c.rm_tokens for c in meter.costs.values()] == [len(R[0].split()), len(R[1].split()) + len(R[2].split())]


def test_packaged_scorers_rank_good_above_bad():
    prompt = [make_prompt("How do I make a good cup of green tea?", "t")] * 2
    good = "Heat water to about 80 degrees, add a teaspoon of green tea leaves and steep for two minutes."
    assert load_reward("relevance").score(prompt, [good, "The French Revolution began in 1789."]) == \
        sorted(load_reward("relevance").score(prompt, [good, "The French Revolution began in 1789."]), reverse=True)
    assert load_reward("relevance").score(prompt, [good, "How do I make a good cup of green tea?"])[0] > \
        load_reward("relevance").score(prompt, [good, "How do I make a good cup of green tea?"])[1]
    civility = load_reward("civility").score(prompt, [good, "Make it yourself, you stupid idiot."])
    assert civility[0] > 0.5 > civility[1]
    sentiment = load_reward("sentiment").score(prompt, ["I love this, it is wonderful!", "I hate this, awful."])
    assert sentiment[0] > 0 > sentiment[1]


def test_load_reward_specs(monkeypatch):
    assert isinstance(load_reward("relevance+0.5*civility"), WeightedSum)
    assert load_reward(None).name.startswith("default(")
    module = types.ModuleType("my_rewards")
    module.shout = lambda prompt, response: response.count("!")
    monkeypatch.setitem(sys.modules, "my_rewards", module)
    assert load_reward("py:my_rewards:shout").score(P[:1], ["wow!!"]) == [2.0]
    assert load_reward(lambda p, r: 3.0).score(P[:1], ["x"]) == [3.0]
    for bad in ("nonsense", "py:no_such_module_xyz:f", "abc*relevance", "hf:/no/such/folder"):
        with pytest.raises(SecateursError, match="reward|weight"):
            load_reward(bad)
