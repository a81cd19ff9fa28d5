"""Prefix reuse for decoder reward models: a partial response scored again later, and every response
to the same prompt, costs the RM only the tokens it has not read before.

A text's RM tokens are always run in blocks of BLOCK tokens at the same boundaries (multiples of
BLOCK from its first token), each block attending to the keys and values of the blocks before it,
whether those come from this cache or are computed in the same call. So a text's score depends on its
own tokens only, never on what was cached before it (the order requests came in, what shared their
batch); it equals the from-scratch score within float rounding (1e-5 relative in fp32, checked by the
tests). The keys and values of a full block depend on every token up to its end, so a block is kept
under a digest of that whole token prefix: when the RM's tokenizer retokenises the end of a prefix
once text is appended (a merged boundary token), only the blocks before the first changed token are
shared. The prompt and its chat-template head are the first blocks of every response to it; CARDS'
accepted prefix and a Speculative Rejection survivor's earlier text are the first blocks of their next
scoring. Entries are evicted least recently used beyond `max_tokens` tokens.

Only for RMs whose attention is causal (a decoder with a `score` head: Llama, Mistral, Qwen, Gemma,
GPT-2 style sequence classifiers): a bidirectional RM (BERT, DeBERTa, MiniLM) reads every token
again by nature and keeps the from-scratch path.
"""

from __future__ import annotations

import hashlib
import inspect
from collections import OrderedDict

import numpy as np
import torch

from ..backends.kv_cache import cache_from_layers, layers_of

BLOCK = 16


def supports_prefix_reuse(model) -> bool:
    """A decoder sequence classifier whose base model takes a KV cache: transformers names the head of
    every decoder-only classifier `score` (encoders use `classifier`)."""
    base = getattr(model, getattr(model, "base_model_prefix", "model"), None)
    if base is None or not isinstance(getattr(model, "score", None), torch.nn.Linear):
        return False
    config = model.config.get_text_config()
    if getattr(config, "is_encoder_decoder", False):
        return False
    params = inspect.signature(base.forward).parameters
    return "cache" in params or "past_key_values" in params


