"""Tree search: Speculative Rejection with refill (TreeBoN-style, Qiu et al. 2024).

Decoding and decisions are Speculative Rejection's (speculative_rejection.py: the same B0, budget,
decision schedule and keep_count). At each of the first `depth` decisions the rows of rejected
candidates are not left empty: each becomes a fork (forks.py: a copy of a survivor's tokens and
cache, no re-prefill, sampling on with the row's own key), the best-scored survivor first, round
after round, until every unfinished survivor has `branching` rows (itself included) or no rejected
row is left. So the device stays full after rejections and the search spends them on the most
promising prefixes. The schedule is SR's for its survivors, so branching 1 (or depth 0) is
Speculative Rejection, token for token.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SecateursError
from .base import integer, option, register
from .forks import fork
from .speculative_rejection import SpeculativeRejection, SpeculativeRejectionConfig, keep_count


@dataclass
class TreeSearchConfig(SpeculativeRejectionConfig):
    branching: int = option(2, "tree search: rows per unfinished survivor after a decision (itself and its forks "
                               "into rejected rows); 1 is Speculative Rejection")
    depth: int | None = option(None, "tree search: how many decisions refill (default: all)")

    def validate(self) -> None:
        super().validate()
        if not integer(self.branching) or self.branching < 1:
            raise SecateursError(f"branching must be an integer >= 1, got {self.branching!r}")
        if self.depth is not None and not (integer(self.depth) and self.depth >= 0):
            raise SecateursError(f"depth must be an integer >= 0, got {self.depth!r}")


@register("tree-search", TreeSearchConfig,
          "Speculative Rejection whose rejected rows become forks of the survivors (TreeBoN-style)")
class TreeSearch(SpeculativeRejection):
    def start(self) -> None:
        self.forks: list[int] = []
        super().start()

    def on_idle(self, stopped) -> None:
        # Speculative Rejection's decision (its step 4), then the refill.
        self.finished += sorted((s for s in stopped if s.finished), key=lambda s: s.sample)
        live = [s for s in self.live if not s.finished]
        if live:
            self.length = live[0].length
            pool = sorted(self.finished + live, key=lambda s: -s.reward)  # stable: on a tie finished first, as SR
            kept = pool[:keep_count(len(pool), self.config.alpha)]
            kept_ids = {id(s) for s in kept}
            rejected = [s for s in live if id(s) not in kept_ids]
            self.finished = [s for s in kept if s.finished]
            self.ever_kept.update((s.sample, s) for s in self.finished)
            survivors = [s for s in live if id(s) in kept_ids]
            self.decision_points.append(self.length)
            self.survivors.append(len(kept))
            until = self._next_decision(len(survivors))  # SR's schedule: forks ride along
            forks = self._refill([s for s in kept if not s.finished], rejected)
            self.forks.append(len(forks))
            self.ctx.release([s for s in rejected if s not in forks])
            live = survivors + forks
        self.live = live
        if live:
            self.ctx.extend(live, until=until)
        else:
            self.ctx.finish(self._answer())

    def _refill(self, ranked, rows) -> list:
        """Rejected rows turned into forks of the survivors, best survivor first, round by round."""
        depth = self.config.depth
        if depth is not None and len(self.decision_points) > depth:
            return []
        rows, used = list(rows), []
        for _ in range(self.config.branching - 1):
            for parent in ranked:
                if not rows:
                    return used
                row = rows.pop(0)
                fork(self.ctx, row, parent)
                used.append(row)
        return used

    def _answer(self):
        outcome = super()._answer()
        outcome.details.update(branching=self.config.branching, depth=self.config.depth, forks_per_round=self.forks)
        return outcome
