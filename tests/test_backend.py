"""The transformers backend on a tiny random Llama: KV-cache operations must match recomputing from scratch."""

import warnings

import pytest
import torch

from secateurs.backends.transformers import TransformersBackend
from secateurs.errors import SecateursError
from secateurs.meter import Meter
from secateurs.methods.best_of_n import BestOfNConfig
from secateurs.policy import Policy
from secateurs.prompts import make_prompt, make_prompts
from secateurs.rewards import CallableReward
from secateurs.runner import run_prompts
from secateurs.sampling import SamplingParams, child_key, prompt_key
from secateurs.scheduler import Request
from secateurs.sequence import RELEASED, RUNNING, STOPPED, Sequence

SAMPLING = SamplingParams(temperature=1.0, top_k=0)
GREEDY = SamplingParams(temperature=0)
TEXTS = ("how do i make tea", "give me three good tips for sleep at night please", "hot")


def requests(policy, *texts, first=0):
    out = []
    for i, text in enumerate(texts, start=first):
        prompt = make_prompt(text, str(i))
        out.append(Request(prompt, policy.encode(prompt), "best-of-n", None, 0, prompt_key(0, prompt.id)))
    return out


def seq(request, key, sample=0, params=SAMPLING, max_new_tokens=60, **kwargs):
    return Sequence(request, sample, key, params, max_new_tokens, **kwargs)


def without_eos(policy):
    quiet = Policy(policy.model, policy.tokenizer)
    quiet.stop_token_ids = frozenset()
    return quiet


def decode(backend, seqs, k):
    """Up to k more tokens for each unfinished sequence (fewer on EOS / max_new_tokens); returns the steps taken."""
    running = [s for s in seqs if not s.finished]
    for s in running:
        s.status, s.until = RUNNING, s.length + k
    steps = 0
    while running:
        stopped = {id(s) for s in backend.step(running)}
        assert all(s.status == STOPPED for s in running if id(s) in stopped)
        running = [s for s in running if id(s) not in stopped]
        steps += 1
        assert steps <= k
    return steps


def scratch_logits(policy, seqs):
    """Next-token logits of each sequence, recomputed from its token ids alone (no cache, no padding)."""
    with torch.no_grad():
        return torch.stack([policy.model(torch.tensor([s.prompt_ids + s.tokens])).logits[0, -1] for s in seqs])


def backend_logits(backend, seqs):
    """The backend's next-token logits of each sequence, its pending tokens fed first (the one helper that
    reaches into the backend's rows)."""
    with torch.no_grad():
        for s in seqs:
            backend._row(s)  # started ones join the cache
        alive = torch.tensor([r is not None for r in backend.rows], dtype=torch.bool)
        feed = backend.pending & alive
        if feed.any():
            backend._feed(feed)
        return torch.stack([backend.next_logits[backend.row_of[s]] for s in seqs]).clone()


def scratch_logprobs(policy, s):
    """Log-prob of each response token under the policy given all before it, from one uncached forward."""
    with torch.no_grad():
        logits = policy.model(torch.tensor([s.prompt_ids + s.tokens])).logits[0].float()
    n = len(s.prompt_ids)
    logp = torch.log_softmax(logits[n - 1:-1], dim=-1)
    return logp.gather(-1, torch.tensor(s.tokens)[:, None]).squeeze(-1)


def assert_matches_scratch(backend, seqs):
    """Next-token logits and the log-probs of every sampled token (forced ones, NaN, left out) as from scratch."""
    torch.testing.assert_close(backend_logits(backend, seqs), scratch_logits(backend.policy, seqs),
                               atol=1e-5, rtol=1e-4)
    for s in seqs:
        got = torch.tensor(s.logprobs, dtype=torch.float32)
        sampled = ~got.isnan()
        torch.testing.assert_close(got[sampled], scratch_logprobs(backend.policy, s)[sampled], atol=1e-4, rtol=1e-4)


def lengths(seqs):
    return [s.length for s in seqs]


@pytest.fixture
def quiet(tiny_policy):
    return without_eos(tiny_policy)


@pytest.fixture
def three(quiet):
    """A backend decoding one sample of each of three ragged prompts (EOS ignored)."""
    backend = TransformersBackend(quiet)
    reqs = requests(quiet, *TEXTS)
    backend.prefill(reqs)
    seqs = [seq(r, k) for r, k in zip(reqs, [11, 22, 33])]
    backend.start(seqs)
    return backend, reqs, seqs


