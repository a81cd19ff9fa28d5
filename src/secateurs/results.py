"""One result per prompt, and the resumable JSONL file results are written to.

The output file is the user's: `open_results` refuses any file that is not wholly secateurs
results of this configuration and these prompts *before* changing a byte of it, and the only
thing it ever removes is the cut-off last line a killed run left. While a run writes, the file is
locked (flock), so a second process on the same output fails at once instead of interleaving.
"""

from __future__ import annotations

import codecs
import errno
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Sequence

from .errors import SecateursError
from .meter import Cost
from .prompts import Prompt, prompt_json_fingerprint

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the file is still checked before it is touched
    fcntl = None


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
    # Prompt.fingerprint of the prompt answered; filled in from `prompt` when not given.
    prompt_fingerprint: str = ""
    # `run --shard I/N`: {"index": I, "count": N, "prompts": P (the whole prompt set)}, so `merge` can tell
    # a missing or unfinished slice; None (and no field in the file) for a run of every prompt.
    shard: dict[str, int] | None = None

    def __post_init__(self):
        if not self.prompt_fingerprint:
            self.prompt_fingerprint = prompt_json_fingerprint(self.prompt)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["cost"] = self.cost.to_dict()
        if d["shard"] is None:  # lines of unsharded runs stay as they were
            del d["shard"]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "AlignResult":
        d = dict(d)
        d["cost"] = Cost.from_dict(d["cost"])
        return cls(**d)


# Every line ResultWriter writes starts with this (asdict keeps the field order: id first).
_LINE_START = '{"id": '
_REQUIRED = ("id", "prompt", "response", "reward", "method", "config", "seed", "run_fingerprint", "cost")


