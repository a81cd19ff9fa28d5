"""Memory admission: refuse, before generating, a setting whose largest batch cannot fit.

The largest batch holds `rows` decoding rows (max_batch_rows, or fewer if the prompts can never
fill them), each with a KV cache of (longest prompt + max_new_tokens) tokens, plus the per-step
logits buffers (rows x vocab x 4 bytes, about three of them alive at once). The weights are
already loaded, so they count as used, not as needed. What is available: on a GPU, its free
memory plus what torch's allocator holds unused; on a CPU, MemAvailable from /proc/meminfo (no
check where that cannot be read). That estimate is a lower bound of what the run takes, so a
setting it refuses can never fit; cache copies and the allocator's fragmentation come on top
(HEADROOM), so the `--max-batch-rows` it suggests leaves room for them, and a setting that fits only
without that room runs with a warning.

Samples beyond the rows (Best-of-N's n > max_batch_rows, the r_star calibration samples, rejection
sampling's rejected candidates) wait without rows and cost nothing until they start (scheduler.Pending),
but each one that ran keeps its tokens, log-probs and text in host memory until its method decides:
`check_samples` refuses a setting whose samples cannot all be kept (SAMPLE_BYTES each), so a huge n
fails at once with the largest that fits instead of growing memory for hours.

A model RM on the policy's device (hf:) needs room too, before any policy row: its weights are loaded
(counted as used), but its activations at its batch size and, for a decoder RM, the keys and values
of what it keeps to reuse (rewards/prefix_cache.py, at most its `prefix_cache_tokens`) and of the
batch it is reading are not; `reward_bytes` estimates them and the check adds them.
"""

from __future__ import annotations

import dataclasses
import gc
import logging

import torch

from .errors import SecateursError
from .methods.base import DecodingConfig, integer
from .policy import Policy

LOGITS_BUFFERS = 3  # logits, their float copy / scaled scores, and the sampling noise
# What a run really takes over the estimate: the KV cache grows by concatenation and is copied when rows
# change, and the allocator's free blocks fragment. Measured on an H100 with 78.5 GiB free (a random
# 8-layer bf16 Llama, Best-of-N of one prompt, 48 new tokens, ~2 MiB per row estimated): the estimate
# alone admits 40,100 rows; 26,000 ran (57 GiB allocated at peak, 1.12x the estimate), 29,000 and more
# ran out of memory. Suggestions leave this much room (25,104 rows here: ran, 55 GiB); a setting between
# the two gets a warning.
HEADROOM = 1.6

# Host memory one finished sample keeps until its method decides, measured with tracemalloc (CPython 3.12,
# 128 tokens: 10.5 KB): its handle (~0.5 KB; 1 KB with its share of the result's per-candidate lists) and,
# per token, the token id and log-prob as Python objects in lists (~76 bytes) and its decoded text (~5).
SAMPLE_BYTES = 1024
SAMPLE_BYTES_PER_TOKEN = 80

log = logging.getLogger(__name__)


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 / 10 else f"{n / 2**20:.1f} MiB"


