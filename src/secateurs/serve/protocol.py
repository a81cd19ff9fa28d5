"""The OpenAI request bodies, read into what secateurs runs: a prompt, a method, its options, a seed.

Every field is either honoured, accepted at its neutral value (n=1, logprobs=false, no tools, ...),
or refused with a 400 naming it: nothing is silently ignored. The method and its options come in
`"secateurs": {"method": ..., "prompt_id": ..., **options}` (the openai client's `extra_body`),
else the server's defaults; `max_tokens` / `max_completion_tokens`, `temperature` and `top_p`
are the method options max_new_tokens, temperature and top_p. Options are validated later by
`build_config`, the builder the CLI uses, so a bad one gets the CLI's one-line message.

Which key draws the answer: (seed, prompt id, sample index), as in `secateurs run`. The prompt id
is `secateurs.prompt_id`, default "0": the id `secateurs run` gives the first prompt of a file
whose prompts have no ids. So a request with seed S and prompt_id I answers exactly what
`secateurs run --seed S` answers for the prompt with id I (same method and options).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from ..config import option_specs
from ..methods import get_method
from ..prompts import Prompt, make_prompt

DEFAULT_PROMPT_ID = "0"
MAX_STOP_STRINGS = 4  # as the OpenAI API
# A body nesting arrays/objects deeper than this is refused before parsing (json's parser recurses, and
# no OpenAI body needs more than a handful of levels).
MAX_DEPTH = 32
MAX_DIGITS = 30  # an integer literal longer than this is no count, seed or option any method takes
# The extension's names that are not method options: the request's own fields, named elsewhere.
NOT_OPTIONS = {"seed": "use the top-level 'seed' field", "prompt": "the prompt is the body's 'messages' or 'prompt'",
               "messages": "the prompt is the body's 'messages' or 'prompt'"}

# Fields accepted only at a value that asks for nothing we do not do: field -> accepted values.
NEUTRAL = {
    "n": (None, 1),
    "best_of": (None, 1),
    "logprobs": (None, False, 0),
    "top_logprobs": (None, 0),
    "echo": (None, False),
    "suffix": (None, ""),
    "tools": (None, []),
    "functions": (None, []),
    "tool_choice": (None, "none"),
    "function_call": (None, "none"),
    "parallel_tool_calls": (None, False, True),  # meaningless without tools
    "service_tier": (None, "auto", "default"),
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "logit_bias": (None, {}),
    "response_format": (None, {"type": "text"}),
    "modalities": (None, ["text"]),
    "audio": (None,),
    "prediction": (None,),
    "web_search_options": (None,),
    "reasoning_effort": (None,),
    "store": (None, False),
}
# Fields that change nothing in the answer (the caller's bookkeeping), checked for their type only.
BOOKKEEPING = ("model", "user", "metadata", "stream_options")
SAMPLING_FIELDS = {"temperature": "temperature", "top_p": "top_p", "max_tokens": "max_new_tokens",
                   "max_completion_tokens": "max_new_tokens"}
HANDLED = ("messages", "prompt", "stream", "seed", "stop", "secateurs", *SAMPLING_FIELDS)
SERVER_ONLY_OPTIONS = ("max_batch_rows",)  # rows are shared by every request: the server's setting


class ApiError(Exception):
    """An HTTP error in the OpenAI format: status, one-line message, the field at fault."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error",
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": None}}


@dataclass
class ServeDefaults:
    """What a request does not say: the server's method, options (its command-line flags) and seed."""

    method: str = "best-of-n"
    options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    max_batch_rows: int = 64


@dataclass
class Job:
    """One API request, read: what to answer and how."""

    prompt: Prompt
    method: str
    options: dict[str, Any]
    seed: int
    stop: tuple[str, ...]
    stream: bool
    model: str
    include_usage: bool = True  # stream_options.include_usage=false: a stream sends no usage


class _Bad:
    """A JSON literal no field takes (NaN, Infinity, an integer of thousands of digits), kept by the parser
    so that the walk over the body can name the field it is in."""

    def __init__(self, text: str, why: str):
        self.text, self.why = text, why


def _int(text: str) -> Any:
    return int(text) if len(text.lstrip("-")) <= MAX_DIGITS else _Bad(text, f"an integer of {len(text)} digits")


def _constant(text: str) -> _Bad:
    return _Bad(text, f"{text} (JSON has no such number)")


