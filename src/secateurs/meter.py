"""Cost accounting: every LM forward, token and RM call is counted, and time is split by phase.

Counts are per request (one prompt answered by one method) and exact; all but the first and the last two do not
depend on how requests were batched (the positions computed do: padding and rows sitting out):
- lm_forward_calls: batched forward passes that processed at least one token of this request
  (more when its samples did not all get rows at once, e.g. Best-of-N with N > free rows);
- lm_tokens_prefilled: prompt tokens run through the LM (a prompt shared by N samples counts once);
- lm_tokens_decoded: response tokens run through the LM, including tokens recomputed after a rewind;
- tokens_generated: tokens sampled (kept or later rejected);
- rm_calls: (prompt, response) pairs scored; rm_tokens: tokens the RM read for them;
- rm_positions: positions a model RM computed for them (padding included, tokens it had read before
  and reused excluded: rewards/prefix_cache.py); for a function, the tokens;
- lm_tokens_cached: prompt (and resumed-prefix) tokens served from the engine's prefix cache instead
  of computed (the vllm backend; the transformers backend forks its prompt cache, so it reports 0);
- lm_positions_prefilled / lm_positions_decoded: positions the forward computed for this request's
  rows, padding and masked columns of rows that sat out included (rows x columns of each forward):
  the compute the token counts above leave out. `lm_positions / lm_tokens` is the waste ratio.
Seconds: each decode step (forward to sampled tokens on the host) and each RM call is timed once
and split between the requests in it in proportion to their tokens; the rest of the scheduler's
wall time ("other": admission, bookkeeping) is split evenly between the requests in flight.
Peak memory is the device's peak (CUDA), or the process's peak resident memory (CPU, where the OS
gives no finer figure).
"""

from __future__ import annotations

import resource
import time
from dataclasses import asdict, dataclass, fields
from typing import Hashable, Iterable, Mapping, Sequence

import torch


@dataclass
class Cost:
    lm_forward_calls: int = 0
    lm_tokens_prefilled: int = 0
    lm_tokens_decoded: int = 0
    tokens_generated: int = 0
    rm_calls: int = 0
    rm_tokens: int = 0
    lm_seconds: float = 0.0
    rm_seconds: float = 0.0
    other_seconds: float = 0.0
    peak_memory_bytes: int = 0
    lm_tokens_cached: int = 0
    lm_positions_prefilled: int = 0
    lm_positions_decoded: int = 0
    rm_positions: int = 0

    @property
    def lm_positions(self) -> int:
        return self.lm_positions_prefilled + self.lm_positions_decoded

    @property
    def seconds(self) -> float:
        return self.lm_seconds + self.rm_seconds + self.other_seconds

    @property
    def lm_tokens(self) -> int:
        return self.lm_tokens_prefilled + self.lm_tokens_decoded

    def __add__(self, other: "Cost") -> "Cost":
        out = Cost()
        for f in fields(Cost):
            a, b = getattr(self, f.name), getattr(other, f.name)
            setattr(out, f.name, max(a, b) if f.name == "peak_memory_bytes" else a + b)
        return out

    def to_dict(self) -> dict:
        d = asdict(self)
        d["seconds"] = self.seconds
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Cost":
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


class Meter:
    """Costs of the requests in flight, keyed by any hashable (the scheduler uses its requests)."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.costs: dict[Hashable, Cost] = {}
        self.device = torch.device(device)
        self._measured = 0.0  # LM + RM seconds recorded since the last mark()
        self._mark = time.perf_counter()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def open(self, key: Hashable) -> None:
        self.costs[key] = Cost()

    def close(self, key: Hashable) -> Cost:
        cost = self.costs.pop(key)
        cost.peak_memory_bytes = max(cost.peak_memory_bytes, peak_memory_bytes(self.device))
        return cost

    def lm_forward(self, tokens: Mapping[Hashable, int], seconds: float, prefill: bool,
                   positions: Mapping[Hashable, int] | None = None) -> None:
        """`positions`: what the forward computed per key (rows x columns); default: the tokens."""
        total = sum(tokens.values())
        for key, n in (positions or tokens).items():
            if key in self.costs:
                if prefill:
                    self.costs[key].lm_positions_prefilled += n
                else:
                    self.costs[key].lm_positions_decoded += n
        for key, n in tokens.items():
            cost = self.costs[key]
            cost.lm_forward_calls += 1
            if prefill:
                cost.lm_tokens_prefilled += n
            else:
                cost.lm_tokens_decoded += n
            cost.lm_seconds += seconds * n / total
        self._measured += seconds

    def generated(self, tokens: Mapping[Hashable, int]) -> None:
        for key, n in tokens.items():
            self.costs[key].tokens_generated += n

    def prefix_cached(self, tokens: Mapping[Hashable, int]) -> None:
        for key, n in tokens.items():
            self.costs[key].lm_tokens_cached += n

    def rm_call(self, keys: Sequence[Hashable], tokens: Sequence[int], seconds: float,
                positions: Sequence[int] | None = None) -> None:
        weight: dict[Hashable, int] = {}
        for key, n, p in zip(keys, tokens, positions if positions is not None else tokens):
            weight[key] = weight.get(key, 0) + max(n, 1)
            self.costs[key].rm_calls += 1
            self.costs[key].rm_tokens += n
            self.costs[key].rm_positions += p
        total = sum(weight.values())
        for key, w in weight.items():
            self.costs[key].rm_seconds += seconds * w / total
        self._measured += seconds

    def mark(self, in_flight: Iterable[Hashable]) -> None:
        """Split the wall time since the last mark that no LM or RM timing covered between `in_flight`."""
        now = time.perf_counter()
        keys = [k for k in in_flight if k in self.costs]
        other = max(0.0, now - self._mark - self._measured)
        for key in keys:
            self.costs[key].other_seconds += other / len(keys)
        self._mark, self._measured = now, 0.0