def test_prefill_of_ragged_prompts_matches_scratch(three):
    backend, reqs, seqs = three
    assert len({len(r.prompt_ids) for r in reqs}) == 3  # really ragged
    assert all(s.status == RUNNING and s.length == 0 for s in seqs) and backend.live_rows == 3
    assert_matches_scratch(backend, seqs)


def test_extend_fork_rewind_keep_compact_match_scratch(three):
    backend, (r0, r1, r2), (a0, b0, c0) = three
    decode(backend, [a0, b0, c0], 5)
    assert lengths([a0, b0, c0]) == [5, 5, 5]
    assert_matches_scratch(backend, [a0, b0, c0])
    # fork: prompt 0 keeps 2 samples, prompt 1 none, prompt 2 three
    a1, c1, c2 = seq(r0, child_key(11, 1), 1), seq(r2, child_key(33, 1), 1), seq(r2, child_key(33, 2), 2)
    backend.start([a1, c1, c2])
    for dst, src in ((a1, a0), (c1, c0), (c2, c0)):
        backend.copy(dst, src)
    backend.release([b0])
    live = [a0, a1, c0, c1, c2]
    assert lengths(live) == [5] * 5 and b0.status == RELEASED and b0.length == 5
    decode(backend, live, 4)
    assert a0.tokens[5:] != a1.tokens[5:] and c1.tokens[5:] != c2.tokens[5:]
    assert_matches_scratch(backend, live)
    for s, n in ((a0, 7), (c1, 0), (c2, 5)):
        backend.truncate(s, n)
    assert lengths(live) == [7, 9, 9, 0, 5]
    assert_matches_scratch(backend, live)
    backend.release([a1, c0])  # keep c2, a0, c1
    live = [c2, a0, c1]
    decode(backend, live, 6)
    assert_matches_scratch(backend, live)
    holes = backend.kv.columns - int(backend.kv.mask.sum(1).max())
    backend.kv.compact()
    assert backend.kv.columns == int(backend.kv.mask.sum(1).max()) and holes > 0
    assert_matches_scratch(backend, live)
    decode(backend, live, 3)
    assert lengths(live) == [14, 16, 9]
    assert_matches_scratch(backend, live)


def test_repeated_rewinds_stay_exact_and_bounded(three):
    backend, _, seqs = three
    dropped = None
    for i in range(24):
        decode(backend, seqs, 6)
        dropped = dropped or [list(s.tokens) for s in seqs]
        for j, s in enumerate(seqs):
            if j != i % 3:  # one row keeps its tail each round, so rewinds leave holes, not just a shorter cache
                backend.truncate(s, max(0, s.length - 6))
    assert lengths(seqs) == [48, 48, 48]
    # the draw counter runs on across rewinds: what replaces a dropped segment is a fresh draw
    assert [s.draws for s in seqs] == [144, 144, 144]
    assert seqs[1].tokens[:6] != dropped[1] and seqs[2].tokens[:6] != dropped[2]
    assert_matches_scratch(backend, seqs)
    # compaction keeps the cache from growing without bound under many rewinds
    longest = int(backend.kv.mask.sum(1).max())
    assert backend.kv.columns <= longest + max(32, longest) + 6


def test_new_samples_fork_from_the_prompt_cache_with_their_own_keys(three):
    backend, (r0, _, r2), sources = three
    chunk = [seq(r2, child_key(33, 0), 1), seq(r2, child_key(33, 1), 2), seq(r0, child_key(11, 0), 1)]
    backend.start(chunk)
    decode(backend, chunk, 8)
    assert chunk[0].tokens != chunk[1].tokens  # different keys, different samples
    assert lengths(sources) == [0, 0, 0]  # the others sat out
    assert_matches_scratch(backend, chunk + sources)


def test_samples_do_not_depend_on_batch_company(tiny_policy):
    a, b = requests(tiny_policy, "how do i make tea", "what is a good day")
    together = TransformersBackend(tiny_policy)
    together.prefill([a, b])
    pair = [seq(a, 5, max_new_tokens=20), seq(b, 6, max_new_tokens=20)]
    together.start(pair)
    decode(together, pair, 20)
    alone = TransformersBackend(tiny_policy)
    alone.prefill([b])
    single = seq(b, 6, max_new_tokens=20)
    alone.start([single])
    decode(alone, [single], 20)
    assert pair[1].tokens == single.tokens and pair[1].finish_reason == single.finish_reason
    assert len(single.tokens) > 3
    torch.testing.assert_close(torch.tensor(pair[1].logprobs), torch.tensor(single.logprobs), atol=1e-5, rtol=1e-4)


