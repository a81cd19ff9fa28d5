"""RM positions computed and RM seconds, from scratch vs with prefix reuse (rewards/prefix_cache.py).

    .venv/bin/python benchmarks/rm_reuse.py [--prompts 2] [--layers 6]
    .venv-vllm/bin/python benchmarks/rm_reuse.py --rm vllm     # the same RM as vllm: (prefix caching off / on)

The packaged policy answers AlpacaFarm prompts with Speculative Rejection (n=32, 256 new tokens) and
CARDS (128 new tokens) twice, once with a decoder RM that reads every text from scratch and once
with the same RM reusing what it read. The RM is a random LlamaForSequenceClassification of
`--layers` layers (hidden 512) saved to a folder with a tokenizer other than the policy's (MiniLM's
WordPiece, given a chat template), as a user's hf: RM would be. With `--rm vllm` the same folder is served by vLLM's pooling runner
(vllm:), from scratch meaning with the engine's prefix caching off. Answers must be identical;
counts are exact, seconds are one run on this machine.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

import secateurs
from secateurs.models import load_policy
from secateurs.prompts import make_prompts
from secateurs.rewards.hf import HFReward
from secateurs.rewards.offline import minilm_folder

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "alpaca_farm_100.json"
TEMPLATE = ("{% for m in messages %}[unused0] {{ m['role'] }} {{ m['content'] }} [unused1] {% endfor %}"
            "{% if add_generation_prompt %}[unused0] assistant {% endif %}")


def make_rm(folder: Path, layers: int) -> Path:
    tokenizer = AutoTokenizer.from_pretrained(minilm_folder())
    tokenizer.chat_template = TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=512, intermediate_size=1024, num_hidden_layers=layers,
                         num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=4096, num_labels=1,
                         pad_token_id=tokenizer.pad_token_id)
    LlamaForSequenceClassification(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_reward(path: str, folder: Path, reuse: bool):
    if path == "hf":
        return HFReward(folder, prefix_cache_tokens=65536 if reuse else 0)
    from secateurs.rewards.vllm import VllmReward

    return VllmReward(str(folder), enable_prefix_caching=reuse)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--rm", choices=("hf", "vllm"), default="hf", help="the RM path: hf: or vllm:")
    args = parser.parse_args()
    prompts = make_prompts([d["prompt"] for d in json.loads(DATA.read_text())[:args.prompts]])
    policy = load_policy()
    folder = make_rm(Path(tempfile.mkdtemp(prefix="rm_reuse.")), args.layers)
    cases = [("speculative-rejection n=32, 256 tokens", "speculative-rejection", dict(n=32, max_new_tokens=256, first_decision_tokens=16)),
             ("cards, 128 tokens", "cards", dict(max_new_tokens=128, r_star="auto"))]  # as measured
    print(f"{len(prompts)} prompts; policy {policy.name}; RM ({args.rm}:): random {args.layers}-layer Llama classifier, "
          f"MiniLM tokenizer; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'method':40s} {'RM path':8s} {'RM calls':>8s} {'RM tokens':>9s} {'RM positions':>12s} {'RM s':>7s} "
          f"{'LM s':>7s} {'wall s':>7s}")
    # vLLM engines are made once and kept: dropping one tears down vLLM's process-wide parallel state under
    # the next (a second engine made after would fail), so each case starts from an emptied prefix cache instead.
    served = {path: make_reward("vllm", folder, reuse) for path, reuse in (("scratch", False), ("reuse", True))} \
        if args.rm == "vllm" else None
    for label, method, options in cases:
        answers, figures = {}, {}
        for path, reuse in (("scratch", False), ("reuse", True)):
            if served:
                reward = served[path]
                reward.engine.reset_prefix_cache()
            else:
                reward = make_reward(args.rm, folder, reuse)
            start = time.perf_counter()
            results = secateurs.align(prompts, policy=policy, reward=reward, method=method, seed=0, **options)
            wall = time.perf_counter() - start
            answers[path] = [r.response for r in results]
            calls = sum(r.cost.rm_calls for r in results)
            tokens = sum(r.cost.rm_tokens for r in results)
            positions = sum(r.cost.rm_positions for r in results)
            rm_s = sum(r.cost.rm_seconds for r in results)
            lm_s = sum(r.cost.lm_seconds for r in results)
            figures[path] = (positions, rm_s)
            print(f"{label:40s} {path:8s} {calls:8d} {tokens:9d} {positions:12d} {rm_s:7.1f} {lm_s:7.1f} {wall:7.1f}",
                  flush=True)
        same = sum(a == b for a, b in zip(answers["scratch"], answers["reuse"]))
        (p0, s0), (p1, s1) = figures["scratch"], figures["reuse"]
        print(f"{'':40s} reuse: {p0 / max(1, p1):.2f}x fewer RM positions, {s0 / max(1e-9, s1):.2f}x less RM time, "
              f"same answers {same}/{len(prompts)}", flush=True)


if __name__ == "__main__":
    main()
