"""The reward interface: score(prompts, responses, partial) -> one float per pair."""

from __future__ import annotations

import math
import numbers
import time
from abc import ABC, abstractmethod
from typing import Callable, Sequence

from ..errors import RewardError, SecateursError
from ..meter import Meter
from ..prompts import Prompt
from .identity import callable_name


class Reward(ABC):
    """A reward model. Subclasses implement `_score`; `score` checks what comes back.

    `partial=True` says the responses are unfinished (Speculative Rejection and CARDS score
    prefixes); the RM scores them as if complete, as the papers do, unless it knows better.

    `name` identifies the reward in results and in the run fingerprint (a resumed output is only
    reused by the same reward): two different rewards must not share a name. A subclass that sets
    none is named after its class.
    """

    name: str = "reward"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = f"{cls.__module__}:{cls.__qualname__}"

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str], partial: bool = False) -> list[float]:
        return self.score_with_tokens(prompts, responses, partial)[0]

    def score_with_tokens(self, prompts: Sequence[Prompt], responses: Sequence[str],
                          partial: bool = False) -> tuple[list[float], list[int]]:
        """Scores and, per pair, the number of tokens the RM read (for cost accounting)."""
        scores, tokens, _ = self.score_with_cost(prompts, responses, partial)
        return scores, tokens

    def score_with_cost(self, prompts: Sequence[Prompt], responses: Sequence[str],
                        partial: bool = False) -> tuple[list[float], list[int], list[int]]:
        """Scores and, per pair, the tokens the RM read and the positions it computed for them (fewer
        where a model RM reused what it read before, more where it padded; `_score` may return only
        scores and tokens, then positions = tokens).

        Whatever goes wrong inside the reward (an exception, a score that is not a finite number,
        the wrong number of scores) is a RewardError naming the reward and the prompt id."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        if not responses:
            return [], [], []
        prompts, responses = list(prompts), list(responses)
        try:
            scores, tokens, *computed = self._score(prompts, responses, partial)
        except SecateursError:  # already one clear line (a missing package, a nested reward's error)
            raise
        except Exception as e:  # a user's function or model failing: name it, not a traceback
            raise RewardError(f"reward {self.name!r} failed on {_ids(prompts)}: {_describe(e)}") from e
        if isinstance(scores, (str, bytes, dict)) or not hasattr(scores, "__iter__"):
            raise RewardError(f"reward {self.name!r} returned {_show(scores)} for {_ids(prompts)}; "
                              "expected one number per response")
        scores = list(scores)
        if len(scores) != len(responses):
            raise RewardError(f"reward {self.name!r} returned {len(scores)} scores for {len(responses)} "
                              f"responses ({_ids(prompts)})")
        checked = []
        for p, r, s in zip(prompts, responses, scores):
            value = as_score(s)
            if value is None:
                raise RewardError(f"reward {self.name!r} returned {_show(s)} for prompt {p.id!r}; "
                                  "expected a number")
            if not math.isfinite(value):
                raise RewardError(
                    f"reward {self.name!r} returned {value} for prompt {p.id!r} and response {r[:60]!r}"
                )
            checked.append(value)
        tokens = list(tokens)
        positions = list(computed[0]) if computed else tokens
        if len(tokens) != len(responses) or len(positions) != len(responses):
            raise RewardError(f"reward {self.name!r} returned {len(tokens)} token counts for "
                              f"{len(responses)} responses ({_ids(prompts)})")
        return checked, tokens, positions

    @abstractmethod
    def _score(self, prompts: list[Prompt], responses: list[str], partial: bool
               ) -> tuple[Sequence[float], Sequence[int]] | tuple[Sequence[float], Sequence[int], Sequence[int]]:
        """Return (scores, tokens read per pair[, positions computed per pair])."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def as_score(value) -> float | None:
    """A reward value as a float: Python / numpy numbers and 0-d tensors or arrays; None for anything
    else (strings, lists, None: a number in disguise is a bug, not a score)."""
    if isinstance(value, numbers.Real):
        return float(value)
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        item = value.item()
        if isinstance(item, numbers.Real):
            return float(item)
    return None


