"""Run every cell of a bench on every prompt (resumably), score with the gold RM, and collect."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..methods.sampling import SamplingConfig
from ..models import DEFAULT_POLICY
from ..placement import load_models
from ..prompts import Prompt, builtin_prompts, load_prompts
from ..results import AlignResult
from ..rewards import Reward, check_rm_memory, load_reward
from ..runner import run_prompts
from .folder import check_folder, claim_folder
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


def warm_up(policy, rewards: list[Reward], prompt: Prompt, backend=None) -> None:
    """One short untimed run before the first cell: the first forward passes and RM calls of a process
    are slower (allocations, lazy initialisation), and would otherwise be charged to the first cell."""
    [result] = run_prompts([prompt], "sampling", SamplingConfig(max_new_tokens=8), policy, rewards[0], backend=backend)
    for reward in rewards[1:]:
        reward.score([prompt], [result.response])


def run_bench(spec: BenchSpec, device=None, progress: bool = True,
              ray: dict | None = None, backend: str | None = None) -> tuple[list[Prompt], list[CellResults], dict]:
    """Every cell on every prompt. `ray`: run the cells on Ray workers (keywords of secateurs.ray.RayWorkers:
    workers, ray_address, gpus_per_worker); the workers load the models, this process scores the gold reward.
    `backend`: the engine the cells decode on (secateurs.backends; default transformers)."""
    configs = spec.validate()  # everything the user wrote is checked before a model loads
    check_rm_memory(spec.reward, spec.rm_memory)
    check_folder(spec.out)  # a user's folder or file too
    prompts = load_prompts(spec.prompts, **spec.prompt_fields) if spec.prompts else builtin_prompts()
    gold = load_reward(spec.gold_reward, device=device) if spec.gold_reward else None
    claim_folder(spec.out, spec.command)
    cells_dir = spec.out / "cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    if ray is not None:
        from ..ray import RayWorkers

        pool = RayWorkers(spec.policy, spec.reward, device=device, rm_memory=spec.rm_memory, **ray)
        policy_name, reward_name, where = spec.policy or DEFAULT_POLICY, spec.reward or "default", "ray"
        run_cell = pool.run
        pool.run(prompts[:1], "sampling", SamplingConfig(max_new_tokens=8))  # warm-up (not written)
    else:
        pool = None
        engine, policy, reward = load_models(spec.policy, spec.reward, backend, device=device, rm_memory=spec.rm_memory)
        policy_name, reward_name, where = policy.name, reward.name, str(policy.device)
        if engine is not None:
            where += f" ({engine.name})"
        warm_up(policy, [r for r in (reward, gold) if r is not None], prompts[0], engine)

        def run_cell(prompts, method, config, **kw):
            return run_prompts(prompts, method, config, policy, reward, backend=engine, **kw)
    collected = []
    try:
        for cell in spec.cells:
            config = configs[cell.name]
            results = run_cell(prompts, cell.method, config, seed=spec.seed,
                               out=cells_dir / f"{cell.file_stem}.jsonl", progress=progress, label=cell.name)
            gold_scores = load_gold(cells_dir / f"{cell.file_stem}.gold.json", gold, prompts, results) if gold else None
            collected.append(CellResults(cell.name, cell.method, config.to_dict(), results, gold_scores))
    finally:
        if pool is not None:
            pool.close()
    with open(spec.out / "results.jsonl", "w", encoding="utf-8") as f:
        for cell in collected:
            for i, r in enumerate(cell.results):
                record = {"cell": cell.name, **r.to_json(), "gold_reward": cell.gold[i] if cell.gold else None}
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
    setting = {"policy": policy_name, "reward": reward_name, "gold_reward": gold.name if gold else None,
               "device": where, "seed": spec.seed, "prompts": len(prompts), **spec.common}
    return prompts, collected, setting
