"""A process reward model (PRM): a Hugging Face token-classification model that scores every step of
a response in one forward pass.

Spec: `prm:NAME_OR_PATH[?aggregate=min|last|product&separator=TOKEN&split=TEXT&label=1]`. The response
is cut into steps at `split` (default a blank line, '\\n\\n'); the PRM reads the prompt and then each
step followed by the separator token (default '<extra_0>', Qwen2.5-Math-PRM's), and each step's
score is the probability of class `label` (default 1, "good step") at its separator. The steps'
scores become one reward by `aggregate` (default min: a response is as good as its worst step;
last; product).
"""

from __future__ import annotations

from urllib.parse import parse_qsl

import torch

from ..errors import SecateursError
from ..models import resolve_device, resolve_dtype
from .base import Reward, length_buckets
from .hf import check_model_folder, looks_like_path

AGGREGATES = ("min", "last", "product")
OPTIONS = ("aggregate", "separator", "split", "label")


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """'PATH?key=value&...' -> (PATH, options), naming an unknown option."""
    path, _, query = spec.partition("?")
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise SecateursError(f"unknown PRM option(s) {unknown} in {spec!r}; it takes {list(OPTIONS)}")
    return path, options


class PRMReward(Reward):
    def __init__(self, spec: str, device=None, dtype=None, batch_size: int = 16):
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        self.name = f"prm:{spec}"
        path, options = parse_spec(spec)
        self.aggregate = options.get("aggregate", "min")
        if self.aggregate not in AGGREGATES:
            raise SecateursError(f"PRM aggregate must be one of {', '.join(AGGREGATES)}, got {self.aggregate!r}")
        self.split = options.get("split", "\n\n").encode("latin-1", "backslashreplace").decode("unicode_escape")
        if not self.split:
            raise SecateursError("PRM split must be a non-empty text, got ''")
        check_model_folder(path)
        dev = resolve_device(device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForTokenClassification.from_pretrained(
                path, dtype=resolve_dtype(dtype, dev)).to(dev).eval()
        except Exception as e:  # one line naming the model
            lines = str(e).strip().splitlines()
            raise SecateursError(f"unknown PRM {path!r}: {lines[0] if lines else type(e).__name__}") from None
        label = options.get("label", "1")
        if not label.isdigit() or int(label) >= self.model.config.num_labels:
            raise SecateursError(f"PRM label must be a class index below {self.model.config.num_labels}, got {label!r}")
        self.label = int(label)
        separator = options.get("separator", "<extra_0>")
        ids = self.tokenizer(separator, add_special_tokens=False)["input_ids"]
        if len(ids) != 1 or ids[0] == self.tokenizer.unk_token_id:
            raise SecateursError(f"PRM separator {separator!r} is not one token of {path!r}'s tokenizer")
        self.separator_id = ids[0]
        self.device, self.batch_size = dev, batch_size
        self.max_length = getattr(self.model.config, "max_position_embeddings", 4096) or 4096

    def steps(self, response: str) -> list[str]:
        return [s for s in response.split(self.split) if s.strip()] or [""]

    def encode(self, prompt, response: str) -> list[int]:
        """Prompt, then each step followed by the separator; over-long texts keep their end."""
        ids = list(self.tokenizer(prompt.text)["input_ids"])
        for step in self.steps(response):
            ids += self.tokenizer(step, add_special_tokens=False)["input_ids"] + [self.separator_id]
        return ids[-self.max_length:]

    @torch.no_grad()
    def step_scores(self, chunk: list[list[int]], width: int) -> list[list[float]]:
        """P(label) at every separator of each text, from one forward of the chunk."""
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros(len(chunk), width, dtype=torch.long)
        for i, ids in enumerate(chunk):
            input_ids[i, :len(ids)] = torch.tensor(ids)
            mask[i, :len(ids)] = 1
        probs = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)
                           ).logits.float().softmax(-1)[..., self.label].cpu()
        at = (input_ids == self.separator_id) & mask.bool()
        return [probs[i][at[i]].tolist() for i in range(len(chunk))]

    def _score(self, prompts, responses, partial):
        encoded = [self.encode(p, r) for p, r in zip(prompts, responses)]
        scores = [0.0] * len(encoded)
        # widths fixed by each text's own length: a score does not depend on its batch
        for width, indices in length_buckets([len(ids) for ids in encoded], self.batch_size, self.max_length):
            for i, steps in zip(indices, self.step_scores([encoded[i] for i in indices], width)):
                scores[i] = self._aggregate(steps)
        return scores, [len(ids) for ids in encoded]

    def _aggregate(self, steps: list[float]) -> float:
        if not steps:  # every separator cut off by truncation: no step to judge
            return 0.0
        if self.aggregate == "min":
            return min(steps)
        if self.aggregate == "last":
            return steps[-1]
        return float(torch.tensor(steps, dtype=torch.float64).prod())
