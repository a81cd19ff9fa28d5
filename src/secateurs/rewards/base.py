"""The reward interface: score(prompts, responses, partial) -> one float per pair."""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from typing import Callable, Sequence

from ..errors import RewardError
from ..meter import Meter
from ..prompts import Prompt


class Reward(ABC):
    """A reward model. Subclasses implement `_score`; `score` checks what comes back.

    `partial=True` says the responses are unfinished (Speculative Rejection and CARDS score
    prefixes); the RM scores them as if complete, as the papers do, unless it knows better.
    """

    name: str = "reward"

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str], partial: bool = False) -> list[float]:
        return self.score_with_tokens(prompts, responses, partial)[0]

    def score_with_tokens(self, prompts: Sequence[Prompt], responses: Sequence[str],
                          partial: bool = False) -> tuple[list[float], list[int]]:
        """Scores and, per pair, the number of tokens the RM read (for cost accounting)."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        if not responses:
            return [], []
        scores, tokens = self._score(list(prompts), list(responses), partial)
        scores = [float(s) for s in scores]
        if len(scores) != len(responses):
            raise RewardError(f"reward {self.name!r} returned {len(scores)} scores for {len(responses)} responses")
        for p, r, s in zip(prompts, responses, scores):
            if not math.isfinite(s):
                raise RewardError(
                    f"reward {self.name!r} returned {s} for prompt {p.id!r} and response {r[:60]!r}"
                )
        return scores, list(tokens)

    @abstractmethod
    def _score(self, prompts: list[Prompt], responses: list[str], partial: bool
               ) -> tuple[Sequence[float], Sequence[int]]:
        """Return (scores, tokens read per pair)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def word_count(text: str) -> int:
    """Token count for scorers that read words rather than model tokens."""
    return len(text.split())


class CallableReward(Reward):
    """Wrap a Python function: fn(prompt_text, response) -> float, or, with batched=True,
    fn(list of prompt texts, list of responses) -> list of floats."""

    def __init__(self, fn: Callable, name: str | None = None, batched: bool = False):
        self.fn = fn
        self.batched = batched
        self.name = name or getattr(fn, "__qualname__", None) or repr(fn)

    def _score(self, prompts, responses, partial):
        texts = [p.text for p in prompts]
        if self.batched:
            scores = list(self.fn(texts, responses))
        else:
            scores = [self.fn(t, r) for t, r in zip(texts, responses)]
        return scores, [word_count(r) for r in responses]


class WeightedSum(Reward):
    """sum_i w_i * reward_i(prompt, response)."""

    def __init__(self, terms: Sequence[tuple[float, Reward]]):
        if not terms:
            raise ValueError("WeightedSum needs at least one term")
        self.terms = list(terms)
        self.name = "+".join(f"{w:g}*{r.name}" for w, r in self.terms)

    def _score(self, prompts, responses, partial):
        total = [0.0] * len(responses)
        tokens = [0] * len(responses)
        for weight, reward in self.terms:
            scores, read = reward.score_with_tokens(prompts, responses, partial)
            total = [t + weight * s for t, s in zip(total, scores)]
            tokens = [a + b for a, b in zip(tokens, read)]
        return total, tokens


def metered_score(reward: Reward, meter: Meter | None, prompts: Sequence[Prompt], responses: Sequence[str],
                  groups: Sequence[int], partial: bool = False) -> list[float]:
    """Score and record the RM calls, tokens and time against each pair's prompt group."""
    start = time.perf_counter()
    scores, tokens = reward.score_with_tokens(prompts, responses, partial)
    if meter is not None:
        meter.rm_call(groups, tokens, time.perf_counter() - start)
    return scores


def metered_score_mixed(reward: Reward, meter: Meter | None, prompts: Sequence[Prompt], responses: Sequence[str],
                        groups: Sequence[int], partial: Sequence[bool]) -> list[float]:
    """Score a batch in which some responses are finished and some partial: one RM call for each kind,
    so the RM is told which is which; scores come back in the input order."""
    scores = [0.0] * len(responses)
    for kind in (False, True):
        picked = [i for i, flag in enumerate(partial) if flag == kind]
        got = metered_score(reward, meter, [prompts[i] for i in picked], [responses[i] for i in picked],
                            [groups[i] for i in picked], partial=kind)
        for i, s in zip(picked, got):
            scores[i] = s
    return scores
