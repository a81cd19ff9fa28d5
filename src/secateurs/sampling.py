"""Token sampling: temperature, top-k, top-p, with counter-based randomness.

Every random draw is a pure function of (row key, draw counter, token id), hashed with
splitmix64 and turned into Gumbel noise; the sampled token is argmax(logits / T + noise) over the
tokens top-k / top-p keep, which is exactly a draw from the filtered softmax. So a response depends
only on the seed, the prompt id and the sample's index: not on batch size, on which prompts share
the batch, or on whether a killed run was resumed.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from dataclasses import dataclass

import torch

from .errors import SecateursError

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def _signed(x: int) -> int:
    x &= _MASK64
    return x - (1 << 64) if x >= 1 << 63 else x


_C1 = _signed(0xBF58476D1CE4E5B9)
_C2 = _signed(0x94D049BB133111EB)
_GOLDEN_S = _signed(_GOLDEN)


def _srl(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def mix64(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64 tensors (multiplication wraps mod 2**64)."""
    x = x ^ _srl(x, 30)
    x = x * _C1
    x = x ^ _srl(x, 27)
    x = x * _C2
    return x ^ _srl(x, 31)


def _mix_int(x: int) -> int:
    return int(mix64(torch.tensor([_signed(x)], dtype=torch.int64))[0])


def prompt_key(seed: int, prompt_id: str) -> int:
    """The random key of one prompt under one seed."""
    digest = hashlib.blake2b(f"{seed}\x00{prompt_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def child_key(parent: int, index: int) -> int:
    """Key of the index-th sample drawn for a prompt (or the index-th fork of a row)."""
    return _mix_int(parent + (index + 1) * _GOLDEN)


def gumbel_noise(keys: torch.Tensor, draws: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """Gumbel(0, 1) noise [B, K] for rows with `keys` [B] at draw counters `draws` [B]."""
    row = mix64(keys ^ mix64(draws * _GOLDEN_S + 1))
    h = mix64(row[:, None] + token_ids * _GOLDEN_S)
    u = (_srl(h, 11).to(torch.float64) + 0.5) * (2.0**-53)
    return -torch.log(-torch.log(u))


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _show(value) -> str:
    return str(value) if _is_real(value) else repr(value)


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is drawn. temperature 0 means greedy."""

    temperature: float = 1.0
    top_k: int = 50  # 0 = no top-k filter
    top_p: float = 1.0

    def __post_init__(self):
        # Finite numbers only: an infinite temperature would also end up as `Infinity` in JSON output.
        if not _is_real(self.temperature) or not math.isfinite(self.temperature) or self.temperature < 0:
            raise SecateursError(f"temperature must be a finite number >= 0, got {_show(self.temperature)}")
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 0:
            raise SecateursError(f"top_k must be an integer >= 0, got {self.top_k!r}")
        if not _is_real(self.top_p) or not math.isfinite(self.top_p) or not 0 < self.top_p <= 1:
            raise SecateursError(f"top_p must be in (0, 1], got {_show(self.top_p)}")


def sample_tokens(
    logits: torch.Tensor, params: SamplingParams, keys: torch.Tensor, draws: torch.Tensor
) -> torch.Tensor:
    """Draw one token per row from temperature-1 `logits` [B, V] filtered by `params`."""
    if params.temperature == 0:
        return logits.argmax(-1)
    scores = logits.float() / params.temperature
    vocab = scores.shape[-1]
    if 0 < params.top_k < vocab:
        scores, ids = scores.topk(params.top_k, dim=-1)  # sorted, descending
    elif params.top_p < 1:
        scores, ids = scores.sort(dim=-1, descending=True)
    else:
        ids = torch.arange(vocab, device=scores.device).expand_as(scores)
    if params.top_p < 1:
        probs = scores.softmax(-1)
        mass_before = probs.cumsum(-1) - probs
        scores = scores.masked_fill(mass_before >= params.top_p, float("-inf"))
    noise = gumbel_noise(keys.to(scores.device), draws.to(scores.device), ids).to(scores.dtype)
    choice = (scores + noise).argmax(-1, keepdim=True)
    return ids.gather(-1, choice).squeeze(-1)


def uniforms(keys: torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
    """Uniform(0, 1) draws, one per (key, counter): for accept / reject decisions."""
    h = mix64(mix64(keys ^ 0x5EED) + counters * _GOLDEN_S)
    return (_srl(h, 11).to(torch.float64) + 0.5) * (2.0**-53)


def uniform(key: int, counter: int) -> float:
    return float(uniforms(torch.tensor([key]), torch.tensor([counter]))[0])
