"""Speculative Rejection against Best-of-N by the paper's protocol, scaled to this machine.

    .venv/bin/python benchmarks/speculative_rejection.py [--prompts 5] [--max-new-tokens 512] \
        [--bon-fits 2] [--alphas 0.5,0.9] [--quick] [--out-dir benchmarks/out/sr-paper]

The protocol (Sun et al. 2024, section 5), scaled down:
- One KV budget M (tokens) for every prompt, sized so that a full-length Best-of-`bon_fits` batch
  fills it: M = bon_fits x (longest prompt + max_new_tokens). In the paper M is one GPU's memory,
  which holds Best-of-120 at full length.
- Speculative Rejection with that budget and B0 by the authors' rule (n not given):
  B0 = min(M // (P + 8), 1000) per prompt; the decisions fall where M fills.
- Best-of-N for N = 1, 2, 4, ... up to the largest B0, from ONE real Best-of-B0max run: sample j
  is keyed by (seed, prompt, j) whatever N is, so Best-of-N is exactly the best of samples
  0..N-1 (its reward, its tokens, its decode steps). Speculative Rejection's candidate j is the
  same sample j, cut short by the decisions.
- Quality: the paper's improvement score, 100 * (1 + (r - max r_ref) / (max r_ref - min r_ref)),
  with two references: the paper's (Best-of-bon_fits, the largest Best-of-N that fits M, as
  Best-of-120 fits a GPU) and ours (Best-of-B0max, the largest Best-of-N run), whose best scores 100.
- Costs, each located on the Best-of-N curve at equal score (linear in log cost) and divided by
  the method's own cost; past the largest Best-of-N the speedup is a bound ('>='), not extrapolated:
  1. LM tokens (prefill + decoded), beside the analytic ceiling in tokens
     R(L) = L / (t1 + alpha (P + t1) log_{1/(1-alpha)}((P + L) / (P + t1))) (t1 the first decision,
     from the mean prompt length and first decision of the run);
  2. modelled device-time, the paper's accounting: a decode step costs one device-step whatever
     its rows (a memory-bound GPU), a batch needing more than M tokens runs on N (P + L) / M
     devices in parallel. Best-of-N: (its decode steps) x max(1, N (P + L) / M); Speculative
     Rejection: its decode steps on one device (it never needs more than M). RM time is not
     modelled (the paper's GPU-seconds include it).
- `--quick`: 2 prompts, 64 tokens, bon_fits 2: checks the script end to end in a minute or two.

Results are written to --out-dir as they finish, so a killed benchmark resumes.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from statistics import mean

from common import MethodRuns

from secateurs.methods.speculative_rejection import MIN_SEGMENT_TOKENS, authors_b0
from secateurs.metrics import equivalent_compute, improvement_score


def ceiling(length: float, t1: float, prompt: float, alpha: float) -> float:
    """R(L): Best-of-B0's LM tokens over Speculative Rejection's with the same B0, decisions where M fills."""
    if t1 >= length:
        return 1.0
    rounds = math.log((prompt + length) / (prompt + t1)) / math.log(1 / (1 - alpha))
    return length / (t1 + alpha * (prompt + t1) * rounds)


def speedup(curve, score: float, own: float) -> str:
    needed, how = equivalent_compute(curve, score)
    mark = {"interpolated": "", "above": ">=", "below": "<="}[how]
    return f"{mark}{needed / own:.2f}x"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--bon-fits", type=int, default=2,
                        help="the Best-of-N whose full-length batch fills the KV budget M (the paper: 120)")
    parser.add_argument("--alphas", default="0.5,0.9")
    parser.add_argument("--quick", action="store_true", help="2 prompts, 64 tokens, bon_fits 2")
    parser.add_argument("--out-dir", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.max_new_tokens, args.bon_fits = 2, 64, 2
    L = args.max_new_tokens
    out_dir = args.out_dir or Path(f"benchmarks/out/sr-paper-{args.prompts}p-{L}t-{args.bon_fits}f")
    bench = MethodRuns("alpaca_farm_100.json", args.prompts, L, out_dir)
    prompts, policy, reward = bench.prompts, bench.policy, bench.reward
    plen = {p.id: len(policy.encode(p)) for p in prompts}
    budget = args.bon_fits * (max(plen.values()) + L)
    b0 = {pid: authors_b0(budget, n) for pid, n in plen.items()}
    b0max = max(b0.values())

    # One Best-of-B0max run gives every Best-of-N (N <= B0max) exactly.
    [draws] = [bench.run(f"best-of-{b0max}", "best-of-n", n=b0max, max_batch_rows=b0max)]
    ns = sorted({2**i for i in range(b0max.bit_length()) if 2**i <= b0max} | {args.bon_fits, b0max})

    def best_of(result, n: int) -> dict:
        rewards, lengths = result.details["candidate_rewards"][:n], result.details["candidate_lengths"][:n]
        p = plen[result.id]
        steps = max(lengths)
        return dict(reward=max(rewards), tokens=p + sum(lengths),
                    device=steps * max(1.0, n * (p + L) / budget))

    alphas = [float(a) for a in args.alphas.split(",")]
    sr = {a: bench.run(f"sr-a{a}-M{budget}", "speculative-rejection", alpha=a, kv_budget_tokens=budget,
                       max_batch_rows=b0max) for a in alphas}

    refs = {"paper": args.bon_fits, "ours": b0max}
    reference = {name: {r.id: r.details["candidate_rewards"][:n] for r in draws} for name, n in refs.items()}

    def scores(pid: str, r: float) -> dict:
        return {name: improvement_score(r, reference[name][pid]) for name in refs}

    rows = {}
    for n in ns:
        per = [best_of(r, n) | {"id": r.id} for r in draws]
        rows[f"Best-of-{n}"] = dict(
            reward=mean(x["reward"] for x in per), tokens=mean(x["tokens"] for x in per),
            device=mean(x["device"] for x in per),
            **{f"score_{k}": mean(scores(x["id"], x["reward"])[k] for x in per) for k in refs})
    for a, results in sr.items():
        rows[f"SpecRej a={a}"] = dict(
            reward=mean(r.reward for r in results), tokens=mean(r.cost.lm_tokens for r in results),
            device=mean(r.cost.lm_forward_calls for r in results),
            **{f"score_{k}": mean(scores(r.id, r.reward)[k] for r in results) for k in refs})
        draw = {r.id: r for r in draws}
        for r in results:  # SR's answer is complete, so it is Best-of-N's sample best_index exactly
            assert r.details["b0"] == b0[r.id], (r.details["b0"], b0[r.id])
            same = draw[r.id].details["candidate_rewards"][r.details["best_index"]]
            assert abs(r.reward - same) <= 1e-6, (r.id, r.reward, same)  # 1e-6: draws scored before the RM fix

    print(f"\n{len(prompts)} AlpacaFarm prompts (P = {sorted(plen.values())} tokens), policy {policy.name}, "
          f"reward {reward.name}, max_new_tokens L = {L}, seed 0")
    print(f"KV budget M = {args.bon_fits} x (longest prompt {max(plen.values())} + {L}) = {budget} tokens; "
          f"B0 by the authors' rule min(M // (P + {MIN_SEGMENT_TOKENS}), 1000) = {sorted(set(b0.values()))}; "
          f"Best-of-N replayed from one Best-of-{b0max} run")
    mean_p = mean(plen.values())
    for ref, n in refs.items():
        print(f"\nimprovement score vs Best-of-{n} ({ref} reference: "
              f"{'the largest Best-of-N that fits M, as Best-of-120 in the paper' if ref == 'paper' else 'the largest Best-of-N run'})")
        key = f"score_{ref}"
        curve_t = [(rows[f"Best-of-{m}"]["tokens"], rows[f"Best-of-{m}"][key]) for m in ns]
        curve_d = [(rows[f"Best-of-{m}"]["device"], rows[f"Best-of-{m}"][key]) for m in ns]
        print(f"{'method':16s} {'reward':>7s} {'score':>7s} {'LM tokens':>10s} {'device-steps':>13s} "
              f"{'speedup(tok)':>13s} {'R(L)':>6s} {'of R(L)':>8s} {'speedup(device)':>16s}")
        for name, row in rows.items():
            cells = ["(curve)", "", "", "(curve)"]
            if name.startswith("SpecRej"):
                a = float(name.split("=")[1])
                t1 = mean(r.details["decision_points"][0] if r.details["decision_points"] else L for r in sr[a])
                bound = ceiling(L, t1, mean_p, a)
                tok = speedup(curve_t, row[key], row["tokens"])
                cells = [tok, f"{bound:.2f}x", f"{float(tok.lstrip('>=<').rstrip('x')) / bound:.0%}",
                         speedup(curve_d, row[key], row["device"])]
            print(f"{name:16s} {row['reward']:7.3f} {row[key]:7.1f} {row['tokens']:10.0f} {row['device']:13.0f} "
                  f"{cells[0]:>13s} {cells[1]:>6s} {cells[2]:>8s} {cells[3]:>16s}")
    print("\nspeedup: Best-of-N's cost at the method's score / the method's cost; '>=' where the method "
          f"beats Best-of-{b0max} (a bound, not an extrapolation). device-steps: decode steps x devices, "
          "Best-of-N on max(1, N (P + L) / M) devices.")
    for a, results in sr.items():
        d = results[0].details
        print(f"SpecRej a={a}, first prompt: B0 {d['b0']}, budget {d['kv_budget_tokens']} ({d['budget_source']}), "
              f"decisions at {d['decision_points']}, survivors {d['survivors_per_round']}; "
              f"mean decisions per prompt {mean(r.details['rounds'] for r in results):.1f}")


if __name__ == "__main__":
    main()
