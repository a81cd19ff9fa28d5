"""One slice of the prompts, for running a job as N independent processes (a Slurm array, several
machines without Ray): `secateurs run --shard I/N` runs slice I, `secateurs merge` joins the outputs.

Slice I of N holds the prompts at positions p (0-based, in the prompt file's order) with
p % N == I: round-robin, so slices differ in size by at most one prompt and every prompt is in
exactly one slice. Slices depend only on the prompt order, not on ids or on anything random, so
every process given the same prompt file computes the same slices. Each slice's output is an
ordinary results JSONL (resumable like any run) whose lines carry their slice (`shard_tag`), so
`merge` can refuse a missing or unfinished slice.
"""

from __future__ import annotations

from typing import Sequence, TypeVar

from .errors import SecateursError

T = TypeVar("T")


def parse_shard(spec: str | tuple[int, int]) -> tuple[int, int]:
    """'I/N' (or (I, N)) -> (I, N), with 0 <= I < N."""
    if isinstance(spec, tuple) and len(spec) == 2:
        index, count = spec
    else:
        text = str(spec).strip()
        left, slash, right = text.partition("/")
        try:
            if not slash:
                raise ValueError
            index, count = int(left), int(right)
        except ValueError:
            raise SecateursError(f"--shard must be I/N with integers 0 <= I < N (e.g. 0/4), got {str(spec)!r}") from None
    if isinstance(index, bool) or isinstance(count, bool) or not isinstance(index, int) or not isinstance(count, int):
        raise SecateursError(f"--shard must be I/N with integers 0 <= I < N (e.g. 0/4), got {spec!r}")
    if count < 1:
        raise SecateursError(f"--shard {index}/{count}: the number of shards N must be >= 1")
    if not 0 <= index < count:
        raise SecateursError(f"--shard {index}/{count}: the shard index I must satisfy 0 <= I < {count} "
                             "(shards are numbered from 0)")
    return index, count


def select_shard(prompts: Sequence[T], spec: str | tuple[int, int]) -> list[T]:
    """The prompts of slice I/N: those at positions p with p % N == I, in their order."""
    index, count = parse_shard(spec)
    return [p for position, p in enumerate(prompts) if position % count == index]


def shard_tag(spec: str | tuple[int, int], total: int) -> dict[str, int]:
    """What each result of slice I/N of `total` prompts records (results.AlignResult.shard): with the
    total, merge knows how many results every slice must hold, an empty slice included."""
    index, count = parse_shard(spec)
    return {"index": index, "count": count, "prompts": total}
