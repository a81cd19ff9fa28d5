"""Alignment methods: one module each, a config dataclass with the paper's defaults plus a per-prompt policy.

Registering a method is one file that uses `@register`, listed in METHOD_MODULES.
"""

import importlib

from .base import REGISTRY, DecodingConfig, Method, MethodPolicy, Outcome, get_method, method_names, option

METHOD_MODULES = ("sampling", "best_of_n", "speculative_rejection", "cards", "rejection_sampling", "args",
                  "particle_filtering", "tree_search", "beam_search")


def _load_all() -> None:
    for name in METHOD_MODULES:
        importlib.import_module(f"{__name__}.{name}")


_load_all()

from .best_of_n import BestOfNConfig  # noqa: E402
from .sampling import SamplingConfig  # noqa: E402
from .speculative_rejection import SpeculativeRejectionConfig  # noqa: E402

__all__ = ["REGISTRY", "DecodingConfig", "Method", "MethodPolicy", "Outcome", "get_method", "method_names",
           "option", "BestOfNConfig", "SamplingConfig", "SpeculativeRejectionConfig"]
