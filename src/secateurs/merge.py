"""`secateurs merge`: join the results files of shard runs (`--shard I/N`) into one JSONL.

Every line of every input must be a secateurs result, and all of them must come from one
configuration (the same `run_fingerprint`: method, config, policy, reward, seed, library version);
anything else is refused rather than mixed. A prompt id found in two inputs is kept once if both
lines give the same answer (cost timings and speed-only settings such as max_batch_rows aside), and
refused otherwise. A cut-off last line (a shard killed mid-write) is refused too: rerun that shard
with the same command to finish it.

The shards must be complete: `run --shard I/N` writes {"index": I, "count": N, "prompts": P} on each
line, so a set that lacks a slice, holds a slice with fewer results than it has prompts (a run
killed and not resumed), or mixes slicings (different N, or different prompt sets) is refused with
one line naming what is missing, unless `allow_partial` (`--allow-partial`) is given. Lines without
the field (written before it existed, by `--ray`, or by a run of every prompt) are merged as they
are and cannot be checked.

The output is checked as `run` checks its --out, before anything is read: a folder, a device or
pipe (/dev/null), a path under a file, or an existing file that is not secateurs results is refused,
and so is an output that is one of the inputs. An existing output of secateurs results is treated as
`run` treats it, as finished work to keep: its lines must be of the same configuration and join the
merge (so merging again after finishing a shard only adds its results). The output is locked while
merging, written to a temporary file in the same folder and renamed over `out`, so a reader never
sees a half-written merge. Lines keep the inputs' order, except that when every id is an integer
(the default ids: the prompt's position) they are sorted by id, which restores the prompt file's
order.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from .errors import SecateursError
from .results import AlignResult, _load, _open_locked, _shard_ok, check_output
from .runner import SPEED_ONLY

# Cost fields that measure time or memory: they differ between runs of the same configuration.
_MEASURED = ("seconds", "lm_seconds", "rm_seconds", "other_seconds", "peak_memory_bytes",
             "lm_positions_prefilled", "lm_positions_decoded",  # positions: padding depends on the batch
             "lm_forward_calls",  # a request shares its forward calls with the batch's other rows
             "rm_positions")  # and the RM's reuse on what it read before


class IncompleteShards(SecateursError):
    """The shards given are not the whole set; `hint` names how to merge them anyway."""

    def __init__(self, what: str, hint: str = "allow_partial=True"):
        self.what = what
        super().__init__(f"merge: {what}; merge every shard, or pass {hint} to merge these anyway")


def _comparable(record: dict[str, Any]) -> dict[str, Any]:
    """What must agree between two lines for one prompt: the answer, not its timings or its slice."""
    record = dict(record)
    record["cost"] = {k: v for k, v in dict(record.get("cost") or {}).items() if k not in _MEASURED}
    record["config"] = {k: v for k, v in dict(record.get("config") or {}).items() if k not in SPEED_ONLY}
    record.pop("shard", None)
    return record


def _check_shards(records: list[dict[str, Any]], where: dict[str, str]) -> None:
    """Refuse (IncompleteShards) a set of results that is not every shard of one slicing, whole."""
    tagged = [r for r in records if r.get("shard") is not None]
    if not tagged:
        return
    slicings: dict[tuple[int, int], str] = {}
    for r in tagged:
        slicings.setdefault((r["shard"]["count"], r["shard"]["prompts"]), where[r["id"]].rsplit(" line ", 1)[0])
    if len(slicings) > 1:
        raise IncompleteShards("the inputs mix different slicings: " + ", ".join(
            f"{path} is one of {n} shards of {p} prompts" for (n, p), path in slicings.items()))
    [(count, total)] = slicings
    if len(records) >= total:
        return
    got = [0] * count
    for r in tagged:
        got[r["shard"]["index"]] += 1
    missing = [f"{i}/{count}" for i in range(count) if got[i] == 0 and len(range(i, total, count))]
    short = [f"{i}/{count} has {got[i]} of its {len(range(i, total, count))} results" for i in range(count)
             if 0 < got[i] < len(range(i, total, count))]
    parts = ([f"shard{'s' if len(missing) > 1 else ''} {', '.join(missing)} missing"] if missing else []) + \
        ([f"shard {', '.join(short)} (its run did not finish: rerun it)"] if short else [])
    raise IncompleteShards(f"{len(records)} of {total} prompts' results: " + "; ".join(parts or ["some missing"]))


def _no_nan(name: str):
    raise ValueError(f"{name} is not a valid JSON number")


def _read(path: Path) -> list[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise SecateursError(f"merge: {str(path)!r} is not a file")
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        raise SecateursError(f"merge: {path} ends with a cut-off line (its run was killed mid-write); "
                             "rerun that shard with the same command to finish it, then merge")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SecateursError(f"merge: {path} is not a secateurs results file (not UTF-8 text)") from None
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line, parse_constant=_no_nan)
            if not isinstance(record, dict):
                raise TypeError(f"a JSON {type(record).__name__}, not an object")
            AlignResult.from_json(record)  # checks the fields
            if not isinstance(record["id"], str):
                raise TypeError(f"'id' is {record['id']!r}, not a string")
            if not _shard_ok(record.get("shard")):
                raise TypeError(f"'shard' is {record['shard']!r}, not {{'index': I, 'count': N, 'prompts': P}}")
        except (json.JSONDecodeError, TypeError, KeyError, ValueError, AttributeError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise SecateursError(f"merge: {path} line {lineno} is not a secateurs result ({reason})") from None
        records.append((lineno, record))
    return records


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def merge_results(inputs: Iterable[str | Path], out: str | Path, allow_partial: bool = False) -> int:
    """Join results files of one configuration into `out` (atomically); return the number of results.
    `allow_partial`: merge even an incomplete or mixed set of shards (see the module's docstring)."""
    inputs = [Path(p) for p in inputs]
    out = Path(out)
    if not inputs:
        raise SecateursError("merge: no input files given")
    check_output(out)  # what run refuses as its --out, refused here too, before anything is read
    for path in inputs:
        if _same_file(path, out):
            raise SecateursError(f"merge: output {str(out)!r} is one of the inputs; write the merge to a new file")
    existed = out.exists()
    lock = _open_locked(out)  # a run still writing it, or another merge, fails here
    try:
        _load(out, lock, None, None)  # (re)checked under the lock: still secateurs results
        count = _merge_locked([*inputs, out] if existed else inputs, out, allow_partial)
    except BaseException:
        if not existed:
            out.unlink(missing_ok=True)  # the empty file the lock created
        raise
    finally:
        lock.close()
    return count


def _merge_locked(inputs: list[Path], out: Path, allow_partial: bool) -> int:
    merged: dict[str, dict[str, Any]] = {}
    where: dict[str, str] = {}
    fingerprint: str | None = None
    first_source = ""
    for path in inputs:
        for lineno, record in _read(path):
            source = f"{path} line {lineno}"
            fp = record.get("run_fingerprint", "")
            if fingerprint is None:
                fingerprint, first_source = fp, source
            elif fp != fingerprint:
                raise SecateursError(
                    f"merge: {source} comes from a different configuration than {first_source} (method "
                    f"{record.get('method')!r}, config {record.get('config')}, seed {record.get('seed')}, policy "
                    f"{record.get('policy')!r}, reward {record.get('reward_model')!r}); refusing to mix runs")
            pid = record["id"]
            if pid in merged:
                if _comparable(merged[pid]) != _comparable(record):
                    raise SecateursError(f"merge: prompt id {pid!r} has different results in {where[pid]} and "
                                         f"{source}; refusing to choose one")
                if merged[pid].get("shard") is None and record.get("shard") is not None:
                    merged[pid], where[pid] = record, source  # the same answer, and now its slice is known
                continue
            merged[pid] = record
            where[pid] = source
    records = list(merged.values())
    if not allow_partial:
        _check_shards(records, where)
    if records and all(isinstance(r["id"], str) and r["id"].isdigit() for r in records):
        records.sort(key=lambda r: int(r["id"]))
    fd, tmp = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(records)
