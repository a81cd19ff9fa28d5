"""Rewards: score(prompts, responses, partial) -> list[float], and `load_reward` to build one by name.

Reward specs (CLI --reward, API reward=):
  default                     the built-in offline reward (see DEFAULT_REWARD)
  relevance | civility | sentiment   one packaged offline scorer (rewards/offline.py)
  hf:NAME_OR_PATH             a Hugging Face sequence-classification RM (an existing folder also works)
  prm:NAME_OR_PATH[?OPTIONS]  a token-classification process RM scoring each step (rewards/prm.py)
  vllm:NAME_OR_PATH           the same RM served by vLLM's pooling runner, prefix caching on (rewards/vllm.py)
  py:MODULE:FUNCTION          a Python function fn(prompt_text, response) -> float
  TERM+TERM...                a weighted sum, each TERM being [WEIGHT*]SPEC, e.g. relevance+0.5*civility
"""

from __future__ import annotations

import importlib
import math
import os
from pathlib import Path
from typing import Callable

from ..errors import SecateursError
from .base import CallableReward, Reward, WeightedSum, metered_score, metered_score_mixed
from ..conversation import DEFAULT_PROMPT_FORMAT
from .hf import HFReward, check_model_folder
from .identity import callable_name
from .offline import CivilityReward, RelevanceReward, SentimentReward
from .prm import PRMReward

# Chosen by benchmarks/rewards.py (pairwise accuracy on labelled good/bad answers): relevance
# separates on-topic from off-topic, empty and degenerate answers; civility adds what relevance
# misses, rude and hateful answers that stay on topic.
DEFAULT_REWARD = "relevance+civility"

OFFLINE_REWARDS: dict[str, Callable[[], Reward]] = {
    "relevance": RelevanceReward,
    "civility": CivilityReward,
    "sentiment": SentimentReward,
}

__all__ = ["Reward", "CallableReward", "WeightedSum", "HFReward", "RelevanceReward", "CivilityReward",
           "SentimentReward", "PRMReward", "load_reward", "reward_terms", "vllm_reward_models", "check_rm_memory", "callable_name", "metered_score", "metered_score_mixed", "DEFAULT_REWARD"]


def _load_term(spec: str, device, whole: str, prompt_format: str = DEFAULT_PROMPT_FORMAT,
               rm_memory: float | dict | None = None) -> Reward:
    if not spec:
        raise SecateursError(f"empty term in reward spec {whole!r}")
    if spec in OFFLINE_REWARDS:
        return OFFLINE_REWARDS[spec]()
    if spec.startswith("hf:"):
        if not spec[3:].strip():
            raise SecateursError(f"reward spec {spec!r} names no model: use hf:MODEL_ID or hf:/path/to/folder")
        return HFReward(spec[3:], device=device, prompt_format=prompt_format)
    if spec.startswith("prm:"):
        if not spec[4:].partition("?")[0].strip():
            raise SecateursError(f"reward spec {spec!r} names no model: use prm:MODEL_ID or prm:/path/to/folder")
        return PRMReward(spec[4:], device=device)
    if spec.startswith("vllm:"):
        if not spec[5:].strip():
            raise SecateursError(f"reward spec {spec!r} names no model: use vllm:MODEL_ID or vllm:/path/to/folder")
        check_model_folder(spec[5:])
        from .vllm import VllmReward

        return VllmReward(spec[5:], device=device,
                          memory=rm_memory.get(spec[5:]) if isinstance(rm_memory, dict) else rm_memory)
    if spec.startswith("py:"):
        module_name, _, attr = spec[3:].rpartition(":")
        if not module_name or not attr:
            raise SecateursError(f"unknown reward function {spec!r}: use py:MODULE:FUNCTION")
        try:
            fn = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError, ValueError) as e:
            raise SecateursError(f"unknown reward function {spec!r}: {e}") from None
        except Exception as e:  # the module itself fails to import
            raise SecateursError(f"reward function {spec!r}: importing {module_name!r} failed: "
                                 f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                                 ) from None
        if isinstance(fn, Reward):
            return fn
        if not callable(fn):
            raise SecateursError(f"reward function {spec!r} is a {type(fn).__name__}, not a function")
        return CallableReward(fn, name=spec)
    if Path(spec).expanduser().is_dir():
        return HFReward(spec, device=device, prompt_format=prompt_format)
    check_model_folder(spec)
    raise SecateursError(
        f"unknown reward {spec!r}: use default, {', '.join(OFFLINE_REWARDS)}, hf:MODEL, vllm:MODEL, py:MODULE:FUNCTION, "
        "a reward model folder, or a weighted sum such as relevance+0.5*civility"
    )


