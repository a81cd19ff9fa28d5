"""Aligner: a policy, a reward and one scheduler serving prompts as they come.

`await aligner.submit(prompt, method=..., **options)` returns the prompt's AlignResult; prompts
submitted while others decode join the running batch at the next step. Cancelling the awaiting
task (or a client going away) cancels the request and frees its rows at once. The scheduler runs
in one background thread; the asyncio side only queues requests and awaits their futures, so a
server's event loop never blocks on decoding. Answers depend only on (seed, prompt id, sample
index), never on what else shares the batch.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from typing import Any

from .admission import check_samples
from .backends.base import check_capabilities
from .backends.transformers import TransformersBackend
from .calibration import alone
from .config import build_config
from .errors import SecateursError
from .methods import get_method
from .methods.base import check_seed, integer
from .models import load_policy
from .placement import load_models
from .policy import Policy
from .prompts import Prompt, make_prompt
from .results import AlignResult
from .rewards import Reward, load_reward
from .runner import encode_prompt, result_of
from .sampling import prompt_key
from .scheduler import Request, Scheduler


class Aligner:
    """policy and reward: what align() takes (a loaded Policy or a policy spec, None for the default; a
    Reward, a reward spec or a function fn(prompt_text, response) -> float). With `backend` (a ready
    backend) and no policy, the backend's policy. Bad arguments fail here in one line, not at submit."""

    def __init__(self, policy: Policy | str | None, reward: Reward | Any, max_batch_rows: int = 64, backend=None):
        # Checked now: a scheduler with no rows would never admit anything, and submit would wait forever.
        if not integer(max_batch_rows) or max_batch_rows < 1:
            raise SecateursError(f"max_batch_rows must be an integer >= 1, got {max_batch_rows!r}")
        if policy is None and backend is not None:
            policy = backend.policy
        if not (policy is None or isinstance(policy, (Policy, str, os.PathLike))):
            raise SecateursError(f"policy must be a Policy, a model id or folder, or None (the default), "
                                 f"got {type(policy).__name__}")
        if backend is not None:
            policy = load_policy(policy)
            self.policy, self.reward = policy, load_reward(reward, device=policy.device)
        else:  # as run and serve load them (a vllm: RM beside the policy on one GPU gets its share)
            device = policy.device if isinstance(policy, Policy) else None
            _, self.policy, self.reward = load_models(policy, reward, device=device)
        self.backend = backend or TransformersBackend(self.policy)
        self.scheduler = Scheduler(self.backend, self.reward, max_batch_rows)
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def request(self, prompt: Any, method: str = "best-of-n", seed: int = 0, prompt_id: str | None = None,
                **options: Any) -> Request:
        """A validated request (bad options or a too-long prompt raise SecateursError here, before queueing)."""
        seed = check_seed(seed)  # seed=1.0 or "1" would key other draws than seed=1
        config = build_config(method, options)
        config = alone(config)  # r_star dataset: the request is its own prompt set, i.e. auto
        check_capabilities(self.backend, method, get_method(method).needs)  # e.g. ARGS on vllm: refused now
        check_samples(config, 1)  # a huge n is refused here, before any sample exists
        p = prompt if isinstance(prompt, Prompt) else make_prompt(prompt, prompt_id or "0")
        return Request(p, encode_prompt(self.policy, p, config), method, config, seed, prompt_key(seed, p.id))

    async def submit(self, prompt: Any, method: str = "best-of-n", seed: int = 0, prompt_id: str | None = None,
                     **options: Any) -> AlignResult:
        request = self.request(prompt, method, seed, prompt_id, **options)
        return await self.submit_request(request)

    async def submit_request(self, request: Request) -> AlignResult:
        loop = asyncio.get_running_loop()
        future = loop.create_future()

        def done(r: Request) -> None:
            loop.call_soon_threadsafe(_settle, future, r, self)

        request.on_done = done
        self._post("add", request)
        try:
            return await future
        except asyncio.CancelledError:
            self.cancel(request)
            raise

    def cancel(self, request: Request) -> None:
        if not self._closed:  # a closed Aligner has already failed what it held
            self._post("cancel", request)

    def _post(self, what: str, request: Request) -> None:
        with self._lock:
            if self._closed:  # nothing would ever answer it
                raise SecateursError("this Aligner is closed; make a new one to submit more prompts")
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="secateurs-scheduler", daemon=True)
                self._thread.start()
        self._inbox.put((what, request))
        self._wake.set()

    def _loop(self) -> None:
        while not self._closed:
            while not self._inbox.empty():
                what, request = self._inbox.get()
                if what == "add" and not request.cancelled:
                    try:
                        self.scheduler.add(request)
                    except Exception as e:  # noqa: BLE001 - reported to the submitter
                        request.error = e
                        request.on_done(request)
                elif what == "cancel" and request.outcome is None and not request.cancelled:
                    self.scheduler.cancel(request)
            if not self.scheduler.has_work:
                self._wake.wait(timeout=1.0)
                self._wake.clear()
                continue
            try:
                self.scheduler.step()
            except Exception as e:  # noqa: BLE001 - a failing step fails the requests in it, not the server
                for request in list(self.scheduler.active) + list(self.scheduler.waiting):
                    request.error = e
                    self.scheduler.cancel(request)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            if self._thread.is_alive():  # still inside a step: the scheduler is not ours to touch
                return
        # What was submitted and not answered fails now instead of waiting forever.
        held = list(self.scheduler.active) + list(self.scheduler.waiting)
        while not self._inbox.empty():
            what, request = self._inbox.get()
            if what == "add" and request not in held:
                held.append(request)
        for request in held:
            if request.outcome is None and not request.cancelled:
                request.error = SecateursError("the Aligner was closed before this prompt was answered")
                if request in self.scheduler.active or request in self.scheduler.waiting:
                    self.scheduler.cancel(request)  # frees its rows; calls on_done
                elif request.on_done is not None:
                    request.on_done(request)


def _settle(future: asyncio.Future, request: Request, aligner: Aligner) -> None:
    if future.done():
        return
    error = getattr(request, "error", None)
    if error is not None:
        future.set_exception(error)
    elif request.cancelled:
        future.cancel()
    else:
        future.set_result(result_of(request, aligner.policy, aligner.reward))
