"""`r_star dataset`: one target reward for a whole prompt set, calibrated once (the CARDS authors' way).

The CARDS paper fixes r* per dataset, "a little above the average reward of a reference method";
`r_star auto` instead draws `r_star_samples` full responses for every prompt, which on short
answers costs more than the method itself (issue 21: 548 vs 128 tokens generated). Here the
first `r_star_prompts` prompts of the set each get `r_star_samples` plain samples with the
method's own sampling settings (beta, top-k), scored by the run's reward, and

    r* = mean of all their rewards + r_star_margin x mean over those prompts of their reward std

(the margin in the same within-prompt unit as `auto`). The run then goes on with r_star set to
that number, which its results' config shows; `details.r_star_calibration` on every result holds
the value and the calibration's cost, paid once for the set (bench adds it once to a cell's
totals). Samples are keyed by (seed, "<prompt id>#r_star/<j>"), so the value depends on the seed
and on which prompts come first, never on batching; `run --shard` calibrates on the whole
file's first prompts, so every slice gets the same r*. A run resumed calibrates again (same
value, same cost) before it knows which prompts are done. A request answered alone (Aligner, the
server) is its own prompt set: there `dataset` runs as `auto`, the same formula on one prompt.

CARDS defaults to `dataset` (benchmarks/cards.py: a higher reward than `auto` at a lower cost,
calibration included); rejection sampling keeps `auto` (not measured).
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Callable, Sequence

from .errors import SecateursError
from .meter import Cost
from .prompts import Prompt


def wants_dataset_r_star(config) -> bool:
    return getattr(config, "r_star", None) == "dataset"


def calibration_record(results) -> dict | None:
    """The `r_star dataset` calibration a set of results shares (value and cost, paid once), or None."""
    return next((r.details["r_star_calibration"] for r in results if "r_star_calibration" in (r.details or {})),
                None)


def alone(config):
    """The config of a request answered alone (Aligner, the server): its prompt is its whole set, and the dataset
    formula on one prompt is auto's (mean + margin x that prompt's std), so r_star dataset runs as auto there."""
    return dataclasses.replace(config, r_star="auto") if wants_dataset_r_star(config) else config


def refuse_unresolved(config) -> None:
    """A method started with r_star still 'dataset' bypassed run_prompts and the Aligner: one line."""
    if wants_dataset_r_star(config):
        raise SecateursError("r_star 'dataset' is calibrated once on a prompt set before a run (secateurs run / "
                             "bench / align); give a number or 'auto'")


def calibration_prompts(prompts: Sequence[Prompt], config) -> list[Prompt]:
    """The prompts r* is calibrated on (the first r_star_prompts), each repeated r_star_samples times."""
    return [dataclasses.replace(p, id=f"{p.id}#r_star/{j}")
            for p in list(prompts)[:config.r_star_prompts] for j in range(config.r_star_samples)]


def calibrate_r_star(prompts: Sequence[Prompt], config, run: Callable[..., list]) -> tuple[object, dict]:
    """(config with r_star set to the calibrated number, the record results carry). `run(prompts, method,
    config)` answers prompts on the run's policy and reward (runner.run_prompts or Ray workers)."""
    from .methods.sampling import SamplingConfig

    sampling = SamplingConfig(max_new_tokens=config.max_new_tokens, temperature=config.sampling().temperature,
                              top_k=config.top_k, top_p=config.top_p, max_batch_rows=config.max_batch_rows)
    results = run(calibration_prompts(prompts, config), "sampling", sampling)
    by_prompt: dict[str, list[float]] = {}
    for r in results:
        by_prompt.setdefault(r.id.rpartition("#r_star/")[0], []).append(r.reward)
    rewards = [x for xs in by_prompt.values() for x in xs]
    unit = statistics.fmean(statistics.pstdev(xs) for xs in by_prompt.values())
    value = statistics.fmean(rewards) + config.r_star_margin * unit
    cost = sum((r.cost for r in results[1:]), results[0].cost) if results else Cost()
    record = {"r_star": value, "prompts": len(by_prompt), "samples": config.r_star_samples,
              "cost": cost.to_dict()}
    return dataclasses.replace(config, r_star=value), record
