"""CARDS against its baselines, in one run: reward, time, LM and RM calls.

    .venv/bin/python benchmarks/cards.py [--prompts 20] [--max-new-tokens 64] \
        [--out-dir benchmarks/out/cards]

On the first HH-RLHF prompts (../shared/data/hh_rlhf_100.json, a set the CARDS paper uses), with
the default policy and reward, the same seed and max_new_tokens, runs: plain sampling (CARDS'
temperature 0.7, top-k 40), Best-of-N (N = 4, 8, 16), item-level rejection sampling, ARGS and
CARDS (soft, hard, and hard with 4 parallel proposals). r_star follows the paper's recipe, "a little above the average reward of a reference
method": mean + 0.5 std of the plain-sampling rewards of this run, shared by every prompt; CARDS
with r_star="auto" (per-prompt calibration, its cost counted) is reported too. Prints per-prompt
means and, for CARDS, the time saved against the baseline of nearest mean reward.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from statistics import mean

from common import MethodRuns


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/out/cards"))
    args = parser.parse_args()
    bench = MethodRuns("hh_rlhf_100.json", args.prompts, args.max_new_tokens, args.out_dir)
    prompts, policy, reward, run = bench.prompts, bench.policy, bench.reward, bench.run

    plain = run("sampling", "sampling", temperature=0.7, top_k=40)
    rewards = [r.reward for r in plain]
    r_star = statistics.fmean(rewards) + 0.5 * statistics.pstdev(rewards)
    for n in (4, 8, 16):
        run(f"best-of-{n}", "best-of-n", n=n, temperature=0.7, top_k=40)
    run("rejection-sampling", "rejection-sampling", r_star=r_star)
    run("args", "args")
    run("cards", "cards", r_star=r_star)
    run("cards hard", "cards", r_star=r_star, acceptance="hard")
    run("cards hard x4", "cards", r_star=r_star, acceptance="hard", proposals=4)
    run("cards auto r*", "cards")

    print(f"\n{len(prompts)} HH-RLHF prompts, policy {policy.name}, reward {reward.name}, "
          f"max_new_tokens {args.max_new_tokens}, seed 0, r_star {r_star:.3f} (mean + 0.5 std of sampling)")
    print(f"{'method':20s} {'reward':>7s} {'seconds':>8s} {'LM calls':>9s} {'LM tokens':>10s} {'RM calls':>9s} "
          f"{'segments':>9s} {'rejections':>11s}")
    rows = {}
    for name, results in bench.runs.items():
        row = dict(reward=mean(r.reward for r in results), seconds=mean(r.cost.seconds for r in results),
                   calls=mean(r.cost.lm_forward_calls for r in results), tokens=mean(r.cost.lm_tokens for r in results),
                   rm=mean(r.cost.rm_calls for r in results))
        rows[name] = row
        seg = rej = ""
        if name.startswith("cards"):
            seg = f"{mean(r.details['segments'] for r in results):.1f}"
            rej = f"{mean(sum(r.details['rejections_per_segment']) for r in results):.1f}"
        print(f"{name:20s} {row['reward']:7.3f} {row['seconds']:8.2f} {row['calls']:9.1f} {row['tokens']:10.0f} "
              f"{row['rm']:9.1f} {seg:>9s} {rej:>11s}")
    baselines = [n for n in rows if not n.startswith("cards")]
    for name in (n for n in rows if n.startswith("cards")):
        nearest = min(baselines, key=lambda b: abs(rows[b]["reward"] - rows[name]["reward"]))
        saved = 1 - rows[name]["seconds"] / rows[nearest]["seconds"]
        print(f"{name}: nearest-reward baseline {nearest} ({rows[nearest]['reward']:.3f} vs "
              f"{rows[name]['reward']:.3f}); time saved {100 * saved:.0f}%")


if __name__ == "__main__":
    main()
