"""A Hugging Face sequence-classification reward model (Skywork-Reward, ArmoRM-style heads, ...).

The RM reads the whole conversation with its own tokenizer and chat template: the policy's token ids
are never passed to it, so policy and RM may have different vocabularies. An RM without a chat
template reads it in `prompt_format` (secateurs.conversation; hh: the HH-RLHF transcript, as the
CARDS paper's Llama-7B RM was trained on).
A decoder RM reuses what it has read (rewards/prefix_cache.py): the prompt once for all its responses,
a partial response's earlier blocks when it is scored again; a bidirectional RM reads every text from
scratch.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..conversation import DEFAULT_PROMPT_FORMAT, check_prompt_format, hh_transcript, plain_text
from ..errors import SecateursError
from ..models import resolve_device, resolve_dtype
from .base import Reward, length_buckets
from .prefix_cache import PrefixCache, supports_prefix_reuse

# RM tokens whose keys and values the prefix cache keeps (least recently used beyond): 64 prompts of
# 1,024 tokens; 8 GiB for an 8B Llama-shaped RM in bf16 (128 KiB per token), 4.5 GiB for 135M in fp32.
PREFIX_CACHE_TOKENS = 65536


def looks_like_path(spec: str) -> bool:
    """A reward spec meant as a folder rather than a Hub id (which is NAME or ORG/NAME)."""
    return (spec.startswith(("/", "./", "../", "~", ".\\", "..\\")) or spec in (".", "..")
            or spec.count("/") > 1 or "\\" in spec or (os.sep != "/" and os.sep in spec))


def check_model_folder(spec: str) -> None:
    """A spec that looks like a path must be an existing folder: say so rather than let the Hub
    client complain about a repo name."""
    if looks_like_path(spec):
        folder = Path(spec).expanduser()
        if not folder.exists():
            raise SecateursError(f"reward model folder not found: {spec!r}")
        if not folder.is_dir():
            raise SecateursError(f"reward model path {spec!r} is a file, not a model folder")


class HFReward(Reward):
    def __init__(self, model_name_or_path: str | Path, device=None, dtype=None, batch_size: int = 16,
                 max_length: int | None = None, label_index: int = 0, prompt_format: str = DEFAULT_PROMPT_FORMAT,
                 prefix_cache_tokens: int = PREFIX_CACHE_TOKENS):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.name = f"hf:{model_name_or_path}"
        self.prompt_format = check_prompt_format(prompt_format)
        spec = str(model_name_or_path)
        if isinstance(model_name_or_path, Path):
            spec = spec if looks_like_path(spec) else "./" + spec
        check_model_folder(spec)
        if looks_like_path(spec):
            model_name_or_path = Path(spec).expanduser()
        dev = resolve_device(device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
            self.model = AutoModelForSequenceClassification.from_pretrained(
                model_name_or_path, dtype=resolve_dtype(dtype, dev)).to(dev).eval()
        except SecateursError:
            raise
        except Exception as e:  # OSError, ValueError, a broken config: one line naming the model
            lines = str(e).strip().splitlines()
            raise SecateursError(f"unknown reward model {str(model_name_or_path)!r}: "
                                 f"{lines[0] if lines else type(e).__name__}") from None
        if prompt_format != DEFAULT_PROMPT_FORMAT and not getattr(self.tokenizer, "chat_template", None):
            self.name = f"{self.name} [{prompt_format}]"  # another format scores differently: another name
        if label_index >= self.model.config.num_labels:
            raise SecateursError(f"label_index {label_index} out of range for {self.model.config.num_labels} labels")
        self.device = dev
        self.batch_size = batch_size
        self.label_index = label_index
        self.max_length = max_length or min(getattr(self.tokenizer, "model_max_length", 4096) or 4096,
                                            getattr(self.model.config, "max_position_embeddings", 4096) or 4096)
        self.use_prefix_cache(prefix_cache_tokens)

    def use_prefix_cache(self, max_tokens: int) -> None:
        """Reuse up to `max_tokens` tokens of what a decoder RM has read (0: read every text from scratch)."""
        self.prefix_cache = (PrefixCache(self.model, max_tokens)
                             if max_tokens > 0 and supports_prefix_reuse(self.model) else None)

    def encode(self, prompt, response: str) -> list[int]:
        conversation = list(prompt.messages) + [{"role": "assistant", "content": response}]
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(conversation, tokenize=False)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        elif self.prompt_format == "hh":  # the whole transcript, the response as the last assistant turn
            ids = self.tokenizer(hh_transcript(conversation, cue=False))["input_ids"]
        else:  # a (whole conversation, response) text pair
            ids = self.tokenizer(plain_text(prompt.messages), response)["input_ids"]
        # Keep the end (the response) when the conversation is over-long.
        return list(ids[-self.max_length:])

    @torch.no_grad()
    def _score(self, prompts, responses, partial):
        encoded = [self.encode(p, r) for p, r in zip(prompts, responses)]
        tokens = [len(ids) for ids in encoded]
        if getattr(self, "prefix_cache", None) is not None:
            scores, positions = [], []
            for start in range(0, len(encoded), self.batch_size):
                got, computed = self.prefix_cache.score(encoded[start:start + self.batch_size], self.label_index)
                scores += got
                positions += computed
            return scores, tokens, positions
        scores: list[float] = [0.0] * len(encoded)
        positions = [0] * len(encoded)
        # Each text padded to a width fixed by its own length: its score does not depend on its batch.
        for width, indices in length_buckets(tokens, self.batch_size, self.max_length):
            for i, score in zip(indices, self._score_ids([encoded[i] for i in indices], width)):
                scores[i], positions[i] = score, width
        return scores, tokens, positions

    def _score_ids(self, chunk: list[list[int]], width: int | None = None) -> list[float]:
        # transformers reads a sequence-classification score at the last token that is not the pad
        # id; pick a pad id absent from every sequence so an EOS that doubles as pad is not skipped.
        used = {t for ids in chunk for t in ids}
        pad = self.tokenizer.pad_token_id
        if pad is None or pad in used:
            pad = next(i for i in range(self.model.config.vocab_size - 1, -1, -1) if i not in used)
        width = max(width or 0, max(len(ids) for ids in chunk))
        input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros(len(chunk), width, dtype=torch.long)
        for i, ids in enumerate(chunk):
            input_ids[i, :len(ids)] = torch.tensor(ids)
            mask[i, :len(ids)] = 1
        config = self.model.config.get_text_config()
        saved, config.pad_token_id = config.pad_token_id, pad
        try:
            out = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device))
        finally:
            config.pad_token_id = saved
        return out.logits[:, self.label_index].float().cpu().tolist()
