"""Method options in one place: every method's config dataclass fields (with their help text) are
the CLI flags of `secateurs run`, the keywords of `align()` and the keys of bench grids.

`build_config(method, options)` is the one builder all of them call: it names an option the
method does not take, parses text values by the field's type, and lets the config validate.
"""

from __future__ import annotations

import math
import re
import types
import typing
from dataclasses import dataclass, fields
from typing import Any

from .errors import SecateursError
from .methods import REGISTRY, get_method, method_names
from .methods.base import integer, real


@dataclass
class OptionSpec:
    name: str
    kind: Any  # the field's type with None removed: int, float, str, tuple, or (float, str) for r_star
    optional: bool  # None is a valid value
    help: str  # the general sentence, then each method's own note ("ARGS: ...")
    defaults: dict[str, str]  # method -> its default as --help shows it

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def spelled(self, spelling: str) -> str:
        """The option as the caller wrote it: --flag on the command line, the keyword from Python."""
        return self.flag if spelling == "cli" else self.name

    def describe(self) -> str:
        """The help, then the defaults: one value if every method shares it, else grouped by value."""
        by_value: dict[str, list[str]] = {}
        for m in sorted(self.defaults):
            by_value.setdefault(self.defaults[m], []).append(m)
        if len(by_value) == 1 and len(self.defaults) == len(method_names()):
            where = next(iter(by_value))
        else:
            where = "; ".join(f"{', '.join(ms)}: {v}" for v, ms in by_value.items())
        return f"{self.help[:1].upper()}{self.help[1:]}. [{where}]"


def _show(value: Any) -> str:
    if value is None:
        return "auto"
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _merge_help(spec: OptionSpec, help: str, method: str) -> None:
    """Add a method's redefinition of a field's help: its note after the general sentence it repeats."""
    if not help or help == spec.help or help in spec.help.split("; "):
        return  # "": the general help
    general = spec.help.split("; ")[0]
    if help.startswith("; "):  # a note only
        help = general + help
    if not help.startswith(general + "; "):
        raise TypeError(f"option {spec.name!r}: {method}'s help must repeat the general help {general!r} "
                        f"and add its note after '; ', got {help!r}")
    for note in help[len(general) + 2:].split("; "):
        if note not in spec.help.split("; "):
            spec.help += f"; {note}"


def _kind(hint: Any) -> tuple[Any, bool]:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        kinds = [a for a in args if a is not type(None)]
        optional = len(kinds) < len(args)
        if len(kinds) == 1:
            return _kind(kinds[0])[0], optional
        return tuple(kinds), optional
    if typing.get_origin(hint) is tuple:
        return tuple, False
    return hint, False


def option_specs() -> dict[str, OptionSpec]:
    """Every option of every registered method, merged by name (a name means one thing everywhere)."""
    specs: dict[str, OptionSpec] = {}
    method_names()  # loads every method
    for name, method in REGISTRY.items():  # registration order: plain sampling's general help first
        cls = method.config_class
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            kind, optional = _kind(hints[f.name])
            spec = specs.get(f.name)
            if spec is None:
                spec = specs[f.name] = OptionSpec(f.name, kind, optional, f.metadata.get("help", ""), {})
            elif spec.kind != kind:
                raise TypeError(f"option {f.name!r} has type {kind} in {name} but {spec.kind} elsewhere")
            else:
                _merge_help(spec, f.metadata.get("help", ""), name)
            spec.optional |= optional
            spec.defaults[name] = f.metadata.get("shown") or _show(f.default)
    return specs


def parse_value(spec: OptionSpec, text: str, spelling: str = "cli") -> Any:
    """A command-line / bench-grid string as the option's type; errors name the option as `spelling`
    ('cli': --flag, 'python': the keyword) writes it."""
    if spec.optional and text.lower() in ("none", "auto") and spec.kind not in (str, (float, str), (int, str)):
        return None
    try:
        if spec.kind is int:
            return int(text)
        if spec.kind is float:
            value = float(text)
        elif spec.kind is tuple:
            return tuple(int(x) for x in text.split(","))
        elif spec.kind == (float, str):  # a number or a keyword (r_star: 'auto')
            try:
                value = float(text)
            except ValueError:
                return text
        elif spec.kind == (int, str):  # an integer or a keyword (max_batch_rows: 'auto')
            try:
                return int(text)
            except ValueError:
                return text
        else:
            return text
    except ValueError:
        kind = {int: "an integer", float: "a number", tuple: "comma-separated integers"}.get(spec.kind, "a value")
        raise SecateursError(f"{spec.spelled(spelling)} must be {kind}, got {text!r}") from None
    if not math.isfinite(value):
        raise SecateursError(f"{spec.spelled(spelling)} must be a finite number, got {text!r}")
    return value


def build_config(method: str, options: dict[str, Any], spelling: str = "python") -> Any:
    """The method's validated config from options given as values or as text (CLI, bench grids).

    Numpy numbers (np.int64 from an array) become plain ints and floats, so configs, fingerprints and
    output lines are the same as for the Python numbers. spelling: how errors name an option, as the
    caller wrote it: 'python' (max_new_tokens: align(), the server's body fields) or 'cli'
    (--max-new-tokens)."""
    config_class = get_method(method).config_class
    specs = option_specs()
    known = {f.name for f in fields(config_class)}
    values = {}
    for key, value in options.items():
        if key not in known:
            if key in specs:
                raise SecateursError(f"{specs[key].spelled(spelling)} does not apply to method {method!r}")
            raise SecateursError(f"unknown option {key!r} for method {method!r}; it takes {sorted(known)}")
        if isinstance(value, str):
            value = parse_value(specs[key], value, spelling)
        elif isinstance(value, list):
            value = tuple(value)
        values[key] = _plain_number(value)
    try:
        return config_class(**values)
    except SecateursError as e:  # the configs' messages mix keywords and flags: the caller's spelling only
        message = _as_flags(str(e), known) if spelling == "cli" else _as_keywords(str(e), known)
        raise SecateursError(message) from None


def _plain_number(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(_plain_number(v) for v in value)
    if integer(value) and type(value) is not int:
        return int(value)
    if real(value) and type(value) not in (int, float):  # np.float64, np.float32
        return float(value)
    return value


def _as_keywords(message: str, names: set[str]) -> str:
    """A config's message with the flags of its options written as keywords (`--max-batch-rows` ->
    `max_batch_rows`)."""
    def keyword(m: re.Match) -> str:
        name = m.group(1).replace("-", "_")
        return name if name in names else m.group(0)

    return re.sub(r"(?<![\w-])--([a-z][a-z0-9-]*)", keyword, message)


def _as_flags(message: str, names: set[str]) -> str:
    """A config's message with its option names written as flags (`max_new_tokens` -> `--max-new-tokens`;
    `n=4` -> `--n 4`): the names with an underscore anywhere, a one-word name only where it leads."""
    flag = {name: "--" + name.replace("_", "-") for name in names}
    words = "|".join(sorted((re.escape(n) for n in names if "_" in n), key=len, reverse=True))
    if words:
        message = re.sub(rf"(?<![\w-])({words})(?:=(?=\S))?(?!\w)",
                         lambda m: flag[m.group(1)] + (" " if m.group(0).endswith("=") else ""), message)
    first = re.match(r"(\w+)(=?)", message)
    if first and first.group(1) in names and "_" not in first.group(1):
        message = flag[first.group(1)] + (" " if first.group(2) else "") + message[first.end():]
    return message
