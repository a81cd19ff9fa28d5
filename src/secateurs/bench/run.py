"""Run every cell of a bench on every prompt (resumably), score with the gold RM, and collect."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..models import load_policy
from ..prompts import Prompt, builtin_prompts, load_prompts
from ..results import AlignResult
from ..rewards import Reward, load_reward
from ..runner import run_prompts
from .spec import BenchSpec


@dataclass
class CellResults:
    name: str
    method: str
    config: dict
    results: list[AlignResult]  # in prompt order
    gold: list[float] | None


def load_gold(path: Path, reward: Reward, prompts: list[Prompt], results: list[AlignResult]) -> list[float]:
    """Gold-RM scores of a cell's responses, cached next to its results (a resumed bench reuses them)."""
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("reward") == reward.name and set(cached["scores"]) == {r.id for r in results}:
            return [cached["scores"][r.id] for r in results]
    scores = reward.score(prompts, [r.response for r in results])
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"reward": reward.name, "scores": {r.id: s for r, s in zip(results, scores)}}))
    tmp.replace(path)
    return scores


def warm_up(policy, rewards: list[Reward], prompt: Prompt) -> None:
    """One short untimed run before the first cell: the first forward passes and RM calls of a process
    are slower (allocations, lazy initialisation), and would otherwise be charged to the first cell."""
    from ..methods.sampling import SamplingConfig

    [result] = run_prompts([prompt], "sampling", SamplingConfig(max_new_tokens=8), policy, rewards[0])
    for reward in rewards[1:]:
        reward.score([prompt], [result.response])


def run_bench(spec: BenchSpec, device=None, progress: bool = True) -> tuple[list[Prompt], list[CellResults], dict]:
    configs = spec.validate()  # everything the user wrote is checked before a model loads
    prompts = load_prompts(spec.prompts) if spec.prompts else builtin_prompts()
    policy = load_policy(spec.policy, device=device)
    reward = load_reward(spec.reward, device=device)
    gold = load_reward(spec.gold_reward, device=device) if spec.gold_reward else None
    warm_up(policy, [r for r in (reward, gold) if r is not None], prompts[0])
    cells_dir = spec.out / "cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    collected = []
    for cell in spec.cells:
        config = configs[cell.name]
        results = run_prompts(prompts, cell.method, config, policy, reward, seed=spec.seed,
                              out=cells_dir / f"{cell.file_stem}.jsonl", progress=progress, label=cell.name)
        gold_scores = load_gold(cells_dir / f"{cell.file_stem}.gold.json", gold, prompts, results) if gold else None
        collected.append(CellResults(cell.name, cell.method, config.to_dict(), results, gold_scores))
    with open(spec.out / "results.jsonl", "w", encoding="utf-8") as f:
        for cell in collected:
            for i, r in enumerate(cell.results):
                record = {"cell": cell.name, **r.to_json(), "gold_reward": cell.gold[i] if cell.gold else None}
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
    setting = {"policy": policy.name, "reward": reward.name, "gold_reward": gold.name if gold else None,
               "device": str(policy.device), "seed": spec.seed, "prompts": len(prompts), **spec.common}
    return prompts, collected, setting