def test_stop_rule_segments_do_not_change_the_sample(quiet):
    [r] = requests(quiet, "how do i make tea")
    whole_backend, cut_backend = TransformersBackend(quiet), TransformersBackend(quiet)
    whole_backend.prefill([r])
    whole = seq(r, 9, max_new_tokens=40)
    whole_backend.start([whole])
    decode(whole_backend, [whole], 12)
    cut_backend.prefill([r])
    seen = []

    def every_three(view):
        seen.append((view.entropy.clone(), view.logits.clone(), [list(s.tokens) for s in view.seqs]))
        return [s.length - s.tags["segment_start"] >= 3 for s in view.seqs]

    cut = seq(r, 9, max_new_tokens=40, stop_rule=every_three)
    cut_backend.start([cut])
    for i in range(4):
        cut.status, cut.tags["segment_start"] = RUNNING, cut.length
        stopped, steps = [], 0
        while not stopped:
            stopped = cut_backend.step([cut])
            steps += 1
        assert stopped == [cut] and steps == 4 and cut.length == 3 * (i + 1)
        assert cut.status == STOPPED and not cut.finished
        # it stopped before a token, with the exact logits of its whole prefix
        assert seen[-1][2][0] == cut.tokens
        torch.testing.assert_close(seen[-1][1], scratch_logits(quiet, [cut]), atol=1e-5, rtol=1e-4)
    assert cut.tokens == whole.tokens
    torch.testing.assert_close(torch.tensor(cut.logprobs), torch.tensor(whole.logprobs), atol=1e-5, rtol=1e-4)
    assert all(float(h) > 0 for h, _, _ in seen)


def test_entropy_seen_by_stop_rule_is_full_vocabulary_nats(tiny_policy):
    [r] = requests(tiny_policy, "how do i make tea")
    backend = TransformersBackend(tiny_policy)
    backend.prefill([r])
    seen = []
    # filtered, tempered sampling must not change what the rule sees: temperature-1, full-vocabulary entropy
    s = seq(r, 9, params=SamplingParams(temperature=0.5, top_k=5), max_new_tokens=40,
            stop_rule=lambda v: (seen.append(v.entropy), torch.zeros(len(v.seqs), dtype=torch.bool))[1])
    backend.start([s])
    backend.step([s])
    probs = scratch_logits(tiny_policy, [seq(r, 9)])[0].softmax(-1)
    expected = -(probs * probs.log()).sum()
    torch.testing.assert_close(seen[0][0], expected, atol=1e-5, rtol=1e-5)
    assert expected <= torch.log(torch.tensor(float(probs.numel()))) + 1e-5
    assert s.length == 1


def test_eos_stops_a_sequence_and_finished_ones_are_never_extended(tiny_policy, quiet):
    [r] = requests(tiny_policy, "how do i make tea")
    probe_backend = TransformersBackend(quiet)
    probe_backend.prefill([r])
    probe = seq(r, 1, params=GREEDY, max_new_tokens=30)
    probe_backend.start([probe])
    decode(probe_backend, [probe], 5)
    third = probe.tokens[2]
    assert third not in probe.tokens[:2]
    stopping = Policy(tiny_policy.model, tiny_policy.tokenizer)
    stopping.stop_token_ids = frozenset({third})
    backend = TransformersBackend(stopping)
    [other] = requests(stopping, "a b c d e f g h i j k l m n o", first=1)
    backend.prefill([r, other])
    greedy = [seq(r, 1, 0, GREEDY, 30), seq(r, 2, 1, GREEDY, 30)]
    bystander = seq(other, 7, max_new_tokens=30)  # never draws `third`
    backend.start(greedy + [bystander])
    running = greedy + [bystander]
    for s in running:
        s.status = RUNNING
    for step in range(3):
        stopped = backend.step(running)
        assert stopped == (greedy if step == 2 else [])
    assert [s.finish_reason for s in greedy] == ["eos", "eos"] and all(s.status == STOPPED for s in greedy)
    assert greedy[0].tokens == greedy[1].tokens == probe.tokens[:3]
    before = [list(s.tokens) for s in greedy]
    decode(backend, [bystander] + greedy, 10)  # only the bystander decodes; the finished sit out
    assert [s.tokens for s in greedy] == before and bystander.length == 13 and third not in bystander.tokens
    with pytest.raises(ValueError, match="finished"):
        backend.force(greedy[0], [5])
    # their caches survived the steps they sat out: rewound, they redo the same greedy token and stop again
    backend.truncate(greedy[0], 2)
    assert greedy[0].finish_reason is None
    assert decode(backend, [greedy[0]], 10) == 1
    assert greedy[0].tokens == before[0] and greedy[0].finish_reason == "eos"
    assert_matches_scratch(backend, greedy + [bystander])


