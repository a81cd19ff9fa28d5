"""The Python entry point: secateurs.align(prompts, policy=..., reward=..., method=..., **options)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import SecateursError
from .config import build_config
from .models import load_policy
from .policy import Policy
from .prompts import Prompt, load_prompts, looks_like_prompt_file, make_prompts
from .results import AlignResult
from .rewards import Reward, load_reward
from .runner import run_prompts


def resolve_prompts(prompts: Any) -> list[Prompt]:
    """A prompt file path, one prompt (a string, a messages list given inside a list, a dict with
    'prompt' / 'messages', a Prompt), or a list of prompts.

    A string that names a prompt file (ends with .jsonl, .json, .parquet, .csv or .arrow and looks
    like a path) is read as one; if there is no such file, that is an error rather than a prompt."""
    if isinstance(prompts, os.PathLike):
        return load_prompts(prompts)
    if isinstance(prompts, str):
        if looks_like_prompt_file(prompts):
            return load_prompts(prompts.strip())
        return make_prompts([prompts])
    if isinstance(prompts, (Prompt, dict)):
        return make_prompts([prompts])
    if isinstance(prompts, (bytes, bytearray)) or not isinstance(prompts, Iterable):
        raise SecateursError(f"prompts must be a prompt file path, a string, a dict, or a list of prompts; "
                             f"got {type(prompts).__name__}")
    return make_prompts(prompts)


def align(prompts: Any, policy: str | Policy | None = None, reward: str | Reward | Any = None,
          method: str = "best-of-n", seed: int = 0, out: str | Path | None = None, progress: bool = False,
          device: str | None = None, **options: Any) -> list[AlignResult]:
    """Answer each prompt with `method` and return one AlignResult per prompt (response, reward, config,
    seed and cost).

    policy: None for the packaged offline default, a Hugging Face model id or folder, a .gguf file, or
    a loaded Policy. reward: None for the offline default, a spec such as "hf:Skywork/..." (see
    secateurs.rewards), a Reward, or a function fn(prompt_text, response) -> float.
    options: the method's config fields, e.g. n=16, max_new_tokens=128, temperature=1.0.
    """
    config = build_config(method, options)  # bad options fail before any model loads
    prompt_list = resolve_prompts(prompts)
    return run_prompts(prompt_list, method, config, load_policy(policy, device=device),
                       load_reward(reward, device=device), seed=seed, out=out, progress=progress)
