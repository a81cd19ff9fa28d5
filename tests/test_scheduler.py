"""The scheduler: continuous batching across prompts, submission while decoding, cancellation,
capability checks; answers never depend on what shares the batch."""

import asyncio

import pytest

from secateurs.aligner import Aligner
from secateurs.backends.base import STOP_RULE
from secateurs.backends.transformers import TransformersBackend
from secateurs.errors import SecateursError
from secateurs.methods import BestOfNConfig
from secateurs.methods.cards import CardsConfig
from secateurs.prompts import make_prompts
from secateurs.rewards import load_reward
from secateurs.runner import run_prompts
from secateurs.scheduler import SchedulerStats

PROMPTS = make_prompts(["how do i make tea", "give me a good tip for sleep", "what is green", "thank you",
                        "can you help me with my work", "what a calm night"])


@pytest.fixture(scope="module")
def reward():
    return load_reward("sentiment+civility")


class RecordingBackend(TransformersBackend):
    """The real backend, recording which prompts each decode step served."""

    def __init__(self, policy):
        super().__init__(policy)
        self.steps = []

    def step(self, seqs, score=None):
        self.steps.append([s.request.prompt.id for s in seqs])
        return super().step(seqs, score)


def test_rows_freed_by_one_prompt_go_to_the_next_while_others_decode(tiny_policy, reward, monkeypatch):
    backends = []

    def make(policy):
        backends.append(RecordingBackend(policy))
        return backends[-1]

    monkeypatch.setattr("secateurs.runner.TransformersBackend", make)
    stats = SchedulerStats()
    config = BestOfNConfig(n=3, max_new_tokens=12, max_batch_rows=7)
    results = run_prompts(PROMPTS, "best-of-n", config, tiny_policy, reward, stats=stats)
    steps = backends[0].steps
    assert max(len(s) for s in steps) <= 7  # never more rows than allowed
    # some prompt joined while another was mid-decode (no chunk boundary where the batch drains)
    joined_mid = [i for i in range(1, len(steps)) for p in set(steps[i]) - set(steps[i - 1])
                  if set(steps[i - 1]) & set(steps[i])]
    assert joined_mid
    assert stats.steps == len(steps) and stats.rows_decoded == sum(len(s) for s in steps)
    # the answers are those of each prompt run alone
    for p, r in zip(PROMPTS, results):
        [alone] = run_prompts([p], "best-of-n", BestOfNConfig(n=3, max_new_tokens=12), tiny_policy, reward)
        assert (r.response, r.details["candidate_rewards"]) == (alone.response, alone.details["candidate_rewards"])
        assert r.cost.tokens_generated == alone.cost.tokens_generated


def test_best_of_n_larger_than_the_batch_takes_rows_as_they_free(tiny_policy, reward):
    [wide] = run_prompts(PROMPTS[:1], "best-of-n", BestOfNConfig(n=9, max_new_tokens=10), tiny_policy, reward)
    [narrow] = run_prompts(PROMPTS[:1], "best-of-n", BestOfNConfig(n=9, max_new_tokens=10, max_batch_rows=2),
                           tiny_policy, reward)
    assert wide.details["candidate_rewards"] == narrow.details["candidate_rewards"]
    assert wide.cost.lm_tokens_prefilled == narrow.cost.lm_tokens_prefilled  # the prompt is prefilled once


def test_submit_while_decoding_joins_the_running_batch_and_cancel_frees_rows(tiny_policy, reward):
    aligner = Aligner(tiny_policy, reward, max_batch_rows=16)
    backend = aligner.backend

    async def scenario():
        long = asyncio.ensure_future(aligner.submit(PROMPTS[0].text, method="best-of-n", n=4, max_new_tokens=150,
                                                    prompt_id="long"))
        while aligner.scheduler.stats.steps < 3:  # the long request is decoding
            await asyncio.sleep(0.01)
        joined_at = aligner.scheduler.stats.steps
        short = await aligner.submit(PROMPTS[1].text, method="best-of-n", n=2, max_new_tokens=8, prompt_id="short")
        assert not long.done()  # the short one joined the running batch and finished first
        finished_at = aligner.scheduler.stats.steps
        assert finished_at - joined_at < 40
        long.cancel()
        with pytest.raises(asyncio.CancelledError):
            await long
        for _ in range(200):
            if not aligner.scheduler.has_work:
                break
            await asyncio.sleep(0.01)
        return short

    try:
        short = asyncio.run(scenario())
    finally:
        aligner.close()
    assert backend.live_rows == 0 and not aligner.scheduler.active  # the cancelled request's rows are free
    [alone] = run_prompts([short_prompt := make_prompts([{"id": "short", "prompt": PROMPTS[1].text}])[0]],
                          "best-of-n", BestOfNConfig(n=2, max_new_tokens=8), tiny_policy, reward)
    assert short_prompt.id == short.id
    assert short.response == alone.response and short.details == alone.details


def test_bad_options_fail_at_submission(tiny_policy, reward):
    aligner = Aligner(tiny_policy, reward)
    with pytest.raises(SecateursError, match="alpha must be in"):
        aligner.request("hi there", method="speculative-rejection", alpha=2.0)
    with pytest.raises(SecateursError, match="^entropy_threshold does not apply to method 'best-of-n'"):
        aligner.request("hi there", method="best-of-n", entropy_threshold=2.0)


def test_a_method_needing_what_the_backend_lacks_is_refused(tiny_policy, reward, monkeypatch):
    class NoStopRule(TransformersBackend):
        name = "no-stop-rule"
        capabilities = TransformersBackend.capabilities - {STOP_RULE}

    monkeypatch.setattr("secateurs.runner.TransformersBackend", NoStopRule)
    with pytest.raises(SecateursError, match="method 'cards' needs stop_rule, which the no-stop-rule backend"):
        run_prompts(PROMPTS[:1], "cards", CardsConfig(r_star=0.0, max_new_tokens=8), tiny_policy, reward)
    # a method that needs none of it still runs
    run_prompts(PROMPTS[:1], "best-of-n", BestOfNConfig(n=2, max_new_tokens=4), tiny_policy, reward)
