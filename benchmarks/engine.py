"""Decoding speed of the transformers backend against transformers' model.generate, and Best-of-N
prefill counts.

    .venv/bin/python benchmarks/engine.py [--new-tokens 64] [--repeats 3]

Both sides sample the same number of new tokens (EOS ignored) for the same prompts (left-padded
for generate), with temperature 1 and top-k 50, from the default policy. The engine side is the
backend the scheduler drives: prefill the prompts, start one sequence each, step the running ones
until every one has its tokens. Each measurement is taken `repeats` times, alternating engine and
generate, and the best time of each is kept (the machine is shared and noisy).
Throughput = batch * new tokens / seconds, prefill included on both sides.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import secateurs
from secateurs.backends.transformers import TransformersBackend
from secateurs.models import load_policy
from secateurs.policy import Policy
from secateurs.prompts import builtin_prompts, make_prompts
from secateurs.sampling import SamplingParams, prompt_key
from secateurs.scheduler import Request
from secateurs.sequence import RUNNING, Sequence

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "alpaca_farm_100.json"


def load_benchmark_prompts(count: int):
    if DATA.is_file():
        return make_prompts([d["prompt"] for d in json.loads(DATA.read_text())[:count]])
    return (builtin_prompts() * count)[:count]


def without_eos(policy: Policy) -> Policy:
    quiet = Policy(policy.model, policy.tokenizer, policy.name)
    quiet.stop_token_ids = frozenset()
    return quiet


def time_engine(policy, prompts, ids, new_tokens):
    requests = [Request(p, i, "best-of-n", None, 0, prompt_key(0, str(n))) for n, (p, i) in enumerate(zip(prompts, ids))]
    start = time.perf_counter()
    backend = TransformersBackend(policy)
    backend.prefill(requests)
    seqs = [Sequence(r, 0, r.key, SamplingParams(1.0, 50), new_tokens) for r in requests]
    backend.start(seqs)
    running = seqs
    while running:
        backend.step(running)
        running = [s for s in running if s.status == RUNNING]
    elapsed = time.perf_counter() - start
    assert all(s.length == new_tokens and s.finish_reason == "length" for s in seqs)
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
    quiet = without_eos(policy)
    for size in map(int, args.batches.split(",")):
        prompts = load_benchmark_prompts(size)
        ids = [policy.encode(p) for p in prompts]
        time_engine(quiet, prompts[:1], ids[:1], 4)  # warm-up
        time_generate(policy, ids[:1], 4)
        engine, generate = [], []
        for _ in range(args.repeats):
            engine.append(time_engine(quiet, prompts, ids, args.new_tokens))
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
