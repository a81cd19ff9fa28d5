"""Tiny, seeded, randomly initialised models built in the tests: a 2-layer Llama policy and a
2-layer sequence-classification RM whose tokenizer (characters) differs from the policy's (words)."""

from __future__ import annotations

import os

# One torch thread per process: the tiny models gain nothing from more, and tests that start
# subprocesses (CLI runs, kills, Ray workers) would otherwise oversubscribe the cores, which on a
# 2-core machine made the suite many times slower. Subprocesses inherit the setting.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification,
                          PreTrainedTokenizerFast)

from secateurs.policy import Policy  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

WORDS = ("the a an is are was be to of and in that it for on with as you do at this but his by from "
         "they we say her she or will my one all would there their what so up out if about who get "
         "which go me when make can like time no just him know take people into year your good some "
         "could them see other than then now look only come its over think also back after use two "
         "how our work first well way even new want because any these give day most us tea cup hot "
         "water green leaf sleep bed night dream calm happy sad angry kind help thank please yes").split()
SPECIALS = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>", "user", "assistant", "system", "\n"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
    "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}"
)


def word_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(SPECIALS + list(dict.fromkeys(WORDS)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   eos_token="<|im_end|>", bos_token="<|im_start|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def char_tokenizer() -> PreTrainedTokenizerFast:
    chars = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'-:\n|<>_"
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2}
    vocab.update({c: i + 3 for i, c in enumerate(dict.fromkeys(chars))})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")


def tiny_llama(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=0, bos_token_id=2, eos_token_id=3)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="session")
def tiny_policy() -> Policy:
    tok = word_tokenizer()
    return Policy(tiny_llama(len(tok)), tok, name="tiny-llama")


@pytest.fixture(scope="session")
def tiny_rm_folder(tmp_path_factory):
    """A tiny random Llama sequence-classification RM saved to disk, with a character tokenizer."""
    tok = char_tokenizer()
    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         num_labels=1, pad_token_id=0)
    model = LlamaForSequenceClassification(config).eval()
    folder = tmp_path_factory.mktemp("tiny_rm")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_policy_folder(tmp_path_factory, tiny_policy):
    """The tiny policy saved as a local model folder, as a user's --policy would be."""
    folder = tmp_path_factory.mktemp("tiny_policy")
    tiny_policy.model.save_pretrained(folder)
    tiny_policy.tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def templateless_policy_folder(tmp_path_factory):
    """A tiny policy without a chat template (as the CARDS paper's Llama-7B SFT, OPT), saved to disk, with
    the character tokenizer: every character of its prompt text is one token, so tests can read it back."""
    tok = char_tokenizer()
    assert not getattr(tok, "chat_template", None)
    folder = tmp_path_factory.mktemp("templateless_policy")
    tiny_llama(len(tok), seed=2).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def endless(tiny_policy):
    """The tiny policy with no stop token, so responses run to max_new_tokens."""
    policy = Policy(tiny_policy.model, tiny_policy.tokenizer)
    policy.stop_token_ids = frozenset()
    return policy
