"""Particle filtering, tree search and beam search on the tiny policy: resampling replayed
independently, forks share their parent's tokens and sample on with their own keys, the limits that
equal Best-of-N / Speculative Rejection, and the same answers alone as batched."""

import json
import math

import pytest

from cli_main import run_main
from secateurs.errors import SecateursError
from secateurs.methods import BestOfNConfig, SpeculativeRejectionConfig, get_method
from secateurs.methods.forks import assign_slots
from secateurs.methods.particle_filtering import weighted_vote
from secateurs.prompts import make_prompts
from secateurs.rewards import CallableReward, load_reward
from secateurs.runner import run_prompts
from secateurs.sampling import prompt_key, uniform

PROMPTS = make_prompts(["how do i make tea", "give me a good tip for sleep", "what is green"])


@pytest.fixture(scope="module")
def reward():
    return load_reward("sentiment+civility")


class Recorder:
    """A reward with a known ordering (count of 'e' and 'a' letters, a little per length) that remembers
    every (response, partial) it scored, in call order."""

    def __init__(self):
        self.calls = []

    def __call__(self, prompt, response):
        self.calls.append(response)
        return response.count("e") + 0.5 * response.count("a") - 0.01 * len(response)


def run(method, policy, reward, prompts=PROMPTS, **options):
    return run_prompts(prompts, method, get_method(method).config_class(**options), policy, reward)


def replay_systematic(scores, temperature, u):
    """Systematic resampling written out: picks at cumulative weights (u + i) / N."""
    top = max(scores)
    w = [math.exp((s - top) / temperature) for s in scores]
    total = sum(w)
    w = [x / total for x in w]
    picks, cumulative, j = [], w[0], 0
    for i in range(len(w)):
        position = (u + i) / len(w)
        while position >= cumulative and j < len(w) - 1:
            j += 1
            cumulative += w[j]
        picks.append(j)
    return w, picks


# --- particle filtering ------------------------------------------------------------------------

def test_resampling_is_systematic_on_the_softmax_weights(endless):
    recorder = Recorder()
    [result] = run("particle-filtering", endless, CallableReward(recorder, name="recorder"), prompts=PROMPTS[:1],
                   n=8, step="3", ess_threshold=1.0, weight_temperature=0.5, max_new_tokens=12)
    d = result.details
    key = prompt_key(0, PROMPTS[0].id)
    parents = iter(d["parents"])
    assert d["steps"] == 4 and any(d["resampled"])
    for step, (scores, ess, resampled) in enumerate(zip(d["scores"], d["ess"], d["resampled"])):
        w, picks = replay_systematic(scores, 0.5, uniform(key, step))
        assert ess == pytest.approx(1 / sum(x * x for x in w))
        assert resampled == (ess < 8 - 1e-9 and step < d["steps"] - 1)
        if resampled:
            got = next(parents)
            # each particle has as many children as systematic resampling picked it; a picked one keeps its slot
            assert sorted(got) == sorted(picks)
            assert all(got[p] == p for p in set(picks))
            # the known ordering: the best-scored particle is never dropped, and has the most children
            best = max(range(8), key=lambda i: scores[i])
            assert best in got and got.count(best) == max(got.count(p) for p in got)
    assert result.reward == max(d["particle_rewards"])


def test_copies_share_their_parents_tokens_and_sample_on_with_their_own_keys(endless):
    recorder = Recorder()
    [result] = run("particle-filtering", endless, CallableReward(recorder, name="recorder"), prompts=PROMPTS[:1],
                   n=6, step="4", ess_threshold=1.0, weight_temperature=1e-4, max_new_tokens=8)
    first, second = recorder.calls[:6], recorder.calls[6:]
    assert len(second) == 6
    best = max(first, key=lambda t: Recorder()(None, t))
    # a cold softmax puts all weight on the best particle: every particle is then a copy of it ...
    assert result.details["parents"][0] == [first.index(best)] * 6
    assert all(t.startswith(best + " ") for t in second)
    # ... and each copy draws its own continuation
    assert len({t[len(best):] for t in second}) == 6


def test_ess_threshold_zero_never_resamples_and_is_best_of_n(tiny_policy, reward):
    bon = run("best-of-n", tiny_policy, reward, n=6, max_new_tokens=20)
    pf = run("particle-filtering", tiny_policy, reward, n=6, step="5", ess_threshold=0.0, max_new_tokens=20)
    for b, p in zip(bon, pf):
        assert not any(p.details["resampled"]) and p.details["parents"] == []
        assert p.details["particle_rewards"] == b.details["candidate_rewards"]
        assert (p.response, p.reward, p.details["best_index"]) == (b.response, b.reward, b.details["best_index"])


