"""Prompts: loading JSONL/JSON prompt files, validating them, and the built-in prompt set."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Sequence

from .errors import SecateursError

Message = dict[str, str]


@dataclass(frozen=True)
class Prompt:
    """One conversation to answer: chat messages ending with a user turn, and a stable id."""

    id: str
    messages: tuple[Message, ...] = field(default_factory=tuple)

    @property
    def text(self) -> str:
        """The last user message: what scorers that read plain text see as 'the prompt'."""
        for message in reversed(self.messages):
            if message["role"] == "user":
                return message["content"]
        return self.messages[-1]["content"]

    @property
    def fingerprint(self) -> str:
        """A short hash of the messages: a stored result answers this prompt only if its fingerprint matches."""
        return messages_fingerprint(self.messages)

    def to_json(self) -> Any:
        if len(self.messages) == 1 and self.messages[0]["role"] == "user":
            return self.messages[0]["content"]
        return [dict(m) for m in self.messages]


def messages_fingerprint(messages: Sequence[Message]) -> str:
    """sha256 of the canonical JSON of chat messages (role and content only), first 16 hex digits."""
    canonical = json.dumps([{"role": m["role"], "content": m["content"]} for m in messages],
                           ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def prompt_json_fingerprint(prompt: Any) -> str:
    """The fingerprint of a prompt as `Prompt.to_json` stores it (a string or a messages list);
    "" when it is neither."""
    if isinstance(prompt, str):
        return messages_fingerprint(({"role": "user", "content": prompt},))
    if isinstance(prompt, list) and all(isinstance(m, dict) and isinstance(m.get("role"), str)
                                        and isinstance(m.get("content"), str) for m in prompt):
        return messages_fingerprint(prompt)
    return ""


def _validate_messages(messages: Any, where: str) -> tuple[Message, ...]:
    if not isinstance(messages, list) or not messages:
        raise SecateursError(f"{where}: 'messages' must be a non-empty list, got {messages!r:.80}")
    checked = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise SecateursError(f"{where}: message {i} must have string 'role' and 'content', got {m!r:.80}")
        checked.append({"role": m["role"], "content": m["content"]})
    if checked[-1]["role"] != "user":
        raise SecateursError(f"{where}: the last message must be from the user, got role {checked[-1]['role']!r}")
    if not any(m["content"].strip() for m in checked if m["role"] == "user"):
        raise SecateursError(f"{where}: the prompt is empty")
    return tuple(checked)


def make_prompt(value: Any, default_id: str, where: str | None = None) -> Prompt:
    """Build a Prompt from a string, a messages list, a Prompt, or a dict with 'prompt'/'messages' and 'id'."""
    where = where or f"prompt {default_id}"
    if isinstance(value, Prompt):
        return value
    if isinstance(value, str):
        if not value.strip():
            raise SecateursError(f"{where}: the prompt is empty")
        return Prompt(default_id, ({"role": "user", "content": value},))
    if isinstance(value, list):
        return Prompt(default_id, _validate_messages(value, where))
    if isinstance(value, dict):
        pid = value.get("id", default_id)
        if not isinstance(pid, (str, int)) or isinstance(pid, bool):
            raise SecateursError(f"{where}: 'id' must be a string or integer, got {pid!r}")
        pid = str(pid)
        if "messages" in value:
            return Prompt(pid, _validate_messages(value["messages"], where))
        if "prompt" in value:
            text = value["prompt"]
            if isinstance(text, list):
                return Prompt(pid, _validate_messages(text, where))
            if not isinstance(text, str):
                raise SecateursError(f"{where}: 'prompt' must be a string, got {type(text).__name__}")
            return make_prompt(text, pid, where)
        raise SecateursError(f"{where}: needs a 'prompt' (string) or 'messages' (list) field; has {sorted(value)}")
    raise SecateursError(f"{where}: expected a string, a messages list or an object, got {type(value).__name__}")


def make_prompts(values: Iterable[Any]) -> list[Prompt]:
    prompts = [make_prompt(v, str(i)) for i, v in enumerate(values)]
    check_unique_ids(prompts)
    return prompts


def check_unique_ids(prompts: Sequence[Prompt], source: str = "prompts") -> None:
    seen: set[str] = set()
    for p in prompts:
        if p.id in seen:
            raise SecateursError(f"{source}: duplicate prompt id {p.id!r}")
        seen.add(p.id)


# Table formats people may hand us; they are not read (yet), so they get a clear refusal.
UNSUPPORTED_SUFFIXES = (".parquet", ".csv", ".arrow", ".tsv", ".xlsx")
# Names that mark a string given as `prompts` as a file rather than a prompt.
PROMPT_FILE_SUFFIXES = (".jsonl", ".json") + UNSUPPORTED_SUFFIXES


def read_text_file(path: Path, what: str) -> str:
    """A UTF-8 text file's content (a leading byte-order mark dropped); unreadable or non-UTF-8 files
    fail with one line naming the file and where the bad byte is."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SecateursError(f"cannot read {what} {str(path)!r}: {e.strerror or e}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise SecateursError(f"{what} {str(path)!r} is not UTF-8 text (line {line}, byte {e.start}: "
                             f"{data[e.start:e.start + 1]!r}); save it as UTF-8") from None


