"""`secateurs merge`: join the results files of shard runs (`--shard I/N`) into one JSONL.

Every line of every input must be a secateurs result, and all of them must come from one
configuration (the same `run_fingerprint`: method, config, policy, reward, seed, library version);
anything else is refused rather than mixed. A prompt id found in two inputs is kept once if both
lines give the same answer (cost timings aside), and refused otherwise. A cut-off last line (a
shard killed mid-write) is refused too: rerun that shard with the same command to finish it.
The output is written to a temporary file in the same folder and renamed over `out`, so a reader
never sees a half-written merge. Lines keep the inputs' order, except that when every id is an
integer (the default ids: the prompt's position) they are sorted by id, which restores the prompt
file's order.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from .errors import SecateursError
from .results import AlignResult

# Cost fields that measure time or memory: they differ between runs of the same configuration.
_MEASURED = ("seconds", "lm_seconds", "rm_seconds", "other_seconds", "peak_memory_bytes",
             "lm_positions_prefilled", "lm_positions_decoded",  # positions: padding depends on the batch
             "rm_positions")  # and the RM's reuse on what it read before


def _comparable(record: dict[str, Any]) -> dict[str, Any]:
    record = dict(record)
    record["cost"] = {k: v for k, v in dict(record.get("cost") or {}).items() if k not in _MEASURED}
    return record


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
        except (json.JSONDecodeError, TypeError, KeyError, ValueError, AttributeError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise SecateursError(f"merge: {path} line {lineno} is not a secateurs result ({reason})") from None
        records.append((lineno, record))
    return records


def merge_results(inputs: Iterable[str | Path], out: str | Path) -> int:
    """Join results files of one configuration into `out` (atomically); return the number of results."""
    inputs = [Path(p) for p in inputs]
    out = Path(out)
    if not inputs:
        raise SecateursError("merge: no input files given")
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
                continue
            merged[pid] = record
            where[pid] = source
    records = list(merged.values())
    if records and all(isinstance(r["id"], str) and r["id"].isdigit() for r in records):
        records.sort(key=lambda r: int(r["id"]))
    out.parent.mkdir(parents=True, exist_ok=True)
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
