"""Run a job on a Ray cluster: `secateurs.ray.align_dataset(...)` (and `secateurs run --ray`).

Each worker is a Ray actor that loads the policy and the reward itself, from their spec strings
(model objects are never pickled), and answers small shards of prompts with the same
`runner.run_prompts` a local run uses. Results depend only on (seed, prompt id, sample index),
so any number of workers returns exactly what one local process returns.

The driver alone writes the output file: it reads what an earlier (possibly killed) run left
there, with the same configuration-fingerprint checks as a local run, hands out only the missing
prompts, and appends each shard's results as it comes back. So a killed driver started again
with the same arguments continues where it stopped. A dead worker loses nothing: Ray restarts
the actor and retries its tasks (`max_restarts`, `max_task_retries`), and a worker that is gone
for good (killed with `ray.kill`, its node lost) is replaced and its shards handed out again.
A prompt is written once, whichever worker answered it.

Ray is an optional dependency: `pip install 'secateurs[ray]'`.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import uuid
from collections import deque
from pathlib import Path
from typing import Any, Callable, Sequence

from tqdm.auto import tqdm

from .calibration import calibrate_r_star, wants_dataset_r_star
from .errors import SecateursError
from .methods import get_method
from .methods.base import DecodingConfig, check_seed, integer, real
from .results import AlignResult, open_results

INSTALL_HINT = "--ray needs Ray: pip install 'secateurs[ray]'"
ACTOR_PREFIX = "secateurs-worker"

__all__ = ["align_dataset", "RayWorkers", "INSTALL_HINT"]


def _import_ray():
    try:
        import ray
    except ImportError:
        raise SecateursError(INSTALL_HINT) from None
    return ray


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _usable_cpus() -> int:
    """Cores this process may run on (its affinity: taskset, a Slurm allocation), else all."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _init_ray(ray, address: str | None) -> None:
    """Connect to `address` ('auto', 'HOST:PORT', 'ray://HOST:10001'), or start a local Ray on this
    machine's cores; nothing if Ray is already initialised in this process."""
    if ray.is_initialized():
        return
    if address and address != "auto":
        _check_reachable(address)
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING)
        elif os.environ.get("RAY_ADDRESS"):
            ray.init(logging_level=logging.WARNING)
        else:
            ray.init(num_cpus=_usable_cpus(), include_dashboard=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        where = address or os.environ.get("RAY_ADDRESS") or "a local Ray"
        raise SecateursError(f"cannot start or reach Ray at {where}: {_first_line(e)}") from None


def _check_reachable(address: str) -> None:
    """Fail at once, in one line, when nothing listens at HOST:PORT: ray.init would retry for minutes."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise SecateursError(f"Ray address {address!r}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as e:
        raise SecateursError(f"cannot reach Ray at {address}: {e.strerror or e}") from None


def _check_spec(kind: str, spec: Any) -> str | None:
    if spec is None or isinstance(spec, str):
        return spec
    if isinstance(spec, Path):
        return str(spec)
    raise SecateursError(f"on Ray the {kind} must be given as a spec string (each worker loads it itself), "
                         f"not a {type(spec).__name__} object")


def _resolve_config(method: str, config: Any) -> DecodingConfig:
    config_class = get_method(method).config_class
    if config is None:
        return config_class()
    if isinstance(config, dict):
        from .config import build_config

        return build_config(method, config)  # the one builder the CLI and align() use
    if type(config) is not config_class:
        raise SecateursError(f"method {method!r} takes a {config_class.__name__}, got a {type(config).__name__}")
    return config


class _Worker:
    """One Ray actor: a policy and a reward loaded from their specs, answering shards of prompts."""

    def __init__(self, policy: str | None, reward: str | None, device: str | None, threads: int,
                 cwd: str | None, path: list[str], rm_memory: float | None = None):
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        # Relative model folders and py:MODULE:FUNCTION rewards resolve as on the driver (same
        # machine or a shared file system); spec strings, hence results' names, stay as given.
        if cwd and os.path.isdir(cwd):
            os.chdir(cwd)
        for entry in reversed(path):
            if entry not in sys.path and os.path.isdir(entry):
                sys.path.insert(0, entry)
        import torch
        from transformers.utils import logging as hf_logging

        torch.set_num_threads(max(1, threads))
        hf_logging.disable_progress_bar()  # the driver shows progress; workers' bars would interleave
        self.error: str | None = None
        try:
            from .placement import load_models

            _, self.policy, self.reward = load_models(policy, reward, device=device, rm_memory=rm_memory)
        except SecateursError as e:  # reported by describe(), in one line, instead of a dead actor
            self.error = str(e)

    def describe(self, method: str, config: DecodingConfig, seed: int) -> dict[str, Any]:
        if self.error is not None:
            return {"error": self.error}
        from .runner import run_fingerprint

        from . import __version__

        return {"fingerprint": run_fingerprint(method, config, self.policy, self.reward, seed),
                "policy": self.policy.name, "reward": self.reward.name, "version": __version__}

    def check(self, prompts: Sequence[Any], max_new_tokens: int) -> int:
        """Every prompt encodes and fits the policy's context (as a local run checks before generating)."""
        if self.error is not None:
            raise SecateursError(self.error)
        for p in prompts:
            self.policy.check_fits(p, len(self.policy.encode(p)), max_new_tokens)
        return len(prompts)

    def run(self, prompts: Sequence[Any], method: str, config: DecodingConfig, seed: int) -> list[AlignResult]:
        if self.error is not None:
            raise SecateursError(self.error)
        from .runner import run_prompts

        return run_prompts(prompts, method, config, self.policy, self.reward, seed=seed)


def _user_paths() -> list[str]:
    """The driver's own import folders (its script's, $PYTHONPATH's, the working directory), not the
    installation's: where a py:MODULE:FUNCTION reward may live."""
    installed = ("site-packages", "dist-packages", f"lib{os.sep}python")
    return [p for p in [os.getcwd(), *sys.path] if p and not p.endswith(".zip") and not any(m in p for m in installed)]


def _prompts_per_batch(config: DecodingConfig) -> int:
    """Prompts whose rows fill one batch (`max_batch_rows`): a shard of fewer leaves rows idle."""
    rows = getattr(config, "max_batch_rows", 64)
    rows = rows if integer(rows) else 64  # 'auto': each worker sizes its own batch; shards as for the default
    per_prompt = config.rows_per_prompt() if hasattr(config, "rows_per_prompt") else 1
    return max(1, int(rows) // max(1, int(per_prompt)))


class RayWorkers:
    """A pool of Ray actors holding one policy and one reward; `run()` answers prompts with any method.

    Reusable across runs with the same models (e.g. several methods or bench cells); `close()` (or
    leaving a `with` block) kills the actors. Ray is initialised here if it is not already:
    `ray_address` None starts a local Ray on this machine's cores (or joins $RAY_ADDRESS),
    'auto' joins the cluster started on this machine with `ray start`, 'HOST:PORT' another one.
    Each worker gets an equal share of the cluster's CPUs (at most one node's), used as its torch
    threads, unless `cpus_per_worker` is given, and `gpus_per_worker` GPUs.
    """

    def __init__(self, policy: str | Path | None = None, reward: str | Path | None = None, workers: int = 2,
                 ray_address: str | None = None, gpus_per_worker: float = 0, device: str | None = None,
                 cpus_per_worker: float | None = None, max_restarts: int = 2, max_replacements: int | None = None,
                 start_timeout_s: float = 900, rm_memory: float | None = None):
        from .rewards import check_rm_memory

        self.policy = _check_spec("policy", policy)
        self.reward = _check_spec("reward", reward)
        check_rm_memory(self.reward, rm_memory)
        self.rm_memory = rm_memory
        if not integer(workers) or workers < 1:
            raise SecateursError(f"workers must be an integer >= 1, got {workers!r}")
        if not real(gpus_per_worker) or gpus_per_worker < 0:
            raise SecateursError(f"gpus_per_worker must be a number >= 0, got {gpus_per_worker!r}")
        if cpus_per_worker is not None and (not isinstance(cpus_per_worker, (int, float)) or cpus_per_worker <= 0):
            raise SecateursError(f"cpus_per_worker must be a number > 0, got {cpus_per_worker!r}")
        self.device = device
        self.ray = ray = _import_ray()
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        _init_ray(ray, ray_address)
        total_cpus = float(ray.cluster_resources().get("CPU", 0))
        total_gpus = float(ray.cluster_resources().get("GPU", 0))
        if gpus_per_worker and workers * gpus_per_worker > total_gpus:
            raise SecateursError(f"{workers} workers x {gpus_per_worker} GPUs need {workers * gpus_per_worker:g} "
                                 f"GPUs; the Ray cluster has {total_gpus:g}")
        if cpus_per_worker is None:
            # An equal share of the CPUs free now (other jobs may hold some), at most one node's.
            free_cpus = float(ray.available_resources().get("CPU", 0))
            node_cpus = max([float(n.get("Resources", {}).get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
                            or [total_cpus])
            if free_cpus >= workers:
                cpus_per_worker = float(max(1, min(int(free_cpus // workers), int(node_cpus))))
            elif free_cpus > 0:  # more workers than free cores: share them (fractional CPUs), one thread each
                cpus_per_worker = max(0.01, math.floor(100 * free_cpus / workers) / 100)
            else:  # a busy (or autoscaling) cluster: one CPU each, started when there is room
                cpus_per_worker = 1.0
        elif workers * cpus_per_worker > total_cpus and cpus_per_worker > max(
                [float(n.get("Resources", {}).get("CPU", 0)) for n in ray.nodes() if n.get("Alive")] or [0]):
            raise SecateursError(f"cpus_per_worker={cpus_per_worker:g}: no node of the Ray cluster has that many CPUs")
        self.cpus_per_worker = cpus_per_worker
        self.gpus_per_worker = gpus_per_worker
        self.workers = workers
        self.max_restarts = max_restarts
        self.start_timeout_s = start_timeout_s
        self._ready = False
        self.replacements_left = 2 * workers if max_replacements is None else max_replacements
        self.tag = f"{ACTOR_PREFIX}-{uuid.uuid4().hex[:8]}"
        self._started = 0
        self._actor_class = ray.remote(_Worker)
        self.actors = [self._start() for _ in range(workers)]

    # -- actors ---------------------------------------------------------------------------------
    def _start(self):
        name = f"{self.tag}-{self._started}"
        self._started += 1
        return self._actor_class.options(
            name=name, num_cpus=self.cpus_per_worker, num_gpus=self.gpus_per_worker,
            max_restarts=self.max_restarts, max_task_retries=self.max_restarts,
        ).remote(self.policy, self.reward, self.device, max(1, int(self.cpus_per_worker)), os.getcwd(),
                 _user_paths(), self.rm_memory)

    def _replace(self, slot: int, actor, error: BaseException) -> None:
        if self.actors[slot] is not actor:  # already replaced (it had several shards in flight)
            return
        if self.replacements_left <= 0:
            raise SecateursError(f"Ray workers keep dying ({self._started} started); last: {_first_line(error)}")
        self.replacements_left -= 1
        try:
            self.ray.kill(actor)
        except Exception:  # noqa: BLE001 - it is gone already
            pass
        self.actors[slot] = self._start()

    def _get(self, refs):
        """ray.get, with a worker's user error (bad prompt, NaN reward...) raised here as itself."""
        try:
            return self.ray.get(refs)
        except self.ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, SecateursError):
                raise cause.with_traceback(None) from None
            raise

    def close(self) -> None:
        for actor in self.actors:
            try:
                self.ray.kill(actor)
            except Exception:  # noqa: BLE001
                pass
        self.actors = []

    def __enter__(self) -> "RayWorkers":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- a run ----------------------------------------------------------------------------------
    def _agreed_fingerprint(self, method: str, config: DecodingConfig, seed: int) -> str:
        """The configuration's fingerprint, the same on every worker (same library version and models everywhere);
        the first call waits for the workers to start (and load their models)."""
        refs = [a.describe.remote(method, config, seed) for a in self.actors]
        if not self._ready:  # the first call waits for the workers to start (and load their models)
            started, _ = self.ray.wait(refs, num_returns=len(refs), timeout=self.start_timeout_s)
            if len(started) < len(refs):
                raise SecateursError(
                    f"{len(refs) - len(started)} of {len(refs)} Ray workers did not start within "
                    f"{self.start_timeout_s:g} s: the cluster may not have {self.cpus_per_worker:g} CPUs"
                    + (f" and {self.gpus_per_worker:g} GPUs" if self.gpus_per_worker else "")
                    + " free per worker (see `ray status`)")
            self._ready = True
        infos = self._get(refs)
        for info in infos:
            if "error" in info:
                raise SecateursError(info["error"])
        from . import __version__

        versions = sorted({info["version"] for info in infos} - {__version__})
        if versions:
            raise SecateursError(f"Ray workers run secateurs {', '.join(versions)} but this process runs "
                                 f"{__version__}: install the same version on every node")
        fingerprints = {info["fingerprint"] for info in infos}
        if len(fingerprints) > 1:
            raise SecateursError("Ray workers disagree on the configuration fingerprint (different secateurs "
                                 "versions or models on different nodes?): install the same everywhere")
        return fingerprints.pop()

    def run(self, prompts: Any, method: str, config: DecodingConfig | dict | None = None, seed: int = 0,
            out: str | Path | None = None, progress: bool = False, shard_size: int | None = None,
            on_results: Callable[[list[AlignResult]], Any] | None = None,
            label: str | None = None, calibration_prompts: Sequence[Any] | None = None) -> list[AlignResult]:
        """Answer every prompt with `method` on the workers; one result per prompt, in the prompts' order.

        With `out`, results are appended to that JSONL file as shards finish, and prompts already
        there (from an earlier, possibly killed, local or Ray run of the same configuration) are
        skipped. `shard_size`: prompts per task (default: a few per worker, at most one batch).
        """
        from .api import resolve_prompts

        if not self.actors:
            raise SecateursError("this RayWorkers pool is closed")
        config = _resolve_config(method, config)
        seed = check_seed(seed)  # an int before any key or fingerprint is derived from it
        if shard_size is not None and (not isinstance(shard_size, int) or isinstance(shard_size, bool)
                                       or shard_size < 1):
            raise SecateursError(f"shard_size must be an integer >= 1, got {shard_size!r}")
        from .runner import PromptsFailed

        prompt_list = resolve_prompts(prompts)
        ray = self.ray

        fingerprint = self._agreed_fingerprint(method, config, seed)

        # Bad prompts fail the run before any generation, as in a local run.
        chunk = 512
        checks = [self.actors[i % len(self.actors)].check.remote(prompt_list[start:start + chunk],
                                                                 config.max_new_tokens)
                  for i, start in enumerate(range(0, len(prompt_list), chunk))]
        self._get(checks)
        calibration = None
        if wants_dataset_r_star(config) and prompt_list:  # one r* for the set, on the workers (calibration.py)
            config, calibration = calibrate_r_star(resolve_prompts(calibration_prompts or prompt_list), config,
                                                   lambda batch, m, c: self.run(batch, m, c, seed=seed))
            fingerprint = self._agreed_fingerprint(method, config, seed)

        if out is not None:
            done, writer = open_results(Path(out), fingerprint, prompt_list)
            done = dict(done)
        else:
            done, writer = {}, None
        todo = [p for p in prompt_list if p.id not in done]
        if shard_size is None:
            shard_size = max(1, min(_prompts_per_batch(config), math.ceil(len(todo) / (2 * len(self.actors)))))
        queue = deque(todo[i:i + shard_size] for i in range(0, len(todo), shard_size))
        inflight: dict[Any, tuple[int, Any, list]] = {}
        load = [0] * len(self.actors)
        depth = 2  # tasks queued per actor: the next shard is ready when one finishes
        failed: dict[str, BaseException] = {}  # as a local run: the others are answered, then one PromptsFailed

        def submit() -> None:
            while queue:
                slot = min(range(len(self.actors)), key=load.__getitem__)
                if load[slot] >= depth:
                    return
                shard = queue.popleft()
                actor = self.actors[slot]
                inflight[actor.run.remote(shard, method, config, seed)] = (slot, actor, shard)
                load[slot] += 1

        bar = tqdm(total=len(prompt_list), initial=len(prompt_list) - len(todo), desc=label or method,
                   unit="prompt", disable=not progress, dynamic_ncols=True)
        try:
            submit()
            while inflight:
                (ref,), _ = ray.wait(list(inflight), num_returns=1)
                slot, actor, shard = inflight.pop(ref)
                load[slot] -= 1
                try:
                    results = self._get(ref)
                except PromptsFailed as e:  # the reward failed for some of the shard's prompts: keep the others
                    failed.update(e.errors)
                    results = e.results
                except ray.exceptions.RayActorError as e:
                    # Ray's restarts and retries are spent, or the actor was killed for good:
                    # a fresh worker takes its place and the shard is handed out again.
                    self._replace(slot, actor, e)
                    queue.appendleft(shard)
                    submit()
                    continue
                if [r.id for r in results] != [p.id for p in shard if p.id not in failed]:
                    raise SecateursError("a Ray worker returned results for other prompts than it was given")
                for r in results:
                    if r.run_fingerprint != fingerprint:
                        raise SecateursError("a Ray worker computed a different configuration fingerprint (different "
                                             "secateurs versions or models on different nodes?)")
                new = [r for r in results if r.id not in done]
                if calibration is not None:
                    for r in new:
                        r.details["r_star_calibration"] = calibration
                if writer is not None and new:
                    writer.write(new)
                done.update((r.id, r) for r in new)
                if on_results is not None and new:
                    on_results(new)
                bar.update(len(shard) - len(results) + len(new))
                submit()
        finally:
            bar.close()
            for ref in inflight:
                try:
                    ray.cancel(ref)
                except Exception:  # noqa: BLE001
                    pass
            if writer is not None:
                writer.close()
        if failed:
            raise PromptsFailed([done[p.id] for p in prompt_list if p.id in done], failed, len(prompt_list))
        return [done[p.id] for p in prompt_list]


def align_dataset(prompts: Any, method: str, config: DecodingConfig | dict | None = None,
                  policy: str | Path | None = None, reward: str | Path | None = None, seed: int = 0,
                  out: str | Path | None = None, workers: int = 2, ray_address: str | None = None,
                  gpus_per_worker: float = 0, device: str | None = None, progress: bool = False,
                  shard_size: int | None = None, cpus_per_worker: float | None = None,
                  on_results: Callable[[list[AlignResult]], Any] | None = None,
                  rm_memory: float | None = None, calibration_prompts: Sequence[Any] | None = None
                  ) -> list[AlignResult]:
    """Answer every prompt with `method` on `workers` Ray actors; one AlignResult per prompt, in order.

    prompts: what `secateurs.align` takes (a prompt file, strings, messages lists, Prompts).
    config: the method's config object (`get_method(method).config_class`), a dict of its options,
    or None for its defaults. policy / reward: spec strings as for `secateurs.align` (None: the
    packaged defaults); each worker loads them itself. out: a JSONL file, written by this process
    only, appended as shards finish and resumed from if it exists. ray_address: None starts a
    local Ray (or joins $RAY_ADDRESS), 'auto' or 'HOST:PORT' joins a running cluster.
    cpus_per_worker: default, an equal share of the cluster's free CPUs (at most one node's);
    each worker runs that many torch threads. shard_size: prompts per task (default: a few per
    worker, at most one batch). on_results: called with each shard's new results as they arrive.
    Writes and returns exactly what `secateurs.align` with the same arguments would (costs' seconds
    aside); the file's lines are in the order shards finished.
    """
    from .api import resolve_prompts

    _import_ray()  # without Ray: one line saying what to install, at once
    seed = check_seed(seed)
    config = _resolve_config(method, config)  # bad options and prompts fail before Ray starts
    prompts = resolve_prompts(prompts)
    with RayWorkers(policy, reward, workers=workers, ray_address=ray_address, gpus_per_worker=gpus_per_worker,
                    device=device, cpus_per_worker=cpus_per_worker, rm_memory=rm_memory) as pool:
        return pool.run(prompts, method, config, seed=seed, out=out, progress=progress, shard_size=shard_size,
                        on_results=on_results, calibration_prompts=calibration_prompts)
