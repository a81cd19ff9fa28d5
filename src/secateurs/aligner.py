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
import queue
import threading
from typing import Any

from .backends.base import check_capabilities
from .backends.transformers import TransformersBackend
from .config import build_config
from .methods import get_method
from .policy import Policy
from .prompts import Prompt, make_prompt
from .results import AlignResult
from .rewards import Reward
from .runner import encode_prompt, result_of
from .sampling import prompt_key
from .scheduler import Request, Scheduler


class Aligner:
    def __init__(self, policy: Policy, reward: Reward, max_batch_rows: int = 64, backend=None):
        self.policy, self.reward = policy, reward
        self.backend = backend or TransformersBackend(policy)
        self.scheduler = Scheduler(self.backend, reward, max_batch_rows)
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def request(self, prompt: Any, method: str = "best-of-n", seed: int = 0, prompt_id: str | None = None,
                **options: Any) -> Request:
        """A validated request (bad options or a too-long prompt raise SecateursError here, before queueing)."""
        config = build_config(method, options)
        check_capabilities(self.backend, method, get_method(method).needs)  # e.g. ARGS on vllm: refused now
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
        self._post("cancel", request)

    def _post(self, what: str, request: Request) -> None:
        with self._lock:
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
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


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
