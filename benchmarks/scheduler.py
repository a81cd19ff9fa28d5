"""Rows kept busy and wall time: this version's scheduler against version 0.1.0, side by side.

Checks 0.1.0 out next to this tree (a git worktree in benchmarks/out/v0.1.0), then runs the same
prompts with each version in its own process, one after the other, on the default packaged policy
and reward: Best-of-N (n=8), Speculative Rejection (n=16) and CARDS. For each it prints the wall
time, the fraction of max_batch_rows that drew a token per decode step ("rows busy"), the exact
token counts, and whether the two versions gave the same answers.

    .venv/bin/python benchmarks/scheduler.py [--prompts 32] [--max-new-tokens 64] [--max-batch-rows 64]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
V010 = "529ca3ac2763a9dcab0df93d0774eb82cfc263ec"  # the last commit of version 0.1.0
DATA = ROOT.parent / "shared" / "data" / "alpaca_farm_100.json"

# Runs inside a subprocess whose PYTHONPATH puts one version's src/ first. A decode step of either
# version draws its tokens with one sample_tokens call per sampling setting (one here), so counting
# rows per call gives the rows that drew a token at each step in both.
CHILD = r"""
import json, sys, time
spec = json.loads(sys.argv[1])
import secateurs
from secateurs.models import load_policy
from secateurs.rewards import load_reward
from secateurs.prompts import make_prompts
from secateurs.runner import run_prompts
from secateurs.methods import get_method
try:
    import secateurs.backends.transformers as engine  # this version
except ImportError:
    import secateurs.engine as engine  # 0.1.0
rows = []
original = engine.sample_tokens
def counting(logits, *args):
    rows.append(logits.shape[0])
    return original(logits, *args)
engine.sample_tokens = counting
policy, reward = load_policy(None), load_reward(None)
prompts = make_prompts([{"id": str(i), "prompt": p} for i, p in enumerate(spec["prompts"])])
cls = get_method("sampling").config_class
run_prompts(prompts[:1], "sampling", cls(max_new_tokens=8), policy, reward)  # warm-up
rows.clear()
config = get_method(spec["method"]).config_class(**spec["options"])
start = time.perf_counter()
results = run_prompts(prompts, spec["method"], config, policy, reward, seed=0)
wall = time.perf_counter() - start
print(json.dumps({"version": secateurs.__version__, "wall": wall, "steps": len(rows), "rows": sum(rows),
                  "responses": [r.response for r in results], "rewards": [r.reward for r in results],
                  "tokens_generated": sum(r.cost.tokens_generated for r in results),
                  "lm_tokens": sum(r.cost.lm_tokens for r in results),
                  "rm_calls": sum(r.cost.rm_calls for r in results)}))
"""


def checkout_v010() -> Path:
    target = ROOT / "benchmarks" / "out" / "v0.1.0"
    if not (target / "src" / "secateurs").is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force", str(target), V010],
                       check=True, capture_output=True)
    return target


def run(src: Path, method: str, options: dict, prompts: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src), TOKENIZERS_PARALLELISM="false")
    spec = json.dumps({"method": method, "options": options, "prompts": prompts})
    out = subprocess.run([sys.executable, "-c", CHILD, spec], env=env, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{method} failed with {src}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--max-batch-rows", type=int, default=64)
    parser.add_argument("--methods", default="best-of-n,speculative-rejection,cards",
                        help="which of the three to run (comma-separated)")
    args = parser.parse_args()
    prompts = [p["prompt"] for p in json.loads(DATA.read_text())][:args.prompts]
    common = {"max_new_tokens": args.max_new_tokens, "max_batch_rows": args.max_batch_rows}
    methods = [("best-of-n n=8", "best-of-n", {"n": 8}),
               ("speculative-rejection n=16", "speculative-rejection", {"n": 16}),
               ("cards", "cards", {"r_star": "auto"})]  # 0.1.0's only calibration (today's default: dataset)
    methods = [m for m in methods if m[1] in args.methods.split(",")]
    old_src = checkout_v010() / "src"
    print(f"{len(prompts)} AlpacaFarm prompts, default policy and reward, {args.max_new_tokens} new tokens, "
          f"max_batch_rows {args.max_batch_rows}, seed 0")
    print(f"{'method':28s} {'version':>10s} {'wall s':>8s} {'rows busy':>9s} {'steps':>6s} {'tokens':>7s} "
          f"{'LM tok':>7s} {'RM':>5s}   wall vs 0.1.0, same answers")
    for label, method, options in methods:
        got = {}
        for name, src in (("0.1.0", old_src), ("this", ROOT / "src")):
            r = got[name] = run(src, method, {**common, **options}, prompts)
            busy = r["rows"] / max(1, r["steps"] * args.max_batch_rows)
            line = (f"{label:28s} {r['version']:>10s} {r['wall']:8.1f} {busy:9.2f} {r['steps']:6d} "
                    f"{r['tokens_generated']:7d} {r['lm_tokens']:7d} {r['rm_calls']:5d}")
            if name == "this":
                same = sum(a == b for a, b in zip(r["responses"], got["0.1.0"]["responses"]))
                line += f"   {r['wall'] / got['0.1.0']['wall']:.2f}x, {same}/{len(prompts)}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