def _show(value) -> str:
    text = repr(value)
    text = text if len(text) <= 60 else text[:60] + "..."
    return f"{text} (a {type(value).__name__})"


def _ids(prompts: Sequence[Prompt]) -> str:
    ids = list(dict.fromkeys(p.id for p in prompts))
    if len(ids) == 1:
        return f"prompt {ids[0]!r}"
    shown = ", ".join(repr(i) for i in ids[:3])
    return f"prompts {shown}" + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")


def _describe(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


# Texts are padded to a multiple of this many tokens, fixed by their own length.
PAD_MULTIPLE = 16


def length_buckets(lengths: Sequence[int], batch_size: int, max_width: int | None = None
                   ) -> list[tuple[int, list[int]]]:
    """Batches for a model RM: (width, indices), every text in the batch of width
    ceil(length / PAD_MULTIPLE) * PAD_MULTIPLE (at most max_width), at most batch_size texts each.

    Padding a text to the longest text of its batch makes its score depend on which texts share the
    batch (different shapes sum floats in a different order: up to 2e-7 on a reward, enough to flip a
    close choice). Here a text's width, hence its computation, depends on its own length only."""
    groups: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        width = -(-max(n, 1) // PAD_MULTIPLE) * PAD_MULTIPLE
        groups.setdefault(min(width, max_width) if max_width else width, []).append(i)
    return [(width, indices[start:start + batch_size]) for width, indices in sorted(groups.items())
            for start in range(0, len(indices), batch_size)]


def word_count(text: str) -> int:
    """Token count for scorers that read words rather than model tokens."""
    return len(text.split())


class CallableReward(Reward):
    """Wrap a Python function: fn(prompt_text, response) -> float, or, with batched=True,
    fn(list of prompt texts, list of responses) -> list of floats.

    Its default name is `callable_name(fn)`: module:qualname plus a hash of what the function does
    (code, closure, defaults, the globals it reads), so two different lambdas never share a name."""

    def __init__(self, fn: Callable, name: str | None = None, batched: bool = False):
        if not callable(fn):
            raise RewardError(f"reward {fn!r} is not callable")
        self.fn = fn
        self.batched = batched
        self.name = name or callable_name(fn)

    def _score(self, prompts, responses, partial):
        texts = [p.text for p in prompts]
        if self.batched:
            scores = self.fn(texts, responses)
        else:
            scores = []
            for p, t, r in zip(prompts, texts, responses):
                try:
                    scores.append(self.fn(t, r))
                except Exception as e:
                    raise RewardError(f"reward {self.name!r} failed on prompt {p.id!r}: {_describe(e)}") from e
        return scores, [word_count(r) for r in responses]


class WeightedSum(Reward):
    """sum_i w_i * reward_i(prompt, response)."""

    def __init__(self, terms: Sequence[tuple[float, Reward]]):
        if not terms:
            raise ValueError("WeightedSum needs at least one term")
        self.terms = list(terms)
        self.name = "+".join(f"{_weight_text(w)}*{r.name}" for w, r in self.terms)

    def _score(self, prompts, responses, partial):
        total = [0.0] * len(responses)
        tokens = [0] * len(responses)
        positions = [0] * len(responses)
        for weight, reward in self.terms:
            scores, read, computed = reward.score_with_cost(prompts, responses, partial)
            total = [t + weight * s for t, s in zip(total, scores)]
            tokens = [a + b for a, b in zip(tokens, read)]
            positions = [a + b for a, b in zip(positions, computed)]
        return total, tokens, positions


def _weight_text(weight: float) -> str:
    """Short when that is exact (0.5, 2), else every digit: names must tell weights apart."""
    short = f"{weight:g}"
    return short if float(short) == weight else repr(float(weight))


def metered_score(reward: Reward, meter: Meter | None, prompts: Sequence[Prompt], responses: Sequence[str],
                  groups: Sequence[int], partial: bool = False) -> list[float]:
    """Score and record the RM calls, tokens and time against each pair's prompt group."""
    start = time.perf_counter()
    scores, tokens, positions = reward.score_with_cost(prompts, responses, partial)
    if meter is not None:
        meter.rm_call(groups, tokens, time.perf_counter() - start, positions)
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
