"""A reward failing for one prompt fails that prompt only: the prompts that shared its batch and RM call
are answered as if alone (`run`, align(), and the server with concurrent requests)."""

import json
import math

import pytest

from cli_main import run_main
from secateurs.errors import RewardError
from secateurs.methods import BestOfNConfig
from secateurs.prompts import make_prompts
from secateurs.rewards import Reward
from secateurs.runner import PromptsFailed, run_prompts

PROMPTS = make_prompts([{"id": i, "prompt": t} for i, t in [("tea", "how do i make tea"), ("bad", "poison pill"),
                                                            ("sleep", "a good tip for sleep"), ("calm", "a calm night")]])


class Poisoned(Reward):
    """Scores by length; a batch holding the prompt 'poison pill' raises as a whole (`how='raise'`, as an RM
    call fails) or gets NaN for that prompt (`how='nan'`). Records the prompt ids of every call."""

    def __init__(self, how: str):
        self.how, self.name, self.calls = how, f"poisoned-{how}", []

    def _score(self, prompts, responses, partial):
        self.calls.append([p.id for p in prompts])
        poisoned = ["poison" in p.text for p in prompts]
        if self.how == "raise" and any(poisoned):
            raise ValueError("the RM choked on " + "; ".join(responses))
        return [math.nan if bad else float(len(r)) for bad, r in zip(poisoned, responses)], [1] * len(responses)


@pytest.mark.parametrize("how", ["raise", "nan"])
def test_run_answers_the_prompts_batched_with_a_failing_one_and_names_it(endless, how, tmp_path):
    reward = Poisoned(how)
    config = BestOfNConfig(n=2, max_new_tokens=4, max_batch_rows=8)  # all four prompts decode together
    out = tmp_path / "out.jsonl"
    with pytest.raises(PromptsFailed, match=r"prompt 'bad'.*the reward failed for 1 of 4 prompts \('bad'\); the "
                                            r"other 3 were answered") as caught:
        run_prompts(PROMPTS, "best-of-n", config, endless, reward, out=out)
    assert sorted(set(reward.calls[0])) == sorted(p.id for p in PROMPTS)  # one RM call for all four
    assert "\n" not in str(caught.value)
    assert list(caught.value.errors) == ["bad"]
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in written) == ["calm", "sleep", "tea"]
    assert [r.id for r in caught.value.results] == ["tea", "sleep", "calm"]
    for result in caught.value.results:  # the same answers as alone
        [alone] = run_prompts([p for p in PROMPTS if p.id == result.id], "best-of-n", config, endless, Poisoned(how))
        assert (result.response, result.details) == (alone.response, alone.details)
        assert result.cost.rm_calls == alone.cost.rm_calls  # the failed call is not counted
    # a rerun on the same output runs only the failed prompt (and fails it again)
    with pytest.raises(PromptsFailed, match="the reward failed for 1 of 4"):
        run_prompts(PROMPTS, "best-of-n", config, endless, Poisoned(how), out=out)


def test_the_cli_writes_the_others_and_exits_2_naming_the_failed_id(tiny_policy_folder, tmp_path, monkeypatch,
                                                                    capsys):
    (tmp_path / "poisoned_rm.py").write_text("def score(prompt, response):\n"
                                             "    if 'poison' in prompt:\n        raise ValueError('no')\n"
                                             "    return float(len(response))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"id": p.id, "prompt": p.text}) + "\n" for p in PROMPTS))
    out = tmp_path / "o.jsonl"
    code, err = run_main(monkeypatch, capsys, "run", "--policy", tiny_policy_folder, "--prompts", prompts,
                         "--method", "best-of-n", "--n", "2", "--max-new-tokens", "4", "--quiet",
                         "--reward", "py:poisoned_rm:score", "--out", out)
    assert code == 2
    assert err.strip().splitlines() == [
        "error: reward 'py:poisoned_rm:score' failed on prompt 'bad': ValueError: no; the reward failed for 1 of 4 "
        "prompts ('bad'); the other 3 were answered"]
    assert sorted(json.loads(line)["id"] for line in out.read_text().splitlines()) == ["calm", "sleep", "tea"]


def test_a_reward_failing_in_a_methods_own_call_fails_that_prompt_only(endless):
    # CARDS scores r(x), the empty response, through its own RM call: the failure stays with the prompt.
    from secateurs.methods.cards import CardsConfig

    with pytest.raises(PromptsFailed, match=r"the reward failed for 1 of 4 prompts \('bad'\)") as caught:
        run_prompts(PROMPTS, "cards", CardsConfig(r_star=0.0, max_new_tokens=6, max_retries=2), endless,
                    Poisoned("raise"))
    assert isinstance(caught.value.errors["bad"], RewardError)
    assert [r.id for r in caught.value.results] == ["tea", "sleep", "calm"]
