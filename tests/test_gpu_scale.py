"""benchmarks/gpu_scale.py never rots: its --cpu-smoke mode runs every part on tiny shapes, and its floor
arithmetic and model shapes are checked against numbers computed independently."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_scale.py"


@pytest.fixture(scope="module")
def gpu_scale():
    spec = importlib.util.spec_from_file_location("gpu_scale", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_llama_8b_shape_is_the_published_one(gpu_scale):
    # Llama-3.1-8B has 8,030,261,248 parameters with its 128,256-token vocabulary
    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(vocab_size=128256, **gpu_scale.LLAMA_8B))
    assert sum(p.numel() for p in model.parameters()) == 8_030_261_248


def test_floor_is_weights_plus_kv_read_over_bandwidth(gpu_scale):
    # one KV token of Llama-3.1-8B in bf16: 2 (K and V) x 32 layers x 8 heads x 128 dims x 2 bytes
    per_token = 2 * 32 * 8 * 128 * 2
    assert per_token == 131072
    kv = gpu_scale.kv_bytes_read(64, 1024, per_token)
    assert kv == 64 * 1024 * 131072 == 8 * 2**30
    weights = 8_030_261_248 * 2
    assert gpu_scale.floor_seconds(weights, kv, 3.35e12) == pytest.approx((weights + 8 * 2**30) / 3.35e12)
    assert gpu_scale.floor_seconds(weights, kv, 3.35e12) == pytest.approx(7.358e-3, rel=1e-3)


def test_cpu_smoke_runs_every_part(gpu_scale, tmp_path, capsys):
    report = gpu_scale.main(["--cpu-smoke", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert json.loads((tmp_path / "gpu_scale.json").read_text())["decode"] == json.loads(
        json.dumps(report["decode"]))
    assert out.rstrip().splitlines()[-1].startswith("wrote ")  # the table comes last, then where it went
    bandwidth = report["copy_bandwidth_gb_s"] * 1e9
    assert bandwidth > 0
    assert report["kv_bytes_per_token"] == 2 * 2 * 2 * 16 * 4  # K and V, 2 layers, 2 KV heads, 16 dims, fp32
    assert [(e["rows"], e["context"]) for e in report["decode"]] == [(1, 16), (4, 16), (1, 32), (4, 32)]
    for e in report["decode"]:
        assert e["engine_ms"] > 0 and e["generate_ms"] > 0
        # the floor at the step's mean context: 2 untimed steps, then 3 timed ones (mean: 1 more token)
        kv = e["rows"] * (e["context"] + 2 + 1) * report["kv_bytes_per_token"]
        assert e["floor_ms"] == pytest.approx(1e3 * (report["policy_weight_bytes"] + kv) / bandwidth)
    runs = {m["label"]: m for m in report["methods"]}
    assert runs["best-of-n n=2"]["tokens_generated"] == 2 * 2 * 8  # 2 prompts x 2 samples x 8 tokens (no EOS)
    sr = runs["speculative-rejection B0 from memory"]
    assert sr["b0"] == [16, 16] and all(r >= 1 for r in sr["rounds"])  # B0 from memory, capped at the rows
    same = runs["best-of-n n=B0=16"]
    assert same["tokens_generated"] > sr["tokens_generated"]  # SR rejected some, Best-of-N ran all to the end
    assert "cards" in runs and runs["cards"]["rm_calls"] > 0
    pair = report["pair"]
    assert pair["run"]["rm_calls"] == 2 * 4 and 0 < pair["run"]["rm_share"] < 1
