"""The backend protocol: what the scheduler needs from an inference engine.

A backend holds the KV cache of every running sequence, decodes one token for a set of them per
step, and says what it can do. Methods declare the capabilities they need; the scheduler refuses
an unsupported pairing with one line before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Protocol, Sequence as Seq

import torch

from ..errors import SecateursError
from ..sequence import Sequence

# Capabilities a backend may have.
STOP_RULE = "stop_rule"  # a per-token rule sees the full next-token distribution and can end a segment
CHOOSER = "chooser"  # a function can pick each next token (token-level search such as ARGS)
BATCH_INVARIANT = "batch_invariant_sampling"  # draws depend on (seed, prompt, sample, counter) only
KV_PRUNE = "kv_prune"  # a released sequence's cache is freed in place
REWIND = "rewind"  # a sequence can be cut back to a prefix (and forced tokens appended) without re-prefill


@dataclass
class StepView:
    """What a stop rule or chooser sees before a token is drawn for some running sequences."""

    seqs: list[Sequence]
    logits: torch.Tensor  # [R, V] temperature-1 next-token logits
    score: Callable[[list[Sequence], list[str]], list[float]] | None = None  # metered RM call (choosers)
    decode: Callable[[list[int]], str] | None = None  # token ids -> text (choosers)

    @cached_property
    def entropy(self) -> torch.Tensor:
        """Entropy (nats) of the full-vocabulary, temperature-1 next-token distribution, on the CPU."""
        return entropy(self.logits).cpu()


def entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


class Backend(Protocol):
    name: str
    capabilities: frozenset[str]

    def kv_capacity_tokens(self) -> int | None:
        """KV-cache tokens it can hold now (None: bounded by host memory only)."""

    def kv_bytes_per_token(self) -> int: ...

    def prefill(self, requests: Seq) -> None:
        """Cache each request's prompt once; its samples fork from it."""

    def start(self, seqs: Seq[Sequence]) -> None:
        """Give new sequences rows, each a copy of its prompt's cache."""

    def step(self, seqs: Seq[Sequence], score=None) -> list[Sequence]:
        """One token for each running sequence; returns those that stopped in this step."""

    def truncate(self, seq: Sequence, length: int) -> None: ...

    def force(self, seq: Sequence, tokens: Seq[int], logprobs: Seq[float] | None = None) -> None: ...

    def copy(self, dst: Sequence, src: Sequence) -> None: ...

    def release(self, seqs: Seq[Sequence]) -> None: ...

    def release_prompt(self, request) -> None: ...

    def decode(self, token_ids: Seq[int]) -> str: ...


def check_force(seq: Sequence, tokens: Seq[int]) -> list[int]:
    """The tokens a backend's force() may append to seq (a finished sequence or too many tokens raise)."""
    if seq.finished:
        raise ValueError(f"{seq} is finished; rewind it before forcing tokens")
    tokens = list(tokens)
    room = seq.max_new_tokens - seq.length
    if len(tokens) > room:
        raise ValueError(f"forcing {len(tokens)} tokens exceeds {seq}'s remaining {room}")
    return tokens


def check_capabilities(backend: Backend, method: str, needs: frozenset[str]) -> None:
    missing = sorted(needs - backend.capabilities)
    if missing:
        raise SecateursError(f"method {method!r} needs {', '.join(missing)}, which the {backend.name} backend "
                             "does not offer; use --backend transformers")
