"""--shard I/N slices and `merge`: slices cover every prompt once; merged slices equal one run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from secateurs.errors import SecateursError
from secateurs.merge import merge_results
from secateurs.methods import get_method
from secateurs.prompts import make_prompts
from secateurs.rewards import load_reward
from secateurs.runner import run_prompts
from secateurs.shard import parse_shard, select_shard

TEXTS = ["how do i make tea", "give me a good tip for sleep", "what is green", "thank you",
         "can you help me with my work", "is it hot water", "a calm night"]
MEASURED = ("seconds", "lm_seconds", "rm_seconds", "other_seconds", "peak_memory_bytes",
            "lm_positions_prefilled", "lm_positions_decoded")  # positions: padding depends on the batch


def comparable(line: str) -> dict:
    record = json.loads(line)
    record["cost"] = {k: v for k, v in record["cost"].items() if k not in MEASURED}
    return record


def run(policy, prompts, out: Path, seed: int = 0) -> None:
    config = get_method("best-of-n").config_class(n=2, max_new_tokens=6)
    run_prompts(prompts, "best-of-n", config, policy, load_reward("sentiment+civility"), seed=seed, out=out)


@pytest.mark.parametrize("count", [1, 2, 3, 7, 10])
def test_shards_cover_every_prompt_exactly_once(count):
    prompts = make_prompts(TEXTS)
    shards = [select_shard(prompts, f"{i}/{count}") for i in range(count)]
    ids = [p.id for shard in shards for p in shard]
    assert sorted(ids, key=int) == [p.id for p in prompts]
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert select_shard(prompts, (1, count) if count > 1 else (0, 1)) == shards[1 if count > 1 else 0]
    assert select_shard(prompts, f"0/{count}") == shards[0]  # deterministic


@pytest.mark.parametrize("spec", ["3/3", "-1/2", "a/b", "1", "0/0", "1/2/3", ""])
def test_bad_shard_specs_are_one_clear_line(spec):
    with pytest.raises(SecateursError, match="shard") as e:
        parse_shard(spec)
    assert "\n" not in str(e.value)


@pytest.fixture(scope="module")
def shard_run(tiny_policy, tmp_path_factory):
    """The prompts run whole, and in three slices."""
    folder = tmp_path_factory.mktemp("shards")
    prompts = make_prompts(TEXTS)
    run(tiny_policy, prompts, folder / "whole.jsonl")
    slices = []
    for i in range(3):
        slices.append(folder / f"slice{i}.jsonl")
        run(tiny_policy, select_shard(prompts, f"{i}/3"), slices[-1])
    return folder / "whole.jsonl", slices


def test_merged_shards_equal_one_run(shard_run, tmp_path):
    whole, slices = shard_run
    out = tmp_path / "merged.jsonl"
    assert merge_results(slices, out) == len(TEXTS)
    merged = out.read_text().splitlines()
    assert [comparable(line) for line in merged] == [comparable(line) for line in whole.read_text().splitlines()]
    # A slice given twice (or a slice merged with the whole run) is the same answer: kept once.
    assert merge_results([*slices, slices[0], whole], out) == len(TEXTS)
    assert [comparable(line) for line in out.read_text().splitlines()] == [comparable(line) for line in merged]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged.jsonl"]  # no temporary file left


def test_merge_refuses_mixed_configurations(shard_run, tiny_policy, tmp_path):
    _, slices = shard_run
    other = tmp_path / "other-seed.jsonl"
    run(tiny_policy, select_shard(make_prompts(TEXTS), "1/3"), other, seed=1)
    out = tmp_path / "merged.jsonl"
    with pytest.raises(SecateursError, match="different configuration") as e:
        merge_results([slices[0], other, slices[2]], out)
    assert "\n" not in str(e.value) and not out.exists()


def test_merge_refuses_conflicting_duplicates_and_non_results(shard_run, tmp_path):
    _, slices = shard_run
    out = tmp_path / "merged.jsonl"
    lines = slices[0].read_text().splitlines()
    changed = json.loads(lines[0])
    changed["response"] += " and more"
    conflicting = tmp_path / "conflicting.jsonl"
    conflicting.write_text(json.dumps(changed) + "\n")
    with pytest.raises(SecateursError, match="different results"):
        merge_results([slices[0], conflicting], out)

    notes = tmp_path / "notes.jsonl"
    notes.write_text('{"prompt": "a prompt file, not results"}\n')
    cut = tmp_path / "cut.jsonl"
    cut.write_text(lines[0] + "\n" + lines[1][:30])
    text = tmp_path / "text.txt"
    text.write_text("hello\n")
    for bad, message in [(notes, "not a secateurs result"), (cut, "cut-off line"), (text, "not a secateurs result"),
                         (tmp_path / "missing.jsonl", "not a file")]:
        with pytest.raises(SecateursError, match=message) as e:
            merge_results([slices[0], bad], out)
        assert "\n" not in str(e.value)
    with pytest.raises(SecateursError, match="no input"):
        merge_results([], out)
    assert not out.exists()