def test_max_new_tokens_finishes_sequences_with_reason_length(quiet):
    backend = TransformersBackend(quiet)
    reqs = requests(quiet, *TEXTS)
    backend.prefill(reqs)
    seqs = [seq(r, k, max_new_tokens=7) for r, k in zip(reqs, [11, 22, 33])]
    backend.start(seqs)
    for s in seqs:
        s.status = RUNNING  # until None: decode to max_new_tokens
    for step in range(7):
        stopped = backend.step(seqs)
        assert stopped == (seqs if step == 6 else [])
    assert lengths(seqs) == [7, 7, 7]
    assert [s.finish_reason for s in seqs] == ["length"] * 3
    backend.truncate(seqs[0], 4)
    backend.force(seqs[0], [9, 10, 11], logprobs=[-1.0, -2.0, -3.0])  # forcing up to the limit finishes it too
    assert seqs[0].finish_reason == "length" and seqs[0].logprobs[4:] == [-1.0, -2.0, -3.0]
    backend.truncate(seqs[1], 6)
    with pytest.raises(ValueError, match="exceeds"):
        backend.force(seqs[1], [9, 10])


def test_meter_counts_prefill_once_and_every_decoded_token(quiet):
    reqs = requests(quiet, "how do i make tea", "hot water")
    meter = Meter()
    for r in reqs:
        meter.open(r)
    backend = TransformersBackend(quiet, meter)
    backend.prefill(reqs)
    seqs = [seq(r, child_key(r.key, j), j) for r in reqs for j in range(3)]
    backend.start(seqs)
    decode(backend, seqs, 10)
    costs = [meter.costs[r] for r in reqs]
    assert [c.lm_tokens_prefilled for c in costs] == [len(r.prompt_ids) for r in reqs]
    assert [c.tokens_generated for c in costs] == [30, 30]
    # the last sampled token of each sequence is never fed: 9 decode forwards, 27 tokens per prompt
    assert [c.lm_tokens_decoded for c in costs] == [27, 27]
    assert [c.lm_forward_calls for c in costs] == [10, 10]
    # a rewind recomputes the new last token: one more token and forward for that prompt only
    backend.truncate(seqs[0], 8)
    decode(backend, [seqs[0]], 1)
    assert [c.lm_tokens_decoded for c in costs] == [28, 27]
    assert [c.tokens_generated for c in costs] == [31, 30]
    assert [c.lm_forward_calls for c in costs] == [11, 10]
    # forced tokens are fed all at once: 3 forced + 1 sampled-but-unfed tokens in one forward
    backend.force(seqs[3], [9, 10, 11])
    decode(backend, [seqs[3]], 1)
    assert [c.lm_tokens_decoded for c in costs] == [28, 31]
    assert [c.lm_forward_calls for c in costs] == [11, 11]
    assert [c.lm_tokens_prefilled for c in costs] == [len(r.prompt_ids) for r in reqs]
    assert all(c.lm_seconds > 0 for c in costs)


def test_rewind_rejects_lengths_outside_the_response(three):
    backend, _, seqs = three
    decode(backend, seqs, 3)
    before = list(seqs[0].tokens)
    for bad in (4, -1):
        with pytest.raises(ValueError, match="cannot rewind"):
            backend.truncate(seqs[0], bad)
    assert seqs[0].tokens == before
    backend.truncate(seqs[0], 3)  # the whole response: a no-op
    assert seqs[0].tokens == before
    assert_matches_scratch(backend, seqs)


