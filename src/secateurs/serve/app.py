"""The FastAPI app: OpenAI's chat and completion endpoints on one Aligner, plus health, models, metrics.

Every request becomes a scheduler Request submitted to the Aligner, whose one scheduler thread
decodes all of them together: a request joins the running batch at the next step. A client that goes
away (the socket closes, or a stream is dropped) has its request cancelled, which frees its rows at
once. The queue is bounded: when `max_queue` requests already wait for rows, a new one gets 429 with
Retry-After. Bad input gets a one-line error in the OpenAI format (400, 401, 404, 413); nothing a
client sends can stop the server.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request as HttpRequest
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException

from ..aligner import Aligner
from ..errors import RewardError, SecateursError
from ..prompts import make_prompt
from ..results import AlignResult
from ..scheduler import Request, queued_count
from .metrics import ServerMetrics
from .protocol import ApiError, Job, ServeDefaults, parse_json, parse_request
from .schema import ChatCompletionRequest, CompletionRequest, add_schemas, request_body
from .responses import DONE, KEEP_ALIVE, Shape, extension, finish_reason, sse, usage
from .text import AnswerText

log = logging.getLogger(__name__)
CLIENT_GONE = 499  # nginx's status for a client that closed the connection (metrics only)


@dataclass
class ServeSettings:
    model: str  # the id clients name in `model` (the policy's name)
    defaults: ServeDefaults = field(default_factory=ServeDefaults)
    max_queue: int = 64  # requests waiting for rows; more get 429
    api_key: str | None = None  # if set, /v1/* need "Authorization: Bearer <api_key>"
    keepalive_s: float = 2.0  # a stream with nothing new for this long gets an SSE comment line
    max_body_bytes: int = 1 << 20
    retry_after_s: int = 1


class Front:
    """The server's state between HTTP and the Aligner: requests in flight, metrics, settings."""

    def __init__(self, aligner: Aligner, settings: ServeSettings):
        self.aligner, self.settings = aligner, settings
        self.pending: set[Request] = set()
        self.metrics = ServerMetrics(self.queue_depth, self.rows_busy, lambda: len(self.pending))

    def queue_depth(self) -> int:
        """Requests waiting for rows: those not yet admitted, less those the free rows take at the
        scheduler's next step (a burst arriving at an idle server waits for nothing)."""
        scheduler = self.aligner.scheduler
        # Read from the event loop while the scheduler thread runs: list() copies are atomic under the GIL,
        # and a count off by one step only moves the 429 threshold by that step.
        queued_rows = sum(queued_count(seqs) for r in list(self.pending) if r.policy is not None for seqs, _ in list(r.queue))
        free = scheduler.max_batch_rows - self.rows_busy() - queued_rows
        waiting = 0
        for r in sorted((r for r in list(self.pending) if r.policy is None), key=lambda r: r.id):
            if free > 0:  # as Scheduler._admit: a request is admitted while any row is free
                free -= r.config.rows_per_prompt()
            else:
                waiting += 1
        return waiting

    def rows_busy(self) -> int:
        return int(getattr(self.aligner.backend, "live_rows", 0))

    # ------------------------------------------------------------------ reading a request
    def check_key(self, http: HttpRequest) -> None:
        key = self.settings.api_key
        if key is None:
            return
        given = http.headers.get("authorization", "")
        if not (given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), key.encode())):
            raise ApiError(401, "invalid or missing API key (send 'Authorization: Bearer <key>')",
                           kind="authentication_error")

    async def read_body(self, http: HttpRequest) -> bytes:
        limit = self.settings.max_body_bytes
        declared = http.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"the request body is {declared} bytes; the limit is {limit}")
        chunks, size = [], 0
        async for chunk in http.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"the request body is over the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def read(self, http: HttpRequest, chat: bool) -> Job:
        self.check_key(http)
        body = parse_json(await self.read_body(http))
        job = parse_request(body, "messages" if chat else "prompt", self.settings.defaults)
        if job.model != self.settings.model:
            raise ApiError(404, f"model {job.model!r} is not served here; this server serves "
                                f"{self.settings.model!r}", "model", kind="not_found_error")
        return job

    def admit(self, job: Job) -> Request:
        if self.queue_depth() >= self.settings.max_queue:
            raise ApiError(429, f"the queue is full ({self.settings.max_queue} requests wait for rows); "
                                f"retry in {self.settings.retry_after_s} s", kind="rate_limit_error",
                           headers={"Retry-After": str(self.settings.retry_after_s)})
        # build_config and the prompt-length check: the CLI's one-line messages
        return self.aligner.request(job.prompt, job.method, job.seed, **job.options)

    # ------------------------------------------------------------------ answering
    async def complete(self, http: HttpRequest, chat: bool) -> Response:
        method = "?"  # the metrics' label of a request refused before its method is known
        try:
            job = await self.read(http, chat)
            method = job.method
            request = self.admit(job)
        except ApiError as e:
            self.metrics.refused(method, e.status)
            return JSONResponse(e.body(), e.status, headers=e.headers)
        except SecateursError as e:
            self.metrics.refused(method, 400)
            return JSONResponse(ApiError(400, str(e)).body(), 400)
        started = time.perf_counter()
        self.pending.add(request)
        events: asyncio.Queue = asyncio.Queue()
        if job.stream:
            request.on_progress = _forward(asyncio.get_running_loop(), events)
        task = asyncio.ensure_future(self.aligner.submit_request(request))
        task.add_done_callback(lambda _: self.pending.discard(request))
        shape = Shape(chat, job.model)
        if job.stream:
            return StreamingResponse(self._stream(http, job, request, task, events, shape, started),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        gone = asyncio.ensure_future(_disconnected(http))
        try:
            await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not task.done():  # the client left (or the handler was cancelled): free the rows now
                task.cancel()
                await asyncio.wait({task})
        if task.cancelled():
            self.metrics.refused(job.method, CLIENT_GONE)
            return Response(status_code=CLIENT_GONE)
        try:
            result = task.result()
        except RewardError as e:  # the server's reward failed on this request's own texts: not the client's fault
            self.metrics.refused(job.method, 500)
            return JSONResponse(_reward_failed(e).body(), 500)
        except SecateursError as e:
            self.metrics.refused(job.method, 400)
            return JSONResponse(ApiError(400, str(e)).body(), 400)
        except Exception as e:  # noqa: BLE001 - a failed decode fails this request, not the server
            log.exception("request failed")
            self.metrics.refused(job.method, 500)
            return JSONResponse(ApiError(500, f"{type(e).__name__}: {e}", kind="server_error").body(), 500)
        text = AnswerText(self.aligner.backend.decode, job.stop)
        answer = text.update(request.outcome.response_ids, final=True, text=result.response)
        use = self._usage(request, result, text)
        self.metrics.answered(result, use["prompt_tokens"], use["completion_tokens"], time.perf_counter() - started)
        return JSONResponse(shape.whole(answer, finish_reason(result, text.stopped), use, extension(result)))

    async def _stream(self, http: HttpRequest, job: Job, request: Request, task: asyncio.Future,
                      events: asyncio.Queue, shape: Shape, started: float) -> AsyncIterator[str]:
        """Committed text as it comes (sampling: tokens; CARDS: accepted segments), keep-alive comments
        while nothing is committed (Best-of-N, Speculative Rejection choose at the end), then the rest of
        the answer and a last chunk with usage and the secateurs extension."""
        text = AnswerText(self.aligner.backend.decode, job.stop)
        gone = asyncio.ensure_future(_disconnected(http))
        try:
            yield KEEP_ALIVE
            if shape.chat:
                yield shape.chunk("", role=True)
            while not task.done():
                getter = asyncio.ensure_future(events.get())
                done, _ = await asyncio.wait({task, getter, gone}, timeout=self.settings.keepalive_s,
                                             return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                if gone in done:
                    return  # finally cancels the request
                if getter in done:
                    ids = getter.result()
                    while not events.empty():  # only the newest committed prefix matters
                        ids = events.get_nowait()
                    delta = text.update(ids)
                    if delta:
                        yield shape.chunk(delta)
                elif not done:
                    yield KEEP_ALIVE
            try:
                result: AlignResult = task.result()
            except asyncio.CancelledError:
                return
            except Exception as e:  # noqa: BLE001 - reported in the stream, as OpenAI does
                status, kind = ((400, "invalid_request_error") if isinstance(e, SecateursError)
                                and not isinstance(e, RewardError) else (500, "server_error"))
                self.metrics.refused(job.method, status)
                error = _reward_failed(e) if isinstance(e, RewardError) else ApiError(status, str(e), kind=kind)
                yield sse(error.body())
                yield DONE
                return
            delta = text.update(request.outcome.response_ids, final=True, text=result.response)
            if delta:
                yield shape.chunk(delta)
            use = self._usage(request, result, text)
            yield shape.chunk(None, finish_reason(result, text.stopped), use if job.include_usage else None,
                              extension(result))
            yield DONE
            self.metrics.answered(result, use["prompt_tokens"], use["completion_tokens"],
                                  time.perf_counter() - started)
        finally:
            gone.cancel()
            if not task.done():  # the client stopped reading: free the rows now
                task.cancel()
                self.metrics.refused(job.method, CLIENT_GONE)

    @staticmethod
    def _usage(request: Request, result: AlignResult, text: AnswerText) -> dict[str, int]:
        return usage(len(request.prompt_ids), text.stopped_at if text.stopped else result.response_tokens)


def _reward_failed(e: RewardError) -> ApiError:
    """A 500 for a request whose reward failed; the scheduler scored it apart from the requests it shared
    a batch with, so the message names this request's prompt and text only."""
    return ApiError(500, f"the reward failed for this request: {e}", kind="server_error")


def _forward(loop: asyncio.AbstractEventLoop, events: asyncio.Queue):
    """The scheduler thread's progress callback: hands committed token ids to the stream's event loop."""
    def on_progress(ids: list[int]) -> None:
        try:
            loop.call_soon_threadsafe(events.put_nowait, ids)
        except RuntimeError:  # the loop has closed (server shutting down): nobody is listening
            pass
    return on_progress


async def _disconnected(http: HttpRequest) -> None:
    """Returns when the client closes the connection (the body has been read: the next message is that)."""
    while True:
        message = await http.receive()
        if message["type"] == "http.disconnect":
            return


def warm_up(aligner: Aligner) -> None:
    """One RM call before serving: rewards load their models lazily, which would otherwise stall the
    first requests' decoding (the scheduler thread waits in that call)."""
    aligner.reward.score([make_prompt("hello", "warm-up")], ["hello"])


def _describe_bodies(app: FastAPI, served: str) -> None:
    """FastAPI's own /openapi.json, with the request bodies the handlers read by hand (schema.py)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = add_schemas(build(), served)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(aligner: Aligner, settings: ServeSettings) -> FastAPI:
    front = Front(aligner, settings)
    app = FastAPI(title="secateurs", docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    app.state.front = front
    _describe_bodies(app, settings.model)

    @app.post("/v1/chat/completions", openapi_extra=request_body(ChatCompletionRequest))
    async def chat_completions(http: HttpRequest) -> Response:
        return await front.complete(http, chat=True)

    @app.post("/v1/completions", openapi_extra=request_body(CompletionRequest))
    async def completions(http: HttpRequest) -> Response:
        return await front.complete(http, chat=False)

    @app.get("/v1/models")
    async def models(http: HttpRequest) -> Response:
        try:
            front.check_key(http)
        except ApiError as e:
            return JSONResponse(e.body(), e.status)
        return JSONResponse({"object": "list", "data": [{"id": settings.model, "object": "model", "created": 0,
                                                         "owned_by": "secateurs"}]})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": settings.model, "queue_depth": front.queue_depth(),
                "rows_busy": front.rows_busy(), "in_flight": len(front.pending)}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(front.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(HTTPException)
    async def http_error(_, e: HTTPException) -> Response:  # unknown routes, wrong verbs: OpenAI's format
        return JSONResponse(ApiError(e.status_code, str(e.detail)).body(), e.status_code)

    @app.exception_handler(Exception)
    async def unexpected(_, e: Exception) -> Response:
        log.exception("unexpected error")
        return JSONResponse(ApiError(500, f"{type(e).__name__}: {e}", kind="server_error").body(), 500)

    return app
