"""Search methods against Best-of-N, Speculative Rejection and CARDS: mean reward against compute
(LM tokens fed, prefill included; tokens generated; RM calls) on AlpacaFarm prompts.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/search.py [--prompts 20] [--max-new-tokens 128] \
        [--n 8] [--step-tokens 16] [--methods "pf entropy,tree b2"] [--out-dir benchmarks/out/search]

The first --prompts prompts of ../shared/data/alpaca_farm_100.json, the default policy and reward,
seed 0, one max_new_tokens for every method, every search method with n rows per prompt. Each run
is written to out-dir/NAME.jsonl, so a killed benchmark resumes. The table is sorted by LM tokens:
a method is worth its compute if it sits above the Best-of-N line between the neighbouring N.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from statistics import mean

from common import MethodRuns


def methods(n: int, step: int) -> list[tuple[str, str, dict]]:
    return [
        ("best-of-1", "best-of-n", dict(n=1)),
        (f"best-of-{n // 2}", "best-of-n", dict(n=n // 2)),
        (f"best-of-{n}", "best-of-n", dict(n=n)),
        (f"best-of-{2 * n}", "best-of-n", dict(n=2 * n)),
        # first_decision_tokens 16 and r_star auto: the defaults when the README's figures were measured
        ("speculative rejection", "speculative-rejection", dict(n=n, first_decision_tokens=16)),
        ("cards", "cards", dict(r_star="auto")),
        ("pf entropy", "particle-filtering", dict(n=n)),
        (f"pf {step} tokens", "particle-filtering", dict(n=n, step=str(step))),
        (f"pf {step} tokens ess 0.5", "particle-filtering", dict(n=n, step=str(step), ess_threshold=0.5)),
        ("tree b2", "tree-search", dict(n=n, branching=2)),
        (f"beam {step} tokens", "beam-search", dict(n=n, beam_width=max(1, n // 2), step=str(step))),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--n", type=int, default=8, help="rows per prompt of the search methods (Best-of-N: n/2, n, 2n)")
    parser.add_argument("--step-tokens", type=int, default=16, help="the fixed step of the token-count variants")
    parser.add_argument("--methods", default=None, help="comma-separated names from the table (default: all)")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/out/search"))
    args = parser.parse_args()
    chosen = methods(args.n, args.step_tokens)
    if args.methods:
        wanted = [m.strip() for m in args.methods.split(",")]
        unknown = sorted(set(wanted) - {name for name, _, _ in chosen})
        if unknown:
            parser.error(f"unknown method name(s) {unknown}; choose from {[name for name, _, _ in chosen]}")
        chosen = [m for m in chosen if m[0] in wanted]
    runs = MethodRuns("alpaca_farm_100.json", args.prompts, args.max_new_tokens, args.out_dir)
    for name, method, options in chosen:
        runs.run(name, method, **options)
    rows = []
    for name, results in runs.runs.items():
        rows.append((mean(r.cost.lm_tokens for r in results), name, mean(r.reward for r in results),
                     mean(r.cost.tokens_generated for r in results), mean(r.cost.rm_calls for r in results),
                     mean(r.cost.seconds for r in results)))
    print(f"\n{args.prompts} AlpacaFarm prompts, default policy and reward, {args.max_new_tokens} tokens, "
          f"seed 0; per prompt means, sorted by LM tokens")
    print(f"{'method':24s} {'reward':>7s} {'LM tok':>8s} {'generated':>9s} {'RM calls':>8s} {'seconds':>8s}")
    for tokens, name, reward, generated, rm_calls, seconds in sorted(rows):
        print(f"{name:24s} {reward:7.3f} {tokens:8.0f} {generated:9.0f} {rm_calls:8.1f} {seconds:8.2f}")


if __name__ == "__main__":
    main()
