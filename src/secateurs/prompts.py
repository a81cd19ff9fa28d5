"""Prompts: loading them from JSONL/JSON files, tables the `datasets` library reads (Parquet, Arrow, CSV,
saved dataset folders, cached Hub datasets) or `datasets.Dataset` objects; validating them; the built-in set."""

from __future__ import annotations

import hashlib
import json
import re
import string
import sys
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

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
        if "messages" in value and "prompt" in value:  # which one is the prompt? guessing would answer another
            raise SecateursError(f"{where}: has both 'prompt' and 'messages'; keep one, or name the one to use "
                                 f"with --prompt-field / --messages-field (prompt_field= / messages_field=)")
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


# Table formats the `datasets` library reads for us (suffix -> its packaged builder).
TABLE_SUFFIXES = {".parquet": "parquet", ".arrow": "arrow", ".csv": "csv", ".tsv": "csv"}
# Formats people may hand us that nothing here reads: they get a clear refusal.
UNSUPPORTED_SUFFIXES = (".xlsx",)
# Names that mark a string given as `prompts` as a file rather than a prompt.
PROMPT_FILE_SUFFIXES = (".jsonl", ".json") + tuple(TABLE_SUFFIXES) + UNSUPPORTED_SUFFIXES
# `prompts="hf:owner/name"` names a Hugging Face Hub dataset (read from the local cache only).
HUB_PREFIX = "hf:"
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
# Column names tried, in this order, when neither prompt_field nor messages_field is given.
DEFAULT_FIELDS = ("prompt", "messages", "instruction", "question", "conversations", "chosen")
INSTRUCTION_TEMPLATE = "{instruction}\n\n{input}"
# ShareGPT-style `from` values -> chat roles.
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bard": "assistant", "bing": "assistant", "model": "assistant",
                  "system": "system"}
# HH-RLHF transcripts: "\n\nHuman: ...\n\nAssistant: ...".
_TRANSCRIPT_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")


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


def looks_like_prompt_source(text: str) -> bool:
    """Whether a string given as `prompts` names a source rather than being a prompt: a prompt file
    (see looks_like_prompt_file), "hf:owner/name", or an existing folder written as a path (has a
    slash or starts with "~" or ".", no spaces)."""
    if looks_like_prompt_file(text):
        return True
    text = text.strip()
    if not text or any(c.isspace() for c in text):
        return False
    return text.startswith(HUB_PREFIX) or (("/" in text or "\\" in text or text[0] in "~.")
                                           and Path(text).expanduser().is_dir())


def is_hf_dataset(obj: Any) -> bool:
    """Whether obj is a `datasets.Dataset` or `datasets.DatasetDict` (without importing `datasets`)."""
    module = sys.modules.get("datasets")
    return module is not None and isinstance(obj, (module.Dataset, module.DatasetDict))


# --- fields: which column holds the prompt ------------------------------------------------------------

def _names(columns: Iterable[str]) -> str:
    return ", ".join(repr(c) for c in columns) or "none"


def _template_fields(template: str, where: str) -> list[str]:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise SecateursError(f"prompt_field template {template!r}: {e}") from None
    fields = []
    for _, name, _, _ in parsed:
        if name is None:
            continue
        root = re.split(r"[.\[]", name, maxsplit=1)[0]
        if not root or root.isdigit():
            raise SecateursError(f"prompt_field template {template!r}: each {{...}} must name a field, "
                                 f"got {{{name}}}")
        fields.append(root)
    return fields


def _check_field(name: str, option: str, columns: Sequence[str], where: str) -> None:
    if not isinstance(name, str) or not name:
        raise SecateursError(f"{option} must be a non-empty string, got {name!r}")
    if name not in columns:
        raise SecateursError(f"{where}: no field {name!r} ({option}); the fields are: {_names(columns)}")


