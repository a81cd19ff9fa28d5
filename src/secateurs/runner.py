"""Drive a set of prompts through one method: validation, batching across prompts, resume, output."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Sequence

from tqdm.auto import tqdm

from . import __version__
from .admission import check_memory, check_samples, resolve_rows
from .backends import backend_fingerprint
from .backends.base import check_capabilities
from .backends.transformers import TransformersBackend
from .calibration import calibrate_r_star, wants_dataset_r_star
from .methods import get_method
from .methods.base import DecodingConfig
from .errors import RewardError
from .policy import Policy
from .prompts import Prompt
from .results import AlignResult, open_results
from .rewards import Reward
from .sampling import prompt_key
from .scheduler import Request, Scheduler, SchedulerStats


class PromptsFailed(RewardError):
    """The reward failed for some prompts; the others were answered. `results`: the answered prompts'
    results in the prompts' order (already written to `out`, if given); `errors`: prompt id -> error."""

    def __init__(self, results: list[AlignResult], errors: dict[str, BaseException], total: int):
        self.results, self.errors, self.total = results, errors, total
        ids = ", ".join(repr(i) for i in list(errors)[:5]) + (f" and {len(errors) - 5} more" if len(errors) > 5
                                                              else "")
        # The first failure leads (it names the reward and the prompt); then what became of the rest.
        rest = (f"the reward failed for all {total} prompts" if not results else
                f"the reward failed for {len(errors)} of {total} prompts ({ids}); the other {len(results)} were "
                "answered")
        super().__init__(f"{next(iter(errors.values()))}; {rest}")

    def __reduce__(self):  # rebuilt whole where it is unpickled (a Ray worker's failure reaches the driver)
        return PromptsFailed, (self.results, self.errors, self.total)


# Settings that decide how fast a run goes, not what it answers (answers depend only on the seed, prompt id
# and sample index): left out of the fingerprint, so a run that ran out of memory resumes with fewer rows.
# Not for Speculative Rejection: without n its B0 is capped at max_batch_rows, and with n its memory budget
# is shared by the max_batch_rows // n prompts in flight, so there rows change answers.
SPEED_ONLY = ("max_batch_rows",)
_ROWS_CHANGE_ANSWERS = frozenset({"speculative-rejection"})


def answer_config(method: str, config: dict[str, Any]) -> dict[str, Any]:
    """The settings of `config` (a config's to_dict()) that can change answers."""
    if method in _ROWS_CHANGE_ANSWERS:
        return dict(config)
    return {k: v for k, v in config.items() if k not in SPEED_ONLY}


def _fingerprint(method: str, config: dict[str, Any], policy: str, reward: str, seed: int, engine) -> str:
    fields = {"method": method, "config": config, "policy": policy, "reward": reward, "seed": seed,
              "secateurs": __version__}
    if engine is not None:
        fields["backend"] = engine
    key = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def run_fingerprint(method: str, config: DecodingConfig, policy: Policy, reward: Reward, seed: int,
                    backend=None) -> str:
    """Identifies a configuration: results of different configurations (or library versions, whose
    methods may decide differently, or backends: the vllm backend draws other samples and records its
    vLLM version) never share a file. Speed-only settings (SPEED_ONLY) are left out."""
    return _fingerprint(method, answer_config(method, config.to_dict()), policy.name, reward.name, seed,
                        backend_fingerprint(backend))


def same_configuration(method: str, config: DecodingConfig, policy: Policy, reward: Reward, seed: int,
                       backend=None) -> Callable[[AlignResult], bool]:
    """Whether a result written before SPEED_ONLY left the fingerprint (its fingerprint hashes its whole
    config) is of this configuration, so that such files still resume, with other rows too."""
    engine = backend_fingerprint(backend)
    mine = json.dumps(answer_config(method, config.to_dict()), sort_keys=True)

    def accept(result: AlignResult) -> bool:
        if result.method != method or not isinstance(result.config, dict):
            return False
        if json.dumps(answer_config(method, result.config), sort_keys=True) != mine:
            return False
        return _fingerprint(method, result.config, policy.name, reward.name, seed, engine) == result.run_fingerprint

    return accept


def result_of(request: Request, policy: Policy, reward: Reward, fingerprint: str = "",
              shard: dict[str, int] | None = None) -> AlignResult:
    """The AlignResult of a finished request (`shard`: the slice it was run in, results.AlignResult.shard)."""
    p, o = request.prompt, request.outcome
    details = {**o.details, "backend": request.backend_details} if request.backend_details else o.details
    return AlignResult(id=p.id, prompt=p.to_json(), response=o.response, reward=o.reward, method=request.method,
                       config=request.config.to_dict(), seed=request.seed, policy=policy.name,
                       reward_model=reward.name, finish_reason=o.finish_reason, response_tokens=len(o.response_ids),
                       cost=request.cost, details=details, run_fingerprint=fingerprint,
                       prompt_fingerprint=p.fingerprint, shard=shard)


