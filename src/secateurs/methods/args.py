"""ARGS-style token-level reward-guided search (Khanov et al. 2024; a baseline in the CARDS paper).

At every step take the top_k [40] next tokens by the policy's logit, score prompt + response +
token with the RM for each (one batched RM call for all rows' candidates), and append
argmax(logit + weight * reward) [weight 1.5]. Greedy: temperature and top_p do not apply.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..backends.base import BATCH_INVARIANT, CHOOSER, KV_PRUNE, StepView
from ..errors import SecateursError
from .base import DecodingConfig, MethodPolicy, option, register


@dataclass
class ArgsConfig(DecodingConfig):
    top_k: int = option(40, "; ARGS: candidate tokens the RM scores at each step")  # "; ": a note after the general help
    weight: float = option(1.5, "ARGS: w, how much the reward counts against the logit")
    max_batch_rows: int | str = option(16, "; ARGS scores rows x top_k responses per step")

    def validate(self) -> None:
        super().validate()
        if self.top_k < 1:
            raise SecateursError(f"top_k must be >= 1 for ARGS, got {self.top_k}")
        weight = self.weight
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not math.isfinite(weight):
            raise SecateursError(f"weight must be a finite number, got {weight!r}")


@dataclass(frozen=True)
class RewardGuidedChooser:
    """Picks argmax(logit + weight * reward) over the top_k tokens; equal choosers share one RM call a step."""

    top_k: int
    weight: float

    def __call__(self, view: StepView) -> torch.Tensor:
        k = min(self.top_k, view.logits.shape[-1])
        logits, candidates = view.logits.topk(k, dim=-1)
        texts, owners = [], []
        for seq, row in zip(view.seqs, candidates.tolist()):
            for c in row:
                texts.append(view.decode(seq.tokens + [c]))
                owners.append(seq)
        rewards = torch.tensor(view.score(owners, texts), dtype=logits.dtype, device=logits.device)
        best = (logits + self.weight * rewards.view(len(view.seqs), k)).argmax(-1, keepdim=True)
        return candidates.gather(-1, best).squeeze(-1)


@register("args", ArgsConfig, "token-level reward-guided search: argmax of logit + w * reward over the top-k tokens")
class Args(MethodPolicy):
    needs = frozenset({BATCH_INVARIANT, KV_PRUNE, CHOOSER})
    streams_tokens = True  # its one (searched) sample is the answer: a server may stream it token by token

    def start(self) -> None:
        self.ctx.sample([0], chooser=RewardGuidedChooser(self.config.top_k, self.config.weight))

    def on_idle(self, stopped) -> None:
        self.ctx.finish(self.outcome(stopped[0], weight=self.config.weight))
