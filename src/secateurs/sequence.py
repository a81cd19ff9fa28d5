"""Sequence: the handle of one growing response, owned by the backend, addressed by methods.

Methods never see batch rows: they start, extend, rewind, copy, force and release sequences,
and read their tokens, finish reason and last reward here. Where a sequence sits in a batch
(and whether it sits in one at all) is the backend's business.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from .sampling import SamplingParams

if TYPE_CHECKING:
    from .scheduler import Request

# Status, in the order a sequence normally goes through them.
QUEUED = "queued"  # asked for, waiting for a free row
RUNNING = "running"  # decoding: gets a token at every step until it stops
STOPPED = "stopped"  # reached its target length, a stop rule, EOS or max_new_tokens; waits for its method
RELEASED = "released"  # rejected or retired: its KV cache is freed (its tokens stay readable)


@dataclass(eq=False)
class Sequence:
    request: "Request"  # the prompt (and method run) it answers
    sample: int  # its index among the prompt's samples; its random key derives from it
    key: int  # random key: draws are hashed from (key, draws, token id)
    params: SamplingParams
    max_new_tokens: int
    tokens: list[int] = field(default_factory=list)  # response token ids
    logprobs: list[float] = field(default_factory=list)  # log-prob of each under the policy (temperature 1)
    draws: int = 0  # random draws used so far (keeps counting across rewinds)
    finish_reason: str | None = None  # "eos" / "length" once finished
    status: str = QUEUED
    until: int | None = None  # stop once the response has this many tokens (None: max_new_tokens)
    stop_rule: "Callable | None" = None  # ends a segment before a token (see backends.base.StepView)
    chooser: "Callable | None" = None  # picks tokens instead of sampling (ARGS)
    keep_finished: bool = False  # keep the KV cache after EOS / length (to rewind it later)
    reward: float | None = None  # the RM's last score of this response (set when it stops)
    scored_partial: bool = False  # whether that score was of an unfinished response
    tags: dict[str, Any] = field(default_factory=dict)  # free for the method

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def length(self) -> int:
        return len(self.tokens)

    @property
    def prompt_ids(self) -> list[int]:
        return self.request.prompt_ids

    def __repr__(self) -> str:
        return (f"Sequence(prompt={self.request.prompt.id!r}, sample={self.sample}, len={self.length}, "
                f"status={self.status}, finish={self.finish_reason})")