def _parse_result(line: str) -> AlignResult:
    """One line of a results file as an AlignResult; ValueError saying why it is not one."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON: {e.msg}") from None
    if not isinstance(record, dict):
        raise ValueError(f"a JSON {type(record).__name__}, not a result object")
    missing = [k for k in _REQUIRED if k not in record]
    if missing:
        raise ValueError(f"no {', '.join(repr(k) for k in missing)} field")
    if not isinstance(record["id"], str) or not isinstance(record["run_fingerprint"], str) \
            or not isinstance(record["cost"], dict) or not _shard_ok(record.get("shard")):
        raise ValueError("fields of the wrong type")
    try:
        return AlignResult.from_json(record)
    except (TypeError, KeyError, ValueError, AttributeError) as e:
        raise ValueError(f"not a result ({type(e).__name__}: {e})") from None


def _shard_ok(shard: Any) -> bool:
    if shard is None:
        return True
    if not isinstance(shard, dict) or set(shard) != {"index", "count", "prompts"}:
        return False
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in shard.values()):
        return False
    return 0 <= shard["index"] < shard["count"] and shard["prompts"] >= 0


_NUMBER_PREFIX = re.compile(r"-?(?:0|[1-9][0-9]*)?(?:\.[0-9]*)?(?:[eE][+-]?[0-9]*)?")
_ESCAPES = set('"\\/bfnrtu')


def is_json_prefix(text: str) -> bool:
    """Whether `text` is a proper prefix of some JSON text: what a write cut short leaves behind.
    A complete JSON value is not a proper prefix; nor is anything with a syntax error."""
    stack: list[str] = []  # open containers, '{' or '['
    expect = "value"  # value | value_or_close | key | key_or_close | colon | comma_or_close | end
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
            continue
        if expect == "end":
            return False
        if c == '"' and expect in ("value", "value_or_close", "key", "key_or_close"):
            j = i + 1
            while j < n and text[j] != '"':
                if text[j] == "\\":
                    if j + 1 < n and text[j + 1] not in _ESCAPES:
                        return False
                    if j + 1 < n and text[j + 1] == "u":
                        digits = text[j + 2:j + 6]
                        if not all(d in "0123456789abcdefABCDEF" for d in digits):
                            return False
                        j += 4
                    j += 2
                elif ord(text[j]) < 0x20:
                    return False
                else:
                    j += 1
            if j >= n:
                return True  # cut inside a string
            i = j + 1
            expect = "colon" if expect in ("key", "key_or_close") else _after_value(stack)
        elif c == ":" and expect == "colon":
            expect, i = "value", i + 1
        elif c == "," and expect == "comma_or_close":
            expect, i = ("key" if stack[-1] == "{" else "value"), i + 1
        elif c in "{[" and expect in ("value", "value_or_close"):
            stack.append(c)
            expect, i = ("key_or_close" if c == "{" else "value_or_close"), i + 1
        elif (c == "}" and expect in ("key_or_close", "comma_or_close") and stack and stack[-1] == "{") or \
                (c == "]" and expect in ("value_or_close", "comma_or_close") and stack and stack[-1] == "["):
            stack.pop()
            i += 1
            expect = _after_value(stack)
        elif expect in ("value", "value_or_close") and (c == "-" or c.isdigit()):
            m = _NUMBER_PREFIX.match(text, i)
            end = m.end()
            if end == n:
                return True  # cut inside a number
            if not re.fullmatch(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?", text[i:end]):
                return False
            i, expect = end, _after_value(stack)
        elif expect in ("value", "value_or_close") and c in "tfn":
            word = next(w for w in ("true", "false", "null") if w[0] == c)
            if word.startswith(text[i:i + len(word)]) and i + len(word) > n:
                return True  # cut inside a literal
            if text[i:i + len(word)] != word:
                return False
            i, expect = i + len(word), _after_value(stack)
        else:
            return False
    return expect != "end"  # ran out of text before the value was complete


def _after_value(stack: list[str]) -> str:
    return "comma_or_close" if stack else "end"


def _cut_off_line(tail: bytes) -> bool:
    """Whether bytes after the last newline are the start of a line ResultWriter was writing when the
    process died: UTF-8 (its last character may be cut in two), our line opening, and a JSON prefix."""
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(tail, final=False)
    except UnicodeDecodeError:
        return False
    if not (text.startswith(_LINE_START) or _LINE_START.startswith(text)):
        return False
    return is_json_prefix(text)


def _foreign(path: Path, why: str) -> SecateursError:
    return SecateursError(f"{path} is not a secateurs results file ({why}); refusing to touch it: "
                          "use another --out")


def _check_output_path(path: Path) -> None:
    if path.is_dir():
        raise SecateursError(f"output {str(path)!r} is a folder; give a file path such as {str(path / 'out.jsonl')!r}")
    if path.exists() and not path.is_file():  # /dev/null too: it cannot be fsynced, so it would fail mid-run
        raise SecateursError(f"output {str(path)!r} is not a regular file (a device or pipe); give a file path")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise SecateursError(f"cannot write output {str(path)!r}: {str(parent)!r} is a file, not a folder")
            break


def check_output(path: Path) -> None:
    """Refuse now, before any model loads, an output every run would refuse: a folder, a device or pipe,
    a path under a file, or an existing file that is not secateurs results. Changes nothing; the
    configuration and prompt checks come when open_results opens it."""
    path = Path(path)
    _check_output_path(path)
    if path.is_file():
        try:
            with open(path, "rb") as f:
                _load(path, f, None, None)
        except OSError as e:
            raise _os_error(path, "cannot read output", e) from None


def _open_locked(path: Path) -> IO[bytes]:
    """Open `path` for reading and appending (creating it and its folders), holding an exclusive lock."""
    path = Path(path)
    _check_output_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a+b", buffering=0)
    except OSError as e:
        raise _os_error(path, "cannot open output", e) from None
    if fcntl is not None:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            f.close()
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise SecateursError(f"output {str(path)!r} is being written by another running secateurs "
                                     "process; wait for it to finish or use another --out") from None
            raise _os_error(path, "cannot lock output", e) from None
    return f


def _os_error(path: Path, doing: str, e: OSError) -> SecateursError:
    reason = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
              errno.EACCES: "permission denied", errno.EROFS: "read-only file system",
              errno.EISDIR: "it is a folder", errno.ENOTDIR: "a folder on the path is a file"}.get(
        e.errno, e.strerror or str(e))
    return SecateursError(f"{doing} {str(path)!r}: {reason}")


def _load(path: Path, f: IO[bytes], fingerprint: str | None, prompts: dict[str, Prompt | None] | None,
          accept: Callable[[AlignResult], bool] | None = None) -> tuple[dict[str, AlignResult], int | None]:
    """Check everything in the open file; return the results by id and what the file needs before
    results are appended: the length to cut a killed run's partial last line back to, or -1 when its
    last line is a whole result with no newline (an editor dropped it). Nothing is changed here.
    fingerprint and prompts None: only that the file is secateurs results. `accept`: also takes a
    result of another fingerprint (one written before the fingerprint left out max_batch_rows)."""
    f.seek(0)
    data = f.read()
    end = data.rfind(b"\n") + 1
    complete, tail = data[:end], data[end:]
    try:
        text = complete.decode("utf-8")
    except UnicodeDecodeError as e:
        lineno = complete[:e.start].count(b"\n") + 1
        raise _foreign(path, f"line {lineno} is not UTF-8 text") from None
    results: list[tuple[int, AlignResult]] = []
    # Only "\n" ends a line: a response may hold U+2028 or U+0085, written as is (ensure_ascii=False).
    for lineno, line in enumerate(text.split("\n")[:-1], start=1):
        if not line.strip():
            continue
        try:
            results.append((lineno, _parse_result(line)))
        except ValueError as e:
            raise _foreign(path, f"line {lineno}: {e}") from None
    repair = None
    if tail:
        lineno = complete.count(b"\n") + 1
        try:
            results.append((lineno, _parse_result(tail.decode("utf-8"))))
            repair = -1
        except (UnicodeDecodeError, ValueError):
            if not _cut_off_line(tail):
                raise _foreign(path, f"its last line {lineno} has no newline and is not a cut-off result line"
                               ) from None
            repair = len(complete)
    done: dict[str, AlignResult] = {}
    for lineno, result in results:
        if fingerprint is None:
            continue
        if result.run_fingerprint != fingerprint and not (accept is not None and accept(result)):
            raise SecateursError(
                f"{path} holds results of a different configuration (line {lineno}: method "
                f"{result.method!r}, config {result.config}, seed {result.seed}, policy {result.policy!r}, "
                f"reward {result.reward_model!r}); refusing to mix runs: use another --out or delete it"
            )
        if result.id not in prompts:
            raise SecateursError(f"{path} line {lineno} answers prompt id {result.id!r}, which is not in "
                                 "this run's prompts; refusing to mix runs: use another --out")
        prompt = prompts[result.id]
        if prompt is not None and result.prompt_fingerprint != prompt.fingerprint:
            raise SecateursError(
                f"{path} line {lineno} answers a different prompt under id {result.id!r} "
                f"({_preview(result.prompt)} there, {_preview(prompt.to_json())} now); refusing to mix runs: "
                "use another --out"
            )
        if result.id in done:
            raise SecateursError(f"{path} line {lineno}: prompt id {result.id!r} appears twice")
        done[result.id] = result
    return done, repair


def _preview(prompt: Any) -> str:
    text = prompt if isinstance(prompt, str) else json.dumps(prompt, ensure_ascii=False)
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _repair(path: Path, f: IO[bytes], repair: int | None) -> None:
    """Drop a cut-off last line (repair = the length to keep), or end a whole last line (repair = -1)."""
    if repair is None:
        return
    try:
        if repair < 0:
            f.write(b"\n")
        else:
            f.truncate(repair)
        os.fsync(f.fileno())
    except OSError as e:
        raise _os_error(path, "cannot repair output", e) from None


def open_results(path: Path, fingerprint: str, prompts: Sequence[Prompt],
                 accept: Callable[[AlignResult], bool] | None = None
                 ) -> tuple[dict[str, AlignResult], "ResultWriter"]:
    """Lock `path` and return the results already there (by prompt id) and a writer appending to it.

    Refused with one line naming the path, before anything is changed: a file that is not secateurs
    results (notes, the prompt file, non-UTF-8 bytes), results of another configuration, a result
    for a prompt id not in `prompts` or for a different prompt under the same id, an output that is
    a folder, under a file or unwritable, and an output another process is writing. The only change
    ever made to an existing file is dropping a last line cut off mid-write. `writer.close()`
    releases the lock. `accept(result)`: whether a result of another fingerprint is of this
    configuration all the same (runner.py: files written before max_batch_rows left the fingerprint).
    """
    path = Path(path)
    f = _open_locked(path)
    try:
        done, repair = _load(path, f, fingerprint, {p.id: p for p in prompts}, accept)
        _repair(path, f, repair)
    except BaseException:
        f.close()
        raise
    return done, ResultWriter(path, _file=f)


def read_results(path: Path, fingerprint: str, prompt_ids: Iterable[str] | Sequence[Prompt]
                 ) -> dict[str, AlignResult]:
    """Results already in `path`, checked as `open_results` checks them (prompts' fingerprints only
    when Prompts rather than ids are given); the lock is released on return. Prefer open_results."""
    path = Path(path)
    if not path.exists():
        return {}
    wanted: dict[str, Prompt | None] = {}
    for p in prompt_ids:
        if isinstance(p, Prompt):
            wanted[p.id] = p
        else:
            wanted[str(p)] = None
    f = _open_locked(path)
    try:
        done, repair = _load(path, f, fingerprint, wanted)
        _repair(path, f, repair)
    finally:
        f.close()
    return done


def result_line(result: AlignResult, path: Path | str = "output") -> bytes:
    """One result as the UTF-8 JSON line written to a results file. NaN or infinity anywhere in it
    (a reward, a detail) is refused: JSON has no such numbers."""
    try:
        return (json.dumps(result.to_json(), ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
    except ValueError:
        raise SecateursError(f"result for prompt {result.id!r} holds NaN or infinity (reward {result.reward}); "
                             f"not written to {str(path)!r}") from None
    except TypeError as e:
        raise SecateursError(f"result for prompt {result.id!r} cannot be written to {str(path)!r}: {e}") from None


class ResultWriter:
    """Appends one JSON line per result; each batch goes out in one write and is fsynced. Holds the
    output's lock until closed. A failed write (disk full) is rolled back, so no partial line is left."""

    def __init__(self, path: Path, *, _file: IO[bytes] | None = None):
        self.path = Path(path)
        self._file = _file if _file is not None else _open_locked(self.path)

    def write(self, results: Iterable[AlignResult]) -> None:
        if self._file is None:
            raise SecateursError(f"output {str(self.path)!r} is already closed")
        data = b"".join(result_line(r, self.path) for r in results)
        if not data:
            return
        size = os.fstat(self._file.fileno()).st_size
        try:
            view = memoryview(data)
            while view:
                written = self._file.write(view)
                view = view[written:]
            os.fsync(self._file.fileno())
        except BaseException as e:  # a full disk, or Ctrl-C mid-write: no half-written line left behind
            try:
                self._file.truncate(size)
            except OSError:
                pass
            if isinstance(e, OSError):
                raise _os_error(self.path, "cannot write output", e) from None
            raise

    def close(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            try:
                f.close()
            except OSError as e:
                raise _os_error(self.path, "cannot close output", e) from None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
