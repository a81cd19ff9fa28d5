"""Forks in place: a row becomes a copy of another row of its prompt (ctx.copy: the cache is shared,
nothing is prefilled again) and samples on with its own key and draw counter (its own child key of
the prompt's, so two copies of one parent continue differently, each as it would in any batch)."""

from __future__ import annotations


def assign_slots(children: list[int]) -> list[int]:
    """Parent of each slot, given the parent of each of len(children) children: a parent with children
    keeps its own slot (its first child is itself), the other children fill the childless slots in
    order. So no slot that is read is overwritten first."""
    parent = [None] * len(children)
    extra = []
    for p in children:
        if parent[p] is None:
            parent[p] = p
        else:
            extra.append(p)
    free = [i for i, p in enumerate(parent) if p is None]
    for i, p in zip(free, extra):
        parent[i] = p
    return parent


def fork(ctx, dst, src) -> None:
    """Make `dst` a copy of `src` (tokens, cache, score); dst keeps its own key."""
    ctx.copy(dst, src)
    dst.reward, dst.scored_partial = src.reward, src.scored_partial
