"""What a bench runs: cells (a method with one set of options), parsed from the command line or a
YAML file, and checked before any model is loaded."""

from __future__ import annotations

import itertools
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SecateursError
from ..config import build_config, option_specs
from ..methods import get_method
from ..methods.base import integer as is_integer


@dataclass(frozen=True)
class Cell:
    """One method with one set of options: one column of the comparison."""

    method: str
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def name(self) -> str:
        if not self.options:
            return self.method
        return self.method + " " + " ".join(f"{k}={_show(v)}" for k, v in self.options)

    @property
    def file_stem(self) -> str:
        return re.sub(r"[^A-Za-z0-9=.,_-]+", "_", self.name)

    def option(self, key: str, default=None):
        return dict(self.options).get(key, default)


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _parse_value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


# The keys of `bench --config` YAML: the command's options (as snake_case) but the Ray ones, which stay
# on the command line. `bench --help` and the README list these.
CONFIG_KEYS = ("methods", "prompts", "prompt_field", "messages_field", "id_field", "split", "out", "policy",
               "reward", "gold_reward", "reference", "tie_margin", "max_new_tokens", "seed", "bootstrap",
               "device", "backend", "rm_memory")


def _once(where: str, grid: list[tuple[str, list[Any]]], key: str) -> None:
    """A key given twice would silently take one of its values: refused."""
    if any(k == key for k, _ in grid):
        raise SecateursError(f"{where}: option {key!r} is given twice; list its values once, e.g. {key}=1,2")


def parse_method_spec(spec: str) -> list[Cell]:
    """'best-of-n:n=1,2,4' -> three cells; 'speculative-rejection:n=64:alpha=0.5,0.9' -> two; 'cards' -> one."""
    method, *parts = spec.split(":")
    grid: list[tuple[str, list[Any]]] = []
    for part in parts:
        key, eq, values = part.partition("=")
        if not eq or not key or not values:
            raise SecateursError(f"bad method spec {spec!r}: expected METHOD:KEY=V1,V2[:KEY=...], got part {part!r}")
        key = key.replace("-", "_")
        _once(f"bad method spec {spec!r}", grid, key)
        if _is_list_option(key):  # a list-valued option (decision_tokens): grid values are separated by '/'
            grid.append((key, [tuple(int(x) for x in v.split(",")) if _ints(v) else v for v in values.split("/")]))
        else:
            grid.append((key, [_parse_value(v) for v in values.split(",")]))
    return expand(method, grid)


def _is_list_option(key: str) -> bool:
    spec = option_specs().get(key)
    return spec is not None and spec.kind is tuple


def _ints(text: str) -> bool:
    return all(x.strip().lstrip("-").isdigit() for x in text.split(","))


def expand(method: str, grid: list[tuple[str, list[Any]]]) -> list[Cell]:
    keys = [k for k, _ in grid]
    return [Cell(method, tuple(zip(keys, combo))) for combo in itertools.product(*[v for _, v in grid])] \
        if grid else [Cell(method)]


def cells_from_yaml(entries: list) -> list[Cell]:
    """YAML 'methods' entries: 'cards', {'best-of-n': {'n': [1, 2, 4]}}, or a spec string."""
    if isinstance(entries, str):  # `methods: best-of-n:n=1,2`: one entry
        entries = [entries]
    if not isinstance(entries, list):
        raise SecateursError(f"'methods' must be a list of methods, got {entries!r}")
    cells: list[Cell] = []
    for entry in entries:
        if isinstance(entry, str):
            cells += parse_method_spec(entry)
        elif isinstance(entry, dict) and len(entry) == 1 and isinstance(next(iter(entry)), str):
            [(method, params)] = entry.items()
            params = params or {}
            if not isinstance(params, dict):
                raise SecateursError(f"method {method!r}: options must be a mapping, got {params!r}")
            grid = []
            for k, v in params.items():
                if not isinstance(k, str):
                    raise SecateursError(f"method {method!r}: option names must be text, got {k!r}")
                if isinstance(v, list) and not v:
                    raise SecateursError(f"method {method!r}: option {k!r} has an empty list of values")
                k = k.replace("-", "_")
                _once(f"method {method!r}", grid, k)  # n and n, or max-new-tokens and max_new_tokens
                if _is_list_option(k):  # [4, 8] is one value; [[4, 8], [8, 16]] a grid of two
                    v = [tuple(x) if isinstance(x, list) else x for x in v] if isinstance(v, list) and v and \
                        all(isinstance(x, list) for x in v) else [tuple(v) if isinstance(v, list) else v]
                grid.append((k, v if isinstance(v, list) else [v]))
            cells += expand(method, grid)
        else:
            raise SecateursError(f"bad methods entry {entry!r}: use 'METHOD' or {{METHOD: {{KEY: [VALUES]}}}}")
    return cells