_STRING_OR_BRACKET = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def _too_deep(raw: bytes) -> str | None:
    """The top-level field whose value nests deeper than MAX_DEPTH (\"\" for the body itself), else None.
    Scanned on the bytes, as the parser would otherwise recurse into it."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return None
    depth, field = 0, ""
    for m in _STRING_OR_BRACKET.finditer(raw):
        token = m.group()
        if token[0] == 0x22:  # a string: at depth 1 the last one before a value is its key
            if depth == 1:
                field = token[1:-1].decode("utf-8", "replace")
        elif token in (b"[", b"{"):
            depth += 1
            if depth > MAX_DEPTH:
                return field
        else:
            depth -= 1
    return None


def _walk(body: Any) -> None:
    """Refuses, naming the field, what json.loads lets through but no field takes: a lone surrogate (it
    cannot be encoded, to a tokenizer or back to the client), NaN / Infinity, a giant integer."""
    stack = [(body, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            for k, v in value.items():
                if not _encodable(k):
                    where = f"in {path!r}" if path else "of the body"
                    raise ApiError(400, f"a field name {where} holds a lone UTF-16 surrogate, which is not text",
                                   _top(path))
                stack.append((v, f"{path}.{k}" if path else k))
        elif isinstance(value, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(value))
        elif isinstance(value, str) and not _encodable(value):
            bad = next(c for c in value if 0xD800 <= ord(c) <= 0xDFFF)
            raise ApiError(400, f"{path} holds a lone UTF-16 surrogate (\\u{ord(bad):04x}), which is not text",
                           _top(path))
        elif isinstance(value, _Bad):
            shown = value.text if len(value.text) <= 20 else value.text[:20] + "..."
            raise ApiError(400, f"{path}: {shown} is not a number secateurs takes ({value.why})", _top(path))


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _surrogate(text: str) -> int:
    return next(i for i, c in enumerate(text) if 0xD800 <= ord(c) <= 0xDFFF)


def _top(path: str) -> str | None:
    """The top-level field a path is in (an error's `param`)."""
    return re.split(r"[.\[]", path, maxsplit=1)[0] or None


def parse_json(raw: bytes) -> dict:
    field = _too_deep(raw)
    if field is not None:
        where = f"{field!r} nests" if field else "the request body nests"
        raise ApiError(400, f"{where} arrays/objects more than {MAX_DEPTH} deep", field or None)
    try:
        body = json.loads(raw, parse_int=_int, parse_constant=_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ApiError(400, f"the request body is not valid JSON: {e}") from None
    except RecursionError:  # the scan above should have refused it; never a 500
        raise ApiError(400, f"the request body nests arrays/objects more than {MAX_DEPTH} deep") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {type(body).__name__}")
    _walk(body)
    return body


def _same(value: Any, ok: Any) -> bool:
    if isinstance(value, bool) or isinstance(ok, bool):  # False is not 0 here
        return type(value) is type(ok) and value == ok
    return value == ok


def _check_fields(body: dict, prompt_field: str) -> None:
    for name, value in body.items():
        if name in HANDLED or name in BOOKKEEPING:
            if name in ("messages", "prompt") and name != prompt_field:
                raise ApiError(400, f"{name!r} is not a field of this endpoint; use {prompt_field!r}", name)
            continue
        if name in NEUTRAL:
            if not any(_same(value, ok) for ok in NEUTRAL[name]):
                raise ApiError(400, f"{name}={json.dumps(value)[:80]} is not supported by secateurs serve "
                                    f"(accepted: {', '.join(json.dumps(v) for v in NEUTRAL[name])})", name)
            continue
        raise ApiError(400, f"unknown field {name!r}", name)


def _messages(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise ApiError(400, "'messages' must be a non-empty list of messages", "messages")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            raise ApiError(400, f"messages[{i}] must be an object, got {type(m).__name__}", "messages")
        extra = sorted(set(m) - {"role", "content"})
        if extra:
            raise ApiError(400, f"messages[{i}] has {extra}, which secateurs serve does not support "
                                "(only 'role' and 'content')", "messages")
        role, content = m.get("role"), m.get("content")
        if role not in ("system", "developer", "user", "assistant"):
            raise ApiError(400, f"messages[{i}].role {role!r} is not supported (system, developer, user, "
                                "assistant)", "messages")
        if isinstance(content, list):  # content parts: text only
            texts = []
            for part in content:
                if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                    kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                    raise ApiError(400, f"messages[{i}].content: only text parts are supported, got {kind!r}",
                                   "messages")
                texts.append(part["text"])
            content = "".join(texts)
        if not isinstance(content, str):
            raise ApiError(400, f"messages[{i}].content must be a string or text parts, got "
                                f"{type(content).__name__}", "messages")
        # 'developer' is the newer name of the system turn; chat templates know 'system'.
        out.append({"role": "system" if role == "developer" else role, "content": content})
    return out


def _prompt_value(body: dict, prompt_field: str) -> Any:
    if prompt_field not in body:
        raise ApiError(400, f"missing required field {prompt_field!r}", prompt_field)
    value = body[prompt_field]
    if prompt_field == "messages":
        return _messages(value)
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        value = value[0]
    if not isinstance(value, str):
        raise ApiError(400, "'prompt' must be one string (a batch of prompts is not supported: send one "
                            "request per prompt)", "prompt")
    return value


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise ApiError(400, "'stop' must be a non-empty string or a list of them", "stop")
    if len(stops) > MAX_STOP_STRINGS:
        raise ApiError(400, f"'stop' has {len(stops)} strings; at most {MAX_STOP_STRINGS}", "stop")
    return tuple(stops)


def _options(body: dict, method: str, extension: dict, defaults: ServeDefaults) -> dict[str, Any]:
    """The method's options: server defaults that apply to it, then the request's (which must not conflict)."""
    known = set(get_method(method).config_class.__dataclass_fields__)
    options = {k: v for k, v in defaults.options.items() if k in known}
    given: dict[str, tuple[str, Any]] = {}  # option -> (where it was given, value)
    for name, option in SAMPLING_FIELDS.items():
        if body.get(name) is not None:
            if option in given and given[option][1] != body[name]:
                raise ApiError(400, f"{name}={body[name]!r} conflicts with {given[option][0]}", name)
            given[option] = (f"{name}={body[name]!r}", body[name])
    for name, value in extension.items():
        if name in SERVER_ONLY_OPTIONS:
            raise ApiError(400, f"secateurs.{name} is the server's setting (secateurs serve "
                                f"{option_specs()[name].flag}); it cannot change per request", "secateurs")
        if name in given and given[name][1] != value:
            raise ApiError(400, f"secateurs.{name}={value!r} conflicts with {given[name][0]}", "secateurs")
        given[name] = (f"secateurs.{name}", value)
    options.update({k: v for k, (_, v) in given.items()})
    options["max_batch_rows"] = defaults.max_batch_rows
    return options


def _bookkeeping(body: dict) -> None:
    """`user` and `metadata` change nothing (see the README); their types are still checked."""
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise ApiError(400, f"'user' must be a string, got {json.dumps(user)[:80]}", "user")
    metadata = body.get("metadata")
    if metadata is not None and not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise ApiError(400, "'metadata' must be an object of strings", "metadata")


def _include_usage(options: Any, stream: bool) -> bool:
    """stream_options (OpenAI: only with stream=true): include_usage=false leaves usage out of the stream."""
    if options is None:
        return True
    if not stream:
        raise ApiError(400, "'stream_options' is only allowed with stream=true", "stream_options")
    if not isinstance(options, dict) or set(options) - {"include_usage"}:
        raise ApiError(400, "'stream_options' must be {\"include_usage\": true or false}", "stream_options")
    include = options.get("include_usage", True)
    if not isinstance(include, bool):
        raise ApiError(400, f"stream_options.include_usage must be true or false, got {json.dumps(include)[:80]}",
                       "stream_options")
    return include


def parse_request(body: dict, prompt_field: str, defaults: ServeDefaults) -> Job:
    """A chat (prompt_field 'messages') or completion ('prompt') body as a Job; ApiError(400) if it
    asks for something secateurs cannot honour. Option values are checked later, by build_config."""
    _check_fields(body, prompt_field)
    model = body.get("model")
    if "model" not in body:
        raise ApiError(400, "missing required field 'model' (a string; see GET /v1/models)", "model")
    if not isinstance(model, str):
        raise ApiError(400, f"'model' must be a string (see GET /v1/models), got {json.dumps(model)[:80]}", "model")
    _bookkeeping(body)
    extension = body.get("secateurs") or {}
    if not isinstance(extension, dict):
        raise ApiError(400, "'secateurs' must be an object: {\"method\": ..., \"prompt_id\": ..., options}",
                       "secateurs")
    extension = dict(extension)
    method = extension.pop("method", None) or defaults.method
    if not isinstance(method, str):
        raise ApiError(400, f"secateurs.method must be a string, got {method!r}", "secateurs")
    for name, why in NOT_OPTIONS.items():
        if name in extension:
            raise ApiError(400, f"secateurs.{name} is not an option: {why}", "secateurs")
    prompt_id = extension.pop("prompt_id", DEFAULT_PROMPT_ID)
    if not isinstance(prompt_id, (str, int)) or isinstance(prompt_id, bool):
        raise ApiError(400, f"secateurs.prompt_id must be a string, got {prompt_id!r}", "secateurs")
    seed = body.get("seed")
    seed = defaults.seed if seed is None else seed
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ApiError(400, f"'seed' must be an integer, got {seed!r}", "seed")
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise ApiError(400, f"'stream' must be true or false, got {stream!r}", "stream")
    include_usage = _include_usage(body.get("stream_options"), stream)
    get_method(method)  # an unknown method: SecateursError, the CLI's line
    prompt = make_prompt(_prompt_value(body, prompt_field), str(prompt_id), where=f"prompt {str(prompt_id)!r}")
    return Job(prompt, method, _options(body, method, extension, defaults), seed, _stop(body.get("stop")),
               stream, model, include_usage)
