"""At users' scale on one GPU: 8B-shaped models, figures against the physical floor.

    PYTHONPATH=src python3 benchmarks/gpu_scale.py            # on a CUDA machine, ~8 minutes
    PYTHONPATH=src python3 benchmarks/gpu_scale.py --cpu-smoke # tiny shapes, seconds (run by the tests)

No weights are read: every model is randomly initialised from a config (seeded), in bf16 on the GPU.
- policy: Llama-3.1-8B-shaped (32 layers, 4096 wide, 8 KV heads) with the packaged SmolLM2
  tokenizer's vocabulary (49,152): the folder `--save-tokenizer` writes here, carried to the GPU
  machine, else the converted packaged policy's folder, else the tests' word tokenizer (said in the
  output: the vocabulary, and so the logits, are then much smaller);
- reward models: an 8B-shaped and a 0.6B-shaped (Qwen3-0.6B's widths) LlamaForSequenceClassification.
Random weights rarely emit EOS, so responses run to max_new_tokens: what is measured is the cost
pattern (steps, rows, memory, LM vs RM time), not answer quality.

It measures, in one run, and prints a table per part (the last one last) and writes all of it to
$OUT/gpu_scale.json (or --out):
1. decode step time of our backend at 1 / 16 / 64 / 256 rows and two context lengths, against
   - the floor: (weight bytes + KV bytes read) / the device's copy bandwidth, measured in the same
     run (a device-to-device copy of a large buffer: bytes read + bytes written per second), and
   - transformers' `model.generate` at the same shapes (per-step time from two generate lengths);
2. Best-of-N n=16 and n=64, Speculative Rejection with B0 from memory (the paper's regime: B0 in the
   hundreds, decisions where memory fills), Best-of-N at that same B0, and CARDS: wall time, LM vs
   RM seconds, rows busy, peak memory;
3. policy + 8B RM on one GPU: weights, what is left for the KV cache, rows that fit, and the RM's
   share of the time for Best-of-N n=64.
Every part checks the time left (`--budget-s`) and is skipped, saying so, rather than overrun.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from transformers import (LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification,  # noqa: E402
                          PreTrainedTokenizerBase)

from secateurs.admission import weight_bytes  # noqa: E402
from secateurs.backends.transformers import TransformersBackend  # noqa: E402
from secateurs.methods import get_method  # noqa: E402
from secateurs.policy import Policy  # noqa: E402
from secateurs.prompts import builtin_prompts, make_prompts  # noqa: E402
from secateurs.rewards.hf import HFReward  # noqa: E402
from secateurs.runner import run_prompts  # noqa: E402
from secateurs.sampling import SamplingParams, child_key, prompt_key  # noqa: E402
from secateurs.scheduler import Request, SchedulerStats  # noqa: E402
from secateurs.sequence import RUNNING, Sequence  # noqa: E402

TOKENIZER_DIR = ROOT / "benchmarks" / "out" / "gpu_scale_tokenizer"

# Widths of the published models (config.json of meta-llama/Llama-3.1-8B and Qwen/Qwen3-0.6B).
LLAMA_8B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=8, head_dim=128, rope_theta=500000.0, max_position_embeddings=8192)
QWEN_06B = dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                num_key_value_heads=8, head_dim=128, rope_theta=1000000.0, max_position_embeddings=8192)
SMOKE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, max_position_embeddings=512)


# ---------------------------------------------------------------------------------------- the floor
def kv_bytes_read(rows: int, context: int, kv_bytes_per_token: int) -> int:
    """KV-cache bytes one decode step reads: every cached token of every row, once."""
    return rows * context * kv_bytes_per_token


def floor_seconds(weight_bytes_: int, kv_bytes: int, bandwidth: float) -> float:
    """The memory-bound floor of one decode step: every weight and every cached KV byte read once
    at the device's copy bandwidth (bytes/s). Compute, launches and the logits come on top."""
    return (weight_bytes_ + kv_bytes) / bandwidth


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def copy_bandwidth(device: torch.device, nbytes: int, repeats: int = 5) -> float:
    """Bytes moved per second by a device-to-device copy (read + write), best of `repeats`."""
    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = math.inf
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        dst.copy_(src)
        sync(device)
        best = min(best, time.perf_counter() - start)
    del src, dst
    return 2 * (nbytes // 2) * 2 / best


# ---------------------------------------------------------------------------------------- models
def load_tokenizer() -> tuple[PreTrainedTokenizerBase, str]:
    from transformers import AutoTokenizer

    if (TOKENIZER_DIR / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(TOKENIZER_DIR), "packaged SmolLM2 (carried folder)"
    try:
        from secateurs.models import convert_gguf, packaged_gguf
        return AutoTokenizer.from_pretrained(convert_gguf(packaged_gguf())), "packaged SmolLM2"
    except Exception:  # noqa: BLE001 - any failure means: not available on this machine
        from conftest import word_tokenizer
        return word_tokenizer(), "the tests' word tokenizer (packaged one not found: small vocabulary)"


def random_model(cls, shape: dict, vocab: int, device: torch.device, dtype: torch.dtype, seed: int, **extra):
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, pad_token_id=0, bos_token_id=1, eos_token_id=2, **shape, **extra)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):  # initialised in place on the device: no 16 GB host round trip
            model = cls(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


class ReadyReward(HFReward):
    """HFReward around a model already in memory (HFReward itself loads from a folder or the Hub)."""

    def __init__(self, model, tokenizer, name: str, batch_size: int):
        self.name, self.model, self.tokenizer = name, model, tokenizer
        self.device = next(model.parameters()).device
        self.batch_size, self.label_index = batch_size, 0
        self.max_length = model.config.max_position_embeddings


def gib(n: float) -> float:
    return round(n / 2**30, 2)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


# ---------------------------------------------------------------------------------------- part 1
def engine_step_seconds(policy: Policy, rows: int, context: int, steps: int) -> float:
    """Mean time of one decode step of our backend: `rows` samples of one `context`-token prompt."""
    device = policy.device
    ids = torch.randint(3, len(policy.tokenizer), (context,), generator=torch.Generator().manual_seed(context)).tolist()
    [prompt] = make_prompts([f"step-{rows}-{context}"])
    request = Request(prompt, ids, "sampling", None, 0, prompt_key(0, prompt.id))
    backend = TransformersBackend(policy)
    backend.prefill([request])
    seqs = [Sequence(request, j, child_key(request.key, j), SamplingParams(1.0, 50), steps + 4) for j in range(rows)]
    backend.start(seqs)
    for _ in range(2):  # the first step copies the prompt row into the decoding rows; one more to warm up
        backend.step(seqs)
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        backend.step(seqs)
    sync(device)
    assert all(s.status == RUNNING for s in seqs)
    return (time.perf_counter() - start) / steps


@torch.no_grad()
def generate_step_seconds(policy: Policy, rows: int, context: int, steps: int) -> float:
    """transformers' generate at the same shape: per-step time from a long and a short generation."""
    ids = torch.randint(3, len(policy.tokenizer), (1, context), generator=torch.Generator().manual_seed(context))
    ids = ids.expand(rows, context).to(policy.device)

    def run(new: int) -> float:
        sync(policy.device)
        start = time.perf_counter()
        policy.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=50,
                              max_new_tokens=new, min_new_tokens=new, pad_token_id=0)
        sync(policy.device)
        return time.perf_counter() - start

    run(2)  # warm-up
    return (run(2 + steps) - run(2)) / steps