def test_start_appends_sequences_of_different_widths_while_others_decode(quiet, three):
    backend, _, seqs = three
    decode(backend, seqs, 9)
    newcomers = requests(quiet, "calm night", "a b c d e f g h i j k l m n o p q r s t u v w x y z", first=3)
    backend.prefill(newcomers)
    fresh = [seq(r, k) for r, k in zip(newcomers, [44, 55])]
    backend.start(fresh)
    everyone = seqs + fresh
    assert lengths(everyone) == [9, 9, 9, 0, 0]
    assert_matches_scratch(backend, everyone)
    decode(backend, everyone, 4)
    assert lengths(everyone) == [13, 13, 13, 4, 4]
    assert_matches_scratch(backend, everyone)
    # a prompt wider than the whole decoding cache joins it (the cache is left-padded this time)
    [wide] = requests(quiet, " ".join(["tea"] * 60), first=5)
    backend.prefill([wide])
    late = seq(wide, 66)
    backend.start([late])
    decode(backend, everyone + [late], 2)
    assert_matches_scratch(backend, everyone + [late])


def test_force_feeds_given_tokens_exactly(three):
    backend, _, seqs = three
    a, b, c = seqs
    decode(backend, seqs, 4)
    saved = [list(s.tokens) for s in seqs]
    decode(backend, seqs, 5)
    backend.truncate(a, 2)
    backend.truncate(b, 0)
    backend.force(a, saved[1][:3])  # ragged: 3 tokens after a rewind for a, 4 for b, none for c
    backend.force(b, saved[0][:4])
    assert a.tokens == saved[0][:2] + saved[1][:3]
    assert b.tokens == saved[0][:4]
    assert lengths(seqs) == [5, 4, 9] and all(x != x for x in a.logprobs[2:] + b.logprobs)
    assert_matches_scratch(backend, seqs)
    decode(backend, seqs, 3)
    assert_matches_scratch(backend, seqs)
    # forced tokens fed by a step itself (not by the helper), several rows ragged at once
    backend.force(a, saved[2][:2])
    backend.force(c, saved[1][:3])
    decode(backend, seqs, 1)
    assert_matches_scratch(backend, seqs)


def test_copy_copies_state_but_keeps_keys(quiet, three):
    backend, (r0, _, _), others = three
    s0 = others[0]
    s1, s2 = seq(r0, child_key(11, 1), 1), seq(r0, child_key(11, 2), 2)
    backend.start([s1, s2])
    decode(backend, [s0, s1, s2] + others[1:], 5)
    decode(backend, [s1], 3)  # the destination is longer than the source
    keys = [s.key for s in (s0, s1, s2)]
    backend.copy(s1, s0)
    backend.copy(s2, s0)
    assert s1.tokens == s2.tokens == s0.tokens and s1.logprobs == s0.logprobs
    assert [s.key for s in (s0, s1, s2)] == keys
    assert_matches_scratch(backend, [s0, s1, s2] + others[1:])
    decode(backend, [s2], 2)
    backend_logits(backend, [s2])  # s2 moves on and is fed: both it and s0 are ready, in different states
    backend.copy(s2, s0)  # so the next-token logits must come along
    assert_matches_scratch(backend, [s0, s1, s2] + others[1:])
    decode(backend, [s0, s1, s2], 6)
    assert s1.tokens != s2.tokens  # own keys: different continuations
    assert_matches_scratch(backend, [s0, s1, s2] + others[1:])
    # a copy made while the source's last token is still pending, into a sequence not yet in the cache
    decode(backend, [s0], 1)
    s3 = seq(r0, child_key(11, 3), 3)
    backend.start([s3])
    backend.copy(s3, s0)
    decode(backend, [s0, s3], 2)  # s3's first token is drawn from s0's prefix (pending state copied)
    assert s3.tokens[:-2] == s0.tokens[:-2] and s3.tokens[-2:] != s0.tokens[-2:]
    assert_matches_scratch(backend, [s0, s3] + others[1:])


