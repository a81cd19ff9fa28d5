"""A decoder RM reuses what it has read (rewards/prefix_cache.py): scores equal from-scratch scores, a
text's score never depends on what was cached before it, a retokenised boundary is not reused, a
bidirectional RM keeps the from-scratch path, and methods answer the same with fewer RM positions."""

import pytest
import torch
from conftest import char_tokenizer, word_tokenizer
from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForSequenceClassification

import secateurs
from secateurs.prompts import make_prompts
from secateurs.rewards.hf import HFReward
from secateurs.rewards.prefix_cache import BLOCK

# fp32 on a CPU: blocks against one forward differ in float summation order only
TOLERANCE = dict(rel=1e-5, abs=1e-6)
TEA = make_prompts(["how do i make green tea", "tell me something kind"])
GROWING = ["first boil", "first boil the water then wait", "first boil the water then wait a while and pour it",
           "first boil the water then wait a while and pour it over the leaves slowly, then wait three minutes"]


def decoder_rm(folder, tokenizer, layers=2):
    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, num_labels=1,
                         pad_token_id=0)
    LlamaForSequenceClassification(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def rm_folder(tmp_path_factory):
    return decoder_rm(tmp_path_factory.mktemp("rm"), char_tokenizer())


def scratch(folder):
    return HFReward(folder, prefix_cache_tokens=0)


def test_growing_prefixes_score_as_from_scratch_and_compute_only_new_blocks(rm_folder):
    reuse, plain = HFReward(rm_folder), scratch(rm_folder)
    assert reuse.prefix_cache is not None and plain.prefix_cache is None
    computed, read = 0, 0
    for text in GROWING:  # one response growing, as Speculative Rejection and CARDS score it
        prompts = [TEA[0], TEA[0], TEA[1]]
        texts = [text, text + " more", text]
        got, tokens, positions = reuse.score_with_cost(prompts, texts)
        want, want_tokens, _ = plain.score_with_cost(prompts, texts)
        assert got == pytest.approx(want, **TOLERANCE)
        assert tokens == want_tokens
        computed += sum(positions)
        read += sum(tokens)
    assert computed < read / 2  # each prompt's head and each earlier block read once


def test_a_score_does_not_depend_on_what_was_cached_before(rm_folder):
    texts = GROWING[1:]
    fresh = HFReward(rm_folder).score(TEA[:1] * len(texts), texts)
    warmed = HFReward(rm_folder)
    warmed.score(TEA[:1], [GROWING[0]])  # some of the prompt's blocks cached first
    warmed.score(TEA[:1], [GROWING[3][:40]])
    assert warmed.score(TEA[:1] * len(texts), texts[::-1])[::-1] == pytest.approx(fresh, rel=1e-6, abs=1e-7)
    alone = [HFReward(rm_folder).score(TEA[:1], [t])[0] for t in texts]
    assert alone == pytest.approx(fresh, rel=1e-6, abs=1e-7)


def test_a_full_block_cached_gives_its_score_without_a_forward(rm_folder):
    rm = HFReward(rm_folder)
    head = len(rm.encode(TEA[0], "x")) - 1  # characters: one token per character
    text = "x" * ((-head) % BLOCK or BLOCK)  # a text ending exactly at a block boundary
    assert len(rm.encode(TEA[0], text)) % BLOCK == 0
    first, _, p1 = rm.score_with_cost(TEA[:1], [text])
    again, _, p2 = rm.score_with_cost(TEA[:1], [text])
    assert again == first and p2 == [0] and p1 == [len(rm.encode(TEA[0], text))]


def test_a_retokenised_boundary_is_not_reused(tmp_path):
    words = word_tokenizer()  # "te" is unknown (<unk>), "tea" a word: appending "a" changes that token
    folder = decoder_rm(tmp_path / "words", words)
    rm, plain = HFReward(folder), scratch(folder)
    unk = words.unk_token_id

    def te_at(m):  # where "te" sits after m filler words
        ids = rm.encode(TEA[0], " ".join(["cup"] * m + ["te"]))
        return len(ids) - 1 - ids[::-1].index(unk), ids

    # a response whose last word ends a full block: that block must not be reused once "te" becomes "tea"
    m = next(m for m in range(BLOCK) if te_at(m)[0] % BLOCK == BLOCK - 1)
    where, ids = te_at(m)
    short = " ".join(["cup"] * m + ["te"])
    rm.score(TEA[:1], [short])
    longer = short + "a hot"
    changed = rm.encode(TEA[0], longer)
    assert changed[:where] == ids[:where] and changed[where] != ids[where]  # the same up to the block's last token
    assert rm.score(TEA[:1], [longer]) == pytest.approx(plain.score(TEA[:1], [longer]), **TOLERANCE)


def test_a_bidirectional_rm_reads_from_scratch(tmp_path):
    tok = char_tokenizer()
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_labels=1, pad_token_id=0)
    BertForSequenceClassification(config).eval().save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    rm = HFReward(tmp_path)
    assert rm.prefix_cache is None
    scores, tokens, positions = rm.score_with_cost(TEA[:1] * 2, GROWING[:2])
    assert all(p >= t for p, t in zip(positions, tokens))  # padded widths, nothing reused


