"""Bad input is one clear line naming the bad value: prompts, rewards (specs, functions, models),
sampling settings; and rewards that differ are never taken for one another."""

import functools
import math

import pytest

import secateurs
from secateurs.api import resolve_prompts
from secateurs.errors import RewardError, SecateursError
from secateurs.methods import get_method
from secateurs.prompts import load_prompts, make_prompt
from secateurs.rewards import CallableReward, HFReward, Reward, WeightedSum, callable_name, load_reward
from secateurs.rewards.hf import looks_like_path
from secateurs.sampling import SamplingParams

P = [make_prompt("how do i make tea", "tea"), make_prompt("give me a tip for sleep", "sleep")]
R = ["heat the water", "go to bed early"]


# --- prompts ---------------------------------------------------------------------------------------

def test_non_utf8_prompt_file_is_named(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_bytes(b'{"prompt": "fine"}\n' + '{"prompt": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(SecateursError, match=r"is not UTF-8 text \(line 2") as err:
        load_prompts(path)
    assert str(path) in str(err.value)
    with pytest.raises(SecateursError, match="is not UTF-8 text"):
        resolve_prompts(str(path))


@pytest.mark.parametrize("name", ["missing.jsonl", "data/missing.json", "./missing.parquet", "~/no/x.csv",
                                  "/no/such/prompts.arrow"])
def test_a_missing_prompt_file_is_not_answered_as_a_prompt(name):
    with pytest.raises(SecateursError, match="prompt file not found") as err:
        secateurs.align(name, n=2)  # fails before any model loads
    assert name.lstrip("./~") in str(err.value) or name in str(err.value)


def test_strings_that_mention_a_file_are_still_prompts(tmp_path):
    assert resolve_prompts("Explain what data.json holds")[0].text == "Explain what data.json holds"
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "x", "prompt": "how do i make tea"}\n')
    assert [p.id for p in resolve_prompts(str(path))] == ["x"]


def test_unsupported_prompt_file_types_are_named(tmp_path):
    path = tmp_path / "prompts.parquet"
    path.write_bytes(b"PAR1\x00\x15")  # a corrupt Parquet file: named, with the reader's reason
    with pytest.raises(SecateursError, match=r"cannot read prompt file .*prompts\.parquet' as parquet"):
        resolve_prompts(str(path))


def test_a_single_dict_is_one_prompt():
    prompts = resolve_prompts({"prompt": "how do i make tea", "id": "t"})
    assert [(p.id, p.text) for p in prompts] == [("t", "how do i make tea")]
    prompts = resolve_prompts({"messages": [{"role": "user", "content": "hi there"}]})
    assert len(prompts) == 1 and prompts[0].text == "hi there"
    with pytest.raises(SecateursError, match="got int"):
        resolve_prompts(42)


def test_align_answers_a_single_dict_prompt(tiny_policy):
    [r] = secateurs.align({"prompt": "how do i make tea", "id": "t"}, policy=tiny_policy, reward="sentiment",
                          method="sampling", max_new_tokens=3)
    assert r.id == "t" and r.prompt == "how do i make tea"


# --- reward identity ---------------------------------------------------------------------------------

def make_scaled(k):
    return lambda prompt, response: k * len(response)


def test_different_functions_never_share_a_reward_name():
    first, second = (lambda p, r: len(r)), (lambda p, r: -len(r))
    assert first.__qualname__ == second.__qualname__
    names = {load_reward(f).name for f in (first, second, make_scaled(1), make_scaled(2),
                                            functools.partial(max, 1), functools.partial(max, 2))}
    assert len(names) == 6
    assert callable_name(make_scaled(3)) == callable_name(make_scaled(3))  # same code, same closure
    assert "test_bad_input:make_scaled.<locals>.<lambda>#" in callable_name(make_scaled(3))


def test_a_closure_over_an_object_is_named_per_object_and_process():
    class Model:
        pass

    def wrap(model):
        return lambda p, r: float(model is not None)

    a, b = Model(), Model()
    assert callable_name(wrap(a)) != callable_name(wrap(b))
    assert callable_name(wrap(a)).endswith("@process")


def test_weights_that_differ_give_different_names():
    length = CallableReward(lambda p, r: len(r), name="length")
    assert WeightedSum([(0.1234567, length)]).name != WeightedSum([(0.1234568, length)]).name
    assert WeightedSum([(0.5, length)]).name == "0.5*length"


def test_a_reward_class_without_a_name_is_named_after_its_class():
    class Constant(Reward):
        def _score(self, prompts, responses, partial):
            return [1.0] * len(responses), [1] * len(responses)

    assert Constant().name.endswith("test_bad_input:test_a_reward_class_without_a_name_is_named_after_its_class."
                                    "<locals>.Constant")


def test_align_with_two_lambdas_on_one_output_never_returns_the_first_rewards(tiny_policy, tmp_path):
    out = tmp_path / "out.jsonl"
    options = dict(policy=tiny_policy, method="sampling", max_new_tokens=3, out=out)
    [first] = secateurs.align(["how do i make tea"], reward=lambda p, r: 1.0, **options)
    assert first.reward == 1.0
    try:
        [second] = secateurs.align(["how do i make tea"], reward=lambda p, r: 2.0, **options)
    except SecateursError as e:
        assert "different configuration" in str(e)
    else:
        assert second.reward == 2.0


# --- reward specs -----------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["hf:/no/such/folder", "hf:./nope", "hf:~/no/such/rm", "./no/such/rm",
                                  "hf:a/b/c", "relevance+0.5*hf:/no/such/folder"])
