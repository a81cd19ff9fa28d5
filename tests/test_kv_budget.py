"""Speculative Rejection's KV budget and B0, as pure functions (the GPU measurement itself needs a GPU)."""

import torch

from secateurs.admission import GPU_RESERVE_BYTES, gpu_kv_budget_bytes, kv_budget_bytes
from secateurs.backends.kv_cache import KVCache
from secateurs.backends.transformers import TransformersBackend
from secateurs.methods.speculative_rejection import MAX_B0, authors_b0

GIB = 2**30
KV_8B = 2 * 32 * 8 * 128 * 2  # Llama-3-8B in bf16: 128 KiB of KV cache per token


def test_the_gpu_budget_keeps_the_authors_15_gib_back():
    assert GPU_RESERVE_BYTES == 15 * GIB
    assert gpu_kv_budget_bytes(62 * GIB) == 47 * GIB  # an 8B model on an 80 GB GPU
    assert gpu_kv_budget_bytes(30 * GIB) == 15 * GIB
    assert gpu_kv_budget_bytes(20 * GIB) == 10 * GIB  # a small GPU keeps half back instead
    assert gpu_kv_budget_bytes(0) == 0


def test_no_budget_off_a_gpu(tiny_policy):
    assert kv_budget_bytes(torch.device("cpu"), droppable=10 * GIB) is None
    assert TransformersBackend(tiny_policy).kv_capacity_tokens() is None


def test_b0_is_the_memory_maximum_for_a_short_run_capped_at_1000():
    tokens = gpu_kv_budget_bytes(62 * GIB) // KV_8B  # 385,024 tokens
    assert authors_b0(tokens, 100) == MAX_B0  # a short prompt: the cap
    assert authors_b0(tokens, 400) == tokens // 408 == 943  # the prompt plus 8 tokens fill the budget
    assert authors_b0(tokens, 4000) == 96
    assert authors_b0(1000, 200) == 4 and authors_b0(200, 200) == 0  # too small: the method says so


def test_the_decoding_cache_reports_its_bytes(tiny_policy):
    model = tiny_policy.model
    ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
    out = model(input_ids=ids, use_cache=True)
    kv = KVCache(torch.device("cpu"), out.past_key_values, torch.ones(2, 3, dtype=torch.long))
    cfg = model.config
    per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads) * 4
    assert kv.nbytes() == 2 * 3 * per_token == 2 * 3 * tiny_policy.kv_bytes_per_token()
    assert KVCache(torch.device("cpu")).nbytes() == 0