def _plan(columns: Sequence[str], prompt_field: str | None, messages_field: str | None, where: str
          ) -> tuple[str, str, bool] | None:
    """How to read a row with these columns: (kind, field or template, drop trailing assistant turns);
    kind is "text" (a string, or a strict messages list), "template" or "messages". None when no
    field is given and no default field is present."""
    if prompt_field is not None and messages_field is not None:
        raise SecateursError("give prompt_field or messages_field, not both")
    if prompt_field is not None:
        if isinstance(prompt_field, str) and "{" in prompt_field:
            missing = [f for f in _template_fields(prompt_field, where) if f not in columns]
            if missing:
                raise SecateursError(f"{where}: prompt_field template {prompt_field!r} names {_names(missing)}, "
                                     f"which {'is' if len(missing) == 1 else 'are'} not there; "
                                     f"the fields are: {_names(columns)}")
            return ("template", prompt_field, False)
        _check_field(prompt_field, "prompt_field", columns, where)
        return ("text", prompt_field, False)
    if messages_field is not None:
        _check_field(messages_field, "messages_field", columns, where)
        return ("messages", messages_field, True)
    for name in DEFAULT_FIELDS:
        if name in columns:
            if name == "instruction":
                return ("template", INSTRUCTION_TEMPLATE, False) if "input" in columns else ("text", name, False)
            if name in ("prompt", "question"):
                return ("text", name, False)
            return ("messages", name, name != "messages")  # a native 'messages' list must end with the user
    return None


def _no_prompt_field(columns: Iterable[str], where: str) -> SecateursError:
    return SecateursError(f"{where}: needs a 'prompt' (string) or 'messages' (list) field, or one of 'instruction', "
                          f"'question', 'conversations', 'chosen', or name it with prompt_field= / "
                          f"messages_field=; the fields are: {_names(sorted(columns))}")


def _parse_transcript(text: str, field: str, where: str) -> list[Message]:
    """An HH-RLHF style "\\n\\nHuman: ...\\n\\nAssistant: ..." transcript as chat messages."""
    parts = _TRANSCRIPT_TURN.split(text)
    if len(parts) < 3 or parts[0].strip():
        raise SecateursError(f"{where}: {field!r} is a string but not a 'Human: ... Assistant: ...' transcript; "
                             f"use prompt_field= for plain text")
    roles = {"Human": "user", "Assistant": "assistant"}
    return [{"role": roles[parts[i]], "content": parts[i + 1].strip()} for i in range(1, len(parts), 2)]


def _messages_from(value: Any, field: str, where: str, lenient: bool) -> tuple[Message, ...]:
    if not lenient:
        return _validate_messages(value, where)
    if isinstance(value, str):
        messages: list[Any] = _parse_transcript(value, field, where)
    elif isinstance(value, list) and value:
        messages = []
        for i, m in enumerate(value):
            if isinstance(m, dict) and m.get("role") is None and "from" in m:  # ShareGPT {"from", "value"}
                role = SHAREGPT_ROLES.get(str(m["from"]).lower())
                if role is None:
                    raise SecateursError(f"{where}: message {i} of {field!r} is from {m['from']!r}; expected one of "
                                         f"{_names(SHAREGPT_ROLES)}")
                m = {"role": role, "content": m.get("value")}
            messages.append(m)
    else:
        raise SecateursError(f"{where}: {field!r} must be a non-empty list of messages or a 'Human: ... "
                             f"Assistant: ...' transcript, got {value!r:.80}")
    while messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "assistant":
        messages.pop()  # a whole transcript: the prompt is everything up to its last user turn
    if not messages:
        raise SecateursError(f"{where}: {field!r} has no user turn")
    return _validate_messages(messages, where)


def _row_prompt(row: dict, pid: str, plan: tuple[str, str, bool], where: str) -> Prompt:
    kind, spec, lenient = plan
    if kind == "template":
        values = {k: "" if v is None else v for k, v in row.items()}
        try:
            text = spec.format_map(values).strip()
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as e:
            raise SecateursError(f"{where}: prompt_field template {spec!r} failed: {type(e).__name__}: {e}") from None
        return make_prompt(text, pid, where)
    value = row[spec]
    if kind == "messages":
        return Prompt(pid, _messages_from(value, spec, where, lenient))
    if value is None or isinstance(value, str):
        return make_prompt(value or "", pid, where)
    if isinstance(value, list):
        return Prompt(pid, _validate_messages(value, where))
    raise SecateursError(f"{where}: {spec!r} must be a string, got {type(value).__name__}")


def _row_id(row: dict, position: int, id_field: str | None, where: str) -> str:
    pid = row[id_field] if id_field is not None else row.get("id", position)
    if not isinstance(pid, (str, int)) or isinstance(pid, bool):
        raise SecateursError(f"{where}: {id_field or 'id'!r} must be a string or integer, got {pid!r}")
    return str(pid)