def available_bytes(device: torch.device) -> int | None:
    """Bytes this process can still allocate on `device`, or None if unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type == "cpu":
        try:
            with open("/proc/meminfo", encoding="ascii") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            return None
    return None


def weight_bytes(policy: Policy) -> int:
    model = policy.model
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def vocab_size(policy: Policy) -> int:
    out = policy.model.get_output_embeddings() if hasattr(policy.model, "get_output_embeddings") else None
    weight = getattr(out, "weight", None)
    if weight is not None:
        return int(weight.shape[0])
    return int(getattr(policy.model.config, "vocab_size", 0) or len(policy.tokenizer))


def _kv_bytes_per_token(model) -> int:
    cfg = model.config.get_text_config()
    heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return 2 * cfg.num_hidden_layers * heads * head_dim * (torch.finfo(model.dtype).bits // 8)


def reward_bytes(reward, device: torch.device, text_tokens: int, rows: int = 1) -> int:
    """Bytes a model RM on `device` takes beyond its weights while scoring texts of up to `text_tokens`
    tokens for `rows` rows in flight: one batch's activations (a layer's widest, MLP included) and,
    for a decoder RM, the keys and values of that batch and of what its prefix cache keeps of the rows'
    texts (at most its budget). 0 for a reward off the device or without a model; the terms of a
    weighted sum add up."""
    if hasattr(reward, "terms"):
        return sum(reward_bytes(r, device, text_tokens, rows) for _, r in reward.terms)
    model = getattr(reward, "model", None)
    if model is None or getattr(reward, "device", None) is None or torch.device(reward.device) != device:
        return 0
    cfg = model.config.get_text_config()
    width = max(cfg.hidden_size * 4, getattr(cfg, "intermediate_size", 0) * 2)
    dtype_bytes = torch.finfo(model.dtype).bits // 8
    tokens = getattr(reward, "batch_size", 16) * min(text_tokens, getattr(reward, "max_length", text_tokens))
    needed = tokens * width * dtype_bytes
    cache = getattr(reward, "prefix_cache", None)
    if cache is not None:
        kept = min(cache.max_blocks * cache.block, rows * text_tokens)
        needed += (tokens + kept) * _kv_bytes_per_token(model)
    return int(needed)


# max_batch_rows 'auto': on a CPU (and wherever free memory cannot be read) today's default; on a GPU the rows
# memory admission lets fit at full length, at most MAX_AUTO_ROWS (past a few hundred rows a decode step is
# compute-bound: more rows add latency, not throughput, and each holds its logits). Speculative Rejection with
# its B0 from memory takes the authors' cap on B0 (its KV cache is bounded by the budget, not by the rows).
CPU_AUTO_ROWS = 64
MAX_AUTO_ROWS = 1024
SERVE_PROMPT_TOKENS = 512  # the prompt length a server sizes 'auto' rows for (its prompts come later)


def resolve_rows(config: DecodingConfig, policy: Policy, prompt_lengths: list[int], reward=None, backend=None,
                 available: int | None = None, device: torch.device | None = None) -> DecodingConfig:
    """`config` with max_batch_rows 'auto' made a number (see above); any other config as it is.
    `available` and `device` override what the policy's device reports (for tests)."""
    if config.max_batch_rows != "auto":
        return config
    device = torch.device(device) if device is not None else policy.device
    longest = max(prompt_lengths or [1])
    tokens = longest + config.max_new_tokens
    rows = CPU_AUTO_ROWS
    if device.type == "cuda":
        from .methods.speculative_rejection import MAX_B0

        if getattr(config, "memory_bounded", lambda: False)():
            rows = MAX_B0
        elif backend is not None and backend.name != "transformers":  # a paged engine: its own KV capacity
            capacity = backend.kv_capacity_tokens()
            rows = max(1, capacity // tokens) if capacity else CPU_AUTO_ROWS
        else:
            if available is None:
                gc.collect()
                torch.cuda.empty_cache()
                available = available_bytes(device)
            if available is not None:
                per_row = tokens * policy.kv_bytes_per_token() + vocab_size(policy) * 4 * LOGITS_BUFFERS
                rm = reward_bytes(reward, device, tokens, MAX_AUTO_ROWS) if reward is not None else 0
                rows = int((available - rm * HEADROOM) // (per_row * HEADROOM))
        rows = max(1, min(rows, MAX_AUTO_ROWS))
    resolved = dataclasses.replace(config, max_batch_rows=rows)  # validates: n or proposals above the rows fail
    log.info("max_batch_rows auto: %d rows on %s", rows, device)
    return resolved


def rows_at_most(config: DecodingConfig, n_prompts: int) -> int:
    """Rows the run can ever decode at once: max_batch_rows, or fewer when the prompts cannot fill them
    (each prompt holds at most its method's rows at once, or its r_star calibration samples)."""
    per_prompt = config.rows_per_prompt()
    if getattr(config, "r_star", None) == "auto":
        per_prompt = max(per_prompt, getattr(config, "r_star_samples", 0))
    return max(1, min(config.max_batch_rows, n_prompts * per_prompt))


def samples_held(config: DecodingConfig) -> tuple[int, str]:
    """The most samples one prompt keeps at once, and the option that sets it."""
    from .methods.rejection_sampling import RejectionSamplingConfig

    held = [(config.rows_per_prompt(), "max_batch_rows")]
    if integer(getattr(config, "n", None)):
        held.append((config.n, "n"))
    if getattr(config, "needs_calibration", lambda: False)() or getattr(config, "r_star", None) == "dataset":
        held.append((config.r_star_samples, "r_star_samples"))  # dataset: its calibration run keeps them too
    if isinstance(config, RejectionSamplingConfig):  # it keeps every rejected candidate
        held.append((config.max_retries, "max_retries"))
    return max(held)


def check_samples(config: DecodingConfig, n_prompts: int, available: int | None = None) -> None:
    """Raise a one-line SecateursError if the samples the prompts in flight keep cannot fit in host memory.
    `available` (bytes) overrides what /proc/meminfo reports (for tests)."""
    count, option_name = samples_held(config)
    per_sample = SAMPLE_BYTES + SAMPLE_BYTES_PER_TOKEN * config.max_new_tokens
    # Prompts keeping samples at once: those whose rows fit together, and one more starting as the last ends.
    prompts = min(max(1, n_prompts), config.max_batch_rows // max(1, min(count, config.rows_per_prompt())) + 1)
    needed = count * per_sample * prompts
    if needed <= 2**30:  # always fine: no need to read the memory
        return
    if available is None:
        available = available_bytes(torch.device("cpu"))
    if available is None or needed * HEADROOM <= available:
        return
    fits = int(available // (per_sample * prompts * HEADROOM))
    value = getattr(config, option_name)
    raise SecateursError(f"{option_name}={value} samples per prompt x {prompts} prompt(s) at once, each keeping up "
                         f"to {config.max_new_tokens} new tokens until its method decides, need "
                         f"{_gib(min(needed, 2**900))} of host memory, but {_gib(available)} is available: "
                         f"{option_name} at most {max(fits, 0)} would fit (or lower max_new_tokens)")


def check_memory(policy: Policy, config: DecodingConfig, prompt_lengths: list[int],
                 available: int | None = None, reward=None) -> None:
    """Raise a one-line SecateursError if the largest batch of this run, with the reward model's
    working memory if it shares the policy's device, cannot fit in memory.
    `available` (bytes) overrides what the policy's device reports (for tests)."""
    if not prompt_lengths:
        return
    measured = available is None
    if measured:
        available = available_bytes(policy.device)
    if available is None:
        return
    longest = max(prompt_lengths)
    tokens = longest + config.max_new_tokens
    kv_per_row = tokens * policy.kv_bytes_per_token()
    if policy.device.type == "cuda" and getattr(config, "memory_bounded", lambda: False)():
        kv_per_row = 0  # Speculative Rejection's budget keeps its KV cache within free memory less the reserve
    per_row = kv_per_row + vocab_size(policy) * 4 * LOGITS_BUFFERS
    rows = rows_at_most(config, len(prompt_lengths))
    rm = reward_bytes(reward, policy.device, tokens, rows) if reward is not None else 0
    needed = rows * per_row + rm
    if needed > available and measured:  # memory an earlier run left to the garbage collector counts too
        gc.collect()
        if policy.device.type == "cuda":
            torch.cuda.empty_cache()
        available = available_bytes(policy.device) or available
    if needed * HEADROOM <= available:
        return
    fits = int((available - rm * HEADROOM) // (per_row * HEADROOM))
    what = (f"max_batch_rows={config.max_batch_rows}" if rows == config.max_batch_rows
            else f"{rows} rows (max_batch_rows={config.max_batch_rows})")
    beside = f" beside the reward model's {_gib(rm)}" if rm else ""
    head = (f"{what} x (prompt {longest} + {config.max_new_tokens} new tokens) needs {_gib(needed - rm)} of KV cache "
            f"and logits{beside}, but {_gib(available)} is available on {policy.device.type} (the weights already take "
            f"{_gib(weight_bytes(policy))})")
    if fits < 1 and rm and rm * HEADROOM >= available:
        hint = ("the reward model alone does not fit beside the policy: put it on another device, lower its "
                "batch size or its prefix cache (prefix_cache_tokens)")
    elif fits < 1:
        hint = "not even one row fits: lower --max-new-tokens"
    else:
        hint = f"--max-batch-rows {fits}"
        try:  # a method whose rows decode together (n, proposals) needs that option lowered too
            dataclasses.replace(config, max_batch_rows=fits)  # validates
        except SecateursError:
            together = [f for f in ("n", "proposals") if getattr(config, f, None) == config.rows_per_prompt()]
            hint += f" with --{together[0] if together else 'n'} at most {fits}"
        hint += " would fit"
    if needed <= available:  # may fit: the allocator's overhead decides
        log.warning("warning: %s, and a run takes up to %.1fx that; it may run out of memory: %s", head,
                    HEADROOM, hint)
        return
    raise SecateursError(f"{head}; {hint}")


# ---------------------------------------------------------------- Speculative Rejection's KV budget on a GPU
# The authors keep 15 GiB of free memory back and fill the rest; the alternative, 0.9 x free, would put
# the decision point where the KV cache alone takes 90% of the memory, but a run takes 1.1-1.6x its KV
# estimate (HEADROOM above: cache copies when rows change, fragmentation), so it runs out of memory
# there. 15 GiB is also the authors' operating point (80 GB GPUs, 7-8B models: 0.75 x free). A GPU with
# less than twice that free keeps half of it back instead, so small GPUs still get a budget.
GPU_RESERVE_BYTES = 15 * 2**30


def gpu_kv_budget_bytes(free: int) -> int:
    """KV-cache bytes a Speculative Rejection batch may fill, given the bytes free for it."""
    reserve = GPU_RESERVE_BYTES if free >= 2 * GPU_RESERVE_BYTES else free // 2
    return max(0, free - reserve)


def kv_budget_bytes(device: torch.device, droppable: int = 0) -> int | None:
    """The KV budget on `device` measured as the authors do, after torch.cuda.empty_cache: free + reserved -
    allocated (`available_bytes`), plus `droppable`, the bytes of KV cache this process holds for earlier
    prompts' rows (dropped when the next rows join), so one prompt's budget never depends on the prompts
    before it. None off a GPU (host memory would never bring a decision point)."""
    if device.type != "cuda":
        return None
    gc.collect()  # tensors an earlier run left to the garbage collector
    torch.cuda.empty_cache()
    return gpu_kv_budget_bytes(available_bytes(device) + droppable)

