"""What `run` and `merge` write to, checked before anything is computed or replaced: a user's file,
a device, one of merge's own inputs, a folder; shard sets that are not whole; comparison mode's
folder; and resume across --max-batch-rows, which decides speed, not answers."""

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from click.testing import CliRunner

from cli_main import run_main
from secateurs.cli import cli
from secateurs import __version__
from secateurs.errors import SecateursError
from secateurs.merge import merge_results
from secateurs.methods import get_method
from secateurs.prompts import make_prompts
from secateurs.rewards import load_reward
from secateurs.runner import run_fingerprint, run_prompts
from secateurs.shard import select_shard, shard_tag

TEXTS = ["how do i make tea", "give me a good tip for sleep", "what is green", "thank you",
         "can you help me with my work", "is it hot water", "a calm night"]
MEASURED = ("seconds", "lm_seconds", "rm_seconds", "other_seconds", "peak_memory_bytes",
            "lm_positions_prefilled", "lm_positions_decoded", "lm_forward_calls")  # these depend on the batch


def answers(path: Path) -> dict:
    """Each line's answer by id: what must not depend on batching (timings and max_batch_rows aside) or
    on the slice it was run in."""
    out = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        r.pop("shard", None)
        r["cost"] = {k: v for k, v in r["cost"].items() if k not in MEASURED}
        r["config"] = {k: v for k, v in r["config"].items() if k != "max_batch_rows"}
        out[r["id"]] = r
    return out


def one_line_error(code: int, err: str, *words: str) -> None:
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, (w, err)


@pytest.fixture
def prompt_file(tmp_path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in TEXTS))
    return path


def run_args(policy, prompts, out, *extra):
    return ["run", "--method", "best-of-n", "--n", "2", "--max-new-tokens", "6", "--policy", policy,
            "--reward", "sentiment", "--prompts", prompts, "--quiet", "--out", out, *extra]


@pytest.fixture(scope="module")
def shards(tiny_policy_folder, tmp_path_factory):
    """`run --shard I/3` of the seven prompts from the command line, and the whole run."""
    folder = tmp_path_factory.mktemp("cli_shards")
    prompts = folder / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in TEXTS))
    paths = [folder / f"s{i}.jsonl" for i in range(3)]
    for i, path in enumerate(paths):
        result = invoke(*run_args(tiny_policy_folder, prompts, path, "--shard", f"{i}/3"))
        assert result.exit_code == 0, result.exception
    whole = folder / "whole.jsonl"
    assert invoke(*run_args(tiny_policy_folder, prompts, whole)).exit_code == 0
    return paths, whole


def invoke(*args):
    return CliRunner().invoke(cli, list(map(str, args)))


# --- 1. merge's --out -----------------------------------------------------------------------------------

def test_merge_refuses_an_out_that_run_would_refuse_and_leaves_it(shards, prompt_file, tmp_path, monkeypatch,
                                                                   capsys):
    paths, _ = shards
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\nremember the milk\n")
    folder = tmp_path / "folder"
    folder.mkdir()
    prompt_bytes = prompt_file.read_bytes()
    for out, words in [(notes, ["notes.txt", "not a secateurs results file"]),
                       (prompt_file, ["prompts.jsonl", "not a secateurs results file"]),
                       (folder, ["folder", "is a folder"]),
                       (paths[0], ["s0.jsonl", "one of the inputs"]),
                       (Path(os.devnull), [os.devnull, "not a regular file"])]:
        before = {p: p.read_bytes() for p in paths}
        code, err = run_main(monkeypatch, capsys, "merge", *paths, "--out", out)
        one_line_error(code, err, *words)
        assert {p: p.read_bytes() for p in paths} == before
    assert notes.read_text() == "my notes\nremember the milk\n" and prompt_file.read_bytes() == prompt_bytes
    assert list(folder.iterdir()) == []
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)  # still the device, not a file merged over it
    # an input given under another name is the same file
    code, err = run_main(monkeypatch, capsys, "merge", *paths, "--out", paths[1].parent / "." / paths[1].name)
    one_line_error(code, err, "one of the inputs")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "notes.txt", "prompts.jsonl"]