def prompts_from_rows(rows: Iterable[Any], source: str, *, prompt_field: str | None = None,
                      messages_field: str | None = None, id_field: str | None = None,
                      columns: Sequence[str] | None = None, where: Any = None) -> list[Prompt]:
    """Prompts from rows (dicts; strings, messages lists and Prompts are taken as make_prompt takes them).

    columns: the table's fields, when all rows share them (a Dataset): the fields are then chosen once.
    where(i): how errors name row i (default: "<source> row i"). See load_prompts for the fields."""
    where = where or (lambda i: f"{source} row {i}")
    fields_given = prompt_field is not None or messages_field is not None
    if id_field is not None and (not isinstance(id_field, str) or not id_field):
        raise SecateursError(f"id_field must be a non-empty string, got {id_field!r}")
    table_plan = None
    if columns is not None:
        columns = list(columns)
        table_plan = _plan(columns, prompt_field, messages_field, source)
        if table_plan is None:
            raise _no_prompt_field(columns, source)
        if id_field is not None:
            _check_field(id_field, "id_field", columns, source)
    prompts = []
    for i, row in enumerate(rows):
        here = where(i)
        if not isinstance(row, dict):
            prompts.append(make_prompt(row, str(i), here))
            continue
        if table_plan is None and not fields_given and ("messages" in row or "prompt" in row):
            if id_field is not None:
                _check_field(id_field, "id_field", list(row), here)
                row = {**row, "id": row[id_field]}
            prompts.append(make_prompt(row, str(i), here))  # the native format: as it always was
            continue
        plan = table_plan
        if plan is None:
            plan = _plan(list(row), prompt_field, messages_field, here)
            if plan is None:
                raise _no_prompt_field(row, here)
            if id_field is not None:
                _check_field(id_field, "id_field", list(row), here)
        prompts.append(_row_prompt(row, _row_id(row, i, id_field, here), plan, here))
    if not prompts:
        raise SecateursError(f"{source}: no prompts")
    check_unique_ids(prompts, source)
    return prompts


# --- sources read by the `datasets` library ---------------------------------------------------------

_DATASETS_LOCK = threading.Lock()


@contextmanager
def _datasets_offline() -> Iterator[Any]:
    """The `datasets` module, with the Hub switched off (HF_DATASETS_OFFLINE: a name that is not cached
    fails at once, nothing is downloaded), progress bars and info logs quiet; all restored on exit."""
    try:
        import datasets
        from datasets import config as ds_config
        from datasets.utils import logging as ds_logging
    except ImportError:
        raise SecateursError("reading this prompt source needs the `datasets` package: pip install datasets") from None
    with _DATASETS_LOCK:
        saved = ds_config.HF_HUB_OFFLINE, ds_config.HF_DATASETS_OFFLINE
        bars_off, verbosity = datasets.are_progress_bars_disabled(), ds_logging.get_verbosity()
        ds_config.HF_HUB_OFFLINE = ds_config.HF_DATASETS_OFFLINE = True
        datasets.disable_progress_bars()
        ds_logging.set_verbosity(ds_logging.CRITICAL)  # its errors become our one-line SecateursError
        try:
            yield datasets
        finally:
            ds_config.HF_HUB_OFFLINE, ds_config.HF_DATASETS_OFFLINE = saved
            if not bars_off:
                datasets.enable_progress_bars()
            ds_logging.set_verbosity(verbosity)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().split("\n", 1)[0]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _pick_split(data: Any, split: str | None, source: str) -> Any:
    """The Dataset to read from a Dataset or DatasetDict: `split`, else "train", else the only split."""
    if hasattr(data, "keys"):  # DatasetDict
        names = list(data.keys())
        if split is not None:
            if split not in data:
                raise SecateursError(f"{source}: no split {split!r}; its splits are: {_names(names)}")
            return data[split]
        if "train" in data:
            return data["train"]
        if len(names) == 1:
            return data[names[0]]
        raise SecateursError(f"{source} has the splits {_names(names)}: choose one with split=")
    if split is not None and str(getattr(data, "split", None)) != split:
        raise SecateursError(f"{source} is a single Dataset, not a DatasetDict: it has no split {split!r}")
    return data


