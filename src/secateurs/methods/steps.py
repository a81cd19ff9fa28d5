"""What a "step" of a step-level search is (particle filtering, beam search): option `step`.

- 'entropy': a CARDS segment, cut before an uncertain token by cards.SegmentCutter with CARDS' defaults;
- an integer such as '16': that many tokens;
- 'stop:TEXT': up to and including the first TEXT the step writes (e.g. 'stop:\\n\\n', a blank line).

A step that meets EOS or max_new_tokens ends there too. `StepPlan` starts a prompt's rows and extends
them by one step; the rows stop, are scored (partial responses flagged) and return to the method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..backends.base import StepView
from ..errors import SecateursError
from .cards import CardsConfig, SegmentCutter

STEP_HELP = ("what one step is: 'entropy' (CARDS' segment cut), a token count such as '16', or 'stop:TEXT' "
             "(up to a stop string, e.g. 'stop:\\n\\n')")


def check_step(step) -> str:
    """The step option as given, or one line naming the bad value."""
    text = str(step) if isinstance(step, int) and not isinstance(step, bool) else step
    if isinstance(text, str) and (text == "entropy" or (text.startswith("stop:") and len(text) > 5)
                                  or (text.isdigit() and int(text) >= 1)):
        return text
    raise SecateursError(f"step must be 'entropy', a token count >= 1 or 'stop:TEXT', got {step!r}")


@dataclass(frozen=True)
class StopText:
    """Stop rule: end the step before the next token once the step's text contains `text`."""

    text: str
    decode: Callable[[list[int]], str]

    def __call__(self, view: StepView) -> torch.Tensor:
        return torch.tensor([s.length > s.tags["segment_start"]
                             and self.text in self.decode(s.tokens[s.tags["segment_start"]:]) for s in view.seqs],
                            dtype=torch.bool)


class StepPlan:
    """One prompt's steps: how rows start and how each is extended by one step."""

    def __init__(self, ctx, step: str):
        self.ctx = ctx
        self.tokens = int(step) if step.isdigit() else None
        if step == "entropy":
            self.rule = SegmentCutter(CardsConfig.entropy_threshold, CardsConfig.min_segment_tokens,
                                      CardsConfig.max_segment_tokens)
        elif self.tokens is None:
            self.rule = StopText(step[len("stop:"):].encode("latin-1", "backslashreplace").decode("unicode_escape"), ctx.decode)
        else:
            self.rule = None

    def start(self, indices, keep_finished: bool = False):
        seqs = self.ctx.sample(indices, until=self.tokens, stop_rule=self.rule, gang=True,
                               keep_finished=keep_finished)
        for s in seqs:
            s.tags["segment_start"] = 0
        return seqs

    def extend(self, seqs) -> None:
        for s in seqs:
            s.tags["segment_start"] = s.length
        for s in seqs:  # the fixed-count step is a target length, so rows of different lengths keep their own
            self.ctx.extend([s], until=s.length + self.tokens if self.tokens else None)