def test_a_reward_path_that_does_not_exist_is_folder_not_found(spec):
    with pytest.raises(SecateursError, match="reward model folder not found: '") as err:
        load_reward(spec)
    assert "Repo id" not in str(err.value) and "\n" not in str(err.value)


def test_hub_ids_are_not_taken_for_paths():
    assert not looks_like_path("Skywork/Skywork-Reward-Llama-3.1-8B-v0.2")
    assert not looks_like_path("distilbert-base-uncased")
    assert looks_like_path("/models/rm") and looks_like_path("~/rm") and looks_like_path("models/rm/v2")


def test_an_existing_file_is_not_a_reward_model_folder(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"x")
    with pytest.raises(SecateursError, match="is a file, not a model folder"):
        load_reward(f"hf:{path}")


@pytest.mark.parametrize("spec, term", [("relevance+", "relevance+"), ("+civility", "+civility"),
                                        ("relevance+0.5*", "relevance+0.5*"), ("relevance++civility", None)])
def test_an_empty_term_in_a_reward_spec_is_refused(spec, term):
    with pytest.raises(SecateursError, match=r"empty term in reward spec") as err:
        load_reward(spec)
    assert repr(term or spec) in str(err.value)


@pytest.mark.parametrize("weight", ["nan", "inf", "-inf"])
def test_a_non_finite_weight_is_refused(weight):
    with pytest.raises(SecateursError, match=f"bad weight '{weight}'"):
        load_reward(f"{weight}*sentiment")


# --- what rewards return -------------------------------------------------------------------------------

@pytest.mark.parametrize("value, shown", [("1.5", r"'1\.5' \(a str\)"), ([1.0], r"\[1.0\] \(a list\)"),
                                          (None, r"None \(a NoneType\)")])
def test_a_reward_returning_a_non_number_names_reward_and_prompt(value, shown):
    reward = CallableReward(lambda p, r: value if p.startswith("give") else 1.0, name="picky")
    with pytest.raises(RewardError, match=rf"reward 'picky' returned {shown} for prompt 'sleep'"):
        reward.score(P, R)


def test_numpy_and_torch_scalars_are_numbers():
    import numpy as np
    import torch

    assert CallableReward(lambda p, r: np.float32(0.5)).score(P, R) == [0.5, 0.5]
    assert CallableReward(lambda p, r: torch.tensor(0.25)).score(P, R) == [0.25, 0.25]
    assert CallableReward(lambda ps, rs: torch.tensor([1.0, 2.0]), batched=True).score(P, R) == [1.0, 2.0]


@pytest.mark.parametrize("fn, message", [
    (lambda ps, rs: [1.0], r"returned 1 scores for 2 responses \(prompts 'tea', 'sleep'\)"),
    (lambda ps, rs: None, r"returned None \(a NoneType\) for prompts 'tea', 'sleep'"),
    (lambda ps, rs: "12", r"returned '12' \(a str\)"),
    (lambda ps, rs: 1 / 0, r"failed on prompts 'tea', 'sleep': ZeroDivisionError"),
])
def test_a_batched_reward_returning_the_wrong_thing_is_named(fn, message):
    with pytest.raises(RewardError, match="reward 'batch' " + message):
        CallableReward(fn, name="batch", batched=True).score(P, R)