def reward_terms(spec: str | os.PathLike | None) -> list[tuple[float, str]]:
    """The (weight, term spec) pairs of a reward spec string, weights checked, nothing loaded."""
    text = DEFAULT_REWARD if spec in (None, "", "default") else str(spec).strip()
    terms = []
    for part in text.split("+"):
        weight_text, star, name = part.strip().rpartition("*")
        try:
            weight = float(weight_text) if star else 1.0
        except ValueError:
            raise SecateursError(f"bad weight {weight_text!r} in reward {text!r}") from None
        if not math.isfinite(weight):
            raise SecateursError(f"bad weight {weight_text!r} in reward {text!r}: must be a finite number")
        terms.append((weight, name.strip()))
    return terms


def vllm_reward_models(spec) -> list[str]:
    """The models a reward spec serves with vLLM (its vllm: terms); none for a Reward or a function."""
    if spec is not None and not isinstance(spec, (str, os.PathLike)):
        return []
    return [name[5:] for _, name in reward_terms(spec) if name.startswith("vllm:")]


def check_rm_memory(spec, rm_memory) -> None:
    """rm_memory applies to a vllm: term, as a number > 0 (its range, a fraction or GiB, is the engine's to
    check) or a dict of them per model; anything else is refused in one line before a model loads."""
    if rm_memory is None:
        return
    values = rm_memory.values() if isinstance(rm_memory, dict) else [rm_memory]
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise SecateursError(f"rm_memory must be a number > 0 (a fraction of the GPU, or GiB on a CPU), "
                                 f"got {value!r}")
    if not vllm_reward_models(spec):
        shown = spec if isinstance(spec, (str, os.PathLike)) or spec is None else type(spec).__name__
        raise SecateursError(f"rm_memory (--rm-memory) sets the memory of a vllm: reward model, and reward "
                             f"{str(shown or 'default')!s:.80} has none")


def load_reward(spec: str | Reward | Callable | None = None, device=None,
                prompt_format: str = DEFAULT_PROMPT_FORMAT, rm_memory: float | dict | None = None) -> Reward:
    """Build a reward from a spec string (see module doc), a Reward, or a plain Python function
    (named by `callable_name`: different functions never share a name, so never share results).
    `prompt_format`: how a reward model without a chat template reads the conversation (hh, plain).
    `rm_memory`: the memory of each vllm: term's engine (see rewards/vllm.py; a dict gives it per model);
    given for a reward without a vllm: term, it is refused."""
    check_rm_memory(spec, rm_memory)
    if isinstance(spec, Reward):
        return spec
    if callable(spec):
        return CallableReward(spec)
    if spec is not None and not isinstance(spec, (str, os.PathLike)):
        raise SecateursError(f"reward must be a spec string, a Reward or a function, got {type(spec).__name__}")
    text = DEFAULT_REWARD if spec in (None, "", "default") else str(spec).strip()
    terms = [(weight, _load_term(name, device, text, prompt_format, rm_memory)) for weight, name in reward_terms(spec)]
    if len(terms) == 1 and terms[0][0] == 1.0:
        reward = terms[0][1]
    else:
        reward = WeightedSum(terms)
    if spec in (None, "", "default"):
        reward.name = "default(" + reward.name + ")"
    return reward
