"""CARDS' segment cut inside vLLM: a logits processor that ends a request before a high-entropy token.

vLLM (v1) runs this in its sampler, on the raw float32 logits of every row before temperature,
top-k and top-p, so the entropy is the full-vocabulary, temperature-1 entropy the transformers
backend's SegmentCutter computes (backends.base.entropy). A request opts in with
`SamplingParams(extra_args={CUT_ARG: (threshold, min_tokens, marker)}, stop_token_ids=[..., marker])`:
once it has `min_tokens` output tokens, a step whose next-token entropy is >= threshold samples
`marker` (every other logit is set to -inf) and the marker stops the request, so the segment
ends *before* that token exactly as SegmentCutter ends it. At every other step the marker's logit
is -inf, so a sampled marker always means a cut; the marker is a special token the chat policy
never emits in an answer (its BOS / <|im_start|>), so banning it changes nothing it would say.

This module imports vLLM; the engine loads the class by its qualified name (QUALNAME).
"""

from __future__ import annotations

from typing import Sequence

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

CUT_ARG = "secateurs_entropy_cut"
QUALNAME = "secateurs.backends.vllm_cut:EntropyCut"


class EntropyCut(LogitsProcessor):
    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        # batch row -> (threshold, min_tokens, marker, the request's live output token ids)
        self.rows: dict[int, tuple[float, int, int, Sequence[int]]] = {}

    @classmethod
    def validate_params(cls, params) -> None:
        spec = (params.extra_args or {}).get(CUT_ARG)
        if spec is not None and (not isinstance(spec, (list, tuple)) or len(spec) != 3):
            raise ValueError(f"{CUT_ARG} must be (threshold, min_tokens, marker), got {spec!r}")

    def is_argmax_invariant(self) -> bool:
        return False  # it forces the marker, which changes greedy choices too

    @staticmethod
    def _state(params, prompt_ids, output_ids):
        spec = (params.extra_args or {}).get(CUT_ARG)
        if spec is None:
            return None
        threshold, min_tokens, marker = spec
        return float(threshold), int(min_tokens), int(marker), output_ids

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        process_dict_updates(self.rows, batch_update, self._state)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.rows:
            return logits
        rows = sorted(self.rows)
        index = torch.tensor(rows, device=logits.device)
        markers = torch.tensor([self.rows[r][2] for r in rows], device=logits.device)
        sub = logits[index].float()
        logp = torch.log_softmax(sub, dim=-1)
        entropy = -(logp.exp() * logp).sum(-1)
        ready = torch.tensor([len(self.rows[r][3]) >= self.rows[r][1] for r in rows], device=logits.device)
        thresholds = torch.tensor([self.rows[r][0] for r in rows], device=logits.device)
        cut = ready & (entropy >= thresholds)
        # Not cut: the marker is banned. Cut: only the marker can be drawn.
        marker_value = torch.where(cut, 0.0, float("-inf")).to(logits.dtype)
        sub = torch.where(cut[:, None], torch.full_like(logits[index], float("-inf")), logits[index])
        sub[torch.arange(len(rows), device=logits.device), markers] = marker_value
        logits[index] = sub
        return logits
