"""Best-of-N: sample N complete responses, score each with the RM, return the best.

Each prompt is prefilled once; its N samples are forked from that KV cache (never re-prefilled),
in chunks of at most max_batch_rows rows when N is large, with several prompts per chunk.
Sample j of a prompt always draws the same tokens for a given seed, whatever the chunking.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..engine import RolloutBatch
from ..errors import SecateursError
from ..rewards import metered_score
from ..sampling import child_key
from .base import DecodingConfig, Outcome, register


@dataclass
class BestOfNConfig(DecodingConfig):
    n: int = 16  # samples per prompt

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.n, int) or isinstance(self.n, bool) or self.n < 1:
            raise SecateursError(f"n must be an integer >= 1, got {self.n!r}")

    def rows_per_prompt(self) -> int:
        return self.n


class PromptSampler:
    """Prefills a batch of prompts once; then draws any samples of any of them to completion and scores
    them. Sample j of a prompt always uses the key child_key(prompt key, j)."""

    def __init__(self, prompts, prompt_ids, keys, policy, reward, config: DecodingConfig, meter):
        self.prompts, self.keys, self.reward, self.config, self.meter = prompts, keys, reward, config, meter
        self.prompt_batch = RolloutBatch.prefill(policy, prompt_ids, keys, config.sampling(), config.max_new_tokens,
                                                 meter=meter)

    def draw(self, which, first: int, n: int) -> list[list[tuple]]:
        """Samples first .. first+n-1 of each prompt index in `which`: [(response, ids, reward, reason)] each."""
        samples = [(p, j) for p in which for j in range(first, first + n)]
        results: dict[int, list[tuple]] = {p: [] for p in which}
        for start in range(0, len(samples), self.config.max_batch_rows):
            chunk = samples[start:start + self.config.max_batch_rows]
            batch = self.prompt_batch.select([p for p, _ in chunk], keys=[child_key(self.keys[p], j) for p, j in chunk])
            done = decode_to_completion(batch, chunk)
            groups = [p for (p, _), _ in done]
            scores = metered_score(self.reward, self.meter, [self.prompts[p] for p in groups], [d[1][0] for d in done],
                                   groups)
            for ((p, j), (text, ids, reason)), score in sorted(zip(done, scores), key=lambda d: d[0][0]):
                results[p].append((text, ids, score, reason))
        return [results[p] for p in which]


def sample_n(prompts, prompt_ids, keys, policy, reward, config: DecodingConfig, meter, n: int) -> list[list[tuple]]:
    """Draw n complete responses per prompt and score them: [(response, ids, reward, reason)] per prompt."""
    return PromptSampler(prompts, prompt_ids, keys, policy, reward, config, meter).draw(range(len(prompts)), 0, n)


def decode_to_completion(batch: RolloutBatch, labels: list, retire_every: int = 32) -> list[tuple]:
    """Decode every row to EOS or the length limit; returns [(label, (text, ids, finish reason))].

    Every `retire_every` tokens, finished rows leave the batch (and the KV cache), so a few long
    responses do not keep paying for the many that stopped early.
    """
    labels = list(labels)
    done = []
    while batch.size:
        batch.extend(retire_every)
        finished = batch.finished.tolist()
        for row, is_done in enumerate(finished):
            if is_done:
                done.append((labels[row], (batch.policy.decode(batch.response_ids(row)), batch.response_ids(row),
                                           batch.finish_reasons[row])))
        live = [row for row, is_done in enumerate(finished) if not is_done]
        if len(live) < batch.size:
            batch.keep(live)
            labels = [labels[row] for row in live]
    return done


@register("best-of-n", BestOfNConfig, "sample N responses, return the one the RM scores highest")
def best_of_n(prompts, prompt_ids, keys, policy, reward, config: BestOfNConfig, meter) -> list[Outcome]:
    outcomes = []
    for candidates in sample_n(prompts, prompt_ids, keys, policy, reward, config, meter, config.n):
        best = max(range(len(candidates)), key=lambda i: candidates[i][2])  # first of equal scores
        text, ids, score, reason = candidates[best]
        outcomes.append(Outcome(text, ids, score, reason, details={
            "best_index": best,
            "candidate_rewards": [c[2] for c in candidates],
        }))
    return outcomes
