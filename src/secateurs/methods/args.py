"""ARGS-style token-level reward-guided search (Khanov et al. 2024; a baseline in the CARDS paper).

At every step take the top_k [40] next tokens by the policy's logit, score prompt + response +
token with the RM for each (one batched RM call for all rows' candidates), and append
argmax(logit + weight * reward) [weight 1.5]. Greedy: temperature and top_p do not apply.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..engine import RolloutBatch, StepView
from ..errors import SecateursError
from ..rewards import metered_score
from .base import DecodingConfig, Outcome, register


@dataclass
class ArgsConfig(DecodingConfig):
    top_k: int = 40  # candidate tokens scored by the RM at each step
    weight: float = 1.5  # w: how much the reward counts against the logit
    max_batch_rows: int = 16  # prompts per batch; each step scores rows x top_k responses

    def validate(self) -> None:
        super().validate()
        if self.top_k < 1:
            raise SecateursError(f"top_k must be >= 1 for ARGS, got {self.top_k}")
        if not isinstance(self.weight, (int, float)) or self.weight != self.weight:
            raise SecateursError(f"weight must be a number, got {self.weight!r}")


def reward_guided_chooser(batch: RolloutBatch, prompts, reward, config: ArgsConfig, meter):
    policy = batch.policy

    def choose(view: StepView) -> torch.Tensor:
        k = min(config.top_k, view.logits.shape[-1])
        logits, candidates = view.logits.topk(k, dim=-1)
        rows = view.rows.tolist()
        texts, pairs, groups = [], [], []
        for i, r in enumerate(rows):
            prefix = batch.response_ids(r)
            for c in candidates[i].tolist():
                texts.append(policy.decode(prefix + [c]))
                pairs.append(prompts[batch.groups[r]])
                groups.append(batch.groups[r])
        scores = metered_score(reward, meter, pairs, texts, groups, partial=True)
        rewards = torch.tensor(scores, dtype=logits.dtype, device=logits.device).view(len(rows), k)
        best = (logits + config.weight * rewards).argmax(-1, keepdim=True)
        return candidates.gather(-1, best).squeeze(-1)

    return choose


@register("args", ArgsConfig, "token-level reward-guided search: argmax of logit + w * reward over the top-k tokens")
def args(prompts, prompt_ids, keys, policy, reward, config: ArgsConfig, meter) -> list[Outcome]:
    batch = RolloutBatch.prefill(policy, prompt_ids, keys, config.sampling(), config.max_new_tokens, meter=meter)
    batch.extend(config.max_new_tokens, chooser=reward_guided_chooser(batch, prompts, reward, config, meter))
    texts = batch.responses()
    final = metered_score(reward, meter, prompts, texts, list(range(len(prompts))))
    return [Outcome(texts[r], batch.response_ids(r), final[r], batch.finish_reasons[r], details={"weight": config.weight})
            for r in range(batch.size)]
