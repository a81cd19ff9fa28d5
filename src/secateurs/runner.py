"""Drive a set of prompts through one method: validation, batching across prompts, resume, output."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Sequence

from tqdm.auto import tqdm

from . import __version__
from .admission import check_memory
from .backends import backend_fingerprint
from .backends.base import check_capabilities
from .backends.transformers import TransformersBackend
from .methods import get_method
from .methods.base import DecodingConfig
from .policy import Policy
from .prompts import Prompt
from .results import AlignResult, open_results
from .rewards import Reward
from .sampling import prompt_key
from .scheduler import Request, Scheduler, SchedulerStats


def run_fingerprint(method: str, config: DecodingConfig, policy: Policy, reward: Reward, seed: int,
                    backend=None) -> str:
    """Identifies a configuration: results of different configurations (or library versions, whose
    methods may decide differently, or backends: the vllm backend draws other samples and records its
    vLLM version) never share a file."""
    fields = {"method": method, "config": config.to_dict(), "policy": policy.name, "reward": reward.name,
              "seed": seed, "secateurs": __version__}
    engine = backend_fingerprint(backend)
    if engine is not None:
        fields["backend"] = engine
    key = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def result_of(request: Request, policy: Policy, reward: Reward, fingerprint: str = "") -> AlignResult:
    """The AlignResult of a finished request."""
    p, o = request.prompt, request.outcome
    details = {**o.details, "backend": request.backend_details} if request.backend_details else o.details
    return AlignResult(id=p.id, prompt=p.to_json(), response=o.response, reward=o.reward, method=request.method,
                       config=request.config.to_dict(), seed=request.seed, policy=policy.name,
                       reward_model=reward.name, finish_reason=o.finish_reason, response_tokens=len(o.response_ids),
                       cost=request.cost, details=details, run_fingerprint=fingerprint,
                       prompt_fingerprint=p.fingerprint)


def encode_prompt(policy: Policy, prompt: Prompt, config: DecodingConfig) -> list[int]:
    """The prompt's token ids, checked against the policy's context."""
    ids = policy.encode(prompt)
    policy.check_fits(prompt, len(ids), config.max_new_tokens)
    return ids


def run_prompts(prompts: Sequence[Prompt], method: str, config: DecodingConfig, policy: Policy, reward: Reward,
                seed: int = 0, out: str | Path | None = None, progress: bool = False,
                on_results: Callable[[list[AlignResult]], Any] | None = None,
                label: str | None = None, stats: SchedulerStats | None = None, backend=None) -> list[AlignResult]:
    """Run `method` on every prompt and return one result per prompt, in the prompts' order.

    All prompts go through one scheduler (rows freed by one prompt go to the next at once). With
    `out`, each result is appended to that JSONL file as its prompt finishes, and prompts whose
    results are already there (from an earlier, possibly killed, run) are not run again.
    `stats`, if given, receives the scheduler's row-occupancy counts. `backend`: a ready backend
    (secateurs.backends.make_backend) to decode on instead of a transformers backend on `policy`
    (None: that backend's own policy).
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
    # A setting whose largest batch cannot fit fails now, not in the allocator (vLLM sizes its own cache).
    if encoded and (backend is None or backend.name == "transformers"):
        check_memory(policy, config, [len(ids) for ids in encoded.values()], reward=reward)
    fingerprint = run_fingerprint(method, config, policy, reward, seed, backend)
    # Locks the output, refuses a foreign file, another configuration or changed prompts.
    done, writer = open_results(Path(out), fingerprint, prompts) if out is not None else ({}, None)
    todo = [p for p in prompts if p.id not in done]
    bar = tqdm(total=len(prompts), initial=len(prompts) - len(todo), desc=label or method, unit="prompt",
               disable=not progress, dynamic_ncols=True)
    scheduler = Scheduler(backend or TransformersBackend(policy), reward, config.max_batch_rows)
    requests = [Request(p, encoded[p.id], method, config, seed, prompt_key(seed, p.id)) for p in todo]
    try:
        for request in scheduler.run(requests):
            result = result_of(request, policy, reward, fingerprint)
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
    return [done[p.id] for p in prompts]
