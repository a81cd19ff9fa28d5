"""Particle filtering (Puri et al. 2025, "A Probabilistic Inference Approach to Inference-Time
Scaling of LLMs using Particle-Based Monte Carlo Methods"; as in its_hub).

N particles advance one step at a time (option `step`, see steps.py). After each step every
particle's response is scored (unfinished ones as partial responses); the weights are
softmax(score / weight_temperature) over all N particles. When the effective sample size
1 / sum(w^2) falls below ess_threshold x N, the particles are resampled by systematic resampling:
one uniform u, drawn from the prompt's key and the step number (secateurs.sampling.uniform), picks
the particles at cumulative weights (u + i) / N, i = 0..N-1. A particle picked k times keeps its row
and k - 1 rows of unpicked particles become its copies (forks.py: shared cache, no re-prefill, each
copy sampling on with its own key). Finished particles stay finished (a copy of one is finished
too); the unfinished ones take the next step. When all are finished, the answer is the best
finished particle ('best') or the response with the largest total weight ('weighted' vote).

ess_threshold 0 never resamples: the particles are then Best-of-N's samples with the same indices,
and 'best' is Best-of-N's answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backends.base import BATCH_INVARIANT, KV_PRUNE, STOP_RULE
from ..errors import SecateursError
from ..sampling import uniform
from .base import DecodingConfig, MethodPolicy, integer, option, real, register
from .forks import assign_slots, fork
from .steps import STEP_HELP, StepPlan, check_step

ANSWERS = ("best", "weighted")


@dataclass
class ParticleFilteringConfig(DecodingConfig):
    n: int = option(16, "; particles per prompt (particle filtering)")
    step: str = option("entropy", "particle filtering / beam search: " + STEP_HELP)
    ess_threshold: float = option(1.0, "particle filtering: resample when the effective sample size falls below "
                                       "this fraction of n (1: at every step unless the weights are equal; 0: never)")
    weight_temperature: float = option(1.0, "particle filtering: weights = softmax(score / this)")
    answer: str = option("best", "particle filtering: the best finished particle ('best') or the response with "
                                 "the most weight ('weighted')")

    def validate(self) -> None:
        super().validate()
        if not integer(self.n) or self.n < 1:
            raise SecateursError(f"n must be an integer >= 1, got {self.n!r}")
        self.step = check_step(self.step)
        if not (real(self.ess_threshold) and 0 <= self.ess_threshold <= 1):
            raise SecateursError(f"ess_threshold must be in [0, 1], got {self.ess_threshold!r}")
        if not (real(self.weight_temperature) and self.weight_temperature > 0):
            raise SecateursError(f"weight_temperature must be a finite number > 0, got {self.weight_temperature!r}")
        if self.answer not in ANSWERS:
            raise SecateursError(f"answer must be one of {', '.join(ANSWERS)}, got {self.answer!r}")
        if integer(self.max_batch_rows) and self.n > self.max_batch_rows:
            raise SecateursError(f"n={self.n} particles decode together but max_batch_rows is {self.max_batch_rows}: "
                                 "lower --n or raise --max-batch-rows")

    def rows_per_prompt(self) -> int:
        return self.n


def weights(scores: list[float], temperature: float) -> np.ndarray:
    """softmax(score / temperature)."""
    z = np.asarray(scores, dtype=np.float64) / temperature
    w = np.exp(z - z.max())
    return w / w.sum()


def systematic_resample(w: np.ndarray, u: float) -> list[int]:
    """Indices picked at cumulative weights (u + i) / N, i = 0..N-1 (u in [0, 1))."""
    n = len(w)
    cumulative = np.cumsum(w)
    cumulative[-1] = 1.0  # rounding must not leave the last position past the end
    return np.searchsorted(cumulative, (u + np.arange(n)) / n, side="right").tolist()


def weighted_vote(responses: list, rewards: list[float], temperature: float) -> int:
    """Index of the first response of the group of equal responses with the most total weight."""
    votes: dict = {}
    for response, w in zip(responses, weights(rewards, temperature)):
        votes[response] = votes.get(response, 0.0) + w
    winner = max(votes, key=votes.get)  # ties: the first in slot order
    return responses.index(winner)


@register("particle-filtering", ParticleFilteringConfig,
          "N particles advance step by step, resampled by partial reward (Puri et al. 2025)")
class ParticleFiltering(MethodPolicy):
    needs = frozenset({BATCH_INVARIANT, KV_PRUNE, STOP_RULE})

    def start(self) -> None:
        self.plan = StepPlan(self.ctx, self.config.step)
        # Particle i starts as Best-of-N's sample i; finished particles keep their rows (they may be copied).
        self.particles = self.plan.start(range(self.config.n), keep_finished=True)
        self.history = {"scores": [], "ess": [], "resampled": [], "parents": []}

    def on_idle(self, stopped) -> None:
        config, ctx = self.config, self.ctx
        scores = [p.reward for p in self.particles]
        w = weights(scores, config.weight_temperature)
        ess = float(1.0 / np.sum(w**2))
        step = len(self.history["ess"])
        self.history["scores"].append(scores)
        self.history["ess"].append(ess)
        resample = ess < config.ess_threshold * config.n - 1e-9 and any(not p.finished for p in self.particles)
        self.history["resampled"].append(resample)
        if resample:
            parents = assign_slots(systematic_resample(w, uniform(ctx.key, step)))
            for i, p in enumerate(parents):
                if p != i:
                    fork(ctx, self.particles[i], self.particles[p])
            self.history["parents"].append(parents)
        live = [p for p in self.particles if not p.finished]
        if live:
            self.plan.extend(live)
            return
        ctx.finish(self._answer())

    def _answer(self):
        rewards = [p.reward for p in self.particles]
        if self.config.answer == "best":
            best = max(range(len(rewards)), key=lambda i: (rewards[i], -i))
        else:
            best = weighted_vote([tuple(p.tokens) for p in self.particles], rewards, self.config.weight_temperature)
        return self.outcome(self.particles[best], best_index=best, particle_rewards=rewards,
                            steps=len(self.history["ess"]), **self.history)
