"""The scheduler: one loop under every method.

Requests (a prompt answered by a method with a config and a seed) wait in a queue; the scheduler
admits them while rows are free (up to max_batch_rows decoding rows in all), prefills the admitted
prompts together once, and asks each request's method policy how to start. Then, step after step:

    place queued sequences into free rows -> backend.step(running) -> sequences that stopped
    -> a request none of whose sequences is decoding or queued is *idle*: its stopped sequences
       are scored (one RM call for all idle requests of the step, partial responses flagged)
       and its method decides: extend / release / rewind / copy / force / sample more / finish
    -> finished requests release their rows and leave with their outcome and cost.

Rows freed by one prompt are taken by the next prompt's sequences at once (no chunk boundaries);
requests can be added while others decode (`add`, and `AsyncAligner.submit` on top) and cancelled,
which frees their rows. Freed rows are refilled in groups (a refresh copies the cache once), see
`refill_rows`.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from .backends.base import check_capabilities
from .errors import RewardError, SecateursError
from .meter import Cost, Meter
from .methods import get_method
from .prompts import Prompt
from .rewards import Reward, metered_score, metered_score_mixed
from .sampling import SamplingParams, child_key
from .sequence import RELEASED, RUNNING, Sequence

_ids = itertools.count()


@dataclass(eq=False)
class Request:
    """One prompt to answer with one method."""

    prompt: Prompt
    prompt_ids: list[int]
    method: str
    config: Any  # the method's config dataclass
    seed: int
    key: int  # the prompt's random key: prompt_key(seed, prompt.id)
    on_done: Callable[["Request"], None] | None = None
    # Streaming: called (in the scheduler's thread) with the response token ids committed so far:
    # each decoded token of a method that answers with one sample (`streams_tokens`), each segment a
    # method accepts (Context.progress). Committed tokens are final: the answer starts with them.
    on_progress: Callable[[list[int]], None] | None = None
    id: int = field(default_factory=lambda: next(_ids))
    # filled in by the scheduler
    policy: Any = None
    live: list[Sequence] = field(default_factory=list)  # sequences not released
    queue: deque = field(default_factory=deque)  # (sequences, True) of a gang or (Pending, False), waiting for rows
    stopped: list[Sequence] = field(default_factory=list)  # stopped since the method last looked
    outcome: Any = None
    cost: Cost | None = None
    cancelled: bool = False
    error: BaseException | None = None  # why it failed (its reward, or async submission)
    backend_details: dict = field(default_factory=dict)  # what the backend reports for this request (vllm)

    @property
    def idle(self) -> bool:
        return not self.queue and not any(s.status == RUNNING for s in self.live)


class Pending:
    """Samples asked for that have no row yet. Their handles are made as they get rows, so asking for
    a huge number of samples (Best-of-N's n) costs nothing up front and a cancel drops them at once;
    `out` (what Context.sample returned) fills in index order as they start."""

    def __init__(self, indices: Iterable[int], make: Callable[[int], Sequence], out: list[Sequence]):
        self.indices = indices if isinstance(indices, range) and indices.step == 1 else list(indices)
        self.make, self.out = make, out

    @property
    def count(self) -> int:
        i = self.indices
        return max(0, i.stop - i.start) if isinstance(i, range) else len(i)

    def take(self, k: int) -> list[Sequence]:
        seqs = [self.make(j) for j in self.indices[:k]]
        self.indices = self.indices[k:]
        self.out.extend(seqs)
        return seqs


def queued_count(queued) -> int:
    """Rows a queued entry (a list of sequences or a Pending) asks for."""
    return queued.count if isinstance(queued, Pending) else len(queued)


@dataclass
class SchedulerStats:
    steps: int = 0  # decode steps
    rows_decoded: int = 0  # sequences that drew a token, summed over steps
    max_batch_rows: int = 0

    @property
    def rows_busy(self) -> float:
        return self.rows_decoded / max(1, self.steps * self.max_batch_rows)


class Context:
    """What a method's per-prompt policy may do with its own prompt's sequences."""

    def __init__(self, scheduler: "Scheduler", request: Request):
        self._scheduler = scheduler
        self._backend = scheduler.backend
        self.request = request
        self.config = request.config
        self.prompt = request.prompt
        self.prompt_len = len(request.prompt_ids)
        self.key = request.key

    def sample(self, indices: Iterable[int], *, key: int | None = None, params: SamplingParams | None = None,
               until: int | None = None, stop_rule=None, chooser=None, gang: bool = False,
               keep_finished: bool = False) -> list[Sequence]:
        """New samples from the prompt's cache; sample j draws with child_key(key, j) (key: the prompt's).

        `gang`: the samples need rows together (they are decided together, e.g. at a decision point).
        """
        base = self.key if key is None else key
        params = params or self.config.sampling()

        def make(j: int) -> Sequence:
            seq = Sequence(self.request, j, child_key(base, j), params, self.config.max_new_tokens, until=until,
                           stop_rule=stop_rule, chooser=chooser, keep_finished=keep_finished)
            self.request.live.append(seq)
            return seq

        if not gang:  # made as they get rows (Pending): the returned list is complete once they all started
            pending = Pending(indices, make, [])
            if pending.count:
                self.request.queue.append((pending, False))
            return pending.out
        indices = list(indices)  # a gang: checked before any handle is made
        if len(indices) > self._scheduler.max_batch_rows:
            raise SecateursError(f"{self.request.method} needs {len(indices)} rows decoding together but "
                                 f"max_batch_rows is {self._scheduler.max_batch_rows}; raise --max-batch-rows")
        seqs = [make(j) for j in indices]
        if seqs:
            self.request.queue.append((seqs, gang))
        return seqs

    def extend(self, seqs: Iterable[Sequence], until: int | None = None) -> None:
        """Decode on, until the response has `until` tokens (None: EOS / max_new_tokens) or a stop rule ends it."""
        for s in seqs:
            if s.finished or s.status == RELEASED:
                raise ValueError(f"cannot extend {s}")
            s.until, s.status, s.reward = until, RUNNING, None

    def release(self, seqs: Iterable[Sequence]) -> None:
        seqs = [s for s in seqs if s.status != RELEASED]
        self._backend.release(seqs)
        gone = {id(s) for s in seqs}
        self.request.live = [s for s in self.request.live if id(s) not in gone]

    def rewind(self, seq: Sequence, length: int) -> None:
        self._backend.truncate(seq, length)

    def force(self, seq: Sequence, tokens, logprobs=None) -> None:
        self._backend.force(seq, tokens, logprobs)

    def copy(self, dst: Sequence, src: Sequence) -> None:
        self._backend.copy(dst, src)

    def text(self, seq: Sequence) -> str:
        return self._backend.decode(seq.tokens)

    def decode(self, token_ids) -> str:
        return self._backend.decode(token_ids)

    def score(self, texts: list[str], partial: bool = False) -> list[float]:
        """RM scores of texts as responses to this prompt (e.g. the empty response: r(x))."""
        return metered_score(self._scheduler.reward, self._scheduler.meter, [self.prompt] * len(texts), texts,
                             [self.request] * len(texts), partial=partial)

    def kv_capacity_tokens(self) -> int | None:
        return self._backend.kv_capacity_tokens()

    def kv_bytes_per_token(self) -> int:
        return self._backend.kv_bytes_per_token()

    def progress(self, tokens: list[int]) -> None:
        """Tell a streaming client that the answer starts with `tokens` (e.g. an accepted segment)."""
        if self.request.on_progress is not None:
            self.request.on_progress(list(tokens))

    def finish(self, outcome) -> None:
        self.request.outcome = outcome


class Scheduler:
    def __init__(self, backend, reward: Reward, max_batch_rows: int = 64, meter: Meter | None = None,
                 refill_rows: int | None = None):
        self.backend = backend
        self.reward = reward
        self.max_batch_rows = max_batch_rows
        self.meter = meter or Meter(getattr(backend, "device", "cpu"))
        backend.meter = self.meter
        # Freed rows are refilled once this many are free (or nothing decodes): each refill copies
        # the cache once, so refilling row by row would cost a copy per step.
        self.refill_rows = refill_rows or max(1, max_batch_rows // 8)
        self.waiting: deque[Request] = deque()
        self.active: list[Request] = []
        self.stats = SchedulerStats(max_batch_rows=max_batch_rows)

    # ------------------------------------------------------------------ requests in and out
    def add(self, request: Request) -> None:
        """Queue a request; a method the backend cannot serve is refused here, with one line."""
        check_capabilities(self.backend, request.method, get_method(request.method).needs)
        self.waiting.append(request)

    def cancel(self, request: Request) -> None:
        """Drop a request, queued or decoding; its rows are freed at once."""
        if request in self.waiting:
            self.waiting.remove(request)
        elif request in self.active:
            self._release_all(request)
            self.active.remove(request)
            self.meter.close(request)
        request.cancelled = True
        if request.on_done is not None:
            request.on_done(request)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.active)

    def run(self, requests: Iterable[Request]) -> Iterator[Request]:
        """Add the requests and step until all are done; yields each as it finishes."""
        for r in requests:
            self.add(r)
        while self.has_work:
            yield from self.step()

    # ------------------------------------------------------------------ the loop
    def step(self) -> list[Request]:
        done: list[Request] = []
        self._admit()
        self._place()
        running = [s for r in self.active for s in r.live if s.status == RUNNING]
        if running:
            before = sum(s.length for s in running)
            stopped = self.backend.step(running, score=self._score_for_chooser)
            self.stats.steps += 1
            self.stats.rows_decoded += sum(s.length for s in running) - before
            for s in stopped:
                if s.finished and not s.keep_finished:
                    self.backend.release([s])  # its tokens stay on the handle
                s.request.stopped.append(s)
            self._stream_tokens(running)
        idle = [r for r in self.active if r.idle and r.stopped and r.error is None]
        if idle:
            self._score([s for r in idle for s in r.stopped])
            for r in idle:
                if r.error is not None:  # its scores failed
                    continue
                stopped, r.stopped = r.stopped, []
                r.live = [s for s in r.live if s.status != RELEASED]
                self._guard(r, r.policy.on_idle, stopped)
        for r in list(self.active):
            if r.outcome is not None or r.error is not None:
                self._finish(r, done)
        self.meter.mark(self.active)
        return done

    @staticmethod
    def _stream_tokens(running: list[Sequence]) -> None:
        """A method whose answer is its one sample (`streams_tokens`) streams each token as drawn."""
        for s in running:
            r = s.request
            if r.on_progress is not None and getattr(r.policy, "streams_tokens", False):
                r.on_progress(list(s.tokens))

    @staticmethod
    def _check_progress(request: Request) -> None:
        if request.outcome is None and request.idle and not request.stopped:
            raise SecateursError(f"method {request.method!r} left prompt {request.prompt.id!r} with nothing to "
                                 "decode and no answer")

    def _admit(self) -> None:
        free = self.max_batch_rows - self.backend.live_rows - self._queued_rows()
        decoding = any(s.status == RUNNING for r in self.active for s in r.live)
        admitted = []
        while self.waiting and free > 0 and (free >= self.refill_rows or not decoding or not self.active):
            request = self.waiting.popleft()
            admitted.append(request)
            free -= request.config.rows_per_prompt()
        if not admitted:
            return
        for request in admitted:
            self.meter.open(request)
        self.backend.prefill(admitted)
        for request in admitted:
            method = get_method(request.method)
            request.policy = method.policy_class(request.config, Context(self, request))
            self.active.append(request)
            self._guard(request, request.policy.start)

    def _guard(self, request: Request, call, *args) -> None:
        """A method's call; a reward failing inside it (e.g. CARDS' r(x)) fails this request only."""
        try:
            call(*args)
        except RewardError as e:
            request.error = e
            return
        self._check_progress(request)

    def _queued_rows(self) -> int:
        return sum(queued_count(seqs) for r in self.active for seqs, _ in r.queue)

    def _place(self) -> None:
        """Queued sequences take free rows, oldest request first; a gang waits until all of it fits."""
        queued = self._queued_rows()
        if not queued:
            return
        free = self.max_batch_rows - self.backend.live_rows
        decoding = any(s.status == RUNNING for r in self.active for s in r.live)
        if free < min(self.refill_rows, queued) and decoding:
            return
        for r in self.active:
            while r.queue and free > 0:
                seqs, gang = r.queue[0]
                if gang:
                    if len(seqs) > free:
                        return
                    take = seqs
                    r.queue.popleft()
                else:
                    take = seqs.take(free)
                    if not seqs.count:
                        r.queue.popleft()
                self.backend.start(take)
                free -= len(take)

    def _score(self, seqs: list[Sequence]) -> None:
        """One RM call per kind (finished / partial) for all the stopped sequences of the step."""
        texts = [self.backend.decode(s.tokens) for s in seqs]
        partial = [not s.finished for s in seqs]
        scores = self._isolated(seqs, lambda idx: metered_score_mixed(
            self.reward, self.meter, [seqs[i].request.prompt for i in idx], [texts[i] for i in idx],
            [seqs[i].request for i in idx], partial=[partial[i] for i in idx]))
        for s, text, score in zip(seqs, texts, scores):
            s.reward, s.scored_partial = score, not s.finished
            s.tags["text"] = text

    def _score_for_chooser(self, seqs: list[Sequence], texts: list[str]) -> list[float]:
        return self._isolated(seqs, lambda idx: metered_score(
            self.reward, self.meter, [seqs[i].request.prompt for i in idx], [texts[i] for i in idx],
            [seqs[i].request for i in idx], partial=True))

    @staticmethod
    def _isolated(seqs: list[Sequence], score: Callable[[list[int]], list[float]]) -> list[float]:
        """`score(indices)` over all the sequences at once; if the reward fails, again request by request,
        so that only the requests whose own scores fail fail (`error` set; their scores read 0.0 and
        are never used) and no request's error names another's prompt or text. Scores do not depend
        on what shares an RM call (rewards.base.length_buckets), so re-scoring changes no answer;
        the failed call records nothing in the meter, so costs do not change either."""
        try:
            return score(list(range(len(seqs))))
        except RewardError as e:
            if len({id(s.request) for s in seqs}) == 1:  # one request: it is the culprit
                seqs[0].request.error = e
                return [0.0] * len(seqs)
        scores = [0.0] * len(seqs)
        by_request: dict[int, list[int]] = {}
        for i, s in enumerate(seqs):
            by_request.setdefault(id(s.request), []).append(i)
        for idx in by_request.values():
            try:
                for i, value in zip(idx, score(idx)):
                    scores[i] = value
            except RewardError as e:
                seqs[idx[0]].request.error = e
        return scores

    def _release_all(self, request: Request) -> None:
        self.backend.release([s for s in request.live if s.status != RELEASED])
        for seqs, gang in request.queue:
            for s in seqs if gang else ():  # a Pending has made no handles: nothing to release
                s.status = RELEASED
        request.queue.clear()
        request.live = []
        self.backend.release_prompt(request)

    def _finish(self, request: Request, done: list[Request]) -> None:
        """Retire a request with its outcome, or failed (`error` set: its reward failed); rows freed."""
        self._release_all(request)
        self.active.remove(request)
        request.cost = self.meter.close(request)
        done.append(request)
        if request.on_done is not None:
            request.on_done(request)
