"""The answer's text as it is committed: deltas that never split a character, cut at stop strings.

A streamed answer is the concatenation of its deltas and equals the non-streamed answer. Each
update decodes the whole committed prefix and sends what is new, holding back an incomplete UTF-8
character (decoded as U+FFFD; the final text drops one that max_tokens cut) and a tail that may be the start of a stop string. A stop string cuts
the answer before it (OpenAI's `stop`); decoding is not cut short by it: the method runs as it
would without `stop` (so the reward and cost are the method's) and the answer sent is cut.
"""

from __future__ import annotations

from typing import Callable, Sequence

REPLACEMENT = "\ufffd"


class AnswerText:
    def __init__(self, decode: Callable[[Sequence[int]], str], stops: Sequence[str] = ()):
        self.decode = decode
        self.stops = tuple(stops)
        self.sent = ""
        self.stopped_at: int | None = None  # answer tokens up to the one that completed a stop string

    @property
    def stopped(self) -> bool:
        return self.stopped_at is not None

    def _cut(self, text: str) -> int | None:
        hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        return min(hits) if hits else None

    def update(self, ids: Sequence[int], final: bool = False, text: str | None = None) -> str:
        """The new part of the answer once it starts with `ids` (final: `ids` is all of it, and `text`,
        if given, its decoded text)."""
        if self.stopped:
            return ""
        text = self.decode(ids) if text is None else text
        cut = self._cut(text)
        if cut is not None:
            text = text[:cut]
            self.stopped_at = self._tokens_to_stop(ids)
        else:
            # A character whose bytes have not all arrived; in the final text, one that max_tokens cut (its
            # bytes never will): dropped alike for every method, streamed or not.
            text = text.rstrip(REPLACEMENT)
            if not final:
                text = text[:len(text) - self._possible_stop_start(text)]
        if not text.startswith(self.sent):
            # Decoding more tokens changed text already sent (a tokenizer's clean-up across tokens):
            # what was sent stays; send what follows the common part.
            common = 0
            while common < min(len(text), len(self.sent)) and text[common] == self.sent[common]:
                common += 1
            delta = text[common:] if len(text) > len(self.sent) else ""
            self.sent += delta
            return delta
        delta = text[len(self.sent):]
        self.sent = text
        return delta

    def _possible_stop_start(self, text: str) -> int:
        """Length of the longest tail of text that a stop string starts with."""
        longest = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(text)), longest, -1):
                if text.endswith(s[:k]):
                    longest = k
                    break
        return longest

    def _tokens_to_stop(self, ids: Sequence[int]) -> int:
        """The fewest answer tokens whose text contains a stop string (binary search: containment grows
        with the prefix)."""
        lo, hi = 1, len(ids)
        while lo < hi:
            mid = (lo + hi) // 2
            if self._cut(self.decode(ids[:mid])) is not None:
                hi = mid
            else:
                lo = mid + 1
        return lo
