"""Rollout engine speed against transformers' model.generate, and Best-of-N prefill counts.

    .venv/bin/python benchmarks/engine.py [--new-tokens 64] [--repeats 3]

Both sides sample the same number of new tokens (EOS ignored) for the same left-padded prompts,
with temperature 1 and top-k 50, from the default policy. Each measurement is taken `repeats`
times, alternating engine and generate, and the best time of each is kept (the machine is shared
and noisy). Throughput = batch * new tokens / seconds, prefill included on both sides.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import secateurs
from secateurs.engine import RolloutBatch
from secateurs.models import load_policy
from secateurs.prompts import builtin_prompts, make_prompts
from secateurs.sampling import SamplingParams, prompt_key

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "alpaca_farm_100.json"


def load_benchmark_prompts(count: int):
    if DATA.is_file():
        return make_prompts([d["prompt"] for d in json.loads(DATA.read_text())[:count]])
    return (builtin_prompts() * count)[:count]


def time_engine(policy, ids, new_tokens):
    start = time.perf_counter()
    batch = RolloutBatch.prefill(policy, ids, [prompt_key(0, str(i)) for i in range(len(ids))],
                                 SamplingParams(1.0, 50), new_tokens, stop_at_eos=False)
    batch.extend(new_tokens)
    elapsed = time.perf_counter() - start
    assert all(n == new_tokens for n in batch.response_lengths().tolist())
    return elapsed


@torch.no_grad()
def time_generate(policy, ids, new_tokens):
    width = max(map(len, ids))
    input_ids = torch.tensor([[policy.pad_token_id] * (width - len(i)) + i for i in ids])
    mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids])
    start = time.perf_counter()
    out = policy.model.generate(input_ids=input_ids, attention_mask=mask, do_sample=True, temperature=1.0,
                                top_k=50, top_p=1.0, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                pad_token_id=policy.pad_token_id)
    elapsed = time.perf_counter() - start
    assert out.shape[1] == width + new_tokens
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", default="1,8,32")
    args = parser.parse_args()
    torch.manual_seed(0)
    load_policy()  # converts the packaged GGUF if this machine has not yet
    start = time.perf_counter()
    policy = load_policy()
    print(f"default policy load from the converted cache: {time.perf_counter() - start:.2f} s")
    print(f"policy {policy.name} on {policy.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.new_tokens} new tokens, best of {args.repeats}")
    print(f"{'batch':>5s} {'engine tok/s':>13s} {'generate tok/s':>15s} {'ratio':>6s}")
    for size in map(int, args.batches.split(",")):
        ids = [policy.encode(p) for p in load_benchmark_prompts(size)]
        time_engine(policy, ids[:1], 4)  # warm-up
        time_generate(policy, ids[:1], 4)
        engine, generate = [], []
        for _ in range(args.repeats):
            engine.append(time_engine(policy, ids, args.new_tokens))
            generate.append(time_generate(policy, ids, args.new_tokens))
        e, g = size * args.new_tokens / min(engine), size * args.new_tokens / min(generate)
        print(f"{size:5d} {e:13.1f} {g:15.1f} {e / g:6.2f}")

    print("\nBest-of-N prefill: prompt tokens run through the LM (one prompt, 16 new tokens)")
    print(f"{'N':>4s} {'prefilled':>10s} {'decoded':>8s} {'LM calls':>9s}")
    prompt = load_benchmark_prompts(1)
    for n in (1, 4, 16):
        [r] = secateurs.align(prompt, policy=policy, reward="civility", method="best-of-n", n=n, max_new_tokens=16)
        print(f"{n:4d} {r.cost.lm_tokens_prefilled:10d} {r.cost.lm_tokens_decoded:8d} {r.cost.lm_forward_calls:9d}")


if __name__ == "__main__":
    main()