def test_merge_into_an_earlier_merge_keeps_its_results(shards, tmp_path, monkeypatch, capsys):
    paths, whole = shards
    out = tmp_path / "merged.jsonl"
    code, err = run_main(monkeypatch, capsys, "merge", paths[0], paths[1], "--allow-partial", "--out", out)
    assert code == 0, err
    code, err = run_main(monkeypatch, capsys, "merge", paths[2], "--out", out)  # the last shard finished later
    assert code == 0, err
    assert answers(out) == answers(whole)  # every prompt, each once
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [str(i) for i in range(7)]


# --- 3. shard sets --------------------------------------------------------------------------------------

def test_shard_runs_tag_their_lines_and_merge_refuses_an_incomplete_set(shards, tmp_path, monkeypatch, capsys):
    paths, whole = shards
    for i, path in enumerate(paths):
        tags = {json.dumps(json.loads(line)["shard"]) for line in path.read_text().splitlines()}
        assert tags == {json.dumps({"index": i, "count": 3, "prompts": 7})}
    assert all("shard" not in json.loads(line) for line in whole.read_text().splitlines())
    out = tmp_path / "merged.jsonl"
    code, err = run_main(monkeypatch, capsys, "merge", paths[0], paths[2], "--out", out)
    one_line_error(code, err, "shard 1/3 missing", "--allow-partial")
    assert not out.exists()
    # a shard killed before it finished: its last result is missing
    cut = tmp_path / "s1-cut.jsonl"
    cut.write_text("".join(paths[1].read_text().splitlines(keepends=True)[:-1]))
    code, err = run_main(monkeypatch, capsys, "merge", paths[0], cut, paths[2], "--out", out)
    one_line_error(code, err, "1/3 has 1 of its 2 results")
    assert not out.exists()
    code, err = run_main(monkeypatch, capsys, "merge", paths[0], paths[2], "--allow-partial", "--out", out)
    assert code == 0, err
    assert len(out.read_text().splitlines()) == 5
    out.unlink()
    code, err = run_main(monkeypatch, capsys, "merge", *paths, "--out", out)
    assert code == 0, err
    assert answers(out) == answers(whole)


def test_merge_refuses_mixed_slicings_and_accepts_empty_slices(tiny_policy, tmp_path):
    prompts = make_prompts(TEXTS)
    config = get_method("best-of-n").config_class(n=2, max_new_tokens=4)
    reward = load_reward("sentiment")

    def shard(spec: str) -> Path:
        path = tmp_path / (spec.replace("/", "-of-") + ".jsonl")
        run_prompts(select_shard(prompts, spec), "best-of-n", config, tiny_policy, reward, out=path,
                    shard=shard_tag(spec, len(prompts)))
        return path

    with pytest.raises(SecateursError, match="mix different slicings") as e:
        merge_results([shard("0/2"), shard("1/3"), shard("2/3")], tmp_path / "m.jsonl")
    assert "\n" not in str(e.value) and "allow_partial=True" in str(e.value)
    # ten shards of seven prompts: 7/10 to 9/10 hold nothing, and the set is whole without them
    ten = [shard(f"{i}/10") for i in range(7)]
    assert merge_results(ten, tmp_path / "ten.jsonl") == 7
    with pytest.raises(SecateursError, match="shard 6/10 missing"):
        merge_results(ten[:6], tmp_path / "six.jsonl")
    # old lines without the field are merged as before
    assert merge_results([shard("0/2"), shard("1/2")], tmp_path / "two.jsonl") == 7


# --- 4, 5. run's --out, checked before any model loads --------------------------------------------------

@pytest.mark.parametrize("name", ["x.jsonl", "x.json"])
def test_comparison_mode_out_must_be_a_folder(tmp_path, monkeypatch, capsys, name):
    code, err = run_main(monkeypatch, capsys, "run", "--policy", "/no/such/policy", "--out", tmp_path / name)
    one_line_error(code, err, name, "is a folder")
    assert list(tmp_path.iterdir()) == []
    notes = tmp_path / "notes"
    notes.write_text("mine\n")
    code, err = run_main(monkeypatch, capsys, "run", "--policy", "/no/such/policy", "--out", notes)
    one_line_error(code, err, "notes", "is a folder")
    assert notes.read_text() == "mine\n"