def prompts_from_dataset(data: Any, source: str = "the dataset", *, prompt_field: str | None = None,
                         messages_field: str | None = None, id_field: str | None = None,
                         split: str | None = None) -> list[Prompt]:
    """Prompts from a `datasets.Dataset` or `DatasetDict` (see load_prompts for the fields and splits)."""
    table = _pick_split(data, split, source)
    return prompts_from_rows(table.to_list(), source, prompt_field=prompt_field, messages_field=messages_field,
                             id_field=id_field, columns=table.column_names)


def _load_local(path: Path, split: str | None) -> Any:
    """A local table file or dataset folder as the `datasets` library reads it (Dataset or DatasetDict)."""
    with _datasets_offline() as datasets, tempfile.TemporaryDirectory(prefix="secateurs-datasets-") as cache:
        if path.is_dir():
            saved = (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()
            try:
                if saved:
                    data = datasets.load_from_disk(str(path), keep_in_memory=True)
                else:  # a folder of data files: the `datasets` library infers the format and the splits
                    data = datasets.load_dataset(str(path), cache_dir=cache, keep_in_memory=True)
            except Exception as e:
                raise SecateursError(f"prompt folder {str(path)!r}: not a dataset folder the `datasets` library "
                                     f"can read ({_first_line(e)})") from None
            table = _pick_split(data, split, f"prompt folder {str(path)!r}")
            return table.to_list(), table.column_names
        builder = TABLE_SUFFIXES[path.suffix.lower()]
        if split is not None:
            raise SecateursError(f"prompt file {str(path)!r} has no splits (split={split!r}); splits are for "
                                 "dataset folders and Hub datasets")
        options = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
        try:
            table = datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=cache,
                                          keep_in_memory=True, **options)
        except Exception as e:
            where = _csv_problem(path, options.get("delimiter", ",")) if builder == "csv" else None
            raise SecateursError(f"cannot read prompt file {str(path)!r} as {builder}: "
                                 f"{where or _first_line(e)}") from None
        return table.to_list(), table.column_names