def test_weighted_vote_pools_equal_responses(endless, reward):
    # 'a' twice outweighs 'b', the single best: exp(1) + exp(1.2) > exp(1.5)
    assert weighted_vote(["a", "b", "a"], [1.0, 1.5, 1.2], 1.0) == 0
    assert weighted_vote(["a", "b", "a"], [1.0, 2.0, 1.2], 1.0) == 1
    best, vote = (run("particle-filtering", endless, reward, prompts=PROMPTS[:1], n=4, step="3", max_new_tokens=6,
                      answer=answer)[0] for answer in ("best", "weighted"))
    assert best.details["particle_rewards"] == vote.details["particle_rewards"]  # same particles, same run
    assert vote.reward <= best.reward


# --- tree search -------------------------------------------------------------------------------

@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_tree_search_with_branching_one_is_speculative_rejection(tiny_policy, reward, alpha):
    options = dict(n=8, alpha=alpha, max_new_tokens=30, decision_tokens=(5, 10, 20))
    sr = run_prompts(PROMPTS, "speculative-rejection", SpeculativeRejectionConfig(**options), tiny_policy, reward)
    for tree_options in (dict(branching=1), dict(branching=3, depth=0)):
        ts = run("tree-search", tiny_policy, reward, **options, **tree_options)
        for a, b in zip(sr, ts):
            assert (b.response, b.reward) == (a.response, a.reward)
            assert b.details["decision_points"] == a.details["decision_points"]
            assert b.cost.tokens_generated == a.cost.tokens_generated
            assert not any(b.details["forks_per_round"])


def test_tree_search_refills_rejected_rows_with_forks_of_the_best(endless, reward):
    [r] = run("tree-search", endless, reward, prompts=PROMPTS[:1], n=8, alpha=0.5, branching=2,
              max_new_tokens=20, decision_tokens=(4, 8, 12))
    d = r.details
    # 8 rows, 4 kept, each kept one forked once into a rejected row: the device stays full
    assert d["survivors_per_round"] == [4, 4, 4] and d["forks_per_round"] == [4, 4, 4]
    assert r.cost.tokens_generated == 8 * 20
    sr = run_prompts(PROMPTS[:1], "speculative-rejection",
                     SpeculativeRejectionConfig(n=8, alpha=0.5, max_new_tokens=20, decision_tokens=(4, 8, 12)),
                     endless, reward)
    assert sr[0].cost.tokens_generated < r.cost.tokens_generated


# --- beam search -------------------------------------------------------------------------------

def test_beam_search_keeps_the_top_partial_responses_and_expands_each(endless):
    recorder = Recorder()
    [r] = run("beam-search", endless, CallableReward(recorder, name="recorder"), prompts=PROMPTS[:1], n=6,
              beam_width=3, step="3", max_new_tokens=9)
    first, second = recorder.calls[:6], recorder.calls[6:12]
    top = sorted(first, key=lambda t: -Recorder()(None, t))[:2]
    assert r.details["beams_per_step"] == [2, 2]
    # every row of step 2 continues one of the 2 beams, 3 rows each
    assert sorted(sum(t.startswith(b + " ") for t in second) for b in top) == [3, 3]
    assert r.reward == max(r.details["completed_rewards"])


# --- all three ---------------------------------------------------------------------------------

@pytest.mark.parametrize("method, options", [
    ("particle-filtering", dict(n=4, step="entropy", weight_temperature=0.1)),
    ("tree-search", dict(n=4, alpha=0.5, decision_tokens=(4, 8))),
    ("beam-search", dict(n=4, beam_width=2, step="3")),
])
def test_same_answers_alone_and_batched(tiny_policy, reward, method, options):
    alone = run(method, tiny_policy, reward, max_new_tokens=16, max_batch_rows=4, **options)
    batched = run(method, tiny_policy, reward, max_new_tokens=16, max_batch_rows=12, **options)
    assert [r.response for r in alone] == [r.response for r in batched]
    assert [r.cost.tokens_generated for r in alone] == [r.cost.tokens_generated for r in batched]


def test_assign_slots_keeps_picked_parents_in_place():
    assert assign_slots([0, 0, 2, 2, 2, 5]) == [0, 0, 2, 2, 2, 5]
    assert assign_slots([3, 3, 3, 0]) == [0, 3, 3, 3]
    assert assign_slots([1, 1, 1]) == [1, 1, 1]


