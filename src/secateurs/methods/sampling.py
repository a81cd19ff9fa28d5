"""Plain sampling: one response per prompt from the policy, scored by the RM (the unaligned baseline).

It is Best-of-N with N = 1: the same code path, so with the same seed it draws exactly the
response Best-of-N draws as its sample 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import DecodingConfig, Outcome, register
from .best_of_n import sample_n


@dataclass
class SamplingConfig(DecodingConfig):
    pass


@register("sampling", SamplingConfig, "one sample per prompt, no alignment (the baseline)")
def plain_sampling(prompts, prompt_ids, keys, policy, reward, config: SamplingConfig, meter) -> list[Outcome]:
    outcomes = []
    for [(text, ids, score, reason)] in sample_n(prompts, prompt_ids, keys, policy, reward, config, meter, 1):
        outcomes.append(Outcome(text, ids, score, reason))
    return outcomes
