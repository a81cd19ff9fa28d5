"""Cost accounting: every LM forward, token and RM call is counted, and time is split by phase.

Counts are per prompt and exact, and do not depend on how prompts were batched:
- lm_forward_calls: batched forward passes that processed at least one token of this prompt
  (what a one-prompt-at-a-time run of the same method would make);
- lm_tokens_prefilled: prompt tokens run through the LM (a prompt shared by N samples counts once);
- lm_tokens_decoded: response tokens run through the LM, including tokens recomputed after a rewind;
- tokens_generated: tokens sampled (kept or later rejected);
- rm_calls: (prompt, response) pairs scored; rm_tokens: tokens the RM read for them.
Seconds: each batched LM forward / RM call is timed and its time split between the prompts in it
in proportion to their tokens; the rest of the batch's wall time ("other": sampling, bookkeeping)
is split evenly. Peak memory is the device's peak during the batch (CUDA), or the process's peak
resident memory (CPU, where the OS gives no per-batch figure).
"""

from __future__ import annotations

import resource
import time
from dataclasses import asdict, dataclass, fields
from typing import Sequence

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


def _peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


class Meter:
    """Collects the cost of one batch of prompts (groups 0..n_groups-1)."""

    def __init__(self, n_groups: int, device: torch.device | str = "cpu"):
        self.costs = [Cost() for _ in range(n_groups)]
        self.device = torch.device(device)
        self._start = time.perf_counter()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def _share(self, per_group: Sequence[int], seconds: float):
        total = sum(per_group)
        for g, n in enumerate(per_group):
            if n:
                yield self.costs[g], n, seconds * n / total

    def lm_forward(self, tokens_per_group: Sequence[int], seconds: float, prefill: bool) -> None:
        for cost, n, share in self._share(tokens_per_group, seconds):
            cost.lm_forward_calls += 1
            if prefill:
                cost.lm_tokens_prefilled += n
            else:
                cost.lm_tokens_decoded += n
            cost.lm_seconds += share

    def generated(self, tokens_per_group: Sequence[int]) -> None:
        for g, n in enumerate(tokens_per_group):
            self.costs[g].tokens_generated += n

    def rm_call(self, groups: Sequence[int], tokens: Sequence[int], seconds: float) -> None:
        per_group = [0] * len(self.costs)
        for g, n in zip(groups, tokens):
            per_group[g] += max(n, 1)
            self.costs[g].rm_calls += 1
            self.costs[g].rm_tokens += n
        for cost, _, share in self._share(per_group, seconds):
            cost.rm_seconds += share

    def finish(self) -> list[Cost]:
        """Close the batch: attribute the remaining wall time and the peak memory."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        wall = time.perf_counter() - self._start
        measured = sum(c.lm_seconds + c.rm_seconds for c in self.costs)
        other = max(0.0, wall - measured) / max(1, len(self.costs))
        peak = _peak_memory_bytes(self.device)
        for c in self.costs:
            c.other_seconds += other
            c.peak_memory_bytes = max(c.peak_memory_bytes, peak)
        return self.costs