def looks_like_prompt_file(text: str) -> bool:
    """Whether a string given as `prompts` names a file (prompts.jsonl, ./data/p.json, ~/x.parquet)
    rather than being a prompt ("Explain what data.json holds" is a prompt)."""
    if "\n" in text or not text.strip().lower().endswith(PROMPT_FILE_SUFFIXES):
        return False
    text = text.strip()
    return not any(c.isspace() for c in text) or text.startswith(("/", "./", "../", "~", ".\\", "..\\"))


def load_prompts(path: str | Path) -> list[Prompt]:
    """Read prompts from a JSONL file (one object per line) or a JSON file holding a list.

    Each entry holds 'prompt' (a string) or 'messages' (chat messages), and optionally 'id'
    (default: the entry's 0-based position). Errors name the file and line.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        if path.is_dir():
            raise SecateursError(f"prompt file {str(path)!r} is a folder, not a file")
        raise SecateursError(f"prompt file not found: {str(path)!r}")
    if path.suffix.lower() in UNSUPPORTED_SUFFIXES:
        raise SecateursError(f"prompt file {str(path)!r}: {path.suffix} files are not supported; "
                             "use JSONL (one JSON object per line) or a .json file holding a list")
    text = read_text_file(path, "prompt file")
    entries: list[tuple[Any, str]] = []
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SecateursError(f"{path}: malformed JSON at line {e.lineno}: {e.msg}") from None
        if not isinstance(data, list):
            raise SecateursError(f"{path}: a .json prompt file must hold a list, got {type(data).__name__}")
        entries = [(d, f"{path} entry {i}") for i, d in enumerate(data)]
    else:
        # Only "\n" ends a line: JSON strings may hold U+2028, U+0085 and the like (str.splitlines would cut there).
        for lineno, line in enumerate(text.split("\n"), start=1):
            line = line.removesuffix("\r")
            if not line.strip():
                continue
            try:
                entries.append((json.loads(line), f"{path} line {lineno}"))
            except json.JSONDecodeError as e:
                raise SecateursError(f"{path} line {lineno}: malformed JSON ({e.msg}): {line[:80]!r}") from None
    if not entries:
        raise SecateursError(f"{path}: no prompts in the file")
    prompts = [make_prompt(d, str(i), where) for i, (d, where) in enumerate(entries)]
    check_unique_ids(prompts, str(path))
    return prompts


def builtin_prompts() -> list[Prompt]:
    """The small prompt set shipped with the package, used when no prompt file is given."""
    source = resources.files("secateurs") / "data" / "default_prompts.jsonl"
    with resources.as_file(source) as path:
        return load_prompts(path)
