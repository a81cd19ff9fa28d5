"""Item-level rejection sampling (the baseline CARDS is compared against).

Sample whole responses one after another; accept response k with probability
min(1, exp((r - r_star) / beta)) (soft, the paper's) or iff r >= r_star (hard); after max_retries
rejections, return the best response seen. Prompts run together in one batch: each round draws
`proposals` responses per unresolved prompt, checked in order as the sequential method would.
Sample k of a prompt uses Best-of-N's key for sample k, so the first sample equals plain sampling
with the same sampling settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SecateursError
from .acceptance import TargetedConfig, accepts, r_stars
from .base import Outcome, register
from .best_of_n import PromptSampler


@dataclass
class RejectionSamplingConfig(TargetedConfig):
    proposals: int = 4  # responses drawn per prompt per round (checked in order)

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.proposals, int) or self.proposals < 1:
            raise SecateursError(f"proposals must be an integer >= 1, got {self.proposals!r}")

    def rows_per_prompt(self) -> int:
        return self.proposals


@register("rejection-sampling", RejectionSamplingConfig,
          "sample whole responses until one is accepted against r_star (item-level baseline)")
def rejection_sampling(prompts, prompt_ids, keys, policy, reward, config: RejectionSamplingConfig,
                       meter) -> list[Outcome]:
    targets = r_stars(prompts, prompt_ids, keys, policy, reward, config, meter)
    outcomes: list[Outcome | None] = [None] * len(prompts)
    seen: list[list[tuple]] = [[] for _ in prompts]  # (reward, index, text, ids, reason)
    sampler = PromptSampler(prompts, prompt_ids, keys, policy, reward, config, meter)  # prompts prefilled once
    open_prompts = list(range(len(prompts)))
    offset = 0
    while open_prompts:
        count = min(config.proposals, config.max_retries - offset)
        drawn = sampler.draw(open_prompts, offset, count)
        still_open = []
        for p, candidates in zip(open_prompts, drawn):
            r_star = targets[p][0]
            for k, (text, ids, score, reason) in enumerate(candidates, start=offset):
                if accepts(score, r_star, config, keys[p], k + 1):
                    outcomes[p] = _outcome(text, ids, score, reason, k, k, r_star, targets[p][1])
                    break
                seen[p].append((score, k, text, ids, reason))
                if len(seen[p]) >= config.max_retries:
                    score, k_best, text, ids, reason = max(seen[p], key=lambda s: (s[0], -s[1]))
                    outcomes[p] = _outcome(text, ids, score, reason, k_best, len(seen[p]), r_star, targets[p][1])
                    break
            if outcomes[p] is None:
                still_open.append(p)
        open_prompts, offset = still_open, offset + count
    return outcomes


def _outcome(text, ids, score, reason, index, rejections, r_star, calibration) -> Outcome:
    return Outcome(text, ids, score, reason, details={
        "accepted_index": index, "rejections": rejections, "r_star": r_star,
        "r_star_calibration_rewards": calibration,
    })
