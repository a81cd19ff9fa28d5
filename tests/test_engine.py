"""The rollout engine on a tiny random Llama: KV-cache operations must match recomputing from scratch."""

import pytest
import torch

from secateurs.engine import RolloutBatch
from secateurs.meter import Meter
from secateurs.policy import Policy
from secateurs.prompts import make_prompt
from secateurs.sampling import SamplingParams, child_key

SAMPLING = SamplingParams(temperature=1.0, top_k=0)


def encode(policy, *texts):
    return [policy.encode(make_prompt(t, str(i))) for i, t in enumerate(texts)]


def scratch_logits(policy, batch):
    """Next-token logits of every row, recomputed from its token ids alone (no cache, no padding)."""
    with torch.no_grad():
        return torch.stack([policy.model(torch.tensor([t])).logits[0, -1] for t in batch.tokens])


def engine_logits(batch):
    with torch.no_grad():
        if batch.pending.any():
            batch._feed_pending(batch.pending.clone())
        return batch.next_logits.clone()


def assert_matches_scratch(policy, batch):
    torch.testing.assert_close(engine_logits(batch), scratch_logits(policy, batch), atol=1e-5, rtol=1e-4)


@pytest.fixture
def batch(tiny_policy):
    ids = encode(tiny_policy, "how do i make tea", "give me three good tips for sleep at night please", "hot")
    return RolloutBatch.prefill(tiny_policy, ids, [11, 22, 33], SAMPLING, max_new_tokens=60, stop_at_eos=False)


def test_prefill_of_ragged_prompts_matches_scratch(tiny_policy, batch):
    assert len(set(batch.prompt_lens)) == 3  # really ragged
    assert_matches_scratch(tiny_policy, batch)


def test_extend_keep_fork_rewind_compact_match_scratch(tiny_policy, batch):
    batch.extend(5)
    assert batch.response_lengths().tolist() == [5, 5, 5]
    assert_matches_scratch(tiny_policy, batch)
    batch.fork([2, 0, 3])
    assert batch.size == 5 and batch.groups == [0, 0, 2, 2, 2]
    batch.extend(4)
    assert_matches_scratch(tiny_policy, batch)
    batch.rewind([0, 3, 4], [7, 0, 5])
    assert batch.response_lengths().tolist() == [7, 9, 9, 0, 5]
    assert_matches_scratch(tiny_policy, batch)
    batch.keep([4, 0, 3])
    batch.extend(6)
    assert_matches_scratch(tiny_policy, batch)
    holes = batch.columns - int(batch.mask.sum(1).max())
    batch.compact()
    assert batch.columns == int(batch.mask.sum(1).max()) and holes > 0
    assert_matches_scratch(tiny_policy, batch)
    batch.extend(3)
    assert_matches_scratch(tiny_policy, batch)


def test_repeated_rewinds_stay_exact_and_bounded(tiny_policy, batch):
    for _ in range(12):
        batch.extend(6)
        batch.rewind(range(batch.size), [max(0, int(n) - 4) for n in batch.response_lengths()])
    assert_matches_scratch(tiny_policy, batch)
    # compaction keeps the cache from growing without bound under many rewinds
    assert batch.columns <= int(batch.mask.sum(1).max()) + max(32, int(batch.mask.sum(1).max())) + 6


def test_select_copies_rows_with_new_keys(tiny_policy, batch):
    chunk = batch.select([2, 2, 0], keys=[child_key(33, 0), child_key(33, 1), child_key(11, 0)])
    chunk.extend(8)
    assert chunk.tokens[0] != chunk.tokens[1]  # different keys, different samples
    assert batch.response_lengths().tolist() == [0, 0, 0]  # the source is untouched
    assert_matches_scratch(tiny_policy, chunk)


def test_samples_do_not_depend_on_batch_company(tiny_policy):
    a, b = encode(tiny_policy, "how do i make tea", "what is a good day")
    together = RolloutBatch.prefill(tiny_policy, [a, b], [5, 6], SAMPLING, 20)
    together.extend(20)
    alone = RolloutBatch.prefill(tiny_policy, [b], [6], SAMPLING, 20)
    alone.extend(20)
    assert together.tokens[1] == alone.tokens[0]


def test_stop_rule_segments_do_not_change_the_sample(tiny_policy):
    ids = encode(tiny_policy, "how do i make tea")
    whole = RolloutBatch.prefill(tiny_policy, ids, [9], SAMPLING, 40, stop_at_eos=False)
    whole.extend(12)
    cut = RolloutBatch.prefill(tiny_policy, ids, [9], SAMPLING, 40, stop_at_eos=False)
    seen = []

    def every_three(view):
        seen.append(view.entropy.clone())
        return view.segment_tokens >= 3

    for _ in range(4):
        assert cut.extend(12, stop_rule=every_three).tolist() == [3]
        assert not cut.finished[0] and not cut.pending[0]  # stopped rows wait, ready, with their logits
    assert cut.tokens == whole.tokens
    assert all(float(h) > 0 for h in seen)


