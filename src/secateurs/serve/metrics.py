"""Prometheus metrics of one server (its own registry, so several servers can live in one process)."""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ..results import AlignResult

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)


class ServerMetrics:
    def __init__(self, queue_depth: Callable[[], int], rows_busy: Callable[[], int], in_flight: Callable[[], int]):
        self.registry = CollectorRegistry()
        r = self.registry
        Gauge("secateurs_queue_depth", "Requests accepted and waiting for rows", registry=r).set_function(queue_depth)
        Gauge("secateurs_rows_busy", "Batch rows holding a sequence now", registry=r).set_function(rows_busy)
        Gauge("secateurs_requests_in_flight", "Requests accepted and not finished", registry=r).set_function(in_flight)
        self.requests = Counter("secateurs_requests", "Requests answered, by method and HTTP status",
                                ["method", "status"], registry=r)
        self.tokens = Counter("secateurs_tokens", "Tokens: prompt and completion (the answers), generated "
                              "(every token every candidate drew)", ["kind"], registry=r)
        self.rm_calls = Counter("secateurs_rm_calls", "Reward-model calls", registry=r)
        self.latency = Histogram("secateurs_request_seconds", "Seconds from request to the whole answer",
                                 ["method"], buckets=LATENCY_BUCKETS, registry=r)

    def answered(self, result: AlignResult, prompt_tokens: int, completion_tokens: int, seconds: float) -> None:
        self.requests.labels(result.method, "200").inc()
        self.tokens.labels("prompt").inc(prompt_tokens)
        self.tokens.labels("completion").inc(completion_tokens)
        self.tokens.labels("generated").inc(result.cost.tokens_generated)
        self.rm_calls.inc(result.cost.rm_calls)
        self.latency.labels(result.method).observe(seconds)

    def refused(self, method: str, status: int) -> None:
        self.requests.labels(method, str(status)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
