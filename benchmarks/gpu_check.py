"""GPU check of the scheduler and the transformers backend (run where CUDA is available).

A seeded random Llama (no weights to download) with a word tokenizer, a deterministic Python
reward, and Best-of-N, Speculative Rejection and CARDS through the scheduler on the CPU (fp32),
CUDA fp32 and CUDA bf16. Prints, per run: wall time, rows busy, decode steps, torch.cuda.synchronize
calls made during decoding (the decode loop should make none), SR's rounds with the default budget
(the backend's KV capacity), and how many answers equal the CPU's.

    python benchmarks/gpu_check.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import word_tokenizer  # noqa: E402  (the test suite's tokenizer: no download)
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from secateurs.methods import get_method  # noqa: E402
from secateurs.policy import Policy  # noqa: E402
from secateurs.prompts import make_prompts  # noqa: E402
from secateurs.rewards import CallableReward  # noqa: E402
from secateurs.runner import run_prompts  # noqa: E402
from secateurs.scheduler import SchedulerStats  # noqa: E402

GOOD = set("good kind help thank calm happy tea water green".split())


def score(prompt: str, response: str) -> float:
    words = response.split()
    return sum(w in GOOD for w in words) / max(1, len(words)) + 0.01 * len(set(words))


def policy_on(device: str, dtype: torch.dtype) -> Policy:
    tok = word_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=512,
                         pad_token_id=0, bos_token_id=2, eos_token_id=3)
    model = LlamaForCausalLM(config).eval().to(device=device, dtype=dtype)
    return Policy(model, tok, name=f"tiny-{device}-{dtype}")


def main() -> None:
    reward = CallableReward(score, name="gpu-check")
    prompts = make_prompts([f"how do i make {w} tea with {v} water please" for w in GOOD for v in ("hot", "calm")])
    cases = [("best-of-n", {"n": 8, "max_new_tokens": 64}),
             ("speculative-rejection", {"n": 16, "max_new_tokens": 64}),
             ("cards", {"r_star": 0.3, "acceptance": "hard", "max_new_tokens": 64, "max_retries": 5})]
    calls = {"n": 0}
    original = torch.cuda.synchronize

    def counting(*a, **k):
        calls["n"] += 1
        return original(*a, **k)

    torch.cuda.synchronize = counting
    reference = {}
    print(f"{len(prompts)} prompts; {torch.cuda.get_device_name(0)}; torch {torch.__version__}")
    print(f"{'method':24s} {'device':18s} {'wall s':>7s} {'busy':>5s} {'steps':>6s} {'syncs':>6s} "
          f"{'SR rounds':>9s} {'same as cpu':>11s}")
    for device, dtype in (("cpu", torch.float32), ("cuda", torch.float32), ("cuda", torch.bfloat16)):
        policy = policy_on(device, dtype)
        for method, options in cases:
            config = get_method(method).config_class(**options)
            run_prompts(prompts[:1], method, config, policy, reward)  # warm-up
            stats = SchedulerStats()
            calls["n"] = 0
            start = time.perf_counter()
            results = run_prompts(prompts, method, config, policy, reward, stats=stats)
            wall = time.perf_counter() - start
            responses = [r.response for r in results]
            if device == "cpu":
                reference[method] = responses
            same = sum(a == b for a, b in zip(responses, reference[method]))
            rounds = (sum(r.details["rounds"] for r in results) / len(results)) if method == "speculative-rejection" else None
            print(f"{method:24s} {device + ' ' + str(dtype).split('.')[-1]:18s} {wall:7.1f} {stats.rows_busy:5.2f} "
                  f"{stats.steps:6d} {calls['n']:6d} {'' if rounds is None else f'{rounds:.1f}':>9s} "
                  f"{same:>5d}/{len(prompts)}", flush=True)


if __name__ == "__main__":
    main()
