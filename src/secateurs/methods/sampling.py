"""Plain sampling: one response per prompt from the policy, scored by the RM (the unaligned baseline).

With the same seed it draws exactly the response Best-of-N draws as its sample 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import DecodingConfig, MethodPolicy, register


@dataclass
class SamplingConfig(DecodingConfig):
    pass


@register("sampling", SamplingConfig, "one sample per prompt, no alignment (the baseline)")
class PlainSampling(MethodPolicy):
    streams_tokens = True  # its one sample is the answer: a server may stream it token by token

    def start(self) -> None:
        self.ctx.sample([0])

    def on_idle(self, stopped) -> None:
        self.ctx.finish(self.outcome(stopped[0]))
