"""What every method shares: decoding settings, the per-prompt outcome, and the method registry."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Sequence

from ..errors import SecateursError
from ..meter import Meter
from ..policy import Policy
from ..prompts import Prompt
from ..rewards import Reward
from ..sampling import SamplingParams


@dataclass
class DecodingConfig:
    """Settings every method has. Defaults follow ../docs/algorithms.md."""

    max_new_tokens: int = 128  # n: the response length limit (CARDS' default)
    temperature: float = 1.0  # Best-of-N / Speculative Rejection sampling temperature
    top_k: int = 50  # 0 disables top-k
    top_p: float = 1.0
    max_batch_rows: int = 64  # rows decoded together: larger is faster on a GPU and needs more memory

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        for name in ("max_new_tokens", "max_batch_rows"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SecateursError(f"{name} must be an integer >= 1, got {value!r}")
        self.sampling()  # validates temperature, top_k, top_p

    def sampling(self) -> SamplingParams:
        return SamplingParams(self.temperature, self.top_k, self.top_p)

    def rows_per_prompt(self) -> int:
        """Batch rows one prompt occupies."""
        return 1

    def prompts_per_call(self) -> int:
        """How many prompts the runner hands the method at once (and writes out together)."""
        return max(1, self.max_batch_rows // self.rows_per_prompt())

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


# A method runs one batch of prompts: (prompts, their token ids, their random keys, policy, reward,
# config, meter) -> one Outcome per prompt.
MethodFn = Callable[[Sequence[Prompt], Sequence[Sequence[int]], Sequence[int], Policy, Reward, Any, Meter],
                    list[Outcome]]


@dataclass(frozen=True)
class Method:
    name: str
    config_class: type
    run: MethodFn
    summary: str


REGISTRY: dict[str, Method] = {}


def register(name: str, config_class: type, summary: str) -> Callable[[MethodFn], MethodFn]:
    def wrap(fn: MethodFn) -> MethodFn:
        REGISTRY[name] = Method(name, config_class, fn, summary)
        return fn
    return wrap


def get_method(name: str) -> Method:
    from . import args, best_of_n, cards, rejection_sampling, sampling, speculative_rejection  # noqa: F401

    if name not in REGISTRY:
        raise SecateursError(f"unknown method {name!r}; choose one of {sorted(REGISTRY)}")
    return REGISTRY[name]


def method_names() -> list[str]:
    get_method("sampling")
    return sorted(REGISTRY)