def _csv_problem(path: Path, delimiter: str) -> str | None:
    """Where a CSV/TSV file is malformed (the `datasets` library's error does not say), e.g. the line
    at which an unterminated quote starts; None if the csv module reads it."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=delimiter, strict=True)
            start = 1
            for _ in reader:
                start = reader.line_num + 1
    except UnicodeDecodeError:
        return None
    except csv.Error as e:
        if "end of data" in str(e):
            return f"unterminated quote in the row starting at line {start}"
        return f"line {reader.line_num}: {e}"
    return None


def _load_hub(name: str, split: str | None) -> tuple[list, list]:
    source = f"Hugging Face dataset {name!r}"
    with _datasets_offline() as datasets:
        try:
            data = datasets.load_dataset(name, split=split)
        except (ConnectionError, FileNotFoundError) as e:
            raise SecateursError(f"{source} is not a local file or folder and is not in the local datasets cache; "
                                 f"prompts are read offline, never downloaded: load it once with "
                                 f"datasets.load_dataset({name!r}) where there is network, or save it to a file "
                                 f"({_first_line(e)})") from None
        except Exception as e:
            raise SecateursError(f"cannot load {source} from the local cache: {_first_line(e)}") from None
        table = _pick_split(data, None, source)
        return table.to_list(), table.column_names


def _read_json_entries(path: Path) -> list[tuple[Any, str]]:
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
    return entries


def load_prompts(source: Any, prompt_field: str | None = None, messages_field: str | None = None,
                 id_field: str | None = None, split: str | None = None) -> list[Prompt]:
    """Read prompts from a file, a dataset folder, a cached Hugging Face Hub dataset or a Dataset object.

    source:
      - a JSONL file (one JSON value per line) or a .json file holding a list: each entry is a
        string, a messages list, or an object (see the fields below). Errors name the file and line.
      - a .parquet, .arrow, .csv or .tsv file, read by the `datasets` library.
      - a folder: one written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`, or a folder of
        data files the `datasets` library can read (splits from the file names).
      - "hf:owner/name" (or "owner/name" when no such local path exists): a Hub dataset, read from
        the local `datasets` cache only. The Hub is switched off while loading (as HF_DATASETS_OFFLINE
        does), so nothing is downloaded and a dataset that is not cached fails at once.
      - a `datasets.Dataset` or `datasets.DatasetDict`.
    split: which split of a DatasetDict, a dataset folder or a Hub dataset; default "train" if
      there is one, else the only split (several others: an error naming them). Files have no splits.

    Fields (a field that is missing is an error naming the fields that exist):
      - prompt_field: the field holding the prompt text, or a template whose {placeholders} name
        fields, e.g. "{instruction}\\n\\n{input}" (missing/null values count as ""; the result is
        stripped, so an empty `input` leaves no trailing blank lines).
      - messages_field: the field holding the conversation: chat messages [{"role", "content"}],
        ShareGPT turns [{"from": "human"/"gpt"/"system", "value"}] (mapped to user/assistant/system),
        or an HH-RLHF transcript string "\\n\\nHuman: ...\\n\\nAssistant: ...". Trailing assistant turns
        are dropped, so a whole conversation becomes the prompt that led to its last answer.
      - id_field: the field holding each prompt's id (a string or integer); default: the `id`
        field if there is one, else the entry's 0-based position. Ids must be unique.
      - neither prompt_field nor messages_field: the first of these fields that exists is used:
        `prompt` (text, or a messages list), `messages` (a messages list, which must end with a user
        turn), `instruction` (with `input`: the template "{instruction}\\n\\n{input}"), `question`,
        `conversations` and `chosen` (as messages_field: trailing assistant turns dropped; `chosen`
        is HH-RLHF's transcript). For a table this is chosen once from its columns; in a JSON/JSONL
        file for each entry, and an entry with both `prompt` and `messages` is refused (name the one
        to use with prompt_field / messages_field).
    """
    if is_hf_dataset(source):
        return prompts_from_dataset(source, prompt_field=prompt_field, messages_field=messages_field,
                                    id_field=id_field, split=split)
    if not isinstance(source, (str, Path)) and not hasattr(source, "__fspath__"):
        raise SecateursError(f"a prompt source must be a path, a Hub dataset name or a datasets.Dataset, "
                             f"got {type(source).__name__}")
    fields = dict(prompt_field=prompt_field, messages_field=messages_field, id_field=id_field)
    text = str(source) if isinstance(source, str) else None
    if text is not None and text.strip().startswith(HUB_PREFIX):
        name = text.strip()[len(HUB_PREFIX):]
        if not _HUB_NAME.fullmatch(name) and not re.fullmatch(r"[\w.-]+", name):
            raise SecateursError(f"{text!r}: expected hf:owner/name, a Hugging Face dataset id")
        rows, columns = _load_hub(name, split)
        return prompts_from_rows(rows, f"Hugging Face dataset {name!r}", columns=columns, **fields)
    path = Path(source).expanduser()
    suffix = path.suffix.lower()
    if path.is_dir():
        rows, columns = _load_local(path, split)
        return prompts_from_rows(rows, str(path), columns=columns, **fields)
    if path.exists() and not path.is_file():  # /dev/null, a pipe, a device: say what it is, not "not found"
        raise SecateursError(f"prompt source {str(path)!r} is not a regular file or a folder")
    if not path.is_file():
        if text is not None and suffix not in PROMPT_FILE_SUFFIXES and _HUB_NAME.fullmatch(text.strip()):
            rows, columns = _load_hub(text.strip(), split)
            return prompts_from_rows(rows, f"Hugging Face dataset {text.strip()!r}", columns=columns, **fields)
        raise SecateursError(f"prompt file not found: {str(path)!r}")
    if suffix in UNSUPPORTED_SUFFIXES:
        raise SecateursError(f"prompt file {str(path)!r}: {path.suffix} files are not supported; use JSONL, "
                             f"JSON, Parquet, Arrow or CSV")
    if suffix in TABLE_SUFFIXES:
        rows, columns = _load_local(path, split)
        return prompts_from_rows(rows, str(path), columns=columns, **fields)
    if split is not None:
        raise SecateursError(f"prompt file {str(path)!r} has no splits (split={split!r}); splits are for "
                             "dataset folders and Hub datasets")
    entries = _read_json_entries(path)
    return prompts_from_rows([d for d, _ in entries], str(path), where=lambda i: entries[i][1], **fields)


def builtin_prompts() -> list[Prompt]:
    """The small prompt set shipped with the package, used when no prompt file is given."""
    source = resources.files("secateurs") / "data" / "default_prompts.jsonl"
    with resources.as_file(source) as path:
        return load_prompts(path)