def test_entropy_seen_by_stop_rule_is_full_vocabulary_nats(tiny_policy):
    ids = encode(tiny_policy, "how do i make tea")
    batch = RolloutBatch.prefill(tiny_policy, ids, [9], SAMPLING, 40)
    seen = []
    batch.extend(1, stop_rule=lambda v: (seen.append(v.entropy), torch.zeros(len(v.rows), dtype=torch.bool))[1])
    probs = scratch_logits(tiny_policy, RolloutBatch.prefill(tiny_policy, ids, [9], SAMPLING, 40))[0].softmax(-1)
    expected = -(probs * probs.log()).sum()
    torch.testing.assert_close(seen[0][0], expected, atol=1e-5, rtol=1e-5)
    assert expected <= torch.log(torch.tensor(float(probs.numel()))) + 1e-5


def test_eos_stops_a_row_and_finished_rows_are_never_extended(tiny_policy):
    ids = encode(tiny_policy, "how do i make tea")
    greedy = SamplingParams(temperature=0)
    probe = RolloutBatch.prefill(tiny_policy, ids, [1], greedy, 30)
    probe.extend(5)
    third = probe.response_ids(0)[2]
    stopping = Policy(tiny_policy.model, tiny_policy.tokenizer)
    stopping.stop_token_ids = frozenset({third})
    batch = RolloutBatch.prefill(stopping, ids * 2, [1, 2], greedy, 30)
    batch.extend(10)
    assert batch.finish_reasons == ["eos", "eos"]
    assert batch.response_ids(0) == probe.response_ids(0)[:3]
    before = [list(t) for t in batch.tokens]
    assert batch.extend(10).tolist() == [0, 0]
    assert batch.tokens == before


def test_max_new_tokens_finishes_rows_with_reason_length(tiny_policy, batch):
    batch.max_new_tokens = 7
    batch.extend(100)
    assert batch.response_lengths().tolist() == [7, 7, 7]
    assert batch.finish_reasons == ["length"] * 3


def test_meter_counts_prefill_once_and_every_decoded_token(tiny_policy):
    ids = encode(tiny_policy, "how do i make tea", "hot water")
    meter = Meter(2)
    batch = RolloutBatch.prefill(tiny_policy, ids, [1, 2], SAMPLING, 50, meter=meter, stop_at_eos=False)
    batch.fork(3)
    batch.extend(10)
    costs = meter.costs
    assert [c.lm_tokens_prefilled for c in costs] == [len(i) for i in ids]
    assert [c.tokens_generated for c in costs] == [30, 30]
    # the last sampled token of each row is never fed: 9 decode forwards, 27 tokens per prompt
    assert [c.lm_tokens_decoded for c in costs] == [27, 27]
    assert [c.lm_forward_calls for c in costs] == [10, 10]


def test_rewind_rejects_lengths_outside_the_response(tiny_policy, batch):
    batch.extend(3)
    with pytest.raises(ValueError, match="cannot rewind"):
        batch.rewind([0], [4])


def test_append_merges_batches_of_different_widths(tiny_policy, batch):
    batch.extend(9)
    newcomer = RolloutBatch.prefill(tiny_policy, encode(tiny_policy, "calm night", "a b c d e f g h i j k l m n o"),
                                    [44, 55], SAMPLING, 60, stop_at_eos=False)
    batch.append(newcomer)
    assert batch.size == 5 and batch.response_lengths().tolist() == [9, 9, 9, 0, 0]
    assert_matches_scratch(tiny_policy, batch)
    batch.extend(4)
    assert_matches_scratch(tiny_policy, batch)


def test_force_feeds_given_tokens_exactly(tiny_policy, batch):
    batch.extend(4)
    saved = [batch.response_ids(r) for r in range(batch.size)]
    batch.extend(5)
    batch.rewind([0, 1], [2, 0])
    batch.force(0, saved[1][:3])  # ragged: 3 tokens for row 0, 4 for row 1, none for row 2
    batch.force(1, saved[0][:4])
    assert batch.response_ids(0) == saved[0][:2] + saved[1][:3]
    assert batch.response_ids(1) == saved[0][:4]
    assert batch.response_lengths().tolist() == [5, 4, 9]
    assert_matches_scratch(tiny_policy, batch)
    batch.extend(3)
    assert_matches_scratch(tiny_policy, batch)


def test_copy_rows_copies_state_but_keeps_keys(tiny_policy, batch):
    batch.extend(5)
    keys = batch.keys.clone()
    batch.copy_rows([1, 2], [0, 0])
    assert batch.tokens[1] == batch.tokens[2] == batch.tokens[0]
    assert torch.equal(batch.keys, keys)
    assert_matches_scratch(tiny_policy, batch)
    batch.extend(6)
    assert batch.tokens[1] != batch.tokens[2]  # own keys: different continuations
    assert_matches_scratch(tiny_policy, batch)
