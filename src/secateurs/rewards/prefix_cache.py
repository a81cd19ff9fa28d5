"""Prefix reuse for decoder reward models: a partial response scored again later, and every response
to the same prompt, costs the RM only the tokens it has not read before.

A text's RM tokens are split into blocks of BLOCK tokens at fixed boundaries (multiples of BLOCK
from its first token). The keys and values of its leading blocks come from the cache where it holds
them; the rest is computed in stretches that attend to them, each stretch of blocks shared by several
texts of the call (the prompt's head, shared by all its responses) computed once. Attention with a
cache computes the same function as one forward over the whole text, so a score equals the
from-scratch score to float rounding, whatever was cached (1e-6 relative in fp32 on a CPU, where the
tests find them bitwise equal; the forwards' shapes, which depend on what was cached, decide the last
bits, as a batch's rows already do).
The keys and values of a full block depend on every token up to its end, so a block is kept under a digest of that whole token prefix: when the RM's tokenizer retokenises the end of a prefix
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

        The texts form a tree of shared block prefixes: each stretch of blocks shared by the same texts
        (the prompt's head shared by all its responses, then each response's own blocks) is computed
        once, in one forward for all the stretches that start at the same block and have the same width
        in whole blocks. A stretch's positions count against the first text that needed it."""
        n = len(texts)
        scores: list[float | None] = [None] * n
        positions = [0] * n
        n_blocks = [max(1, -(-len(ids) // BLOCK)) for ids in texts]
        digests = [self.digests(ids) for ids in texts]

        def key(t: int, depth: int):  # a full block: its prefix's digest; a text's last, partial block: the text
            return digests[t][depth] if depth < len(digests[t]) else tuple(texts[t])

        # work[depth]: groups of texts sharing blocks 0..depth-1, with those blocks' keys / values per layer
        work: dict[int, list[tuple[list[int], list]]] = {}
        groups: dict = {}  # (depth, digest of the cached prefix) -> the group's texts
        for t in range(n):
            cached = []
            for digest in digests[t]:
                entry = self._get(digest)
                if entry is None:
                    break
                cached.append(entry[0])
            if len(cached) == n_blocks[t]:  # every block read before, the last one full: its score is known
                scores[t] = self._get(digests[t][-1])[1]
                continue
            depth = len(cached)
            where = (depth, digests[t][depth - 1] if depth else None)
            if where not in groups:
                groups[where] = [t]
                work.setdefault(depth, []).append((groups[where], _join(cached)))
            else:
                groups[where].append(t)
        while work:
            depth = min(work)
            by_width: dict[int, list] = {}  # one forward per width (padded to whole blocks): a stretch's shape
            for texts_, past in work.pop(depth):  # depends on its own length only, as in length_buckets
                for group in _split(texts_, lambda t: key(t, depth)):
                    end = depth + 1  # the stretch: blocks the whole group shares, up to where it splits or ends
                    while end < n_blocks[group[0]] and len({key(t, end) for t in group}) == 1:
                        end += 1
                    width = -(-(min(len(texts[group[0]]), end * BLOCK) - depth * BLOCK) // BLOCK) * BLOCK
                    by_width.setdefault(width, []).append((group, past, end))
            for width, items in sorted(by_width.items()):
                self._forward(texts, items, depth, width, label_index, digests, n_blocks, scores, positions, work)
        return scores, positions

    def _forward(self, texts, items, depth, width, label_index, digests, n_blocks, scores, positions, work) -> None:
        """Run stretches of one width starting at block `depth`; keep their full blocks, score the texts
        that end, and queue the groups that go on."""
        chunk = torch.zeros(len(items), width, dtype=torch.long)
        mask = torch.ones(len(items), depth * BLOCK + width, dtype=torch.long)
        for r, (group, _, end) in enumerate(items):
            piece = texts[group[0]][depth * BLOCK:end * BLOCK]
            chunk[r, :len(piece)] = torch.tensor(piece, dtype=torch.long)
            mask[r, depth * BLOCK + len(piece):] = 0
            positions[group[0]] += width
        running = [] if depth == 0 else [
            (torch.cat([p[layer][0] for _, p, _ in items]), torch.cat([p[layer][1] for _, p, _ in items]))
            for layer in range(len(items[0][1]))]
        cache = cache_from_layers(running)  # the forward appends the stretches' keys and values to it
        position_ids = torch.arange(depth * BLOCK, depth * BLOCK + width).expand(len(items), -1)
        out = self.base(input_ids=chunk.to(self.device), attention_mask=mask.to(self.device),
                        position_ids=position_ids.to(self.device), use_cache=True, **{self._cache_kwarg: cache})
        logits = self.model.score(out.last_hidden_state)[..., label_index].float().cpu()
        layers = layers_of(cache)
        for r, (group, _, end) in enumerate(items):
            row = [(k[r:r + 1], v[r:r + 1]) for k, v in layers]
            for b in range(depth, min(end, len(digests[group[0]]))):  # keep the full blocks (cloned: a view
                block = [(k[:, :, b * BLOCK:(b + 1) * BLOCK].clone(),  # would pin the whole batch)
                          v[:, :, b * BLOCK:(b + 1) * BLOCK].clone()) for k, v in row]
                self._put(digests[group[0]][b], block, float(logits[r, (b + 1 - depth) * BLOCK - 1]))
            for t in group:
                if n_blocks[t] == end:
                    scores[t] = float(logits[r, len(texts[t]) - depth * BLOCK - 1])
            on = [t for t in group if n_blocks[t] > end]
            if on:
                past = [(k[:, :, :end * BLOCK].clone(), v[:, :, :end * BLOCK].clone()) for k, v in row]
                work.setdefault(end, []).append((on, past))


def _split(items: list[int], by) -> list[list[int]]:
    groups: dict = {}
    for t in items:
        groups.setdefault(by(t), []).append(t)
    return list(groups.values())


def _join(blocks: list) -> list:
    """One text's cached blocks as per-layer keys / values [1, heads, blocks * BLOCK, dim] (none: [])."""
    if not blocks:
        return []
    return [(torch.cat([b[layer][0] for b in blocks], dim=2), torch.cat([b[layer][1] for b in blocks], dim=2))
            for layer in range(len(blocks[0]))]
