"""How well each packaged offline reward ranks a good answer above a bad one.

Reads benchmarks/data/reward_pairs.jsonl (prompt, good answer, bad answer, kind of badness) and
prints, per reward, pairwise accuracy (ties count half) overall and per kind of bad answer.

    .venv/bin/python benchmarks/rewards.py
"""

import json
from collections import defaultdict
from pathlib import Path

from secateurs.prompts import make_prompt
from secateurs.rewards import load_reward

PAIRS = Path(__file__).parent / "data" / "reward_pairs.jsonl"
SPECS = ["relevance", "civility", "sentiment", "relevance+civility", "relevance+sentiment",
         "relevance+civility+sentiment", "relevance+0.5*civility"]


def main() -> None:
    pairs = [json.loads(line) for line in PAIRS.read_text().splitlines() if line.strip()]
    kinds = sorted({p["kind"] for p in pairs})
    prompts = [make_prompt(p["prompt"], str(i)) for i, p in enumerate(pairs)]
    print(f"{len(pairs)} labelled pairs from {PAIRS.name}; accuracy = P(good scored above bad)\n")
    print(f"{'reward':32s} {'all':>6s} " + " ".join(f"{k:>10s}" for k in kinds))
    for spec in SPECS:
        reward = load_reward(spec)
        good = reward.score(prompts, [p["good"] for p in pairs])
        bad = reward.score(prompts, [p["bad"] for p in pairs])
        wins = [1.0 if g > b else 0.5 if g == b else 0.0 for g, b in zip(good, bad)]
        by_kind = defaultdict(list)
        for p, w in zip(pairs, wins):
            by_kind[p["kind"]].append(w)
        row = " ".join(f"{sum(by_kind[k]) / len(by_kind[k]):10.2f}" for k in kinds)
        print(f"{spec:32s} {sum(wins) / len(wins):6.2f} {row}")


if __name__ == "__main__":
    main()
