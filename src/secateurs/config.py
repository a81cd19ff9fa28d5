"""Method options in one place: every method's config dataclass fields (with their help text) are
the CLI flags of `secateurs run`, the keywords of `align()` and the keys of bench grids.

`build_config(method, options)` is the one builder all of them call: it names an option the
method does not take, parses text values by the field's type, and lets the config validate.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import dataclass, fields
from typing import Any

from .errors import SecateursError
from .methods import REGISTRY, get_method, method_names


@dataclass
class OptionSpec:
    name: str
    kind: Any  # the field's type with None removed: int, float, str, tuple, or (float, str) for r_star
    optional: bool  # None is a valid value
    help: str
    defaults: dict[str, Any]  # method -> default

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def describe(self) -> str:
        methods = sorted(self.defaults)
        if len(methods) == len(method_names()) and len({repr(v) for v in self.defaults.values()}) == 1:
            where = f"[{_show(next(iter(self.defaults.values())))}]"
        else:
            where = "[" + "; ".join(f"{m}: {_show(self.defaults[m])}" for m in methods) + "]"
        return f"{self.help} {where}"


def _show(value: Any) -> str:
    if value is None:
        return "auto"
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


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
            elif f.metadata.get("help") and f.metadata["help"] not in spec.help:
                spec.help += f"; {name}: {f.metadata['help']}"
            spec.optional |= optional
            spec.defaults[name] = f.default
    return specs


def parse_value(spec: OptionSpec, text: str) -> Any:
    """A command-line / bench-grid string as the option's type."""
    if spec.optional and text.lower() in ("none", "auto") and spec.kind is not str and spec.kind != (float, str):
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
        else:
            return text
    except ValueError:
        kind = {int: "an integer", float: "a number", tuple: "comma-separated integers"}.get(spec.kind, "a value")
        raise SecateursError(f"{spec.flag} must be {kind}, got {text!r}") from None
    if not math.isfinite(value):
        raise SecateursError(f"{spec.flag} must be a finite number, got {text!r}")
    return value


def build_config(method: str, options: dict[str, Any]) -> Any:
    """The method's validated config from options given as values or as text (CLI, bench grids)."""
    config_class = get_method(method).config_class
    specs = option_specs()
    known = {f.name for f in fields(config_class)}
    values = {}
    for key, value in options.items():
        if key not in known:
            flag = specs[key].flag if key in specs else key
            if key in specs:
                raise SecateursError(f"{flag} does not apply to method {method!r}")
            raise SecateursError(f"unknown option {key!r} for method {method!r}; it takes {sorted(known)}")
        if isinstance(value, str):
            value = parse_value(specs[key], value)
        elif isinstance(value, list):
            value = tuple(value)
        values[key] = value
    return config_class(**values)