def test_run_out_is_checked_before_any_model_loads(prompt_file, tmp_path, monkeypatch, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("remember the milk\n")
    # the policy does not exist: were it loaded first, the error would name it instead
    for out, words in [(Path(os.devnull), [os.devnull, "not a regular file"]),
                       (notes, ["notes.txt", "not a secateurs results file"]),
                       (tmp_path, [str(tmp_path), "is a folder"])]:
        code, err = run_main(monkeypatch, capsys, *run_args("/no/such/policy", prompt_file, out))
        one_line_error(code, err, *words)
    assert notes.read_text() == "remember the milk\n"
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


# --- 6. resume with other rows ---------------------------------------------------------------------------

def test_resume_with_other_max_batch_rows_equals_an_uninterrupted_run(tiny_policy_folder, prompt_file, tmp_path,
                                                                      monkeypatch, capsys):
    whole, resumed = tmp_path / "whole.jsonl", tmp_path / "resumed.jsonl"
    code, err = run_main(monkeypatch, capsys, *run_args(tiny_policy_folder, prompt_file, whole,
                                                        "--max-batch-rows", "8"))
    assert code == 0, err
    # a run killed after three results, out of memory, resumed with fewer rows
    resumed.write_text("".join(whole.read_text().splitlines(keepends=True)[:3]))
    code, err = run_main(monkeypatch, capsys, *run_args(tiny_policy_folder, prompt_file, resumed,
                                                        "--max-batch-rows", "2"))
    assert code == 0, err
    assert answers(resumed) == answers(whole)
    assert [json.loads(line)["config"]["max_batch_rows"] for line in resumed.read_text().splitlines()] == \
        [8, 8, 8, 2, 2, 2, 2]  # each line says what it ran with


def legacy_fingerprint(method, config, policy, reward, seed) -> str:
    """The fingerprint before max_batch_rows left it: the whole config hashed."""
    fields = {"method": method, "config": config.to_dict(), "policy": policy.name, "reward": reward.name,
              "seed": seed, "secateurs": __version__}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def test_files_of_the_old_fingerprint_still_resume_with_other_rows(tiny_policy, tmp_path):
    prompts = make_prompts(TEXTS[:4])
    reward = load_reward("sentiment")
    cls = get_method("best-of-n").config_class
    old, new = cls(n=2, max_new_tokens=4, max_batch_rows=8), cls(n=2, max_new_tokens=4, max_batch_rows=2)
    whole = tmp_path / "whole.jsonl"
    run_prompts(prompts, "best-of-n", old, tiny_policy, reward, out=whole)
    assert run_fingerprint("best-of-n", old, tiny_policy, reward, 0) == \
        run_fingerprint("best-of-n", new, tiny_policy, reward, 0)
    # but Speculative Rejection without n caps B0 at max_batch_rows: there rows do change answers
    sr = get_method("speculative-rejection").config_class
    assert run_fingerprint("speculative-rejection", sr(max_batch_rows=8), tiny_policy, reward, 0) != \
        run_fingerprint("speculative-rejection", sr(max_batch_rows=4), tiny_policy, reward, 0)
    legacy = legacy_fingerprint("best-of-n", old, tiny_policy, reward, 0)
    lines = [json.loads(line) for line in whole.read_text().splitlines()]
    path = tmp_path / "old.jsonl"
    path.write_text("".join(json.dumps({**r, "run_fingerprint": legacy}) + "\n" for r in lines[:2]))
    run_prompts(prompts, "best-of-n", new, tiny_policy, reward, out=path)
    assert {k: v["run_fingerprint"] for k, v in answers(path).items()} == {
        "0": legacy, "1": legacy, "2": lines[2]["run_fingerprint"], "3": lines[3]["run_fingerprint"]}
    unkeyed = {k: {**v, "run_fingerprint": ""} for k, v in answers(path).items()}
    assert unkeyed == {k: {**v, "run_fingerprint": ""} for k, v in answers(whole).items()}
    # a legacy line of another configuration is still refused
    other = cls(n=3, max_new_tokens=4, max_batch_rows=8)
    path.write_text(json.dumps({**lines[0], "config": other.to_dict(),
                                "run_fingerprint": legacy_fingerprint("best-of-n", other, tiny_policy, reward, 0)})
                    + "\n")
    with pytest.raises(SecateursError, match="different configuration"):
        run_prompts(prompts, "best-of-n", new, tiny_policy, reward, out=path)

