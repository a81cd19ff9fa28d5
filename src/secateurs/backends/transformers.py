"""The transformers backend: batched decoding over one prunable, rewindable KV cache.

Rows. Every started sequence has a row of the decoding cache (backends/kv_cache.py); a released
sequence's row is dropped at the next refresh, and new sequences (copies of their prompt's cached
row) are appended there too, so one cache copy serves many admissions and retirements. Prompts
are prefilled once, together, into a separate prompt cache that their samples fork from.

Each row is *ready* (all tokens cached, `next_logits` valid) or *pending* (its last token not yet
fed: just sampled, forced, or exposed by a rewind); the next forward feeds it. Tokens are fed
lazily, so a sequence that stops costs no forward for its last token, as in `model.generate`, and
a stop rule can end a segment before a token while its logits stay valid (CARDS' entropy cut).
A row's next position id is its count of cached tokens, so RoPE positions always equal those of
the same tokens computed from scratch, wherever the columns sit.

Rows that sit out a step (stopped and waiting for their prompt's other proposals, rewound, or
released) do not ride along: when more than 1/16 of the rows would only carry a masked column, the
forward runs on the feeding rows alone (a gathered sub-cache, its new columns written back), so the
positions computed stay within ~1.06x of the tokens fed (meter: lm_positions_*).

Timing: a step is timed from its forward to the moment its sampled tokens reach the host (the one
device synchronisation of the step), so the decode loop never synchronises just to time.
"""

from __future__ import annotations

import inspect
import time
from collections import defaultdict
from typing import Sequence as Seq

import torch

from ..admission import kv_budget_bytes
from ..errors import SecateursError
from ..policy import Policy
from ..sampling import sample_tokens
from ..sequence import RELEASED, RUNNING, STOPPED, Sequence
from .base import BATCH_INVARIANT, CHOOSER, KV_PRUNE, REWIND, STOP_RULE, StepView, check_force
from .kv_cache import KVCache


