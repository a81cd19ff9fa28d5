"""Inference backends behind one protocol (backends/base.py), and the one place a backend is chosen by name.

`make_backend("transformers" | "vllm", policy, device=..., dtype=...)` is what `run`, `bench`,
`align()` and the server call; `check_backend(name)` refuses an unknown name or a missing vLLM with
one line before anything loads.
"""

from __future__ import annotations

from ..errors import SecateursError

BACKENDS = ("transformers", "vllm")
DEFAULT_BACKEND = "transformers"


def check_backend(name: str | None) -> str:
    """The backend's name, checked: one line for an unknown name, or for vllm when vLLM is not installed."""
    name = DEFAULT_BACKEND if name in (None, "") else str(name).strip().lower()
    if name not in BACKENDS:
        raise SecateursError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "vllm":
        from .vllm import check_installed

        check_installed()
    return name


def make_backend(name: str | None = None, policy=None, device=None, dtype=None, **options):
    """A ready backend for `policy` (a spec as for load_policy, or a loaded Policy for transformers).

    options: engine settings of the vllm backend (max_model_len, kv_cache_gib, or any vllm.EngineArgs field).
    The backend's `.policy` is the Policy the runner encodes prompts with."""
    name = check_backend(name)
    if name == "transformers":
        if options:
            raise SecateursError(f"the transformers backend takes no engine options, got {sorted(options)}")
        from ..models import load_policy
        from .transformers import TransformersBackend

        return TransformersBackend(load_policy(policy, device=device, dtype=dtype))
    from ..policy import Policy
    from .vllm import VllmBackend

    if isinstance(policy, Policy):
        raise SecateursError("the vllm backend loads the policy itself: give it a model name or folder, "
                             "not a loaded Policy")
    return VllmBackend.load(policy, device=device, dtype=dtype, **options)


def backend_fingerprint(backend) -> dict | None:
    """What a run fingerprint records about the backend; None for the transformers backend (so results
    written before backends could be chosen still resume)."""
    if backend is None or backend.name == "transformers":
        return None
    return backend.fingerprint()


def check_method(backend_name: str | None, method: str) -> None:
    """Refuse, before any model loads, a method the backend cannot serve (ARGS on vllm), with one line."""
    from ..methods import get_method
    from .base import check_capabilities

    name = check_backend(backend_name)
    if name == "transformers":
        from .transformers import TransformersBackend as cls
    else:
        from .vllm import VllmBackend as cls
    check_capabilities(cls, method, get_method(method).needs)