def test_an_evicting_cache_still_scores_exactly(rm_folder):
    small = HFReward(rm_folder, prefix_cache_tokens=2 * BLOCK)
    plain = scratch(rm_folder)
    for text in GROWING * 2:
        assert small.score(TEA[:1], [text]) == pytest.approx(plain.score(TEA[:1], [text]), **TOLERANCE)
    assert len(small.prefix_cache.blocks) <= 2


@pytest.mark.parametrize("method, options", [
    ("speculative-rejection", dict(n=8, decision_tokens=(4, 8, 12), max_new_tokens=20, max_batch_rows=16)),
    ("cards", dict(r_star=0.0, max_new_tokens=24, min_segment_tokens=3, max_segment_tokens=6)),
])
def test_methods_answer_the_same_with_fewer_rm_positions(tiny_policy, rm_folder, method, options):
    prompts = make_prompts(["how do i make green tea", "please help me sleep", "tell me a kind word"])
    got = secateurs.align(prompts, policy=tiny_policy, reward=HFReward(rm_folder), method=method, **options)
    want = secateurs.align(prompts, policy=tiny_policy, reward=scratch(rm_folder), method=method, **options)
    assert [r.response for r in got] == [r.response for r in want]
    assert [r.reward for r in got] == pytest.approx([r.reward for r in want], **TOLERANCE)
    assert [r.cost.rm_tokens for r in got] == [r.cost.rm_tokens for r in want]
    assert sum(r.cost.rm_positions for r in got) < sum(r.cost.rm_positions for r in want) / 1.5
    assert all(r.to_json()["cost"]["rm_positions"] == r.cost.rm_positions for r in got)


def test_a_block_is_reused_only_after_the_same_tokens(rm_folder):
    # two prompts of one block each, then the same response: block 1 holds the same tokens at the same place,
    # but its keys and values depend on the prompt before it
    rm, plain = HFReward(rm_folder, prompt_format="plain"), HFReward(rm_folder, prompt_format="plain",
                                                                     prefix_cache_tokens=0)
    a, b = make_prompts(["abcdefghijklmnop", "ponmlkjihgfedcba"])  # plain: the prompt's characters, then the response's
    response = "qrstuvwxyzqrstuv"
    assert rm.encode(a, response)[BLOCK:] == rm.encode(b, response)[BLOCK:] and len(rm.encode(a, response)) == 2 * BLOCK
    rm.score([a], [response])
    rm.score([b], [response])  # its block 1 is kept too, after b's block 0
    longer = response + " and more"
    for p in (a, b):
        assert rm.score([p], [longer]) == pytest.approx(plain.score([p], [longer]), **TOLERANCE)


def test_vllm_reward_without_vllm_says_what_to_install(rm_folder, monkeypatch):
    import importlib.util

    from secateurs.rewards.vllm import INSTALL_HINT
    from secateurs.errors import SecateursError
    from secateurs.rewards import load_reward

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    with pytest.raises(SecateursError) as err:
        load_reward(f"vllm:{rm_folder}")
    assert str(err.value) == INSTALL_HINT
    with pytest.raises(SecateursError, match="names no model"):
        load_reward("vllm:")
