"""The rollout engine: a batch of growing responses that owns its KV cache.

Every alignment method is a loop of extend -> score -> keep / fork / rewind over one of these.

Layout. All rows share one transformers DynamicCache of shape [rows, heads, columns, head_dim]
and a 0/1 `mask` [rows, columns] saying which cache columns hold a real token of that row. Rows
may belong to different prompts and have different lengths: prompts are left-padded, a row that
sits out a forward step gets a masked column, and a rewound row masks its dropped columns. Each
row's next position id is its count of valid columns, so RoPE positions always equal those of the
same tokens computed from scratch. Columns masked in every row are cropped from the end, and the
cache is compacted (valid columns gathered left-padded) once holes outnumber real columns.

Each row is in one of two states:
- ready: all its tokens are in the cache and `next_logits` holds its next-token logits;
- pending: its last token is not in the cache yet (just sampled, or exposed by a rewind); the next
  forward feeds it. Sampled tokens are fed lazily so a row that stops (EOS, length) costs no
  forward for its last token, as in `model.generate`.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Sequence

import torch
from transformers import DynamicCache

from .errors import SecateursError
from .meter import Meter
from .policy import Policy
from .sampling import SamplingParams, child_key, sample_tokens


@dataclass
class StepView:
    """What a stop rule sees before a token is sampled for the running rows."""

    rows: torch.Tensor  # [R] batch indices of the running rows
    logits: torch.Tensor  # [R, V] temperature-1 next-token logits
    segment_tokens: torch.Tensor  # [R] tokens generated so far in this extend() call
    response_tokens: torch.Tensor  # [R] response length so far

    @cached_property
    def entropy(self) -> torch.Tensor:
        """Entropy (nats) of the full-vocabulary, temperature-1 next-token distribution."""
        return entropy(self.logits)


StopRule = Callable[[StepView], torch.Tensor]  # -> bool [R]: stop this row before sampling


def entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


class RolloutBatch:
    """A batch of prompt + response rows with a shared, prunable KV cache."""

    # Per-row state besides the KV cache, mask and next_logits: every reshaping moves all of it.
    ROW_LISTS = ("tokens", "prompt_lens", "groups", "logprobs", "entropies", "finish_reasons")
    ROW_TENSORS = ("keys", "draws", "finished", "pending", "n_cached")

    def __init__(self, policy: Policy, sampling: SamplingParams, max_new_tokens: int,
                 meter: Meter | None = None, track_entropy: bool = False, stop_at_eos: bool = True):
        if max_new_tokens < 1:
            raise SecateursError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.policy = policy
        self.model = policy.model
        self.device = policy.device
        self.sampling = sampling
        self.max_new_tokens = max_new_tokens
        self.meter = meter
        self.track_entropy = track_entropy
        ids = sorted(policy.stop_token_ids) if stop_at_eos else []
        self._stop_ids = torch.tensor(ids, dtype=torch.long)
        # Filled by prefill() / select().
        self.tokens: list[list[int]] = []
        self.prompt_lens: list[int] = []
        self.groups: list[int] = []
        self.logprobs: list[list[float]] = []
        self.entropies: list[list[float]] = []
        self.finish_reasons: list[str | None] = []
        self.keys = torch.zeros(0, dtype=torch.long)
        self.draws = torch.zeros(0, dtype=torch.long)
        self.finished = torch.zeros(0, dtype=torch.bool)
        self.pending = torch.zeros(0, dtype=torch.bool)
        self.n_cached = torch.zeros(0, dtype=torch.long)
        self.mask = torch.zeros(0, 0, dtype=torch.long, device=self.device)
        self.next_logits = torch.zeros(0, 0, device=self.device)
        self.cache = DynamicCache()

    # ------------------------------------------------------------------ construction
    @classmethod
    @torch.no_grad()
    def prefill(cls, policy: Policy, prompt_ids: Sequence[Sequence[int]], keys: Sequence[int],
                sampling: SamplingParams, max_new_tokens: int, groups: Sequence[int] | None = None,
                meter: Meter | None = None, **kwargs) -> "RolloutBatch":
        """Run the prompts through the LM once (left-padded, one forward) and return a ready batch.

        `keys` are the rows' random keys (see sampling.py); `groups` tag each row with the index of
        the prompt it answers, for cost accounting (default: row i is group i).
        """
        batch = cls(policy, sampling, max_new_tokens, meter, **kwargs)
        if not prompt_ids or any(len(p) == 0 for p in prompt_ids):
            raise SecateursError("prefill needs at least one prompt, each with at least one token")
        n = len(prompt_ids)
        width = max(len(p) for p in prompt_ids)
        ids = torch.full((n, width), policy.pad_token_id, dtype=torch.long)
        mask = torch.zeros(n, width, dtype=torch.long)
        for i, p in enumerate(prompt_ids):
            ids[i, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
            mask[i, width - len(p):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        batch.tokens = [list(p) for p in prompt_ids]
        batch.prompt_lens = [len(p) for p in prompt_ids]
        batch.groups = list(groups) if groups is not None else list(range(n))
        batch.logprobs = [[] for _ in range(n)]
        batch.entropies = [[] for _ in range(n)]
        batch.finish_reasons = [None] * n
        batch.keys = torch.tensor(list(keys), dtype=torch.long)
        batch.draws = torch.zeros(n, dtype=torch.long)
        batch.finished = torch.zeros(n, dtype=torch.bool)
        batch.pending = torch.zeros(n, dtype=torch.bool)
        batch.n_cached = torch.tensor(batch.prompt_lens, dtype=torch.long)
        batch.mask = mask.to(batch.device)
        logits = batch._run_model(ids, positions, prefill=True,
                                  tokens_per_row=torch.tensor(batch.prompt_lens))
        batch.next_logits = logits
        batch._check_cache_layout()
        return batch

    def _check_cache_layout(self) -> None:
        kinds = {type(layer).__name__ for layer in self.cache.layers}
        if kinds - {"DynamicLayer"}:
            raise SecateursError(
                f"policy {self.policy.name!r} uses cache layers {sorted(kinds)}; the rollout engine "
                "supports full-attention models (DynamicLayer) only"
            )

    # ------------------------------------------------------------------ properties
    @property
    def size(self) -> int:
        return len(self.tokens)

    @property
    def columns(self) -> int:
        return self.mask.shape[1]

    def response_ids(self, row: int) -> list[int]:
        return self.tokens[row][self.prompt_lens[row]:]

    def response_lengths(self) -> torch.Tensor:
        return torch.tensor([len(t) - p for t, p in zip(self.tokens, self.prompt_lens)], dtype=torch.long)

    def responses(self) -> list[str]:
        return [self.policy.decode(self.response_ids(r)) for r in range(self.size)]

    # ------------------------------------------------------------------ the model call
    def _run_model(self, ids: torch.Tensor, positions: torch.Tensor, prefill: bool,
                   tokens_per_row: torch.Tensor) -> torch.Tensor:
        """One forward over all rows; returns the last position's fp32 logits [B, V]."""
        start = time.perf_counter()
        out = self.model(
            input_ids=ids.to(self.device),
            attention_mask=self.mask,
            position_ids=positions.to(self.device),
            past_key_values=self.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        logits = out.logits[:, -1].float()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        if self.meter is not None:
            per_group = [0] * len(self.meter.costs)
            for g, n in zip(self.groups, tokens_per_row.tolist()):
                per_group[g] += n
            self.meter.lm_forward(per_group, time.perf_counter() - start, prefill=prefill)
        return logits

    def _feed_pending(self, rows: torch.Tensor) -> None:
        """Feed the un-cached tokens of each row in the bool mask `rows` (usually one each, more after
        force()); other rows sit out this forward with masked columns."""
        # A row with nothing cached cannot sit out a step (its query would attend to nothing).
        rows = rows | (self.pending & (self.n_cached == 0))
        totals = torch.tensor([len(t) for t in self.tokens], dtype=torch.long)
        lag = torch.where(rows, totals - self.n_cached, 0)
        width = int(lag.max())
        if width == 1:  # the decoding hot path: one token per feeding row
            last = torch.tensor([t[-1] for t in self.tokens], dtype=torch.long)
            ids = torch.where(rows, last, self.policy.pad_token_id)[:, None]
            block_mask = rows.long()[:, None]
        else:  # ragged: each row's tokens right-aligned in the new block, masked pads before them
            ids = torch.full((self.size, width), self.policy.pad_token_id, dtype=torch.long)
            block_mask = torch.zeros(self.size, width, dtype=torch.long)
            for r in rows.nonzero().flatten().tolist():
                n = int(lag[r])
                ids[r, width - n:] = torch.tensor(self.tokens[r][-n:], dtype=torch.long)
                block_mask[r, width - n:] = 1
        positions = self.n_cached[:, None] + (block_mask.cumsum(1) - 1).clamp(min=0)
        self.mask = torch.cat([self.mask, block_mask.to(self.device)], dim=1)
        logits = self._run_model(ids, positions, prefill=False, tokens_per_row=lag)
        dev_rows = rows.to(self.device)
        self.next_logits = torch.where(dev_rows[:, None], logits, self.next_logits)
        self.n_cached += lag
        self.pending &= ~rows

    # ------------------------------------------------------------------ extend
    @torch.no_grad()
    def extend(self, max_tokens: int, stop_rule: StopRule | None = None,
               chooser: Callable[[StepView], torch.Tensor] | None = None) -> torch.Tensor:
        """Sample up to `max_tokens` more tokens for every unfinished row.

        A row stops early at a stop token (EOS), at the batch's max_new_tokens (both mark it
        finished), or when `stop_rule` says so before a token (it stays unfinished and ready).
        `chooser`, if given, picks each next token instead of sampling (e.g. ARGS' reward-guided
        search). Returns the number of tokens each row gained.
        """
        gained = torch.zeros(self.size, dtype=torch.long)
        if max_tokens < 1 or self.size == 0:
            return gained
        self._maybe_compact()
        running = ~self.finished
        lengths = self.response_lengths()
        while True:
            rows = running.nonzero().flatten()
            if rows.numel() == 0:
                break
            need = self.pending & running
            if need.any():
                self._feed_pending(need)
            logits = self.next_logits[rows.to(self.device)]
            if stop_rule is not None:
                view = StepView(rows, logits, gained[rows], lengths[rows])
                stop = torch.as_tensor(stop_rule(view), dtype=torch.bool).cpu()
                if stop.any():
                    running[rows[stop]] = False
                    rows, logits = rows[~stop], logits[(~stop).to(self.device)]
                    if rows.numel() == 0:
                        break
            if chooser is not None:
                new = torch.as_tensor(chooser(StepView(rows, logits, gained[rows], lengths[rows])),
                                      dtype=torch.long, device=logits.device)
            else:
                new = sample_tokens(logits, self.sampling, self.keys[rows], self.draws[rows])
            logz = torch.logsumexp(logits, dim=-1)
            logprob = (logits.gather(-1, new[:, None]).squeeze(-1) - logz).tolist()
            ent = entropy(logits).tolist() if self.track_entropy else None
            new = new.cpu()
            self.draws[rows] += 1
            self.pending[rows] = True
            gained[rows] += 1
            lengths[rows] += 1
            for i, (r, t) in enumerate(zip(rows.tolist(), new.tolist())):
                self.tokens[r].append(t)
                self.logprobs[r].append(logprob[i])
                if ent is not None:
                    self.entropies[r].append(ent[i])
            if self.meter is not None:
                per_group = [0] * len(self.meter.costs)
                for r in rows.tolist():
                    per_group[self.groups[r]] += 1
                self.meter.generated(per_group)
            hit_eos = torch.isin(new, self._stop_ids)
            hit_len = lengths[rows] >= self.max_new_tokens
            for r, eos, full in zip(rows.tolist(), hit_eos.tolist(), hit_len.tolist()):
                if eos or full:
                    self.finished[r] = True
                    self.finish_reasons[r] = "eos" if eos else "length"
            running[rows] &= ~(hit_eos | hit_len) & (gained[rows] < max_tokens)
        return gained

    # ------------------------------------------------------------------ reshaping the batch
    def _reindex(self, index: torch.Tensor) -> dict:
        """The batch state gathered along rows by `index` (repeats allowed)."""
        idx = index.tolist()
        dev_index = index.to(self.device)
        cache = copy.copy(self.cache)
        cache.layers = []
        for layer in self.cache.layers:
            new_layer = copy.copy(layer)
            new_layer.keys = layer.keys.index_select(0, dev_index)
            new_layer.values = layer.values.index_select(0, dev_index)
            cache.layers.append(new_layer)
        state = {name: [copy.copy(getattr(self, name)[i]) for i in idx] for name in self.ROW_LISTS}
        state.update({name: getattr(self, name)[index] for name in self.ROW_TENSORS})
        state.update(mask=self.mask.index_select(0, dev_index), next_logits=self.next_logits.index_select(0, dev_index),
                     cache=cache)
        return state

    def _as_index(self, rows: Sequence[int] | torch.Tensor) -> torch.Tensor:
        index = torch.as_tensor(rows, dtype=torch.long).flatten().cpu()
        if index.numel() and (index.min() < 0 or index.max() >= self.size):
            raise IndexError(f"row index out of range for a batch of {self.size}: {index.tolist()}")
        return index

    @torch.no_grad()
    def keep(self, rows: Sequence[int] | torch.Tensor) -> None:
        """Keep only `rows` (in that order), pruning the others from the KV cache in place."""
        index = self._as_index(rows)
        if len(set(index.tolist())) != index.numel():
            raise ValueError("keep() takes distinct rows; use fork() or select() to duplicate rows")
        self.__dict__.update(self._reindex(index))
        self._crop_empty_columns()

    @torch.no_grad()
    def fork(self, copies: int | Sequence[int]) -> None:
        """Replace each row by `copies` children (an int, or one count per row), in place.

        Child j of a row gets the random key child_key(parent key, j), so children sample
        different continuations and the same children are made whatever the batch holds.
        """
        counts = [copies] * self.size if isinstance(copies, int) else list(copies)
        if len(counts) != self.size or any(c < 0 for c in counts):
            raise ValueError(f"fork needs one non-negative count per row, got {counts}")
        index = torch.repeat_interleave(torch.arange(self.size), torch.tensor(counts, dtype=torch.long))
        keys = [child_key(int(self.keys[r]), j) for r, c in enumerate(counts) for j in range(c)]
        self.__dict__.update(self._reindex(index))
        self.keys = torch.tensor(keys, dtype=torch.long)

    @torch.no_grad()
    def select(self, rows: Sequence[int] | torch.Tensor, keys: Sequence[int] | None = None,
               meter: Meter | None = None) -> "RolloutBatch":
        """A new batch holding copies of `rows` (repeats allowed), optionally with new random keys.

        Used to decode chunks of samples from one prefilled prompt batch, so the prompt's KV cache
        is computed once however many chunks draw from it.
        """
        index = self._as_index(rows)
        new = RolloutBatch(self.policy, self.sampling, self.max_new_tokens,
                           meter if meter is not None else self.meter, self.track_entropy)
        new._stop_ids = self._stop_ids
        new.__dict__.update(self._reindex(index))
        if keys is not None:
            new.keys = torch.tensor(list(keys), dtype=torch.long)
        new._crop_empty_columns()
        return new

    @torch.no_grad()
    def append(self, other: "RolloutBatch") -> None:
        """Add `other`'s rows after this batch's rows (e.g. the next prompt's candidates filling freed
        slots). The narrower cache is left-padded with masked columns; no row is recomputed."""
        if other.size == 0:
            return
        if self.size == 0:
            self.__dict__.update({k: v for k, v in other.__dict__.items()
                                  if k not in ("meter", "policy", "model", "sampling", "max_new_tokens")})
            return
        width = max(self.columns, other.columns)
        caches = []
        for batch in (self, other):
            pad = width - batch.columns
            layers = []
            for layer in batch.cache.layers:
                k, v = layer.keys, layer.values
                if pad:
                    k = torch.nn.functional.pad(k, (0, 0, pad, 0))
                    v = torch.nn.functional.pad(v, (0, 0, pad, 0))
                layers.append((k, v))
            caches.append((torch.nn.functional.pad(batch.mask, (pad, 0)), layers))
        (mask_a, layers_a), (mask_b, layers_b) = caches
        for layer, (ka, va), (kb, vb) in zip(self.cache.layers, layers_a, layers_b):
            layer.keys = torch.cat([ka, kb])
            layer.values = torch.cat([va, vb])
        self.mask = torch.cat([mask_a, mask_b])
        self.next_logits = torch.cat([self.next_logits, other.next_logits])
        for name in self.ROW_LISTS:
            getattr(self, name).extend(getattr(other, name))
        for name in self.ROW_TENSORS:
            setattr(self, name, torch.cat([getattr(self, name), getattr(other, name)]))

    @torch.no_grad()
    def force(self, row: int, tokens: Sequence[int], logprobs: Sequence[float] | None = None) -> None:
        """Append given tokens to a row's response (no sampling); they are fed by the next forward.

        Used to restore a candidate that was sampled earlier and rewound (CARDS' retry cap).
        """
        if self.finished[row]:
            raise ValueError(f"row {row} is finished; rewind it before forcing tokens")
        tokens = list(tokens)
        room = self.max_new_tokens - (len(self.tokens[row]) - self.prompt_lens[row])
        if len(tokens) > room:
            raise ValueError(f"forcing {len(tokens)} tokens exceeds row {row}'s remaining {room}")
        if not tokens:
            return
        self.tokens[row].extend(tokens)
        self.logprobs[row].extend(logprobs if logprobs is not None else [float("nan")] * len(tokens))
        if self.track_entropy:
            self.entropies[row].extend([float("nan")] * len(tokens))
        self.pending[row] = True
        if tokens[-1] in self._stop_ids.tolist():
            self.finished[row], self.finish_reasons[row] = True, "eos"
        elif len(tokens) == room:
            self.finished[row], self.finish_reasons[row] = True, "length"

    @torch.no_grad()
    def copy_rows(self, dst: Sequence[int], src: Sequence[int]) -> None:
        """Make each row dst[i] a copy of row src[i] (tokens, KV cache, state), in place.

        The destination keeps its own random key and draw counter, so copies of one row go on to
        sample different continuations (CARDS' parallel proposals from the accepted prefix).
        """
        if not len(dst):
            return
        d = torch.as_tensor(list(dst), dtype=torch.long)
        s_ = torch.as_tensor(list(src), dtype=torch.long)
        dd, sd = d.to(self.device), s_.to(self.device)
        for layer in self.cache.layers:
            layer.keys[dd] = layer.keys[sd]
            layer.values[dd] = layer.values[sd]
        self.mask[dd] = self.mask[sd]
        self.next_logits[dd] = self.next_logits[sd]
        for name in self.ROW_TENSORS:
            if name not in ("keys", "draws"):  # the slot's own randomness stays
                getattr(self, name)[d] = getattr(self, name)[s_]
        for name in self.ROW_LISTS:
            values = getattr(self, name)
            for i, j in zip(d.tolist(), s_.tolist()):
                values[i] = copy.copy(values[j])

    @torch.no_grad()
    def rewind(self, rows: Sequence[int], response_lengths: Sequence[int]) -> None:
        """Cut each row's response back to the given length (tokens after it are forgotten).

        The row becomes unfinished and pending: its new last token is fed again by the next
        extend() (one recomputed token), which keeps next-token logits exact.
        """
        for r, length in zip(rows, response_lengths):
            current = len(self.tokens[r]) - self.prompt_lens[r]
            if not 0 <= length <= current:
                raise ValueError(f"cannot rewind row {r} with a {current}-token response to length {length}")
            total = self.prompt_lens[r] + length
            del self.tokens[r][total:]
            del self.logprobs[r][length:]
            del self.entropies[r][length:]
            self.finished[r] = False
            self.finish_reasons[r] = None
            if self.n_cached[r] > total - 1:
                valid = self.mask[r].bool()
                self.mask[r] = (valid & (valid.long().cumsum(0) <= total - 1)).long()
                self.n_cached[r] = total - 1
                self.pending[r] = True
        self._crop_empty_columns()

    # ------------------------------------------------------------------ cache housekeeping
    def _crop_empty_columns(self) -> None:
        used = self.mask.any(dim=0).nonzero()
        keep = int(used.max()) + 1 if used.numel() else 0
        drop = self.columns - keep
        if drop > 0 and keep > 0:
            for layer in self.cache.layers:
                layer.keys = layer.keys[:, :, :keep]
                layer.values = layer.values[:, :, :keep]
            self.mask = self.mask[:, :keep]

    def _maybe_compact(self) -> None:
        longest = int(self.mask.sum(dim=1).max()) if self.size else 0
        if self.columns - longest > max(32, longest):
            self.compact()

    @torch.no_grad()
    def compact(self) -> None:
        """Gather each row's valid cache columns into a left-padded layout with no holes."""
        valid = self.mask.bool()
        longest = int(valid.sum(dim=1).max())
        # Stable sort puts masked columns first and keeps the valid ones in their original order.
        order = torch.sort(valid.long(), dim=1, stable=True).indices[:, self.columns - longest:]
        for layer in self.cache.layers:
            gather = order[:, None, :, None].expand(-1, layer.keys.shape[1], -1, layer.keys.shape[3])
            layer.keys = layer.keys.gather(2, gather)
            layer.values = layer.values.gather(2, gather)
        self.mask = valid.gather(1, order).long()
