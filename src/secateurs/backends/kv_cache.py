"""The one module that touches transformers' DynamicCache internals.

A `KVCache` is a DynamicCache of shape [rows, heads, columns, head_dim] per layer plus a 0/1
`mask` [rows, columns] saying which columns hold a real token of that row. Rows may have different
lengths and may sit out steps (masked columns); positions are tracked by the backend, so the
column a token sits in does not matter to attention. Every reshaping here is a tensor operation
on all layers at once; nothing above this module sees layers, keys or values.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from transformers import DynamicCache

from ..errors import SecateursError


class KVCache:
    def __init__(self, device: torch.device, cache: DynamicCache | None = None, mask: torch.Tensor | None = None):
        self.device = device
        self.cache = cache if cache is not None else DynamicCache()
        self.mask = mask if mask is not None else torch.zeros(0, 0, dtype=torch.long, device=device)

    @property
    def rows(self) -> int:
        return self.mask.shape[0]

    @property
    def columns(self) -> int:
        return self.mask.shape[1]

    def nbytes(self) -> int:
        """Device bytes its keys and values take."""
        return sum(t.numel() * t.element_size() for layer in self.cache.layers for t in (layer.keys, layer.values)
                   if t is not None)

    def check_layout(self, model_name: str) -> None:
        kinds = {type(layer).__name__ for layer in self.cache.layers}
        if kinds - {"DynamicLayer"}:
            raise SecateursError(
                f"policy {model_name!r} uses cache layers {sorted(kinds)}; the transformers backend supports "
                "full-attention models (DynamicLayer) only"
            )

    def add_block(self, block_mask: torch.Tensor) -> None:
        """Columns for the tokens about to be fed (the model appends their keys / values)."""
        self.mask = torch.cat([self.mask, block_mask.to(self.device)], dim=1)

    # ------------------------------------------------------------------ reshaping
    def gather(self, index: torch.Tensor) -> "KVCache":
        """A new cache holding rows `index` (repeats allowed), columns unchanged."""
        dev_index = index.to(self.device)
        cache = copy.copy(self.cache)
        cache.layers = []
        for layer in self.cache.layers:
            new = copy.copy(layer)
            new.keys = layer.keys.index_select(0, dev_index)
            new.values = layer.values.index_select(0, dev_index)
            cache.layers.append(new)
        out = KVCache(self.device, cache, self.mask.index_select(0, dev_index))
        out.crop()
        return out

    def concat(self, other: "KVCache") -> None:
        """Append `other`'s rows; the narrower cache is left-padded with masked columns."""
        if other.rows == 0:
            return
        if self.rows == 0:
            self.cache, self.mask = other.cache, other.mask
            return
        width = max(self.columns, other.columns)
        pads = (width - self.columns, width - other.columns)
        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            mine.keys = torch.cat([_pad_left(mine.keys, pads[0]), _pad_left(theirs.keys, pads[1])])
            mine.values = torch.cat([_pad_left(mine.values, pads[0]), _pad_left(theirs.values, pads[1])])
        self.mask = torch.cat([torch.nn.functional.pad(self.mask, (pads[0], 0)),
                               torch.nn.functional.pad(other.mask, (pads[1], 0))])

    def append_columns(self, block_mask: torch.Tensor, rows: torch.Tensor, sub: "KVCache") -> None:
        """After a forward on `sub` (a gather of `rows` that appended block_mask's width of columns):
        append those columns here, taken from `sub` for `rows`, masked for every other row."""
        width = block_mask.shape[1]
        dev_rows = rows.to(self.device)
        for mine, theirs in zip(self.cache.layers, sub.cache.layers):
            for name in ("keys", "values"):
                old, new = getattr(mine, name), getattr(theirs, name)
                grown = torch.cat([old, old.new_zeros(old.shape[0], old.shape[1], width, old.shape[3])], dim=2)
                grown[dev_rows, :, old.shape[2]:] = new[:, :, new.shape[2] - width:]
                setattr(mine, name, grown)
        self.add_block(block_mask)

    def copy_rows(self, dst: Sequence[int], src: Sequence[int]) -> None:
        d = torch.as_tensor(list(dst), dtype=torch.long, device=self.device)
        s = torch.as_tensor(list(src), dtype=torch.long, device=self.device)
        for layer in self.cache.layers:
            layer.keys[d] = layer.keys[s]
            layer.values[d] = layer.values[s]
        self.mask[d] = self.mask[s]

    def truncate_row(self, row: int, n_valid: int) -> None:
        """Forget all but the first `n_valid` cached tokens of `row`."""
        valid = self.mask[row].bool()
        self.mask[row] = (valid & (valid.long().cumsum(0) <= n_valid)).long()

    # ------------------------------------------------------------------ housekeeping
    def crop(self) -> None:
        """Drop leading and trailing columns masked in every row. Rows that join a running batch are
        left-padded to its width, and the rows that held the leading columns leave it; without this
        the width would keep growing until a compaction."""
        used = self.mask.any(dim=0).nonzero()
        if not used.numel():
            return
        first, end = int(used.min()), int(used.max()) + 1
        if first > 0 or end < self.columns:
            for layer in self.cache.layers:
                layer.keys = layer.keys[:, :, first:end]
                layer.values = layer.values[:, :, first:end]
            self.mask = self.mask[:, first:end]

    def maybe_compact(self) -> None:
        longest = int(self.mask.sum(dim=1).max()) if self.rows else 0
        if self.columns - longest > max(32, longest):
            self.compact()

    def compact(self) -> None:
        """Gather each row's valid columns into a left-padded layout with no holes."""
        valid = self.mask.bool()
        longest = int(valid.sum(dim=1).max())
        # A stable sort puts masked columns first and keeps the valid ones in their order.
        order = torch.sort(valid.long(), dim=1, stable=True).indices[:, self.columns - longest:]
        for layer in self.cache.layers:
            index = order[:, None, :, None].expand(-1, layer.keys.shape[1], -1, layer.keys.shape[3])
            layer.keys = layer.keys.gather(2, index)
            layer.values = layer.values.gather(2, index)
        self.mask = valid.gather(1, order).long()


def _pad_left(t: torch.Tensor, n: int) -> torch.Tensor:
    return torch.nn.functional.pad(t, (0, 0, n, 0)) if n else t


def cache_from_layers(layers: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> DynamicCache:
    """A DynamicCache holding these (keys, values) per layer (none: an empty cache)."""
    return DynamicCache(list(layers)) if layers else DynamicCache()


def layers_of(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each layer's (keys, values) of `cache`: [rows, heads, columns, head_dim]."""
    return [(layer.keys, layer.values) for layer in cache.layers]