class PrefixCache:
    """Block keys / values of token prefixes already read, and the score at each block's last token
    (of the label last asked for: a reward reads one label)."""

    def __init__(self, model, max_tokens: int):
        self.model = model
        self.base = getattr(model, model.base_model_prefix)
        self.block = BLOCK
        self.max_blocks = max(0, max_tokens // BLOCK)
        self.device = next(model.parameters()).device
        params = inspect.signature(self.base.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        self.blocks: OrderedDict[bytes, tuple[list, float]] = OrderedDict()

    @staticmethod
    def digests(ids: list[int]) -> list[bytes]:
        """Digest of ids[:(k + 1) * BLOCK] for every full block k."""
        h = hashlib.blake2b(digest_size=16)
        out = []
        for end in range(BLOCK, len(ids) + 1, BLOCK):
            h.update(np.asarray(ids[end - BLOCK:end], dtype=np.int64).tobytes())
            out.append(h.copy().digest())
        return out

    def _get(self, key: bytes):
        entry = self.blocks.get(key)
        if entry is not None:
            self.blocks.move_to_end(key)
        return entry

    def _put(self, key: bytes, layers: list, score: float) -> None:
        if self.max_blocks == 0:
            return
        self.blocks[key] = (layers, score)
        self.blocks.move_to_end(key)
        while len(self.blocks) > self.max_blocks:
            self.blocks.popitem(last=False)

    @torch.no_grad()
    def score(self, texts: list[list[int]], label_index: int = 0) -> tuple[list[float], list[int]]:
        """Scores (logit `label_index`) of token-id texts, and the positions the RM computed for each.

        Depth by depth (block k of every text at once), one row per distinct token prefix: the
        responses to one prompt share the rows of its head, computed once, and split where they differ.
        A shared block's positions count against the first text that needed it."""
        n = len(texts)
        scores: list[float | None] = [None] * n
        positions = [0] * n
        n_blocks = [max(1, -(-len(ids) // BLOCK)) for ids in texts]
        digests = [self.digests(ids) for ids in texts]

        def key(t: int, depth: int):  # a full block: its prefix's digest; a text's last, partial block: the text
            return digests[t][depth] if depth < len(digests[t]) else tuple(texts[t])

        start = [0] * n  # first block to compute; the blocks before it come from the cache
        cached: list[list] = [[] for _ in range(n)]
        for t in range(n):
            for digest in digests[t]:
                entry = self._get(digest)
                if entry is None:
                    break
                cached[t].append(entry[0])
                start[t] += 1
            if start[t] == n_blocks[t]:  # every block read before, the last one full: its score is known
                scores[t] = self._get(digests[t][-1])[1]
        row_keys: list = []  # the prefix each running row holds
        running: list = []  # per layer (keys, values) of the running rows: [rows, heads, depth * BLOCK, dim]
        for depth in range(max(n_blocks)):
            active = [t for t in range(n) if scores[t] is None and start[t] <= depth < n_blocks[t]]
            first: dict = {}  # row key -> the first text that needs it
            for t in active:
                first.setdefault(key(t, depth), t)
            carried = [(k, row_keys.index(key(t, depth - 1))) for k, t in first.items() if start[t] < depth]
            joining = [(k, t) for k, t in first.items() if start[t] == depth]
            parts = []
            if carried and running:
                index = torch.tensor([r for _, r in carried], dtype=torch.long, device=self.device)
                parts.append([(k.index_select(0, index), v.index_select(0, index)) for k, v in running])
            if joining and depth > 0:
                parts.append([_stack([cached[t] for _, t in joining], layer) for layer in range(len(cached[joining[0][1]][0]))])
            running = parts[0] if len(parts) == 1 else [
                (torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]])) for a, b in zip(*parts)] if parts else []
            row_keys = [k for k, _ in carried] + [k for k, _ in joining]
            if not row_keys:
                continue
            reps = [first[k] for k in row_keys]
            chunk = torch.zeros(len(reps), BLOCK, dtype=torch.long)
            mask = torch.ones(len(reps), (depth + 1) * BLOCK, dtype=torch.long)
            sizes = []
            for r, t in enumerate(reps):
                block = texts[t][depth * BLOCK:(depth + 1) * BLOCK]
                chunk[r, :len(block)] = torch.tensor(block, dtype=torch.long)
                mask[r, depth * BLOCK + len(block):] = 0
                sizes.append(len(block))
                positions[t] += BLOCK
            position_ids = torch.arange(depth * BLOCK, (depth + 1) * BLOCK).expand(len(reps), -1)
            cache = cache_from_layers(running)  # the forward appends this block's keys and values to it
            out = self.base(input_ids=chunk.to(self.device), attention_mask=mask.to(self.device),
                            position_ids=position_ids.to(self.device), use_cache=True, **{self._cache_kwarg: cache})
            logits = self.model.score(out.last_hidden_state)[..., label_index].float().cpu()
            running = layers_of(cache)
            row_of = {k: r for r, k in enumerate(row_keys)}
            for t in active:
                if depth == n_blocks[t] - 1:
                    r = row_of[key(t, depth)]
                    scores[t] = float(logits[r, sizes[r] - 1])
            for r, (k, t) in enumerate(zip(row_keys, reps)):
                if sizes[r] == BLOCK:  # a full block: keep it (cloned: a view would pin the whole batch)
                    layers = [(keys[r:r + 1, :, depth * BLOCK:].clone(), values[r:r + 1, :, depth * BLOCK:].clone())
                              for keys, values in running]
                    self._put(k, layers, float(logits[r, BLOCK - 1]))
        return scores, positions


def _stack(blocks_per_text: list[list], layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of the given texts' cached blocks of one layer, each text's blocks joined along its columns."""
    keys = torch.cat([torch.cat([b[layer][0] for b in blocks], dim=2) for blocks in blocks_per_text])
    values = torch.cat([torch.cat([b[layer][1] for b in blocks], dim=2) for blocks in blocks_per_text])
    return keys, values
