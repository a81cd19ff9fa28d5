"""Speculative Rejection against Best-of-N, in one run: reward, improvement score, cost, speedup.

    .venv/bin/python benchmarks/speculative_rejection.py [--prompts 20] [--max-new-tokens 64] \
        [--out-dir benchmarks/out/speculative_rejection]

Runs Best-of-N for N = 1, 2, 4, ..., 64 and Speculative Rejection with B0 = 64 for alpha in
{0.3, 0.5, 0.7, 0.9} on the first prompts of AlpacaFarm (../shared/data/alpaca_farm_100.json, the
set the paper uses), with the default policy and reward, the same seed and max_new_tokens. Prints
per method: mean reward, the paper's improvement score against Best-of-64 (which scores 100),
wall seconds and LM tokens per prompt, RM calls per prompt, and the speedup: the compute
Best-of-N needs to reach the method's score (interpolated in log compute) divided by the method's
compute, in seconds and in LM tokens. Results are written to --out-dir as they finish, so a
killed benchmark resumes.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from statistics import mean

from common import MethodRuns

from secateurs.metrics import equivalent_compute, improvement_score


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--max-n", type=int, default=64)
    parser.add_argument("--alphas", default="0.3,0.5,0.7,0.9")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/out/speculative_rejection"))
    args = parser.parse_args()
    bench = MethodRuns("alpaca_farm_100.json", args.prompts, args.max_new_tokens, args.out_dir)
    prompts, policy, reward, run = bench.prompts, bench.policy, bench.reward, bench.run

    ns = [2**i for i in range(args.max_n.bit_length()) if 2**i <= args.max_n]
    for n in ns:
        run(f"best-of-{n}", "best-of-n", n=n)
    for alpha in map(float, args.alphas.split(",")):
        run(f"spec-rej a={alpha}", "speculative-rejection", n=args.max_n, alpha=alpha)

    reference = {r.id: r.details["candidate_rewards"] for r in bench.runs[f"best-of-{args.max_n}"]}

    def summary(results):
        return dict(
            reward=mean(r.reward for r in results),
            score=mean(improvement_score(r.reward, reference[r.id]) for r in results),
            seconds=mean(r.cost.seconds for r in results),  # per-prompt share of measured batch time
            tokens=mean(r.cost.lm_tokens for r in results),
            rm_calls=mean(r.cost.rm_calls for r in results),
        )

    rows = {name: summary(results) for name, results in bench.runs.items()}
    curve_s = [(rows[f"best-of-{n}"]["seconds"], rows[f"best-of-{n}"]["score"]) for n in ns]
    curve_t = [(rows[f"best-of-{n}"]["tokens"], rows[f"best-of-{n}"]["score"]) for n in ns]

    print(f"\n{len(prompts)} AlpacaFarm prompts, policy {policy.name}, reward {reward.name}, "
          f"max_new_tokens {args.max_new_tokens}, seed 0; per-prompt means")
    print(f"{'method':18s} {'reward':>7s} {'score':>6s} {'seconds':>8s} {'LM tokens':>10s} {'RM calls':>9s} "
          f"{'speedup(s)':>11s} {'speedup(tok)':>13s}")
    for name, row in rows.items():
        cells = ["(curve)", "(curve)"] if name.startswith("best-of") else []
        for curve, key in ((curve_s, "seconds"), (curve_t, "tokens")) if not cells else ():
            needed, how = equivalent_compute(curve, row["score"])
            mark = {"interpolated": "", "above": ">=", "below": "<="}[how]
            cells.append(f"{mark}{needed / row[key]:.2f}x")
        print(f"{name:18s} {row['reward']:7.3f} {row['score']:6.1f} {row['seconds']:8.2f} {row['tokens']:10.0f} "
              f"{row['rm_calls']:9.1f} {cells[0]:>11s} {cells[1]:>13s}")
    print("\nscore: improvement score vs Best-of-%d (100 = its best candidate, 0 = its worst). "
          "speedup: Best-of-N compute at equal score / method compute; '>=' where the method beats "
          "every Best-of-N (a lower bound)." % args.max_n)
    for name, row in rows.items():
        if name.startswith("spec-rej"):
            d = bench.runs[name][0].details
            print(f"{name}: first prompt's decision points {d['decision_points']}, survivors {d['survivors_per_round']}")


if __name__ == "__main__":
    main()
