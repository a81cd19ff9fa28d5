"""How well does the reward of a response's first t tokens predict the reward of the whole response?

    .venv/bin/python benchmarks/prefix_correlation.py [--prompts 32] [--samples 4] [--max-new-tokens 256] \
        [--rewards default,civility+sentiment] [--out-dir benchmarks/out/prefix-correlation]

Speculative Rejection (and CARDS' cascade) rest on it: a decision at t tokens keeps the candidates
whose partial responses score best, which is only as good as the rank correlation between the
partial and the final scores. Protocol: the first `--prompts` prompts of
../shared/data/alpaca_farm_100.json, `--samples` plain samples each from the packaged policy
(temperature 1, top-k 50: Best-of-N's sampling; sample j of prompt i is the prompt under id
"i/j", so the samples are independent), up to `--max-new-tokens`. Each response is re-tokenised
with the policy's tokenizer and, for t in 8, 16, 32, 64, 128, 256 below its length, its first t
tokens are scored as a partial response (the RM call Speculative Rejection makes at a decision
point). Per t and reward it prints the Spearman rank correlation of partial and final rewards:
pooled over all (prompt, sample) pairs longer than t, and within prompts (the ranking a decision
actually makes: the mean over prompts with >= 3 such samples of their Spearman rho), with the
number of pairs and prompts. Responses that end before t tokens do not count at t (their prefix
is the response).

The samples are written to --out-dir/samples.jsonl as they finish (a killed run resumes).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from statistics import fmean

from scipy.stats import spearmanr

import secateurs
from secateurs.models import load_policy
from secateurs.prompts import make_prompts
from secateurs.rewards import load_reward

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "alpaca_farm_100.json"
PREFIXES = (8, 16, 32, 64, 128, 256)


def sample(prompts: int, samples: int, max_new_tokens: int, out_dir: Path, policy) -> list:
    texts = [d["prompt"] for d in json.loads(DATA.read_text())[:prompts]]
    batch = make_prompts([{"id": f"{i}/{j}", "prompt": t} for i, t in enumerate(texts) for j in range(samples)])
    return secateurs.align(batch, policy=policy, reward="civility", method="sampling", seed=0,
                           max_new_tokens=max_new_tokens, max_batch_rows=min(len(batch), 128),
                           out=out_dir / "samples.jsonl", progress=True)


def rho(xs: list[float], ys: list[float]) -> float:
    value = spearmanr(xs, ys).statistic
    return float(value) if value == value else math.nan  # constant input: nan


def correlations(results, policy, spec: str) -> list[tuple]:
    reward = load_reward(spec)
    prompts = make_prompts([{"id": r.id, "prompt": r.prompt} for r in results])
    final = reward.score(prompts, [r.response for r in results])
    ids = [policy.tokenizer(r.response, add_special_tokens=False)["input_ids"] for r in results]
    rows = []
    for t in PREFIXES:
        which = [k for k, tokens in enumerate(ids) if len(tokens) > t]
        if len(which) < 3:
            rows.append((t, len(which), math.nan, 0, math.nan))
            continue
        partial = reward.score([prompts[k] for k in which],
                               [policy.tokenizer.decode(ids[k][:t], skip_special_tokens=True) for k in which],
                               partial=True)
        pooled = rho(partial, [final[k] for k in which])
        by_prompt: dict[str, list[tuple[float, float]]] = {}
        for k, p in zip(which, partial):
            by_prompt.setdefault(results[k].id.split("/")[0], []).append((p, final[k]))
        within = [rho([a for a, _ in pairs], [b for _, b in pairs]) for pairs in by_prompt.values() if len(pairs) >= 3]
        within = [w for w in within if not math.isnan(w)]
        rows.append((t, len(which), pooled, len(within), fmean(within) if within else math.nan))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--rewards", default="default,civility+sentiment")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/out/prefix-correlation"))
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    policy = load_policy()
    start = time.perf_counter()
    results = sample(args.prompts, args.samples, args.max_new_tokens, args.out_dir, policy)
    lengths = sorted(r.response_tokens for r in results)
    print(f"{len(results)} samples ({args.prompts} prompts x {args.samples}) in {time.perf_counter() - start:.0f} s; "
          f"response tokens: median {lengths[len(lengths) // 2]}, "
          f"{sum(n >= args.max_new_tokens for n in lengths)} at the limit of {args.max_new_tokens}")
    for spec in args.rewards.split(","):
        start = time.perf_counter()
        rows = correlations(results, policy, spec)
        print(f"\nreward {spec} ({time.perf_counter() - start:.0f} s): Spearman rho of r(first t tokens) vs r(response)")
        print(f"{'t':>5} {'pairs':>6} {'pooled':>8} {'prompts':>8} {'within':>8}")
        for t, pairs, pooled, n_prompts, within in rows:
            print(f"{t:5d} {pairs:6d} {pooled:8.3f} {n_prompts:8d} {within:8.3f}")


if __name__ == "__main__":
    main()
