"""Alignment methods: one module each, a config dataclass with the paper's defaults plus one function."""

from .base import REGISTRY, DecodingConfig, Method, Outcome, get_method, method_names
from .best_of_n import BestOfNConfig
from .sampling import SamplingConfig
from .speculative_rejection import SpeculativeRejectionConfig

__all__ = ["REGISTRY", "DecodingConfig", "Method", "Outcome", "get_method", "method_names",
           "BestOfNConfig", "SamplingConfig", "SpeculativeRejectionConfig"]
