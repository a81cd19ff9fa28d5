"""End to end on the real offline defaults: SmolLM2-135M-Instruct and the packaged reward."""

import math

import pytest

import secateurs
from secateurs.models import DEFAULT_POLICY, load_policy


@pytest.fixture(scope="module")
def policy():
    return load_policy()  # converts the packaged GGUF once, then loads the cached folder


def test_default_policy_loads_and_applies_its_chat_template(policy):
    assert policy.name == DEFAULT_POLICY
    ids = policy.encode(secateurs.Prompt("x", ({"role": "user", "content": "Hi there"},)))
    text = policy.tokenizer.decode(ids)
    assert text.endswith("<|im_start|>assistant\n") and "<|im_start|>user\nHi there<|im_end|>" in text
    assert 2 in policy.stop_token_ids  # <|im_end|>


def test_align_best_of_n_beats_or_ties_plain_sampling(policy):
    prompts = ["How do I make a good cup of green tea?",
               [{"role": "user", "content": "Give me one tip for sleeping better."}]]
    plain = secateurs.align(prompts, policy=policy, method="sampling", max_new_tokens=24)
    best = secateurs.align(prompts, policy=policy, method="best-of-n", n=4, max_new_tokens=24)
    for p, b in zip(plain, best):
        assert math.isfinite(b.reward) and b.response.strip()
        assert b.reward >= p.reward
        assert b.details["candidate_rewards"][0] == p.reward  # same seed, same first sample
        assert b.cost.lm_tokens_prefilled == p.cost.lm_tokens_prefilled  # prompt prefilled once for all 4
        assert b.cost.rm_calls == 4 and b.reward_model.startswith("default(")
    assert "tea" in best[0].response.lower() or "water" in best[0].response.lower()


def test_a_gguf_file_path_loads_through_the_same_cached_conversion(policy):
    import torch

    from secateurs.errors import SecateursError
    from secateurs.models import packaged_gguf

    path = packaged_gguf()
    by_path = load_policy(str(path))
    assert by_path.name == str(path)
    ids = torch.tensor([policy.encode(secateurs.Prompt("x", ({"role": "user", "content": "Hello"},)))])
    with torch.no_grad():
        torch.testing.assert_close(by_path.model(ids).logits, policy.model(ids).logits)
    with pytest.raises(SecateursError, match="GGUF file '/no/such.gguf' does not exist"):
        load_policy("/no/such.gguf")


def test_the_built_in_demo_compares_the_four_methods_side_by_side(tmp_path):
    import json

    from click.testing import CliRunner

    from secateurs.cli import DEMO_METHODS, cli

    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"d{i}", "prompt": t}) + "\n" for i, t in
                               enumerate(["How do I make a good cup of green tea?", "Name a calm colour."])))
    args = ["run", "--prompts", str(prompts), "--out", str(tmp_path / "out"), "--max-new-tokens", "8"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert list(DEMO_METHODS) == ["sampling", "best-of-n", "speculative-rejection", "cards"]
    for method in DEMO_METHODS:
        lines = (tmp_path / "out" / f"{method}.jsonl").read_text().splitlines()
        assert sorted(json.loads(x)["id"] for x in lines) == ["d0", "d1"]
        assert result.output.count(f"--- {method}: reward") == 2  # each prompt's answer, side by side
    summary = result.output[result.output.index("mean reward"):]
    assert "vs best-of-n" in summary and all(m in summary for m in DEMO_METHODS)
    assert json.loads((tmp_path / "out" / "best-of-n.jsonl").read_text().splitlines()[0])["config"]["n"] == 16
    again = CliRunner().invoke(cli, args)  # resumes: nothing recomputed
    assert again.exit_code == 0 and again.output.count("--- cards: reward") == 2
