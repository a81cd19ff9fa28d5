"""What the method benchmarks share: a prompt set from ../shared/data, the default models, and
resumable runs of several methods with the same seed and length limit."""

from __future__ import annotations

import json
from pathlib import Path

import secateurs
from secateurs.models import load_policy
from secateurs.prompts import make_prompts
from secateurs.rewards import load_reward

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


class MethodRuns:
    """Runs methods on the first `count` prompts of a shared data file, each into out_dir/NAME.jsonl
    (so a killed benchmark resumes), with the default policy and reward, seed 0."""

    def __init__(self, data_file: str, count: int, max_new_tokens: int, out_dir: Path):
        self.prompts = make_prompts([d["prompt"] for d in json.loads((SHARED_DATA / data_file).read_text())[:count]])
        self.policy, self.reward = load_policy(), load_reward()
        self.common = dict(policy=self.policy, reward=self.reward, seed=0, max_new_tokens=max_new_tokens)
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        secateurs.align(self.prompts[:2], method="best-of-n", n=4, **{**self.common, "max_new_tokens": 8})  # warm-up
        self.runs: dict[str, list] = {}

    def run(self, name: str, method: str, **options) -> list:
        self.runs[name] = secateurs.align(self.prompts, method=method, out=self.out_dir / f"{name}.jsonl",
                                          progress=True, **self.common, **options)
        return self.runs[name]
