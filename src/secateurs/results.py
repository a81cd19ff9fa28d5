"""One result per prompt, and the resumable JSONL file results are written to."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .errors import SecateursError
from .meter import Cost


@dataclass
class AlignResult:
    id: str
    prompt: Any  # the prompt string, or its chat messages
    response: str
    reward: float
    method: str
    config: dict[str, Any]
    seed: int
    policy: str
    reward_model: str
    finish_reason: str | None
    response_tokens: int
    cost: Cost
    details: dict[str, Any] = field(default_factory=dict)
    run_fingerprint: str = ""

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["cost"] = self.cost.to_dict()
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "AlignResult":
        d = dict(d)
        d["cost"] = Cost.from_dict(d["cost"])
        return cls(**d)


def read_results(path: Path, fingerprint: str, prompt_ids: Iterable[str]) -> dict[str, AlignResult]:
    """Results already in `path` from an earlier (possibly killed) run of the same configuration.

    A last line cut off by a kill is removed. A line from another configuration, or for a prompt
    not in this run, makes the run stop rather than mix outputs.
    """
    if not path.exists():
        return {}
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):  # the process died mid-write: drop the partial line
        with open(path, "r+b") as f:
            f.truncate(len(complete))
    wanted = set(prompt_ids)
    done: dict[str, AlignResult] = {}
    for lineno, line in enumerate(complete.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            result = AlignResult.from_json(record)
        except (json.JSONDecodeError, TypeError, KeyError) as e:
            raise SecateursError(f"{path} line {lineno} is not a secateurs result ({e}); use another --out") from None
        if result.run_fingerprint != fingerprint:
            raise SecateursError(
                f"{path} holds results of a different configuration (line {lineno}: method "
                f"{result.method!r}, config {result.config}, seed {result.seed}, policy {result.policy!r}, "
                f"reward {result.reward_model!r}); refusing to mix runs: use another --out or delete it"
            )
        if result.id not in wanted:
            raise SecateursError(f"{path} line {lineno} answers prompt id {result.id!r}, which is not in "
                                 "this run's prompts; refusing to mix runs: use another --out")
        if result.id in done:
            raise SecateursError(f"{path} line {lineno}: prompt id {result.id!r} appears twice")
        done[result.id] = result
    return done


class ResultWriter:
    """Appends one JSON line per result; each line goes out in one write and is flushed to disk."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")

    def write(self, results: Iterable[AlignResult]) -> None:
        for r in results:
            self._file.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