@pytest.mark.parametrize("option, value, message", [
    ("--step", "often", "step must be 'entropy', a token count >= 1 or 'stop:TEXT', got 'often'"),
    ("--ess-threshold", "1.5", "--ess-threshold must be in [0, 1], got 1.5"),
    ("--answer", "mode", "answer must be one of best, weighted, got 'mode'"),
])
def test_bad_options_are_one_line(monkeypatch, capsys, tiny_policy_folder, tmp_path, option, value, message):
    code, err = run_main(monkeypatch, capsys, "run", "--method", "particle-filtering", "--policy",
                         tiny_policy_folder, "--reward", "sentiment", option, value, "--quiet",
                         "--out", tmp_path / "o.jsonl")
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and message in err


def test_cli_runs_particle_filtering(monkeypatch, capsys, tiny_policy_folder, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "how do i make tea"}) + "\n")
    out = tmp_path / "o.jsonl"
    code, err = run_main(monkeypatch, capsys, "run", "--method", "particle-filtering", "--policy",
                         tiny_policy_folder, "--reward", "sentiment", "--n", 4, "--step", "stop:the",
                         "--max-new-tokens", 8, "--quiet", "--prompts", prompts, "--out", out)
    assert code == 0, err
    [line] = [json.loads(x) for x in out.read_text().splitlines()]
    assert line["method"] == "particle-filtering" and line["config"]["step"] == "stop:the"


def test_python_names_bad_values():
    with pytest.raises(SecateursError, match="branching must be an integer >= 1, got 0"):
        get_method("tree-search").config_class(branching=0)
    with pytest.raises(SecateursError, match=r"beam_width \(5\) must be at most n \(4\)"):
        get_method("beam-search").config_class(n=4, beam_width=5)


# --- prm: rewards ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_prm_folder(tmp_path_factory):
    """A tiny random Llama token-classification PRM (2 classes) with the character tokenizer; '|' is
    its step separator."""
    import torch
    from conftest import char_tokenizer
    from transformers import LlamaConfig, LlamaForTokenClassification

    tok = char_tokenizer()
    torch.manual_seed(2)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, num_labels=2,
                         pad_token_id=0)
    folder = tmp_path_factory.mktemp("tiny_prm")
    LlamaForTokenClassification(config).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_prm_scores_every_step_in_one_forward(tiny_prm_folder):
    prompt = PROMPTS[0]
    steps = ["heat the water", "add a leaf", "wait 3 minutes"]
    response = "\n\n".join(steps)
    last = load_reward(f"prm:{tiny_prm_folder}?aggregate=last&separator=|")
    # the PRM is causal: the score at step k's separator is what the prefix of k steps gets as its last step
    per_step = [last.score([prompt], ["\n\n".join(steps[:k + 1])])[0] for k in range(3)]
    assert len(set(per_step)) == 3
    for aggregate, expected in [("min", min(per_step)), ("last", per_step[-1]),
                                ("product", per_step[0] * per_step[1] * per_step[2])]:
        prm = load_reward(f"prm:{tiny_prm_folder}?aggregate={aggregate}&separator=|")
        forwards = []
        prm.model.register_forward_hook(lambda *_: forwards.append(1))
        assert prm.score([prompt], [response])[0] == pytest.approx(expected, rel=1e-5)
        assert len(forwards) == 1
    # blank steps are no steps; the step texts are what is read, whatever surrounds them
    assert last.score([prompt], [response + "\n\n\n\n"])[0] == pytest.approx(per_step[-1], rel=1e-5)


def test_prm_guides_particle_filtering(tiny_policy, tiny_prm_folder):
    prm = load_reward(f"prm:{tiny_prm_folder}?separator=|&split= the ")
    [r] = run("particle-filtering", tiny_policy, prm, prompts=PROMPTS[:1], n=4, step="4", max_new_tokens=12)
    assert 0 < r.reward < 1 and r.details["steps"] == 3


@pytest.mark.parametrize("query, message", [
    ("?aggregate=mean&separator=|", "PRM aggregate must be one of min, last, product, got 'mean'"),
    ("?separator=<none>", "PRM separator '<none>' is not one token"),
    ("?sep=|", "unknown PRM option(s) ['sep']"),
    ("?separator=|&label=2", "PRM label must be a class index below 2, got '2'"),
])
def test_prm_bad_options_are_one_line(tiny_prm_folder, query, message):
    with pytest.raises(SecateursError) as err:
        load_reward(f"prm:{tiny_prm_folder}{query}")
    assert message in str(err.value) and "\n" not in str(err.value)