def test_a_reward_function_that_raises_names_reward_and_prompt():
    def strict(prompt, response):
        if "bed" in response:
            raise KeyError("no bed here")
        return 1.0

    with pytest.raises(RewardError, match=r"reward 'py:test_bad_input:.*strict#\w+' failed on prompt 'sleep': "
                                          r"KeyError: 'no bed here'"):
        load_reward(strict).score(P, R)
    with pytest.raises(RewardError, match=r"reward 'fails' failed on prompt 'sleep'"):
        WeightedSum([(1.0, load_reward("sentiment")), (2.0, CallableReward(strict, name="fails"))]).score(P, R)


def test_a_failing_hf_reward_model_names_itself_and_the_prompts(tiny_rm_folder):
    rm = HFReward(tiny_rm_folder)
    rm.label_index = 3  # the tiny RM has one output: the forward pass fails indexing its logits
    with pytest.raises(RewardError, match=rf"reward 'hf:{tiny_rm_folder}' failed on prompts 'tea', 'sleep': "
                                          "IndexError"):
        rm.score(P, R)


# --- sampling settings ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    ({"temperature": math.inf}, "temperature must be a finite number >= 0, got inf"),
    ({"temperature": math.nan}, "temperature must be a finite number >= 0, got nan"),
    ({"temperature": "hot"}, "temperature must be a finite number >= 0, got 'hot'"),
    ({"top_p": math.nan}, r"top_p must be in \(0, 1\], got nan"),
    ({"top_p": math.inf}, r"top_p must be in \(0, 1\], got inf"),
    ({"top_k": True}, "top_k must be an integer >= 0, got True"),
])
def test_sampling_params_must_be_finite(kwargs, message):
    with pytest.raises(SecateursError, match=message):
        SamplingParams(**kwargs)
    with pytest.raises(SecateursError, match=message):  # as every method's options are checked
        get_method("best-of-n").config_class.from_options(kwargs)


# --- issue 20: align()'s arguments, numpy numbers, seeds -----------------------------------------------

@pytest.mark.parametrize("argument, shown", [("policy", "policy must be None, a model id"),
                                              ("out", "out must be None or a JSONL file path"),
                                              ("backend", "backend must be None, 'transformers', 'vllm'")])
def test_align_arguments_of_the_wrong_kind_are_one_line(argument, shown):
    with pytest.raises(SecateursError, match=f"^{shown}.*; got int 42$"):
        secateurs.align("hi", reward="sentiment", method="sampling", **{argument: 42})


def test_numpy_integers_are_integers(tiny_policy):
    np = pytest.importorskip("numpy")
    plain = secateurs.align("how do i make tea", policy=tiny_policy, reward="sentiment", method="best-of-n",
                            max_new_tokens=4, n=2, temperature=0.5, seed=3)
    numpy = secateurs.align("how do i make tea", policy=tiny_policy, reward="sentiment", method="best-of-n",
                            max_new_tokens=np.int64(4), n=np.int32(2), temperature=np.float32(0.5), seed=np.int64(3))
    assert numpy[0].response == plain[0].response and numpy[0].config == plain[0].config
    assert type(numpy[0].config["max_new_tokens"]) is int and type(numpy[0].seed) is int
    with pytest.raises(SecateursError, match=r"^max_new_tokens must be an integer >= 1, got 0$"):
        secateurs.align("hi", policy=tiny_policy, method="sampling", max_new_tokens=np.int64(0))


@pytest.mark.parametrize("seed", ["abc", None, 1.5, 1.0, True, "1"])
def test_seeds_that_are_not_integers_are_refused(seed):
    with pytest.raises(SecateursError, match=r"^seed must be an integer, got "):
        secateurs.align("hi", reward="sentiment", method="sampling", seed=seed)


def test_speculative_rejection_no_decision_advice_changes_the_outcome(tiny_policy, caplog):
    # n given, no budget: the budget is n x (P + first_decision_tokens), so raising n changes nothing
    def run(**options):
        return secateurs.align("how do i make tea", policy=tiny_policy, reward="sentiment",
                               method="speculative-rejection", max_new_tokens=10, **options)[0]

    with caplog.at_level("WARNING"):
        assert run(n=4).details["rounds"] == 0
    [warning] = [r.getMessage() for r in caplog.records if "no decision point" in r.getMessage()]
    assert "raise n" not in warning and "first_decision_tokens (--first-decision-tokens) below max_new_tokens, e.g. 5" in warning
    assert run(n=8).details["rounds"] == 0  # the old advice: no decision still
    assert run(n=4, first_decision_tokens=5).details["rounds"] > 0  # the new one: a decision