def test_released_rows_are_dropped_at_refresh_and_new_ones_take_their_place(quiet, three):
    backend, reqs, seqs = three
    decode(backend, seqs, 5)
    backend.release([seqs[0], seqs[2]])
    assert seqs[0].status == RELEASED and seqs[0].length == 5  # its tokens stay readable
    fresh = [seq(reqs[0], child_key(11, 5), 5), seq(reqs[2], child_key(33, 5), 5)]
    backend.start(fresh)
    queued = seq(reqs[1], child_key(22, 5), 5)
    backend.start([queued])
    backend.release([queued])  # released before it ever got a row
    backend._refresh(force=True)
    live = [seqs[1]] + fresh
    assert backend.rows == live and backend.kv.rows == 3 and backend.live_rows == 3
    assert_matches_scratch(backend, live)
    decode(backend, live, 4)
    assert lengths(live) == [9, 4, 4]
    assert_matches_scratch(backend, live)
    with pytest.raises(SecateursError, match="no KV cache"):
        backend.truncate(seqs[0], 2)


def test_released_prompts_are_pruned_and_the_rest_stay_exact(quiet, three):
    backend, reqs, seqs = three
    decode(backend, seqs, 3)
    backend.release(seqs[:2])
    backend.release_prompt(reqs[0])
    backend.release_prompt(reqs[1])
    with pytest.raises(SecateursError, match="not prefilled"):
        backend.start([seq(reqs[0], 1, 1)])
    newer = requests(quiet, "calm night", first=3)
    backend.prefill(newer)  # prunes the released prompts' rows first
    assert backend.prompt_rows == [reqs[2]] + newer and backend.prompt_kv.rows == 2
    fresh = [seq(reqs[2], child_key(33, 1), 1), seq(newer[0], 77)]
    backend.start(fresh)
    live = [seqs[2]] + fresh
    assert_matches_scratch(backend, live)
    decode(backend, live, 3)
    assert_matches_scratch(backend, live)


def test_stop_rules_and_sampling_params_differ_per_sequence_in_one_step(quiet):
    calls = []

    def stop_at(n):
        def rule(view):
            calls.append((rule, [id(s) for s in view.seqs], [list(s.prompt_ids + s.tokens) for s in view.seqs],
                          view.logits.clone()))
            return [s.length >= n for s in view.seqs]
        return rule

    short, long = stop_at(2), stop_at(4)
    specs = [  # (prompt, key, params, rule)
        (0, 11, SAMPLING, short),
        (1, 22, SamplingParams(temperature=0.7, top_k=5), long),
        (2, 33, GREEDY, None),
        (1, 44, SAMPLING, short),
        (0, 55, SamplingParams(temperature=0.7, top_k=5), None),
    ]

    def run(indices):
        backend = TransformersBackend(quiet)
        reqs = requests(quiet, *TEXTS)
        backend.prefill(reqs)
        seqs = [seq(reqs[p], k, params=params, stop_rule=rule, until=6) for p, k, params, rule in
                (specs[i] for i in indices)]
        backend.start(seqs)
        running, stopped_at = list(seqs), {}
        for step in range(10):
            if not running:
                break
            for s in backend.step(running):
                stopped_at[seqs.index(s)] = step
            running = [s for s in running if s.status == RUNNING]
        return [(s.tokens, s.logprobs, stopped_at[i]) for i, s in enumerate(seqs)], seqs

    together, seqs = run(range(len(specs)))
    # in the first step each rule saw exactly its own sequences, in order, and always their own logits
    assert [c[:2] for c in calls[:2]] == [(short, [id(seqs[0]), id(seqs[3])]), (long, [id(seqs[1])])]
    with torch.no_grad():
        for _, _, ids, logits in calls:
            want = torch.stack([quiet.model(torch.tensor([i])).logits[0, -1] for i in ids])
            torch.testing.assert_close(logits, want, atol=1e-5, rtol=1e-4)
    assert [s.length for s in seqs] == [2, 4, 6, 2, 6]
    for i in range(len(specs)):
        [(tokens, logprobs, at)] = run([i])[0]
        assert together[i][0] == tokens and together[i][2] == at
        torch.testing.assert_close(torch.tensor(together[i][1]), torch.tensor(logprobs), atol=1e-5, rtol=1e-4)


def test_decoding_uses_the_models_own_cache_keyword_without_deprecation_warnings(tiny_policy):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_prompts(make_prompts(["how do i make tea"]), "best-of-n", BestOfNConfig(n=2, max_new_tokens=6),
                    tiny_policy, CallableReward(lambda p, r: float(len(r)), name="length"))
    assert not [w for w in caught if "past_key_values" in str(w.message)]
