"""What every method shares: decoding settings, the per-prompt policy and outcome, the registry.

A method is one file: a config dataclass (each field's default from the paper and its help text,
from which the CLI flags, `align()` keywords and bench grids are generated: see secateurs.config)
and a `MethodPolicy` subclass that the scheduler calls for one prompt: `start()` once, then
`on_idle(stopped)` whenever none of the prompt's sequences is decoding, with the sequences that
stopped since (each scored by the RM: `seq.reward`, as a partial response if unfinished).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..backends.base import BATCH_INVARIANT, KV_PRUNE
from ..errors import SecateursError
from ..sampling import SamplingParams
from ..sequence import Sequence


def _boolean(x: Any) -> bool:
    return isinstance(x, bool) or type(x).__name__ == "bool_"  # numpy's bool is no number either


def real(x: Any) -> bool:
    """A finite real number, numpy's included (not a bool, a string, NaN or infinity): what a numeric
    option must be."""
    return isinstance(x, numbers.Real) and not _boolean(x) and math.isfinite(x)


def integer(x: Any) -> bool:
    """An integer, numpy's included (np.int64 from an array), that is not a bool."""
    return isinstance(x, numbers.Integral) and not _boolean(x)


def check_seed(seed: Any) -> int:
    """The seed as a plain int (numpy integers too), or one line refusing it: a str, float, bool or
    None would key different draws than the int it looks like (seed=1.0 is not seed=1)."""
    if not integer(seed):
        raise SecateursError(f"seed must be an integer, got {seed!r} ({type(seed).__name__})")
    return int(seed)


def option(default: Any, help: str, shown: str | None = None) -> Any:
    """A config field with its help text (shown by `secateurs run --help`). A method that redefines a
    field gives "" (the general help) or a note of its own after "; " (e.g. "; ARGS: ...").
    shown: how `--help` writes the default, when it is not the value itself (None shows as 'auto')."""
    return field(default=default, metadata={"help": help, "shown": shown})


@dataclass
class DecodingConfig:
    """Settings every method has. Defaults follow ../docs/algorithms.md."""

    max_new_tokens: int = option(128, "response length limit (CARDS' default)")
    temperature: float = option(1.0, "sampling temperature (0: greedy)")
    top_k: int = option(50, "sample from the k most likely tokens (0, or k at least the vocabulary size: all tokens)")
    top_p: float = option(1.0, "nucleus sampling: smallest token set with this much probability")
    max_batch_rows: int | str = option(64, "sequences decoded together: larger is faster on a GPU and needs more "
                                           "memory; 'auto': on a GPU what memory admission lets fit, on a CPU 64")

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        for name in ("max_new_tokens", "max_batch_rows"):
            value = getattr(self, name)
            if name == "max_batch_rows" and value == "auto":  # resolved to a number before a run (admission.py)
                continue
            if not integer(value) or value < 1:
                raise SecateursError(f"{name} must be an integer >= 1{' or auto' if name == 'max_batch_rows' else ''}"
                                     f", got {value!r}")
        self.sampling()  # validates temperature, top_k, top_p

    def sampling(self) -> SamplingParams:
        return SamplingParams(self.temperature, self.top_k, self.top_p)

    def rows_per_prompt(self) -> int:
        """Rows one prompt occupies when it starts (the scheduler's admission estimate)."""
        return 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "DecodingConfig":
        """Build from keyword options, naming any the method does not have."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise SecateursError(f"unknown option(s) {unknown} for this method; it takes {sorted(known)}")
        return cls(**options)


@dataclass
class Outcome:
    """A method's answer to one prompt."""

    response: str
    response_ids: list[int]
    reward: float
    finish_reason: str | None
    details: dict[str, Any] = field(default_factory=dict)


class MethodPolicy:
    """One prompt's run of a method. `self.ctx` (scheduler.Context) starts, extends, rewinds and
    releases the prompt's sequences and finishes with an Outcome."""

    needs: frozenset[str] = frozenset({BATCH_INVARIANT, KV_PRUNE})  # backend capabilities it relies on

    def __init__(self, config, ctx):
        self.config = config
        self.ctx = ctx

    def start(self) -> None:
        raise NotImplementedError

    def on_idle(self, stopped: list[Sequence]) -> None:
        raise NotImplementedError

    def outcome(self, seq: Sequence, **details) -> Outcome:
        """The answer `seq`, with its last reward."""
        return Outcome(self.ctx.text(seq), list(seq.tokens), seq.reward, seq.finish_reason, details=details)


@dataclass(frozen=True)
class Method:
    name: str
    config_class: type
    policy_class: type
    summary: str

    @property
    def needs(self) -> frozenset[str]:
        return self.policy_class.needs


REGISTRY: dict[str, Method] = {}


def register(name: str, config_class: type, summary: str):
    def wrap(policy_class: type) -> type:
        REGISTRY[name] = Method(name, config_class, policy_class, summary)
        return policy_class
    return wrap


def get_method(name: str) -> Method:
    from . import _load_all

    _load_all()
    if name not in REGISTRY:
        raise SecateursError(f"unknown method {name!r}; choose one of {sorted(REGISTRY)}")
    return REGISTRY[name]


def method_names() -> list[str]:
    from . import _load_all

    _load_all()
    return sorted(REGISTRY)
