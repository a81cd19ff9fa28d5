"""CARDS against Best-of-N (N = 1..16), rejection sampling and ARGS, in one run: reward against
seconds and against LM tokens, positions computed, and CARDS' speedup over the Best-of-N curve.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/cards.py [--quick] [--prompts 20] \
        [--max-new-tokens 64] [--rewards civility+sentiment,default] [--out-dir benchmarks/out/cards] \
        [--methods "cards paper hard r*,..."] [--max-batch-rows 64]

(--methods: only these rows of the table besides the Best-of-N curve; --max-batch-rows for every
method. With one row per prompt, CARDS keeps the batch busy only with more prompts than rows.)

(one torch thread: on a CPU shared with other jobs, more threads spin against each other.)

Prompts: the first prompts/2 of HH-RLHF and of AlpacaFarm (../shared/data), the default policy,
seed 0, one max_new_tokens for every method, each reward in --rewards in turn. Every method samples
at CARDS' temperature 0.7 with top-k 40 (ARGS: its own greedy search, k 40, w 1.5).

Methods:
- Best-of-N, run for N = 1, 4, 16. Sample j of a prompt draws the same tokens whatever N is,
  so Best-of-n's reward for every n <= 16 is the best of Best-of-16's first n candidates (checked
  against the measured runs); its seconds and LM tokens for n between measured N are interpolated
  linearly in n, per prompt.
- rejection sampling; ARGS on every 4th prompt only (it scores 40 candidates at every token: with the
  default reward that alone would take longer than everything else), its speedup measured against
  the Best-of-N curve on the same prompts;
- CARDS, paper setting (acceptance_scale literal: beta 0.7 in reward units): soft with r_star auto;
  soft and hard with r_star dataset (one r* calibrated on the first 8 prompts x 4 samples, its cost
  shared out over the prompts: secateurs.calibration);
  hard with the paper's fixed r_star (mean + 0.5 std of this run's Best-of-1 rewards, one number
  for all prompts, so no calibration samples), with 1 and 4 proposals; hard with 4 proposals and
  r_star auto (first reward only);
- CARDS, scale-aware (acceptance_scale spread: beta 0.7 reward stds), 4 proposals: hard without
  (first reward only) and with prefix_calibration (the measured partial-vs-final gap), soft with it.
r_star auto everywhere: mean + 0.5 std of 4 calibration samples per prompt, their LM and RM cost
(and the prefix scoring's RM calls) counted in the method's cost.

Speedup at equal reward: the Best-of-N seconds (or LM tokens) needed for the method's mean reward,
interpolated on the N = 1..16 curve (linear in log compute), over the method's own; 95% bootstrap
interval over prompts (1000 resamples). "above" / "below": the reward lies outside the curve, and
the figure is a bound. Positions computed (rows x columns of every forward, masked ones included)
are printed beside LM tokens for every method.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path
from statistics import mean

import numpy as np

import secateurs
from secateurs.bench.report import charged_costs
from secateurs.bench.stats import resample_indices, speedup
from secateurs.models import load_policy
from secateurs.prompts import make_prompts
from secateurs.rewards import load_reward

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
MEASURED_N = (1, 4, 16)
SAMPLING = dict(temperature=0.7, top_k=40)


def load_prompts(count: int):
    hh = json.loads((SHARED_DATA / "hh_rlhf_100.json").read_text())
    af = json.loads((SHARED_DATA / "alpaca_farm_100.json").read_text())
    half = count // 2
    return make_prompts([d["prompt"] for d in hh[:count - half]] + [d["prompt"] for d in af[:half]])


def methods(quick: bool, r_star: float, full: bool) -> list[tuple[str, str, dict]]:
    """r_star: the paper's fixed target for this reward, a little above plain sampling's mean.
    full: every variant (else the core ones: the rewards after the first, to keep the run short)."""
    auto = dict(r_star="auto")  # per-prompt calibration (CARDS' default is dataset: the rows that say so)
    out = [
        ("rejection sampling", "rejection-sampling", {}),
        ("args", "args", {}),
        ("cards paper soft", "cards", dict(auto)),
        ("cards paper soft dataset", "cards", dict(r_star="dataset")),
        ("cards paper hard r*", "cards", dict(acceptance="hard", r_star=r_star)),
        ("cards paper hard dataset", "cards", dict(acceptance="hard", r_star="dataset")),
        ("cards paper hard r* x4", "cards", dict(acceptance="hard", r_star=r_star, proposals=4)),
        ("cards paper hard x4", "cards", dict(auto, acceptance="hard", proposals=4)),
        ("cards spread hard x4", "cards", dict(auto, acceptance="hard", acceptance_scale="spread", proposals=4)),
        ("cards spread+prefix hard x4", "cards", dict(auto, acceptance="hard", acceptance_scale="spread",
                                                      prefix_calibration="on", proposals=4)),
        ("cards spread+prefix soft x4", "cards", dict(auto, acceptance_scale="spread", prefix_calibration="on",
                                                      proposals=4)),
    ]
    if quick or not full:
        out = [m for m in out if m[0] not in ("cards paper hard x4", "cards spread hard x4", "cards paper soft dataset",
                                              "cards paper hard dataset")]
    return out


ARGS_EVERY = 4  # ARGS runs on prompts 0, 4, 8, ...


def per_prompt(results, field):
    """Per prompt: the reward, or a cost including its share of an r_star dataset calibration (paid once)."""
    if field == "reward":
        return [r.reward for r in results]
    return [getattr(c, field) for c in charged_costs(results)]


def bon_curve(runs: dict, n_prompts: int) -> dict[int, dict[str, np.ndarray]]:
    """Best-of-n for n = 1..16, per prompt: reward (best of the first n candidates of Best-of-16),
    seconds and LM tokens (measured at MEASURED_N, linear in n between)."""
    full = runs["best-of-16"]
    cands = np.array([r.details["candidate_rewards"] for r in full])
    for n in MEASURED_N:  # the keyed draws make Best-of-n the first n candidates of Best-of-16
        got = np.array([r.reward for r in runs[f"best-of-{n}"]])
        assert np.array_equal(got, cands[:, :n].max(axis=1)), f"best-of-{n} is not a prefix of best-of-16"
    measured = {f: np.array([[getattr(r.cost, f) for r in runs[f"best-of-{n}"]] for n in MEASURED_N])
                for f in ("seconds", "lm_tokens", "lm_positions")}
    curve = {}
    for n in range(1, 17):
        curve[n] = {"reward": cands[:, :n].max(axis=1)}
        for f, m in measured.items():
            curve[n][f] = np.array([np.interp(n, MEASURED_N, m[:, p]) for p in range(n_prompts)])
    return curve


def report(reward_name: str, runs: dict, n_prompts: int, resamples: int) -> None:
    curve = bon_curve(runs, n_prompts)
    print(f"\nreward {reward_name}: per prompt means")
    print(f"{'method':26s} {'reward':>7s} {'seconds':>8s} {'LM tok':>7s} {'LM pos':>7s} {'pos/tok':>7s} "
          f"{'decode':>7s} {'RM calls':>8s} {'segs':>5s} {'rejects':>7s}   speedup vs BoN curve [95% CI]: seconds | LM tokens")
    print("(pos/tok: LM positions computed / LM tokens fed, prefill padding included; decode: the same for "
          "decoding alone)\nBest-of-n curve (n: reward seconds LM-tokens LM-positions):")
    print("  " + "  ".join(f"{n}: {c['reward'].mean():.3f} {c['seconds'].mean():.2f}s {c['lm_tokens'].mean():.0f} "
                           f"{c['lm_positions'].mean():.0f}" for n, c in curve.items()))
    for name, results in runs.items():
        rows = np.arange(0, n_prompts, ARGS_EVERY) if name == "args" else np.arange(n_prompts)
        cs = [{k: v[rows] for k, v in curve[n].items()} for n in curve]
        idx = resample_indices(len(rows), resamples, seed=0)
        reward = per_prompt(results, "reward")
        tok, pos = per_prompt(results, "lm_tokens"), per_prompt(results, "lm_positions")
        decode = sum(per_prompt(results, "lm_positions_decoded")) / max(1, sum(per_prompt(results, "lm_tokens_decoded")))
        seg = rej = ""
        if name.startswith("cards"):
            seg = f"{mean(r.details['segments'] for r in results):.1f}"
            rej = f"{mean(sum(r.details['rejections_per_segment']) for r in results):.1f}"
        elif name == "rejection sampling":
            rej = f"{mean(r.details['rejections'] for r in results):.1f}"
        line = (f"{name:26s} {mean(reward):7.3f} {mean(per_prompt(results, 'seconds')):8.2f} {mean(tok):7.0f} "
                f"{mean(pos):7.0f} {sum(pos) / sum(tok):7.3f} {decode:7.3f} {mean(per_prompt(results, 'rm_calls')):8.1f} "
                f"{seg:>5s} {rej:>7s}")
        if not name.startswith("best-of"):
            parts = []
            for f in ("seconds", "lm_tokens"):
                s = speedup([c[f] for c in cs], [c["reward"] for c in cs], per_prompt(results, f), reward, idx)
                bound = "" if s["bound"] == "interpolated" else f" ({s['bound']} the curve)"
                parts.append(f"{s['value']:5.2f}x [{s['ci_low']:.2f}, {s['ci_high']:.2f}]{bound}")
            line += "   " + " | ".join(parts) + (f"  ({len(rows)} prompts)" if len(rows) < n_prompts else "")
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="4 prompts, 24 tokens, fewer CARDS variants")
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--rewards", default="civility+sentiment,default",
                        help="comma-separated reward specs; the first gets every CARDS variant")
    parser.add_argument("--methods", default=None,
                        help="comma-separated method names of the table to run (e.g. 'cards paper hard r*'); "
                             "Best-of-N always runs (it is the curve)")
    parser.add_argument("--max-batch-rows", type=int, default=64)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/out/cards"))
    parser.add_argument("--resume", action="store_true", help="reuse finished results in --out-dir (their "
                                                               "timings are from the earlier run)")
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.max_new_tokens, args.resamples = 4, 24, 200
    wanted = [m.strip() for m in args.methods.split(",")] if args.methods else []
    known = [m[0] for m in methods(False, 0.0, full=True)]  # names do not depend on r_star
    if any(m not in known for m in wanted):  # before any model loads
        parser.error(f"unknown --methods {[m for m in wanted if m not in known]}; known: {known}")
    prompts = load_prompts(args.prompts)
    policy = load_policy()
    for k, spec in enumerate(args.rewards.split(",")):
        reward = load_reward(spec)
        common = dict(policy=policy, reward=reward, seed=0, max_new_tokens=args.max_new_tokens,
                      max_batch_rows=args.max_batch_rows)
        secateurs.align(prompts[:2], method="best-of-n", n=4, **{**common, "max_new_tokens": 8})  # warm-up
        out = args.out_dir / spec.replace("+", "_").replace("*", "x")
        if not args.resume:
            shutil.rmtree(out, ignore_errors=True)  # fresh timings: never resume from an earlier run
        out.mkdir(parents=True, exist_ok=True)
        runs = {}
        for n in MEASURED_N:
            runs[f"best-of-{n}"] = secateurs.align(prompts, method="best-of-n", n=n, **SAMPLING, **common,
                                                   out=out / f"best-of-{n}.jsonl")
            print(f"  {spec}: best-of-{n} done", flush=True)
        plain = [r.reward for r in runs["best-of-1"]]  # plain sampling at CARDS' temperature and top-k
        r_star = statistics.fmean(plain) + 0.5 * statistics.pstdev(plain)
        chosen = methods(args.quick, r_star, full=k == 0)
        if args.methods:
            chosen = [m for m in methods(False, r_star, full=True) if m[0] in wanted]
        for name, method, options in chosen:
            runs[name] = secateurs.align(prompts[::ARGS_EVERY] if name == "args" else prompts, method=method, out=out / f"{name.replace(' ', '_')}.jsonl",
                                         **common, **options)
            print(f"  {spec}: {name} done", flush=True)
        print(f"\n{len(prompts)} prompts ({args.prompts - args.prompts // 2} HH-RLHF + {args.prompts // 2} "
              f"AlpacaFarm), policy {policy.name}, max_new_tokens {args.max_new_tokens}, seed 0")
        print(f"cards paper hard r*: r_star {r_star:.3f} for every prompt (mean + 0.5 std of Best-of-1's rewards, "
              "the paper's recipe; that reference run's cost is not charged to it)")
        for name, results in runs.items():
            record = results[0].details.get("r_star_calibration")
            if record:
                c = record["cost"]
                print(f"{name}: r_star {record['r_star']:.3f} calibrated on {record['prompts']} prompts x "
                      f"{record['samples']} samples, once: {c['lm_tokens_prefilled'] + c['lm_tokens_decoded']} LM "
                      f"tokens, {c['seconds']:.1f} s (shared out over the prompts below)")
        report(reward.name, runs, len(prompts), args.resamples)


if __name__ == "__main__":
    main()
