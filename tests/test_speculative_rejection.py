"""Speculative Rejection on the tiny policy: faithful rounds, equal to Best-of-N at alpha 0, batched."""

import pytest

from secateurs.errors import SecateursError
from secateurs.methods import BestOfNConfig, SpeculativeRejectionConfig
from secateurs.methods.speculative_rejection import keep_count
from secateurs.policy import Policy
from secateurs.prompts import make_prompts
from secateurs.rewards import load_reward
from secateurs.runner import run_prompts
from secateurs.backends.transformers import TransformersBackend

PROMPTS = make_prompts(["how do i make tea", "give me a good tip for sleep", "what is green", "thank you kindly"])


@pytest.fixture(scope="module")
def reward():
    return load_reward("sentiment+civility")


def sr(policy, reward, prompts=PROMPTS, **options):
    return run_prompts(prompts, "speculative-rejection", SpeculativeRejectionConfig(**options), policy, reward)


def test_alpha_zero_equals_best_of_n_token_for_token(tiny_policy, reward):
    bon = run_prompts(PROMPTS, "best-of-n", BestOfNConfig(n=8, max_new_tokens=30), tiny_policy, reward)
    spec = sr(tiny_policy, reward, n=8, alpha=0.0, max_new_tokens=30)
    for b, s in zip(bon, spec):
        assert s.response == b.response and s.reward == b.reward
        assert s.details["best_index"] == b.details["best_index"]
        assert s.details["survivors_per_round"] == [8] * s.details["rounds"]


def test_rounds_follow_the_kv_budget(tiny_policy, reward):
    [result] = sr(tiny_policy, reward, prompts=PROMPTS[:1], n=8, alpha=0.5, max_new_tokens=200,
                  kv_budget_tokens=8 * (len(tiny_policy.encode(PROMPTS[0])) + 10))
    d = result.details
    prompt_len = len(tiny_policy.encode(PROMPTS[0]))
    # first decision when 8 rows fill the budget, at 10 tokens; then the 4 survivors run until full again
    assert d["decision_points"][0] == 10
    if len(d["decision_points"]) > 1:
        live = d["survivors_per_round"][0]
        assert d["decision_points"][1] == max(d["kv_budget_tokens"] // live - prompt_len, 10 + 8)
    assert d["survivors_per_round"][0] == 4


def test_explicit_decision_schedule(tiny_policy, reward):
    results = sr(tiny_policy, reward, n=8, alpha=0.5, max_new_tokens=40, decision_tokens=(4, 9, 20))
    for r in results:
        points = r.details["decision_points"]
        assert points == [4, 9, 20][:len(points)]
        assert r.details["survivors_per_round"][:1] in ([4], [])


def test_results_do_not_depend_on_prompts_in_flight(tiny_policy, reward):
    one = sr(tiny_policy, reward, n=6, alpha=0.5, max_new_tokens=30, max_batch_rows=6)
    three = sr(tiny_policy, reward, n=6, alpha=0.5, max_new_tokens=30, max_batch_rows=20)
    assert [r.response for r in one] == [r.response for r in three]
    assert [r.cost.tokens_generated for r in one] == [r.cost.tokens_generated for r in three]


def test_cheaper_than_best_of_n_and_counts_add_up(tiny_policy, reward):
    bon = run_prompts(PROMPTS, "best-of-n", BestOfNConfig(n=8, max_new_tokens=40), tiny_policy, reward)
    spec = sr(tiny_policy, reward, n=8, alpha=0.5, max_new_tokens=40)
    assert sum(r.cost.tokens_generated for r in spec) < sum(r.cost.tokens_generated for r in bon)
    for r in spec:
        assert r.cost.lm_tokens_prefilled == len(tiny_policy.encode(next(p for p in PROMPTS if p.id == r.id)))
        # each round scores the live rows once; each finished row is scored once more as complete
        assert r.cost.rm_calls >= 8
        assert r.reward == max(r.details["final_pool_rewards"].values())


def test_finished_candidates_are_never_extended(tiny_policy, reward):
    # Make a band of frequent words stop tokens: many candidates end early, between decision points.
    stopping = Policy(tiny_policy.model, tiny_policy.tokenizer)
    stopping.stop_token_ids = frozenset(range(8, 40))
    config = SpeculativeRejectionConfig(n=8, alpha=0.5, max_new_tokens=40)
    seen = []
    original = TransformersBackend.step

    def step(self, seqs, score=None):  # record what each step decodes
        assert not any(s.finished for s in seqs), "a finished candidate was extended"
        seen.extend(seqs)
        return original(self, seqs, score)

    TransformersBackend.step = step
    try:
        results = run_prompts(PROMPTS, "speculative-rejection", config, stopping, reward)
    finally:
        TransformersBackend.step = original
    assert "eos" in [r.finish_reason for r in results]
    for s in set(seen):
        stops = [i for i, t in enumerate(s.tokens) if t in stopping.stop_token_ids]
        assert stops == ([s.length - 1] if s.finish_reason == "eos" else [])
        assert s.length <= 40


def test_a_prompt_whose_candidates_all_finish_at_once_stops(tiny_policy, reward):
    everything_stops = Policy(tiny_policy.model, tiny_policy.tokenizer)
    everything_stops.stop_token_ids = frozenset(range(tiny_policy.model.config.vocab_size))
    [r] = run_prompts(PROMPTS[:1], "speculative-rejection", SpeculativeRejectionConfig(n=8, max_new_tokens=50),
                      everything_stops, reward)
    assert r.details["rounds"] == 0 and r.cost.tokens_generated == 8
    assert r.cost.lm_forward_calls == 1  # the prefill; a finished row's last token is never fed
    assert r.cost.rm_calls == 8


def test_keep_count_rounds_half_up_and_keeps_one():
    assert [keep_count(n, 0.5) for n in (1, 2, 3, 64)] == [1, 1, 2, 32]
    assert keep_count(10, 0.9) == 1 and keep_count(10, 0.0) == 10 and keep_count(5, 0.99) == 1


@pytest.mark.parametrize("options, message", [
    ({"alpha": 1.0}, "alpha must be in [0, 1), got 1.0"),
    ({"alpha": -0.1}, "alpha must be in [0, 1)"),
    ({"n": 0}, "n must be an integer >= 1, got 0"),
    ({"decision_tokens": (8, 4)}, "decision_tokens must be increasing"),
    ({"kv_budget_tokens": 0}, "kv_budget_tokens must be >= 1"),
])
def test_invalid_config_is_named(options, message):
    with pytest.raises(SecateursError) as err:
        SpeculativeRejectionConfig(**options)
    assert message in str(err.value)


def test_budget_too_small_for_one_step_is_named(tiny_policy, reward):
    with pytest.raises(SecateursError, match=r"too small for one decode step of n=8"):
        sr(tiny_policy, reward, n=8, kv_budget_tokens=20)