def part_decode(policy: Policy, bandwidth: float, rows_list, contexts, steps: int, left) -> list[dict]:
    rows_out = []
    policy = Policy(policy.model, policy.tokenizer, policy.name)
    policy.stop_token_ids = frozenset()  # every row decodes every step, as at full length
    wbytes = weight_bytes(policy)
    per_token = policy.kv_bytes_per_token()
    for context in contexts:
        for rows in rows_list:
            if left() < 20:
                rows_out.append(dict(rows=rows, context=context, skipped="time"))
                continue
            entry = dict(rows=rows, context=context)
            # mean context over the timed steps (two untimed first)
            kv = kv_bytes_read(rows, context + 2 + steps // 2, per_token)
            entry["floor_ms"] = 1e3 * floor_seconds(wbytes, kv, bandwidth)
            for name, fn in (("engine", engine_step_seconds), ("generate", generate_step_seconds)):
                free_memory(policy.device)
                try:
                    entry[f"{name}_ms"] = 1e3 * fn(policy, rows, context, steps)
                except torch.OutOfMemoryError:
                    entry[f"{name}_ms"] = None
                    entry[f"{name}_note"] = "out of memory"
            if entry.get("engine_ms"):
                entry["engine_vs_floor"] = entry["engine_ms"] / entry["floor_ms"]
            if entry.get("engine_ms") and entry.get("generate_ms"):
                entry["generate_vs_engine"] = entry["generate_ms"] / entry["engine_ms"]
            rows_out.append(entry)
            print_row_decode(entry)
    return rows_out


def print_row_decode(e: dict) -> None:
    def ms(v):
        return f"{v:9.2f}" if v else f"{'-':>9s}"
    print(f"{e['rows']:5d} {e['context']:7d} {ms(e.get('floor_ms'))} {ms(e.get('engine_ms'))} "
          f"{ms(e.get('generate_ms'))} {e.get('engine_vs_floor', 0):8.2f}x {e.get('generate_vs_engine', 0):8.2f}x",
          flush=True)


# ---------------------------------------------------------------------------------------- parts 2 and 3
def rows_that_fit(policy: Policy, prompts, new_tokens: int) -> int:
    """Rows whose full-length KV cache and logits memory admission admits now (with its headroom), at most
    the authors' cap on B0."""
    from secateurs.admission import HEADROOM, LOGITS_BUFFERS, available_bytes, vocab_size
    from secateurs.methods.speculative_rejection import MAX_B0

    free_memory(policy.device)
    longest = max(len(policy.encode(p)) for p in prompts)
    per_row = (longest + new_tokens) * policy.kv_bytes_per_token() + vocab_size(policy) * 4 * LOGITS_BUFFERS
    return max(1, min(MAX_B0, int(available_bytes(policy.device) // (per_row * HEADROOM))))


def run_method(label: str, prompts, method: str, options: dict, policy: Policy, reward) -> dict:
    config = get_method(method).config_class(**options)
    free_memory(policy.device)
    stats = SchedulerStats()
    start = time.perf_counter()
    try:
        results = run_prompts(prompts, method, config, policy, reward, stats=stats)
    except torch.OutOfMemoryError:
        return dict(label=label, method=method, options=options, error="out of memory")
    wall = time.perf_counter() - start
    lm = sum(r.cost.lm_seconds for r in results)
    rm = sum(r.cost.rm_seconds for r in results)
    entry = dict(label=label, method=method, options=options, prompts=len(prompts), wall_s=wall, lm_s=lm, rm_s=rm,
                 rm_share=rm / max(1e-9, lm + rm), rows_busy=stats.rows_busy, steps=stats.steps,
                 tokens_generated=sum(r.cost.tokens_generated for r in results),
                 rm_calls=sum(r.cost.rm_calls for r in results),
                 peak_gib=gib(max(r.cost.peak_memory_bytes for r in results)),
                 eos_answers=sum(r.finish_reason == "eos" for r in results))
    if method == "speculative-rejection":
        entry["b0"] = [r.details.get("b0") for r in results]
        entry["rounds"] = [r.details.get("rounds") for r in results]
    return entry


def print_method(e: dict) -> None:
    if "error" in e or "skipped" in e:
        print(f"{e['label']:34s} {e.get('error') or 'skipped: ' + e['skipped']}", flush=True)
        return
    print(f"{e['label']:34s} {e['wall_s']:8.1f} {e['lm_s']:7.1f} {e['rm_s']:7.1f} {e['rows_busy']:5.2f} "
          f"{e['steps']:6d} {e['tokens_generated']:8d} {e['peak_gib']:7.1f}", flush=True)


def part_methods(policy: Policy, reward, prompts, new_tokens: int, ns, sr_rows: int, sr_tokens: int, left) -> list[dict]:
    out = []
    base = dict(max_new_tokens=new_tokens)
    plan = [(f"best-of-n n={n}", "best-of-n", dict(base, n=n, max_batch_rows=max(64, n))) for n in ns]
    # B0 from memory: the authors' rule min(budget // (P + 8), 1000), capped at the rows whose full-length KV
    # cache fits (memory admission refuses more), so Best-of-N at the same B0 fits too.
    sr = dict(base, max_new_tokens=sr_tokens, max_batch_rows=sr_rows)
    plan.append(("speculative-rejection B0 from memory", "speculative-rejection", sr))
    plan.append(("cards", "cards", dict(base)))
    for label, method, options in plan:
        if left() < 45:
            entry = dict(label=label, method=method, skipped="time")
        else:
            entry = run_method(label, prompts, method, options, policy, reward)
        out.append(entry)
        print_method(entry)
        if method == "speculative-rejection" and entry.get("b0") and left() >= 45:
            b0 = max(entry["b0"])  # Best-of-N at the same B0, the paper's comparison
            same = run_method(f"best-of-n n=B0={b0}", prompts, "best-of-n",
                              dict(sr, n=b0, max_batch_rows=b0), policy, reward)
            out.append(same)
            print_method(same)
            if "wall_s" in same and "wall_s" in entry:
                print(f"{'  SR wall time / Best-of-N at B0':34s} {entry['wall_s'] / same['wall_s']:8.2f}x", flush=True)
    return out


def part_pair(policy: Policy, rm, prompts, new_tokens: int, n: int, left) -> dict:
    device = policy.device
    free_memory(device)
    entry = dict(policy_weights_gib=gib(weight_bytes(policy)), rm_weights_gib=gib(weight_bytes(rm)))
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        entry.update(total_gib=gib(total), free_after_weights_gib=gib(free))
        per_row = (max(len(policy.encode(p)) for p in prompts) + new_tokens) * policy.kv_bytes_per_token()
        entry["rows_that_fit_kv_only"] = int(free // per_row)
    if left() < 45:
        entry["skipped"] = "time"
        return entry
    run = run_method(f"best-of-n n={n} + 8B RM", prompts, "best-of-n",
                     dict(max_new_tokens=new_tokens, n=n, max_batch_rows=max(64, n)), policy, rm)
    entry["run"] = run
    print_method(run)
    return entry


# ---------------------------------------------------------------------------------------- main
def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on the CPU, seconds")
    parser.add_argument("--budget-s", type=float, default=450.0, help="stop starting new parts after this")
    parser.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "benchmarks" / "out"))
    parser.add_argument("--save-tokenizer", action="store_true",
                        help=f"write the packaged tokenizer to {TOKENIZER_DIR} (to carry to a GPU machine) and exit")
    args = parser.parse_args(argv)
    if args.save_tokenizer:
        tokenizer, source = load_tokenizer()
        tokenizer.save_pretrained(TOKENIZER_DIR)
        print(f"saved {source} tokenizer to {TOKENIZER_DIR}")
        return {}
    t0 = time.perf_counter()

    def left() -> float:
        return args.budget_s - (time.perf_counter() - t0)

    smoke = args.cpu_smoke
    if not smoke and not torch.cuda.is_available():
        raise SystemExit("gpu_scale: no CUDA device here; use --cpu-smoke for the CPU check")
    device = torch.device("cpu" if smoke else "cuda")
    dtype = torch.float32 if smoke else torch.bfloat16
    if smoke:
        from conftest import word_tokenizer
        tokenizer, tokenizer_source = word_tokenizer(), "the tests' word tokenizer (smoke)"
    else:
        tokenizer, tokenizer_source = load_tokenizer()
    vocab = len(tokenizer)
    policy_shape, big_rm, small_rm = (SMOKE, SMOKE, SMOKE) if smoke else (LLAMA_8B, LLAMA_8B, QWEN_06B)
    rows_list = (1, 4) if smoke else (1, 16, 64, 256)
    contexts = (16, 32) if smoke else (256, 1024)
    steps = 3 if smoke else 16
    new_tokens = 8 if smoke else 256
    ns = (2, 4) if smoke else (16, 64)
    sr_rows = 16  # smoke only; on a GPU from memory (rows_that_fit)
    sr_tokens = 64 if smoke else 512  # long enough that B0 from memory fills the cache before the end
    prompts = builtin_prompts()[:2]

    report: dict = dict(device=torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
                        torch=torch.__version__, dtype=str(dtype), tokenizer=tokenizer_source, vocab=vocab,
                        note="random weights: responses rarely end at EOS; the cost pattern is what is measured")
    bandwidth = copy_bandwidth(device, (64 if smoke else 4096) * 2**20)
    report["copy_bandwidth_gb_s"] = bandwidth / 1e9
    policy = Policy(random_model(LlamaForCausalLM, policy_shape, vocab, device, dtype, seed=0), tokenizer,
                    name="llama-3.1-8b-shaped" if not smoke else "smoke")
    report["policy_weights_gib"] = gib(weight_bytes(policy))
    report["policy_weight_bytes"], report["kv_bytes_per_token"] = weight_bytes(policy), policy.kv_bytes_per_token()
    print(f"{report['device']}; torch {torch.__version__}; {dtype}; tokenizer: {tokenizer_source} ({vocab}); "
          f"copy bandwidth {bandwidth / 1e9:.0f} GB/s; policy weights {report['policy_weights_gib']} GiB", flush=True)

    print("\n1. decode step (ms): our backend and model.generate against the floor "
          "(weights + KV read at copy bandwidth)")
    print(f"{'rows':>5s} {'context':>7s} {'floor':>9s} {'engine':>9s} {'generate':>9s} {'eng/floor':>9s} "
          f"{'gen/eng':>9s}")
    report["decode"] = part_decode(policy, bandwidth, rows_list, contexts, steps, left)

    print(f"\n2. methods, {len(prompts)} prompts, {new_tokens} new tokens, 0.6B-shaped RM")
    header = (f"{'run':34s} {'wall s':>8s} {'LM s':>7s} {'RM s':>7s} {'busy':>5s} {'steps':>6s} {'tokens':>8s} "
              f"{'peak GiB':>7s}")
    print(header)
    small = ReadyReward(random_model(LlamaForSequenceClassification, small_rm, vocab, device, dtype, seed=1,
                                     num_labels=1), tokenizer, "rm-0.6b-shaped", batch_size=64)
    if not smoke:
        sr_rows = rows_that_fit(policy, prompts, sr_tokens)
    report["methods"] = part_methods(policy, small, prompts, new_tokens, ns, sr_rows, sr_tokens, left)
    del small
    free_memory(device)

    print("\n3. policy + 8B-shaped RM on one device")
    print(header)
    if left() < 90:
        report["pair"] = dict(skipped="time")
    else:
        try:
            big = ReadyReward(random_model(LlamaForSequenceClassification, big_rm, vocab, device, dtype, seed=2,
                                           num_labels=1), tokenizer, "rm-8b-shaped", batch_size=16)
            report["pair"] = part_pair(policy, big, prompts, new_tokens, ns[-1], left)
            del big
        except torch.OutOfMemoryError:
            report["pair"] = dict(error="the 8B-shaped RM does not fit beside the policy")
    pair = report["pair"]
    print(f"weights: policy {pair.get('policy_weights_gib', '-')} GiB, RM {pair.get('rm_weights_gib', '-')} GiB; "
          f"free after both {pair.get('free_after_weights_gib', '-')} GiB of {pair.get('total_gib', '-')}; "
          f"rows of prompt+{new_tokens} tokens that fit: {pair.get('rows_that_fit_kv_only', '-')}; "
          f"RM share of time: {pair.get('run', {}).get('rm_share', float('nan')):.2f}")
    report["wall_s"] = time.perf_counter() - t0

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_scale.json").write_text(json.dumps(report, indent=1, default=str))

    print("\nsummary (decode step, ms)")
    print(f"{'rows':>5s} {'context':>7s} {'floor':>9s} {'engine':>9s} {'generate':>9s} {'eng/floor':>9s} "
          f"{'gen/eng':>9s}")
    for e in report["decode"]:
        if "skipped" not in e:
            print_row_decode(e)
    print(f"wrote {out / 'gpu_scale.json'} in {report['wall_s']:.0f} s")
    return report


if __name__ == "__main__":
    main()
