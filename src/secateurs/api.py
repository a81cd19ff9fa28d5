"""The Python entry point: secateurs.align(prompts, policy=..., reward=..., method=..., **options)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .backends import check_method
from .errors import SecateursError
from .config import build_config
from .methods.base import check_seed
from .policy import Policy
from .prompts import (Prompt, is_hf_dataset, load_prompts, looks_like_prompt_source, make_prompts,
                      prompts_from_rows)
from .results import AlignResult
from .placement import load_models
from .rewards import Reward, check_rm_memory, load_reward
from .runner import run_prompts


def resolve_prompts(prompts: Any, *, prompt_field: str | None = None, messages_field: str | None = None,
                    id_field: str | None = None, split: str | None = None) -> list[Prompt]:
    """A prompt source, one prompt, or a list of prompts, as a list of Prompts.

    A source: a path (os.PathLike), a `datasets.Dataset` / `DatasetDict`, or a string that names one:
    a prompt file (ends with .jsonl, .json, .parquet, .arrow, .csv or .tsv and looks like a path; if
    there is no such file, that is an error rather than a prompt), "hf:owner/name" (a Hub dataset from
    the local cache), or an existing folder written as a path ("./data/alpaca"). Sources are read by
    `load_prompts`, which documents the keywords. Given any of the keywords, a string is always taken
    as a source (a Hub name such as "tatsu-lab/alpaca_eval" may then go without "hf:").
    One prompt: a string, a messages list given inside a list, a dict with 'prompt' / 'messages', a
    Prompt. A list of prompts: of those; with prompt_field / messages_field / id_field, its dicts are
    read as rows of a table (see `load_prompts`)."""
    fields = dict(prompt_field=prompt_field, messages_field=messages_field, id_field=id_field)
    given = any(v is not None for v in fields.values()) or split is not None
    if is_hf_dataset(prompts) or isinstance(prompts, os.PathLike):
        return load_prompts(prompts, split=split, **fields)
    if isinstance(prompts, str):
        if given or looks_like_prompt_source(prompts):
            return load_prompts(prompts.strip(), split=split, **fields)
        return make_prompts([prompts])
    if split is not None:
        raise SecateursError(f"split={split!r} is for dataset folders, Hub datasets and DatasetDicts; "
                             f"prompts given as {type(prompts).__name__} have no splits")
    if isinstance(prompts, (Prompt, dict)):
        prompts = [prompts]
    if isinstance(prompts, (bytes, bytearray)) or not isinstance(prompts, Iterable):
        raise SecateursError(f"prompts must be a prompt file path, a string, a dict, a datasets.Dataset, or a list "
                             f"of prompts; got {type(prompts).__name__}")
    if given:
        return prompts_from_rows(list(prompts), "prompts", where=lambda i: f"prompt {i}", **fields)
    return make_prompts(prompts)


def _check_arguments(policy: Any, out: Any, backend: Any) -> None:
    """align()'s arguments of the wrong kind, in one line naming the argument and what it takes
    (rather than a TypeError deep in a loader)."""
    if policy is not None and not isinstance(policy, (str, os.PathLike, Policy)):
        raise SecateursError(f"policy must be None, a model id or folder, a .gguf path or a loaded Policy; "
                             f"got {type(policy).__name__} {policy!r:.60}")
    if out is not None and not isinstance(out, (str, os.PathLike)):
        raise SecateursError(f"out must be None or a JSONL file path; got {type(out).__name__} {out!r:.60}")
    if backend is not None and not isinstance(backend, str) and not hasattr(backend, "policy"):
        raise SecateursError(f"backend must be None, 'transformers', 'vllm' or a backend from "
                             f"secateurs.backends.make_backend; got {type(backend).__name__} {backend!r:.60}")


def align(prompts: Any, policy: str | Policy | None = None, reward: str | Reward | Any = None,
          method: str = "best-of-n", seed: int = 0, out: str | Path | None = None, progress: bool = False,
          device: str | None = None, *, backend: Any = None, prompt_field: str | None = None,
          messages_field: str | None = None,
          id_field: str | None = None, split: str | None = None, rm_memory: float | None = None,
          **options: Any) -> list[AlignResult]:
    """Answer each prompt with `method` and return one AlignResult per prompt (response, reward, config,
    seed and cost).

    policy: None for the packaged offline default, a Hugging Face model id or folder, a .gguf file, or
    a loaded Policy. reward: None for the offline default, a spec such as "hf:Skywork/..." (see
    secateurs.rewards), a Reward, or a function fn(prompt_text, response) -> float.
    prompts: a prompt, a list of prompts, a prompt file / dataset folder path, "hf:owner/name" (a Hub
    dataset from the local cache), or a `datasets.Dataset` / `DatasetDict` (see resolve_prompts).
    prompt_field, messages_field, id_field, split: which fields (and split) of a table or dataset
    hold the prompt, the conversation and the id (see secateurs.load_prompts).
    backend: "transformers" (default) or "vllm" (pip install 'secateurs[vllm]'), or a ready backend from
    secateurs.backends.make_backend (reused across calls: a vLLM engine takes a while to start).
    rm_memory: the memory of a vllm: reward model's engine, a fraction of the GPU or GiB of KV cache on a CPU
    (default: on a GPU its share by the two models' weights, see secateurs.placement).
    options: the method's config fields, e.g. n=16, max_new_tokens=128, temperature=1.0.
    """
    config = build_config(method, options)  # bad options fail before any model loads
    seed = check_seed(seed)  # keys are derived from the int: seed=1.0 or "1" must not draw other answers
    _check_arguments(policy, out, backend)
    check_rm_memory(reward, rm_memory)
    engine = None if backend is None or isinstance(backend, str) else backend
    if engine is None:
        check_method(backend, method)  # vLLM missing, or a method it cannot serve: one line, nothing loaded
    prompt_list = resolve_prompts(prompts, prompt_field=prompt_field, messages_field=messages_field,
                                  id_field=id_field, split=split)
    if engine is not None:
        return run_prompts(prompt_list, method, config, engine.policy,
                           load_reward(reward, device=device, rm_memory=rm_memory), seed=seed, out=out,
                           progress=progress, backend=engine)
    engine, loaded_policy, loaded_reward = load_models(policy, reward, backend, device=device, rm_memory=rm_memory)
    return run_prompts(prompt_list, method, config, loaded_policy, loaded_reward, seed=seed, out=out,
                       progress=progress, backend=engine)
