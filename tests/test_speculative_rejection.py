"""Speculative Rejection on the tiny policy: faithful rounds, equal to Best-of-N at alpha 0, batched."""

import pytest

from secateurs.errors import SecateursError
from secateurs.methods import BestOfNConfig, SpeculativeRejectionConfig
from secateurs.methods.speculative_rejection import SpeculativeRejectionConfig, keep_count
from secateurs.policy import Policy
from secateurs.prompts import make_prompts
from secateurs.rewards import Reward, load_reward
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
    spec = sr(tiny_policy, reward, n=8, alpha=0.0, max_new_tokens=30, first_decision_tokens=16)
    for b, s in zip(bon, spec):
        assert s.response == b.response and s.reward == b.reward
        assert s.details["best_index"] == b.details["best_index"]
        assert s.details["rounds"] > 0 and s.details["survivors_per_round"] == [8] * s.details["rounds"]


def test_rounds_follow_the_kv_budget(tiny_policy, reward):
    [result] = sr(tiny_policy, reward, prompts=PROMPTS[:1], n=8, alpha=0.5, max_new_tokens=200,
                  kv_budget_tokens=8 * (len(tiny_policy.encode(PROMPTS[0])) + 10))
    d = result.details
    prompt_len = len(tiny_policy.encode(PROMPTS[0]))
    # first decision when 8 rows fill the budget, at 10 tokens; then the 4 survivors run until full again
    assert d["decision_points"][0] == 10
    assert len(d["decision_points"]) > 1
    live = d["survivors_per_round"][0]
    assert d["decision_points"][1] == max(d["kv_budget_tokens"] // live - prompt_len, 10 + 8)
    assert d["survivors_per_round"][0] == 4


def test_explicit_decision_schedule(tiny_policy, reward):
    results = sr(tiny_policy, reward, n=8, alpha=0.5, max_new_tokens=40, decision_tokens=(4, 9, 20))
    for r in results:
        points = r.details["decision_points"]
        assert points and points == [4, 9, 20][:len(points)]
        assert r.details["survivors_per_round"][0] == 4


def test_results_do_not_depend_on_prompts_in_flight(tiny_policy, reward):
    one = sr(tiny_policy, reward, n=6, alpha=0.5, max_new_tokens=30, max_batch_rows=6, first_decision_tokens=16)
    three = sr(tiny_policy, reward, n=6, alpha=0.5, max_new_tokens=30, max_batch_rows=20, first_decision_tokens=16)
    assert [r.response for r in one] == [r.response for r in three]
    assert [r.cost.tokens_generated for r in one] == [r.cost.tokens_generated for r in three]
    assert all(r.details["rounds"] > 0 for r in one)


def test_cheaper_than_best_of_n_and_counts_add_up(tiny_policy, reward):
    bon = run_prompts(PROMPTS, "best-of-n", BestOfNConfig(n=8, max_new_tokens=40), tiny_policy, reward)
    spec = sr(tiny_policy, reward, n=8, alpha=0.5, max_new_tokens=40)
    assert sum(r.cost.tokens_generated for r in spec) < sum(r.cost.tokens_generated for r in bon)
    for r in spec:
        assert r.details["rounds"] > 0
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


def test_keep_count_rounds_as_the_authors_and_keeps_one():
    # Python's round (halves to even), as the authors' code: 62 of 125 and 2 of 5 at alpha 0.5
    assert [keep_count(n, 0.5) for n in (1, 2, 3, 5, 7, 64, 125)] == [1, 1, 2, 2, 4, 32, 62]
    assert keep_count(10, 0.9) == 1 and keep_count(10, 0.0) == 10 and keep_count(5, 0.99) == 1
    assert keep_count(20, 0.9) == 2  # (1 - 0.9) * 20 is 1.9999999999999996 in floats


def test_a_tie_keeps_the_finished_candidates(tiny_policy, monkeypatch):
    # every response scores the same: the kept slots go to finished candidates first (the authors' order)
    stopping = Policy(tiny_policy.model, tiny_policy.tokenizer)
    stopping.stop_token_ids = frozenset(range(8, 20))
    decisions = record_decisions(monkeypatch)
    config = SpeculativeRejectionConfig(n=16, alpha=0.5, max_new_tokens=40, decision_tokens=(3, 8, 16))
    run_prompts(PROMPTS, "speculative-rejection", config, stopping, load_reward(lambda p, r: 1.0))
    contested = 0
    for pid, length, pool, kept in decisions:
        finished = {c[0] for c in pool if c[1]}
        want = keep_count(len(pool), 0.5)
        assert finished <= kept if len(finished) <= want else kept <= finished, (pid, length)
        contested += bool(finished) and len(pool) - len(finished) >= want  # live ones alone could fill it
    assert contested  # not vacuous: finished candidates would have lost the tie to live ones


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


# ---------------------------------------------------------------- survivors are chosen by score
# A reward that orders candidates by a known key of their text (a hash: distinct texts get distinct,
# unrelated scores), and an independent replay of each decision from the candidates' own tokens.

def keyed(prompt_text: str, response: str) -> float:
    import hashlib

    return int(hashlib.sha256(response.encode()).hexdigest()[:12], 16) / 16**12


def record_decisions(monkeypatch):
    """Spy on the method's decisions: for each, the pool (sample, finished, text) and who was kept."""
    from secateurs.methods.speculative_rejection import SpeculativeRejection
    from secateurs.sequence import RELEASED

    decisions = []
    original = SpeculativeRejection.on_idle

    def on_idle(self, stopped):
        before = {s.sample: s for s in self.finished}
        before.update((s.sample, s) for s in stopped if s.finished)
        live = [s for s in self.live if not s.finished]
        pool = [(s.sample, s.finished, self.ctx.text(s)) for s in list(before.values()) + live]
        original(self, stopped)
        if live:
            kept = {s.sample for s in self.finished} | {s.sample for s in live if s.status != RELEASED}
            decisions.append((self.ctx.prompt.id, self.length, pool, kept))

    monkeypatch.setattr(SpeculativeRejection, "on_idle", on_idle)
    return decisions


@pytest.mark.parametrize("alpha", [0.5, 0.7])
def test_survivors_are_the_top_scoring_candidates(tiny_policy, monkeypatch, alpha):
    stopping = Policy(tiny_policy.model, tiny_policy.tokenizer)  # some candidates end between decisions
    stopping.stop_token_ids = frozenset(range(8, 20))
    decisions = record_decisions(monkeypatch)
    results = run_prompts(PROMPTS, "speculative-rejection",
                          SpeculativeRejectionConfig(n=16, alpha=alpha, max_new_tokens=40, decision_tokens=(3, 8, 16)),
                          stopping, load_reward(keyed))
    assert len(decisions) >= len(PROMPTS)  # not vacuous: every prompt made at least one decision
    assert any(any(f for _, f, _ in pool) for *_, pool, _ in decisions)  # finished candidates competed
    for pid, length, pool, kept in decisions:
        ranked = sorted(pool, key=lambda c: -keyed("", c[2]))
        want = keep_count(len(pool), alpha)
        assert len(kept) == want, (pid, length)
        # exactly the top `want` by the key (the scores of kept and rejected do not interleave)
        top = {c[0] for c in ranked[:want]}
        cut = keyed("", ranked[want - 1][2])
        assert kept == top or all(keyed("", c[2]) == cut for c in pool if (c[0] in kept) != (c[0] in top))
    for r in results:  # the answer is the best-keyed finished candidate of the final pool
        assert r.reward == keyed("", r.response) == max(r.details["final_pool_rewards"].values())


def test_partial_responses_are_scored_on_their_text(tiny_policy):
    seen = []

    def reward(prompt_text, response):
        seen.append(response)
        return keyed(prompt_text, response)

    [r] = run_prompts(PROMPTS[:1], "speculative-rejection",
                      SpeculativeRejectionConfig(n=8, alpha=0.5, max_new_tokens=12, decision_tokens=(4,)),
                      tiny_policy, load_reward(reward))
    assert r.details["decision_points"] == [4]
    partial = seen[:8]  # the first RM call: the 8 candidates at the decision point, 4 tokens each
    # (special tokens are dropped from the text, so a few words fewer is fine; none may be empty text)
    assert all(1 <= len(t.split()) <= 4 for t in partial), partial
    assert r.response.startswith(next(t for t in partial if r.response.startswith(t)))


# ---------------------------------------------------------------- B0 and the budget

def test_b0_from_the_kv_budget_by_the_authors_rule(tiny_policy, reward):
    prompt_len = len(tiny_policy.encode(PROMPTS[0]))
    budget = 20 * (prompt_len + 8) + 5
    [r] = sr(tiny_policy, reward, prompts=PROMPTS[:1], alpha=0.5, max_new_tokens=100, kv_budget_tokens=budget)
    d = r.details
    assert d["b0"] == d["b0_rule"] == 20 and d["kv_budget_tokens"] == budget
    assert d["budget_source"] == "kv_budget_tokens"
    assert d["rounds"] > 0 and d["decision_points"][0] == budget // 20 - prompt_len == 8
    assert d["survivors_per_round"][0] == 10


def test_b0_capped_at_max_batch_rows_keeps_the_rules_decision_points(tiny_policy, reward):
    prompt_len = len(tiny_policy.encode(PROMPTS[0]))
    budget = 40 * (prompt_len + 30)  # the rule gives more than 16 rows
    [r] = sr(tiny_policy, reward, prompts=PROMPTS[:1], alpha=0.5, max_new_tokens=100, kv_budget_tokens=budget,
             max_batch_rows=16)
    d = r.details
    rule = budget // (prompt_len + 8)
    assert d["b0_rule"] == rule and d["b0"] == 16
    assert d["kv_budget_tokens"] == budget * 16 // rule and "capped at max_batch_rows" in d["budget_source"]
    assert d["decision_points"][0] == d["kv_budget_tokens"] // 16 - prompt_len == budget // rule - prompt_len


def test_default_run_without_n_rejects_on_a_cpu(tiny_policy, reward):
    from secateurs.methods.speculative_rejection import CPU_KV_BUDGET_TOKENS

    results = sr(tiny_policy, reward, max_new_tokens=60)
    for r in results:
        d = r.details
        assert d["b0_rule"] == min(CPU_KV_BUDGET_TOKENS // (len(tiny_policy.encode(next(p for p in PROMPTS if p.id == r.id))) + 8), 1000)
        assert d["b0"] == min(d["b0_rule"], 64) and d["budget_source"].startswith("CPU: B0 x (prompt")
        assert d["rounds"] > 0 and "no_decision" not in d
        # The first decision comes first_decision_tokens in, not where the rule's B0 alone would fill (8 tokens).
        assert d["decision_points"][0] == SpeculativeRejectionConfig().first_decision_tokens


def test_n_without_a_budget_still_decides(tiny_policy, reward):
    for r in sr(tiny_policy, reward, n=16, max_new_tokens=60):
        assert r.details["rounds"] > 0 and r.details["b0"] == 16
        assert r.details["decision_points"][0] == 32  # first_decision_tokens (default)


def test_a_budget_that_allows_no_decision_says_so(tiny_policy, reward, caplog):
    with caplog.at_level("WARNING"):
        results = sr(tiny_policy, reward, n=4, max_new_tokens=20, kv_budget_tokens=10_000)
    for r in results:
        assert r.details["rounds"] == 0
        assert "no decision point: a KV budget of 10000 tokens (kv_budget_tokens)" in r.details["no_decision"]
    warnings = [rec.getMessage() for rec in caplog.records if "no decision point" in rec.getMessage()]
    assert len(warnings) == 1 and "Best-of-4 at full cost" in warnings[0]  # one line per run


class EarlyEndsWin(Reward):
    """Partial responses score by length (so they win later decisions); a finished response scores 1
    if short, 0.5 if long: the early finishers are the best answers, but lose their slots."""

    name = "tests:early-ends-win"

    def _score(self, prompts, responses, partial):
        words = [len(r.split()) for r in responses]
        scores = [0.3 * w if partial else (1.0 if w <= 5 else 0.5) for w in words]
        return scores, words


def test_the_default_final_pool_keeps_finished_survivors_eligible(tiny_policy):
    # the default is the authors': a finished candidate that survived a decision stays eligible
    stopping = Policy(tiny_policy.model, tiny_policy.tokenizer)  # some candidates end early
    stopping.stop_token_ids = frozenset(range(8, 20))
    config = dict(n=16, alpha=0.5, max_new_tokens=40, decision_tokens=(3, 8, 16))
    ours = run_prompts(PROMPTS, "speculative-rejection", SpeculativeRejectionConfig(**config, final_pool="survivors"),
                       stopping, EarlyEndsWin())
    authors = run_prompts(PROMPTS, "speculative-rejection", SpeculativeRejectionConfig(**config), stopping,
                          EarlyEndsWin())
    assert all(a.details["final_pool"] == "authors" for a in authors)
    assert [r.cost.lm_tokens for r in ours] == [r.cost.lm_tokens for r in authors]  # same decoding
    assert sum(o.details["rounds"] >= 2 for o in ours) >= 3  # not vacuous: later decisions happened
    assert all(a.reward >= o.reward for a, o in zip(authors, ours))
    assert any(a.reward > o.reward for a, o in zip(authors, ours))  # it can matter
    for a, o in zip(authors, ours):
        assert set(o.details["final_pool_rewards"]) <= set(a.details["final_pool_rewards"])


def test_the_command_line_says_when_a_budget_allows_no_decision(tiny_policy_folder, tmp_path):
    import subprocess
    import sys

    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "a", "prompt": "how do i make tea"}\n{"id": "b", "prompt": "what is green"}\n')
    run = subprocess.run([sys.executable, "-m", "secateurs.cli", "run", "--method", "speculative-rejection",
                          "--policy", str(tiny_policy_folder), "--reward", "sentiment", "--n", "4",
                          "--kv-budget-tokens", "5000", "--max-new-tokens", "8", "--prompts", str(prompts),
                          "--out", str(tmp_path / "o.jsonl"), "--quiet"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stderr.splitlines() if "no decision point" in line]
    assert len(lines) == 1 and "KV budget of 5000 tokens (kv_budget_tokens)" in lines[0], run.stderr
    assert lines[0].startswith("warning: speculative-rejection")
