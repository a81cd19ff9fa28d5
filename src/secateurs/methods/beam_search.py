"""Beam search over steps (as in Hugging Face's search-and-learn).

n rows start as Best-of-N's samples 0..n-1 and advance one step at a time (option `step`, see
steps.py). After each step the unfinished rows are ranked by their partial score; the top
n // beam_width are the beams, and each beam is expanded into beam_width rows: itself and
beam_width - 1 forks (forks.py: copies sharing its cache, no re-prefill, sampling their next step
with their own keys) in the rows of the beams that fell off. Rows that finish are set aside as
completed; when no row is unfinished, the answer is the best-scored completed response.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..backends.base import BATCH_INVARIANT, KV_PRUNE, STOP_RULE
from ..errors import SecateursError
from .base import DecodingConfig, MethodPolicy, integer, option, register
from .forks import fork
from .steps import STEP_HELP, StepPlan, check_step


@dataclass
class BeamSearchConfig(DecodingConfig):
    n: int = option(16, "; rows per prompt, beams x beam_width (beam search)")
    beam_width: int = option(4, "beam search: rows each kept beam expands into at every step (M)")
    step: str = option("entropy", "particle filtering / beam search: " + STEP_HELP)

    def validate(self) -> None:
        super().validate()
        for name in ("n", "beam_width"):
            value = getattr(self, name)
            if not integer(value) or value < 1:
                raise SecateursError(f"{name} must be an integer >= 1, got {value!r}")
        if self.beam_width > self.n:
            raise SecateursError(f"beam_width ({self.beam_width}) must be at most n ({self.n})")
        self.step = check_step(self.step)
        if integer(self.max_batch_rows) and self.n > self.max_batch_rows:
            raise SecateursError(f"n={self.n} rows decode together but max_batch_rows is {self.max_batch_rows}: "
                                 "lower --n or raise --max-batch-rows")

    def rows_per_prompt(self) -> int:
        return self.n


@register("beam-search", BeamSearchConfig,
          "keep the best partial responses step by step, each expanded by beam_width samples (search-and-learn)")
class BeamSearch(MethodPolicy):
    needs = frozenset({BATCH_INVARIANT, KV_PRUNE, STOP_RULE})

    def start(self) -> None:
        self.plan = StepPlan(self.ctx, self.config.step)
        self.rows = self.plan.start(range(self.config.n))
        self.completed = []
        self.beams_per_step: list[int] = []

    def on_idle(self, stopped) -> None:
        self.completed += sorted((s for s in stopped if s.finished), key=lambda s: s.sample)
        live = sorted((s for s in self.rows if not s.finished), key=lambda s: -s.reward)  # stable: ties by row
        if not live:
            best = max(self.completed, key=lambda s: (s.reward, -s.sample))
            self.ctx.finish(self.outcome(best, best_index=best.sample, steps=len(self.beams_per_step) + 1,
                                         beams_per_step=self.beams_per_step,
                                         completed_rewards=[s.reward for s in self.completed]))
            return
        keep = max(1, self.config.n // self.config.beam_width)
        beams, spare = live[:keep], live[keep:]
        rows = list(beams)
        for _ in range(self.config.beam_width - 1):
            for beam in beams:
                if spare:
                    row = spare.pop(0)
                    fork(self.ctx, row, beam)
                    rows.append(row)
        self.ctx.release(spare)
        self.beams_per_step.append(len(beams))
        self.rows = rows
        self.plan.extend(rows)