class TransformersBackend:
    name = "transformers"
    capabilities = frozenset({STOP_RULE, CHOOSER, BATCH_INVARIANT, KV_PRUNE, REWIND})

    def __init__(self, policy: Policy, meter=None):
        self.policy = policy
        self.model = policy.model
        self.device = policy.device
        self.meter = meter
        self._stop_ids = frozenset(policy.stop_token_ids)
        # transformers 5.2x renamed forward's past_key_values to cache (the old name goes in 5.40);
        # pass whichever this model's forward takes, so no deprecation warning per step and no break later.
        params = inspect.signature(self.model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        # decoding rows
        self.kv = KVCache(self.device)
        self.rows: list[Sequence | None] = []  # None: released, dropped at the next refresh
        self.row_of: dict[Sequence, int] = {}
        self.n_cached = torch.zeros(0, dtype=torch.long)
        self.pending = torch.zeros(0, dtype=torch.bool)
        self.next_logits = torch.zeros(0, 0, device=self.device)
        self.incoming: list[Sequence] = []  # started, joining the cache at the next refresh
        # prompt rows
        self.prompt_kv = KVCache(self.device)
        self.prompt_rows: list = []  # request per row, None once released
        self.prompt_row_of: dict = {}
        self.prompt_logits = torch.zeros(0, 0, device=self.device)

    # ------------------------------------------------------------------ capacity
    def kv_bytes_per_token(self) -> int:
        return self.policy.kv_bytes_per_token()

    def kv_capacity_tokens(self) -> int | None:
        """KV tokens a Speculative Rejection batch may fill on a GPU (admission.kv_budget_bytes: measured as
        the authors do, the decoding rows' cache counted as free, since those rows are earlier prompts' or
        shares of the memory); None on a CPU, where host memory would never bring a decision point."""
        budget = kv_budget_bytes(self.device, droppable=self.kv.nbytes())
        return None if budget is None else budget // self.kv_bytes_per_token()

    def decode(self, token_ids: Seq[int]) -> str:
        return self.policy.decode(token_ids)

    # ------------------------------------------------------------------ the model call
    def _forward(self, kv: KVCache, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=ids.to(self.device), attention_mask=kv.mask, position_ids=positions.to(self.device),
                         use_cache=True, logits_to_keep=1, **{self._cache_kwarg: kv.cache})
        return out.logits[:, -1].float()

    @torch.no_grad()
    def prefill(self, requests: Seq) -> None:
        """Run the prompts through the LM once (left-padded, one forward) into the prompt cache."""
        if not requests:
            return
        self._prune_prompts()
        prompts = [r.prompt_ids for r in requests]
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.policy.pad_token_id, dtype=torch.long)
        mask = torch.zeros(len(prompts), width, dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p):] = 1
        kv = KVCache(self.device, mask=mask.to(self.device))
        start = time.perf_counter()
        logits = self._forward(kv, ids, (mask.cumsum(-1) - 1).clamp(min=0))
        kv.check_layout(self.policy.name)
        if self.meter is not None:
            self.meter.lm_forward({r: len(r.prompt_ids) for r in requests}, time.perf_counter() - start, prefill=True,
                                  positions={r: width for r in requests})
        self.prompt_kv.concat(kv)
        self.prompt_logits = torch.cat([self.prompt_logits.reshape(-1, logits.shape[1]), logits])
        for r in requests:
            self.prompt_row_of[r] = len(self.prompt_rows)
            self.prompt_rows.append(r)

    def release_prompt(self, request) -> None:
        row = self.prompt_row_of.pop(request, None)
        if row is not None:
            self.prompt_rows[row] = None

    def _prune_prompts(self) -> None:
        live = [i for i, r in enumerate(self.prompt_rows) if r is not None]
        if len(live) == len(self.prompt_rows) or (len(live) and len(live) * 2 > len(self.prompt_rows)):
            return
        index = torch.tensor(live, dtype=torch.long)
        self.prompt_kv = self.prompt_kv.gather(index) if live else KVCache(self.device)
        self.prompt_logits = self.prompt_logits[index.to(self.device)]
        self.prompt_rows = [self.prompt_rows[i] for i in live]
        self.prompt_row_of = {r: i for i, r in enumerate(self.prompt_rows)}

    # ------------------------------------------------------------------ rows
    def start(self, seqs: Seq[Sequence]) -> None:
        """New sequences: each takes a copy of its prompt's cached row at the next refresh."""
        for s in seqs:
            if s.request not in self.prompt_row_of:
                raise SecateursError(f"prompt {s.request.prompt.id!r} is not prefilled")
            s.status = RUNNING
        self.incoming.extend(seqs)

    def _refresh(self, force: bool = False) -> None:
        """Drop released rows and append the incoming ones, in one cache copy."""
        dead = sum(1 for s in self.rows if s is None)
        if not self.incoming and (dead == 0 or (dead < max(1, len(self.rows) // 8) and not force)):
            return
        if dead:
            live = [i for i, s in enumerate(self.rows) if s is not None]
            index = torch.tensor(live, dtype=torch.long)
            self.kv = self.kv.gather(index) if live else KVCache(self.device)
            self.rows = [self.rows[i] for i in live]
            self.n_cached, self.pending = self.n_cached[index], self.pending[index]
            self.next_logits = self.next_logits[index.to(self.device)] if live else self.next_logits[:0]
        if self.incoming:
            index = torch.tensor([self.prompt_row_of[s.request] for s in self.incoming], dtype=torch.long)
            self.kv.concat(self.prompt_kv.gather(index))
            new_logits = self.prompt_logits[index.to(self.device)]
            self.next_logits = torch.cat([self.next_logits.reshape(-1, new_logits.shape[1]), new_logits])
            self.n_cached = torch.cat([self.n_cached, torch.tensor([len(s.prompt_ids) for s in self.incoming])])
            self.pending = torch.cat([self.pending, torch.zeros(len(self.incoming), dtype=torch.bool)])
            self.rows += self.incoming
            self.incoming = []
        self.row_of = {s: i for i, s in enumerate(self.rows) if s is not None}

    def _row(self, seq: Sequence) -> int:
        if seq not in self.row_of:
            if seq in self.incoming:
                self._refresh(force=True)
            else:
                raise SecateursError(f"{seq} has no KV cache (released)")
        return self.row_of[seq]

    def release(self, seqs: Seq[Sequence]) -> None:
        for s in seqs:
            row = self.row_of.pop(s, None)
            if row is not None:
                self.rows[row] = None
            elif s in self.incoming:
                self.incoming.remove(s)
            s.status = RELEASED

    @property
    def live_rows(self) -> int:
        return len(self.row_of) + len(self.incoming)

    # ------------------------------------------------------------------ decoding
    def _feed(self, feed: torch.Tensor) -> None:
        """Feed the un-cached tokens of the rows in the bool mask `feed` (one each when decoding, more after
        force()); other rows sit out this forward with a masked column."""
        totals = torch.tensor([len(s.prompt_ids) + len(s.tokens) if s is not None else int(c)
                               for s, c in zip(self.rows, self.n_cached)], dtype=torch.long)
        lag = torch.where(feed, totals - self.n_cached, 0)
        width = int(lag.max())
        many = feed & (lag > 1)
        if width > 1 and bool((feed & ~many).any()):
            # Forced or rewound rows feed several tokens: alone, so one-token rows do not pad to their width.
            self._feed(many)
            self._feed(feed & ~many)
            return
        pad = self.policy.pad_token_id
        if width == 1:  # the hot path: one token per feeding row
            last = [(s.tokens[-1] if s.tokens else s.prompt_ids[-1]) if f else pad
                    for s, f in zip(self.rows, feed.tolist())]
            ids = torch.tensor(last, dtype=torch.long)[:, None]
            block = feed.long()[:, None]
        else:  # ragged: each row's tokens right-aligned in the block, masked pads before them
            ids = torch.full((len(self.rows), width), pad, dtype=torch.long)
            block = torch.zeros(len(self.rows), width, dtype=torch.long)
            for r in feed.nonzero().flatten().tolist():
                n = int(lag[r])
                s = self.rows[r]
                ids[r, width - n:] = torch.tensor((s.prompt_ids + s.tokens)[-n:], dtype=torch.long)
                block[r, width - n:] = 1
        positions = self.n_cached[:, None] + (block.cumsum(1) - 1).clamp(min=0)
        fed = feed.nonzero().flatten()
        if len(self.rows) - len(fed) > len(self.rows) // 16 and self.kv.cache.layers:
            # Rows that sit out would cost a masked column each: run the feeding rows alone.
            sub = self.kv.gather(fed)
            sub.add_block(block[fed])
            logits = self._forward(sub, ids[fed], positions[fed])
            self.kv.append_columns(block, fed, sub)
            self.next_logits[fed.to(self.device)] = logits
            computed = fed.tolist()
        else:
            self.kv.add_block(block)
            logits = self._forward(self.kv, ids, positions)
            self.next_logits = torch.where(feed.to(self.device)[:, None], logits, self.next_logits)
            computed = range(len(self.rows))
        self.n_cached += lag
        self.pending &= ~feed
        if self.meter is not None:
            per_request = self._step_tokens if self._step_tokens is not None else defaultdict(int)
            for s, n in zip(self.rows, lag.tolist()):
                if n:
                    per_request[s.request] += n
            self._step_tokens = per_request
            if self._step_positions is None:
                self._step_positions = defaultdict(int)
            per_position, dead = self._step_positions, 0
            for r in computed:
                if self.rows[r] is None:
                    dead += width
                else:
                    per_position[self.rows[r].request] += width
            if dead:  # a released row's columns belong to no request: the fed requests share them
                fed_now = {q: 0 for q in per_request}
                for s, n in zip(self.rows, lag.tolist()):
                    if n:
                        fed_now[s.request] += n
                total = sum(fed_now.values())
                shares = {q: dead * n // total for q, n in fed_now.items() if n}
                shares[max(fed_now, key=fed_now.get)] += dead - sum(shares.values())
                for q, n in shares.items():
                    per_position[q] += n

    @torch.no_grad()
    def step(self, seqs: Seq[Sequence], score=None) -> list[Sequence]:
        """Draw one token for each sequence in `seqs` (all running) and return those that stopped.

        Before a token, a sequence's stop rule may end its segment (it stops, keeps its logits);
        after it, EOS or max_new_tokens finish it, and reaching `until` stops it.
        """
        self._refresh()
        self.kv.maybe_compact()
        start = time.perf_counter()
        self._step_tokens = self._step_positions = None
        rows = [self._row(s) for s in seqs]
        index = torch.tensor(rows, dtype=torch.long)
        feed = torch.zeros(len(self.rows), dtype=torch.bool)
        feed[index] = self.pending[index]
        alive = torch.tensor([s is not None for s in self.rows], dtype=torch.bool)
        feed |= self.pending & (self.n_cached == 0) & alive  # a row with nothing cached cannot sit out a step
        if feed.any():
            self._feed(feed)
        logits = self.next_logits[index.to(self.device)]
        stopped: list[Sequence] = []

        active = list(range(len(seqs)))
        for rule, members in _groups(seqs, active, "stop_rule").items():
            stop = torch.as_tensor(rule(StepView([seqs[i] for i in members], logits[members])), dtype=torch.bool)
            for i, flag in zip(members, stop.tolist()):
                if flag:
                    stopped.append(seqs[i])
        if stopped:
            ended = {id(s) for s in stopped}
            active = [i for i in active if id(seqs[i]) not in ended]
        if active:
            self._draw(seqs, active, logits, score)
        if self._step_tokens is not None and self.meter is not None:
            self.meter.lm_forward(self._step_tokens, time.perf_counter() - start, prefill=False,
                                  positions=self._step_positions)
        for s in stopped:
            s.status = STOPPED
        for i in active:
            s = seqs[i]
            if s.tokens[-1] in self._stop_ids or s.length >= s.max_new_tokens:
                s.finish_reason = "eos" if s.tokens[-1] in self._stop_ids else "length"
            if s.finished or (s.until is not None and s.length >= s.until):
                s.status = STOPPED
                stopped.append(s)
        return stopped

    def _draw(self, seqs, active, logits, score) -> None:
        new = torch.empty(len(seqs), dtype=torch.long, device=logits.device)
        for chooser, members in _groups(seqs, active, "chooser").items():
            view = StepView([seqs[i] for i in members], logits[members], score, self.decode)
            new[members] = torch.as_tensor(chooser(view), dtype=torch.long, device=logits.device)
        by_params: dict = defaultdict(list)
        for i in active:
            if seqs[i].chooser is None:
                by_params[seqs[i].params].append(i)
        for params, members in by_params.items():
            keys = torch.tensor([seqs[i].key for i in members], dtype=torch.long)
            draws = torch.tensor([seqs[i].draws for i in members], dtype=torch.long)
            new[members] = sample_tokens(logits[members], params, keys, draws)
        picked = torch.tensor(active, device=logits.device)
        chosen, lg = new[picked], logits[picked]
        logprob = lg.gather(-1, chosen[:, None]).squeeze(-1) - torch.logsumexp(lg, dim=-1)
        host = torch.stack([chosen.double(), logprob.double()]).cpu()  # the step's one synchronisation
        generated: dict = defaultdict(int)
        for i, token, lp in zip(active, host[0].long().tolist(), host[1].tolist()):
            s = seqs[i]
            s.tokens.append(token)
            s.logprobs.append(lp)
            s.draws += 1
            self.pending[self.row_of[s]] = True
            generated[s.request] += 1
        if self.meter is not None:
            self.meter.generated(generated)

    # ------------------------------------------------------------------ editing sequences
    @torch.no_grad()
    def truncate(self, seq: Sequence, length: int) -> None:
        """Cut the response back to `length` tokens; the new last token is recomputed by the next forward
        (one token), which keeps next-token logits exact."""
        if not 0 <= length <= seq.length:
            raise ValueError(f"cannot rewind {seq} to length {length}")
        row = self._row(seq)
        del seq.tokens[length:]
        del seq.logprobs[length:]
        seq.finish_reason = None
        total = len(seq.prompt_ids) + length
        if self.n_cached[row] > total - 1:
            self.kv.truncate_row(row, total - 1)
            self.n_cached[row] = total - 1
            self.pending[row] = True
            self.kv.crop()

    def force(self, seq: Sequence, tokens: Seq[int], logprobs: Seq[float] | None = None) -> None:
        """Append given tokens (no sampling); the next forward feeds them."""
        tokens = check_force(seq, tokens)
        if not tokens:
            return
        row = self._row(seq)
        seq.tokens.extend(tokens)
        seq.logprobs.extend(logprobs if logprobs is not None else [float("nan")] * len(tokens))
        self.pending[row] = True
        if tokens[-1] in self._stop_ids:
            seq.finish_reason = "eos"
        elif seq.length >= seq.max_new_tokens:
            seq.finish_reason = "length"

    @torch.no_grad()
    def copy(self, dst: Sequence, src: Sequence) -> None:
        """dst takes src's tokens and cache; it keeps its own random key and draw counter, so copies of one
        prefix go on to sample different continuations (CARDS' parallel proposals)."""
        if dst is src:
            return
        self._row(dst), self._row(src)
        d, s = self.row_of[dst], self.row_of[src]  # a refresh inside _row may have moved rows
        self.kv.copy_rows([d], [s])
        self.next_logits[d] = self.next_logits[s]
        self.n_cached[d], self.pending[d] = self.n_cached[s], self.pending[s]
        dst.tokens, dst.logprobs, dst.finish_reason = list(src.tokens), list(src.logprobs), src.finish_reason


def _groups(seqs, members, attribute: str) -> dict:
    """Indices of `members` grouped by the sequence's stop rule / chooser (None left out)."""
    out: dict = defaultdict(list)
    for i in members:
        value = getattr(seqs[i], attribute)
        if value is not None:
            out[value].append(i)
    return out