def encode_prompt(policy: Policy, prompt: Prompt, config: DecodingConfig) -> list[int]:
    """The prompt's token ids, checked against the policy's context."""
    ids = policy.encode(prompt)
    policy.check_fits(prompt, len(ids), config.max_new_tokens)
    return ids


def run_prompts(prompts: Sequence[Prompt], method: str, config: DecodingConfig, policy: Policy, reward: Reward,
                seed: int = 0, out: str | Path | None = None, progress: bool = False,
                on_results: Callable[[list[AlignResult]], Any] | None = None,
                label: str | None = None, stats: SchedulerStats | None = None, backend=None,
                shard: dict[str, int] | None = None,
                calibration_prompts: Sequence[Prompt] | None = None) -> list[AlignResult]:
    """Run `method` on every prompt and return one result per prompt, in the prompts' order.

    All prompts go through one scheduler (rows freed by one prompt go to the next at once). With
    `out`, each result is appended to that JSONL file as its prompt finishes, and prompts whose
    results are already there (from an earlier, possibly killed, run) are not run again.
    If the reward fails for some prompts (raises, or returns NaN / infinity / a non-number), only those
    fail: the others are answered (and written), then PromptsFailed (a RewardError) names the failed
    ids and carries the answered results; a rerun on the same `out` runs only the failed prompts.
    `stats`, if given, receives the scheduler's row-occupancy counts. `backend`: a ready backend
    (secateurs.backends.make_backend) to decode on instead of a transformers backend on `policy`
    (None: that backend's own policy). `shard`: the slice these prompts are (`run --shard`), written
    on each result for `merge` (results.AlignResult.shard). `calibration_prompts`: the set whose first
    prompts calibrate `r_star dataset` (secateurs.calibration; default `prompts`: a shard passes the whole file).
    """
    if backend is not None and policy is None:
        policy = backend.policy
    method_spec = get_method(method)
    if backend is not None:  # a method the backend cannot serve fails before any output is opened
        check_capabilities(backend, method, method_spec.needs)
    # Check every prompt before any generation, so a bad one fails the run at once.
    encoded = {}
    for p in prompts:
        encoded[p.id] = encode_prompt(policy, p, config)
    # max_batch_rows 'auto' becomes the rows this device fits (a number, which the results' config shows).
    config = resolve_rows(config, policy, [len(ids) for ids in encoded.values()], reward, backend)
    # A setting whose largest batch cannot fit fails now, not in the allocator (vLLM sizes its own cache).
    if encoded and (backend is None or backend.name == "transformers"):
        check_memory(policy, config, [len(ids) for ids in encoded.values()], reward=reward)
    # Samples kept until their method decides (a huge n) must fit in host memory, whatever the backend.
    if encoded:
        check_samples(config, len(encoded))
    calibration = None
    if wants_dataset_r_star(config) and encoded:  # every prompt checked first: calibration costs generation
        def answer(batch, calibration_method, calibration_config):
            return run_prompts(batch, calibration_method, calibration_config, policy, reward, seed=seed,
                               backend=backend)

        config, calibration = calibrate_r_star(calibration_prompts or prompts, config, answer)
    fingerprint = run_fingerprint(method, config, policy, reward, seed, backend)
    # Locks the output, refuses a foreign file, another configuration or changed prompts.
    accept = same_configuration(method, config, policy, reward, seed, backend)
    done, writer = open_results(Path(out), fingerprint, prompts, accept) if out is not None else ({}, None)
    todo = [p for p in prompts if p.id not in done]
    bar = tqdm(total=len(prompts), initial=len(prompts) - len(todo), desc=label or method, unit="prompt",
               disable=not progress, dynamic_ncols=True)
    scheduler = Scheduler(backend or TransformersBackend(policy), reward, config.max_batch_rows)
    requests = [Request(p, encoded[p.id], method, config, seed, prompt_key(seed, p.id)) for p in todo]
    failed: dict[str, BaseException] = {}
    try:
        for request in scheduler.run(requests):
            if request.error is not None:  # its reward failed: the others go on, it is reported at the end
                failed[request.prompt.id] = request.error
                bar.update(1)
                continue
            result = result_of(request, policy, reward, fingerprint, shard)
            if calibration is not None:
                result.details["r_star_calibration"] = calibration
            p = request.prompt
            if writer is not None:
                writer.write([result])
            done[p.id] = result
            if on_results is not None:
                on_results([result])
            bar.update(1)
    finally:
        bar.close()
        if hasattr(scheduler.backend, "abort_all"):  # an interrupted run leaves nothing decoding in the engine
            scheduler.backend.abort_all()
        if writer is not None:
            writer.close()
    if stats is not None:
        stats.__dict__.update(scheduler.stats.__dict__)
    if failed:
        raise PromptsFailed([done[p.id] for p in prompts if p.id in done], failed, len(prompts))
    return [done[p.id] for p in prompts]
