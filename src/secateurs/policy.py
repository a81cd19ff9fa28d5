"""The policy LM: a transformers causal LM with its tokenizer and chat template (or, without one, a
conversation format: secateurs.conversation)."""

from __future__ import annotations

from typing import Sequence

import torch

from .conversation import DEFAULT_PROMPT_FORMAT, check_prompt_format, hh_transcript, plain_text
from .errors import SecateursError
from .prompts import Prompt


class Policy:
    """A causal LM plus what the engine needs to know about it (stop tokens, pad, context)."""

    def __init__(self, model, tokenizer, name: str | None = None, prompt_format: str = DEFAULT_PROMPT_FORMAT):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name or getattr(model.config, "_name_or_path", None) or type(model).__name__
        # How a template-less model reads a conversation; a non-default format is part of the name,
        # so results (and resumed files) of different formats never mix.
        self.prompt_format = check_prompt_format(prompt_format)
        if prompt_format != DEFAULT_PROMPT_FORMAT and not getattr(tokenizer, "chat_template", None):
            self.name = f"{self.name} [{prompt_format}]"
        self.device = next(model.parameters()).device
        self.stop_token_ids = self._stop_token_ids()
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = min(self.stop_token_ids) if self.stop_token_ids else 0
        self.pad_token_id = int(pad)
        self.max_context = int(getattr(model.config, "max_position_embeddings", 0) or 1 << 30)

    def _stop_token_ids(self) -> frozenset[int]:
        ids: set[int] = set()
        for source in (getattr(self.model, "generation_config", None), self.tokenizer):
            eos = getattr(source, "eos_token_id", None)
            if eos is None:
                continue
            ids.update([eos] if isinstance(eos, int) else eos)
        return frozenset(int(i) for i in ids)

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids of the prompt, with the chat template (and generation prompt) applied if there is one,
        else in `prompt_format` (hh: the whole transcript, ending with the "Assistant:" cue)."""
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(
                list(prompt.messages), add_generation_prompt=True, tokenize=False
            )
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if self.prompt_format == "hh":
            text = hh_transcript(prompt.messages, cue=True)
        else:
            text = plain_text(prompt.messages)
        return list(self.tokenizer(text)["input_ids"])

    def check_fits(self, prompt: Prompt, n_prompt_tokens: int, max_new_tokens: int) -> None:
        """One line naming what does not fit: max_new_tokens alone, the prompt alone, or the two together."""
        if n_prompt_tokens + max_new_tokens <= self.max_context:
            return
        if max_new_tokens >= self.max_context:
            raise SecateursError(
                f"max_new_tokens {max_new_tokens} exceeds the policy's context of {self.max_context} tokens "
                f"(prompt included): lower --max-new-tokens below {self.max_context}"
            )
        if n_prompt_tokens >= self.max_context:
            raise SecateursError(
                f"prompt {prompt.id!r} is too long: {n_prompt_tokens} tokens, but the policy's context is "
                f"{self.max_context} tokens"
            )
        raise SecateursError(
            f"prompt {prompt.id!r} is too long: {n_prompt_tokens} tokens + max_new_tokens "
            f"{max_new_tokens} exceeds the policy's context of {self.max_context} tokens"
        )

    def decode(self, ids: Sequence[int]) -> str:
        ids = [i for i in ids if i not in self.stop_token_ids]
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes one token of one row takes: 2 * layers * kv_heads * head_dim * dtype bytes."""
        cfg = self.model.config
        heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        dtype_bytes = torch.finfo(self.model.dtype).bits // 8
        return 2 * cfg.num_hidden_layers * heads * head_dim * dtype_bytes
