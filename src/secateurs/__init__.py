"""secateurs: decoding-time alignment of language models, batched and KV-cached.

The public names are imported on first use (PEP 562), so `import secateurs` is instant and the
command line can install its Ctrl-C handling before torch and transformers load (secateurs.entry).
"""

__version__ = "0.2.0.dev0"  # results of other versions are never mixed into one output file

import importlib

_PUBLIC = {
    "Aligner": "aligner", "align": "api", "TransformersBackend": "backends.transformers", "build_config": "config",
    "RewardError": "errors", "SecateursError": "errors", "Cost": "meter", "load_policy": "models",
    "Policy": "policy", "Prompt": "prompts", "builtin_prompts": "prompts", "load_prompts": "prompts",
    "AlignResult": "results", "Reward": "rewards", "load_reward": "rewards", "SamplingParams": "sampling",
    "Request": "scheduler", "Scheduler": "scheduler", "Sequence": "sequence",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'secateurs' has no attribute {name!r}")