@dataclass
class BenchSpec:
    prompts: str | None
    cells: list[Cell]
    out: Path
    policy: str | None = None
    reward: str | None = None
    gold_reward: str | None = None
    reference: str | None = None  # cell name the win / tie / lose rates are against
    tie_margin: float = 0.01
    seed: int = 0
    common: dict[str, Any] = field(default_factory=dict)  # options every cell gets (max_new_tokens, ...)
    bootstrap: int = 1000
    command: str = ""
    prompt_fields: dict[str, Any] = field(default_factory=dict)  # prompt_field, messages_field, id_field, split
    device: str | None = None
    backend: str | None = None
    rm_memory: float | None = None  # a vllm: reward's engine memory (secateurs.placement)

    def __post_init__(self):
        """Settings from YAML may have any type: each is checked here, before anything runs, by its key."""
        def text(key: str, value, optional: bool = True):
            if value is None and optional:
                return None
            if isinstance(value, os.PathLike):
                value = os.fspath(value)
            if not isinstance(value, str) or not value.strip():
                raise SecateursError(f"bench setting '{key}' must be text, got {value!r}")
            return value

        def integer(key: str, value):
            if isinstance(value, str):  # a number written as text ("7"); anything else is named
                try:
                    value = int(value.strip())
                except ValueError:
                    pass
            if not is_integer(value):  # numpy integers too (a seed drawn from an array)
                raise SecateursError(f"bench setting '{key}' must be an integer, got {value!r}")
            return int(value)

        def number(key: str, value):
            if isinstance(value, str):
                try:
                    value = float(value.strip())
                except ValueError:
                    pass
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise SecateursError(f"bench setting '{key}' must be a finite number, got {value!r}")
            return float(value)

        self.prompts = text("prompts", self.prompts)
        self.out = Path(text("out", self.out, optional=False))
        self.policy = text("policy", self.policy)
        self.reward = text("reward", self.reward)
        self.gold_reward = text("gold_reward", self.gold_reward)
        self.prompt_fields = {k: text(k, v) for k, v in self.prompt_fields.items() if v is not None}
        self.device = text("device", self.device)
        self.backend = text("backend", self.backend)
        if self.reference is not None and not isinstance(self.reference, str):
            self.reference = str(self.reference)  # named as a missing cell by validate()
        self.seed = integer("seed", self.seed)
        self.bootstrap = integer("bootstrap", self.bootstrap)
        self.tie_margin = number("tie_margin", self.tie_margin)
        self.rm_memory = None if self.rm_memory is None else number("rm_memory", self.rm_memory)

    def configs(self) -> dict[str, Any]:
        """Each cell's validated config; raises on an unknown method, option or bad value."""
        out = {}
        for cell in self.cells:
            fields = get_method(cell.method).config_class.__dataclass_fields__
            options = {k: v for k, v in self.common.items() if k in fields}
            options.update(cell.options)
            try:
                out[cell.name] = build_config(cell.method, options)
            except SecateursError as e:
                raise SecateursError(f"{cell.name}: {e}") from None
        return out

    def validate(self) -> dict[str, Any]:
        if not self.cells:
            raise SecateursError("no methods to compare: give --methods or a 'methods' list in --config")
        names = [c.name for c in self.cells]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise SecateursError(f"methods listed twice: {duplicates}")
        configs = self.configs()
        if self.reference is not None and self.reference not in names:
            raise SecateursError(f"reference method {self.reference!r} is not in this run; choose one of {names}")
        if self.bootstrap < 100:
            raise SecateursError(f"bootstrap must be >= 100 resamples, got {self.bootstrap}")
        if not self.tie_margin >= 0:
            raise SecateursError(f"tie margin must be >= 0, got {self.tie_margin}")
        return configs

    def reference_best_of_n(self) -> Cell | None:
        """The Best-of-N cell with the largest n: the improvement score's reference."""
        cells = [c for c in self.cells if c.method == "best-of-n"]
        return max(cells, key=lambda c: c.option("n", 16)) if cells else None

    def default_reference(self) -> str:
        if self.reference:
            return self.reference
        bon = self.reference_best_of_n()
        return bon.name if bon else self.cells[0].name
