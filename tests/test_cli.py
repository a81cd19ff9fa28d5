"""The command line and the dataset runner: output, resume after a kill, and clear errors on bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from secateurs.cli import cli

PROMPTS = [{"id": f"p{i}", "prompt": f"how do i make {w} tea"} for i, w in enumerate(
    ["green", "hot", "good", "calm", "new", "kind", "happy", "first"])]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def invoke(*args):
    result = CliRunner().invoke(cli, list(map(str, args)))
    return result


def base_args(folder, tmp_path, *extra):
    return ["run", "--method", "best-of-n", "--policy", folder, "--reward", "sentiment", "--n", "2",
            "--max-new-tokens", "6", "--quiet", *extra]


def read_out(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_run_writes_one_line_per_prompt_and_resumes(tiny_policy_folder, tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    out = tmp_path / "out.jsonl"
    args = base_args(tiny_policy_folder, tmp_path, "--prompts", prompts, "--out", out, "--max-batch-rows", "4")
    assert invoke(*args).exit_code == 0
    first = read_out(out)
    assert [r["id"] for r in first] == [p["id"] for p in PROMPTS]
    assert all(r["method"] == "best-of-n" and r["config"]["n"] == 2 for r in first)
    # a kill mid-write leaves a partial last line and misses later prompts: both are repaired
    text = out.read_text().splitlines(keepends=True)
    out.write_text("".join(text[:3]) + text[3][:25])
    assert invoke(*args).exit_code == 0
    again = read_out(out)
    assert [r["id"] for r in again] == [r["id"] for r in first]
    assert [r["response"] for r in again] == [r["response"] for r in first]


def test_killed_process_resumes_without_loss_or_duplicates(tiny_policy_folder, tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"id": f"q{i}", "prompt": f"tea number {i} please"}
                                                   for i in range(40)])
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "secateurs.cli", *map(str, base_args(
        tiny_policy_folder, tmp_path, "--prompts", prompts, "--out", out, "--max-batch-rows", "2",
        "--max-new-tokens", "40"))]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or out.read_text().count("\n") < 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = out.read_text().count("\n")
    assert 3 <= written < 40, "the run should have been killed part-way"
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ids = [r["id"] for r in read_out(out)]
    assert sorted(ids) == sorted(f"q{i}" for i in range(40)) and len(ids) == 40


def test_output_of_another_configuration_is_refused(tiny_policy_folder, tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS[:2])
    out = tmp_path / "out.jsonl"
    assert invoke(*base_args(tiny_policy_folder, tmp_path, "--prompts", prompts, "--out", out)).exit_code == 0
    before = out.read_text()
    result = invoke(*base_args(tiny_policy_folder, tmp_path, "--prompts", prompts, "--out", out, "--seed", "3"))
    assert result.exit_code != 0 and "different configuration" in str(result.exception)
    assert out.read_text() == before


@pytest.mark.parametrize("lines, message", [
    (['{"prompt": "fine"}', '{"prompt": "broken'], "line 2: malformed JSON"),
    (['{"prompt": "   "}'], "the prompt is empty"),
    (['{"text": "no prompt field"}'], "needs a 'prompt'"),
    (['{"id": 1, "prompt": "a"}', '{"id": 1, "prompt": "b"}'], "duplicate prompt id '1'"),
    (['{"messages": [{"role": "assistant", "content": "hi"}]}'], "last message must be from the user"),
])
def test_bad_prompt_files_are_named(tiny_policy_folder, tmp_path, lines, message):
    prompts = tmp_path / "bad.jsonl"
    prompts.write_text("\n".join(lines) + "\n")
    result = invoke(*base_args(tiny_policy_folder, tmp_path, "--prompts", prompts, "--out", tmp_path / "o.jsonl"))
    assert result.exit_code != 0 and message in str(result.exception)
    assert not (tmp_path / "o.jsonl").exists()


def test_over_long_prompt_is_named(tiny_policy_folder, tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"id": "ok", "prompt": "tea"},
                                                 {"id": "huge", "prompt": "tea " * 400}])
    result = invoke(*base_args(tiny_policy_folder, tmp_path, "--prompts", prompts, "--out", tmp_path / "o.jsonl"))
    assert result.exit_code != 0 and "prompt 'huge' is too long" in str(result.exception)


@pytest.mark.parametrize("args, message", [
    (["--n", "0"], "n must be an integer >= 1, got 0"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be an integer >= 1"),
    (["--top-p", "2"], "--top-p must be in (0, 1], got 2.0"),
    (["--policy", "/no/such/model"], "/no/such/model"),
    (["--reward", "no-such-reward"], "unknown reward 'no-such-reward'"),
])
def test_bad_options_are_named(tiny_policy_folder, tmp_path, args, message):
    result = invoke(*base_args(tiny_policy_folder, tmp_path, "--out", tmp_path / "o.jsonl"), *args)
    assert result.exit_code != 0 and message in str(result.exception)


def test_unknown_method_and_nan_reward_exit_nonzero_with_one_line(tiny_policy_folder, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    (tmp_path / "nanreward.py").write_text("def score(prompt, response):\n    return float('nan')\n")
    cmd = [sys.executable, "-m", "secateurs.cli", "run", "--policy", str(tiny_policy_folder), "--quiet",
           "--max-new-tokens", "4", "--out", str(tmp_path / "o.jsonl")]
    bad_method = subprocess.run(cmd + ["--method", "beam-me-up"], capture_output=True, text=True, env=env)
    assert bad_method.returncode != 0 and "beam-me-up" in bad_method.stderr
    nan = subprocess.run(cmd + ["--method", "sampling", "--reward", "py:nanreward:score"], capture_output=True,
                         text=True, env=env)
    assert nan.returncode == 2
    assert nan.stderr.strip().splitlines()[-1].startswith("error: reward 'py:nanreward:score' returned nan")
    assert "Traceback" not in nan.stderr
    assert not (tmp_path / "o.jsonl").exists() or (tmp_path / "o.jsonl").read_text() == ""


@pytest.mark.parametrize("method, extra", [
    ("speculative-rejection", ["--n", "4", "--alpha", "0.5", "--decision-tokens", "2,4"]),
    ("cards", ["--r-star", "0.1", "--entropy-threshold", "3.0", "--max-retries", "3"]),
    ("rejection-sampling", ["--r-star", "auto", "--proposals", "2"]),
    ("args", ["--weight", "1.5", "--top-k", "3"]),
])
def test_every_method_runs_and_resumes_from_the_cli(tiny_policy_folder, tmp_path, method, extra):
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS[:3])
    out = tmp_path / "out.jsonl"
    args = ["run", "--method", method, "--policy", tiny_policy_folder, "--reward", "sentiment", "--quiet",
            "--max-new-tokens", "6", "--prompts", prompts, "--out", out, *extra]
    assert invoke(*args).exit_code == 0
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:1]) + "\n")  # as if killed after the first prompt
    result = invoke(*args)
    assert result.exit_code == 0, result.exception
    # lines are written as prompts finish (any order); every prompt exactly once
    assert sorted(r["id"] for r in read_out(out)) == ["p0", "p1", "p2"]
    assert [r["response"] for r in read_out(out)] == [json.loads(line)["response"] for line in lines]


@pytest.mark.parametrize("args, message", [
    (["--method", "speculative-rejection", "--alpha", "1.5"], "--alpha must be in [0, 1), got 1.5"),
    (["--method", "speculative-rejection", "--decision-tokens", "8,x"], "--decision-tokens must be comma-separated"),
    (["--method", "cards", "--entropy-threshold", "0"], "--entropy-threshold must be > 0"),
    (["--method", "cards", "--acceptance", "lenient"], "--acceptance must be 'soft' or 'hard'"),
    (["--method", "cards", "--r-star", "lots"], "--r-star must be a finite number, 'auto' or 'dataset', got 'lots'"),
    (["--method", "sampling", "--alpha", "0.5"], "--alpha does not apply to method 'sampling'"),
])
def test_bad_method_options_are_named(tiny_policy_folder, tmp_path, args, message):
    result = invoke("run", "--policy", tiny_policy_folder, "--quiet", "--out", tmp_path / "o.jsonl", *args)
    assert result.exit_code != 0 and message in str(result.exception)


def test_shards_then_merge_equal_one_run(tiny_policy_folder, tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS[:5])
    common = base_args(tiny_policy_folder, tmp_path, "--prompts", prompts)
    assert invoke(*common, "--out", tmp_path / "all.jsonl").exit_code == 0
    for i in range(2):
        assert invoke(*common, "--shard", f"{i}/2", "--out", tmp_path / f"s{i}.jsonl").exit_code == 0
    assert len(read_out(tmp_path / "s0.jsonl")) == 3 and len(read_out(tmp_path / "s1.jsonl")) == 2
    result = invoke("merge", tmp_path / "s0.jsonl", tmp_path / "s1.jsonl", "--out", tmp_path / "merged.jsonl")
    assert result.exit_code == 0, result.output
    merged = {r["id"]: r for r in read_out(tmp_path / "merged.jsonl")}
    single = {r["id"]: r for r in read_out(tmp_path / "all.jsonl")}
    assert merged.keys() == single.keys()
    for k in single:
        assert (merged[k]["response"], merged[k]["reward"]) == (single[k]["response"], single[k]["reward"])
    other = base_args(tiny_policy_folder, tmp_path, "--prompts", prompts, "--seed", "1")
    assert invoke(*other, "--shard", "1/2", "--out", tmp_path / "t1.jsonl").exit_code == 0
    bad = invoke("merge", tmp_path / "s0.jsonl", tmp_path / "t1.jsonl", "--out", tmp_path / "mixed.jsonl")
    assert bad.exit_code != 0 and not (tmp_path / "mixed.jsonl").exists()
    assert invoke(*common, "--shard", "2/2").exit_code != 0


def test_prompts_from_a_parquet_file_with_a_field_template(tiny_policy_folder, tmp_path):
    import datasets

    path = tmp_path / "alpaca.parquet"
    datasets.Dataset.from_list([{"uid": "a", "instruction": "make tea", "input": "green"},
                                {"uid": "b", "instruction": "say thank you", "input": ""}]).to_parquet(str(path))
    out = tmp_path / "out.jsonl"
    args = ["run", "--method", "sampling", "--policy", tiny_policy_folder, "--reward", "sentiment", "--quiet",
            "--max-new-tokens", "4", "--prompts", path, "--prompt-field", r"{instruction}\n\n{input}",
            "--id-field", "uid", "--out", out]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    got = {r["id"]: r["prompt"] for r in read_out(out)}
    assert got == {"a": "make tea\n\ngreen", "b": "say thank you"}
    missing = invoke(*args[:-2], "--out", tmp_path / "o2.jsonl", "--id-field", "nope")
    assert missing.exit_code != 0 and "uid" in str(missing.exception)  # names the fields that exist


# --- issue 20: each flag's help reads as one sentence, and messages use the caller's names ---------------

def test_each_method_flag_help_is_one_sentence_then_its_defaults():
    from secateurs.config import option_specs

    specs = option_specs()
    assert specs["temperature"].describe() == ("Sampling temperature (0: greedy). [args, beam-search, best-of-n, "
                                               "particle-filtering, sampling, speculative-rejection, tree-search: "
                                               "1.0; cards, rejection-sampling: beta]")
    assert specs["proposals"].describe() == ("CARDS / rejection sampling: candidates proposed per prompt at once, "
                                             "checked in order. [cards: 1; rejection-sampling: 4]")
    top_k = specs["top_k"].describe()
    assert "vocabulary" in top_k and top_k.count("sample from") + top_k.count("Sample from") == 1
    for spec in specs.values():  # no method's note repeats the general sentence
        text = spec.describe().lower()
        assert text.count(spec.help.split("; ")[0].lower()) == 1, text
    assert "Sampling temperature (0: greedy). [args" in " ".join(invoke("run", "--help").output.split())


@pytest.mark.parametrize("args, message", [
    (["--max-new-tokens", "0"], "--max-new-tokens must be an integer >= 1, got 0"),
    (["--max-batch-rows", "0"], "--max-batch-rows must be an integer >= 1 or auto, got 0"),
    (["--n", "4", "--max-batch-rows", "2"], "--n 4 candidates decode together"),
])
def test_cli_errors_name_the_flags(tiny_policy_folder, tmp_path, args, message):
    result = invoke("run", "--policy", tiny_policy_folder, "--quiet", "--method", "speculative-rejection",
                    "--out", tmp_path / "o.jsonl", *args)
    assert result.exit_code != 0 and str(result.exception).startswith(message), result.exception
    assert "max_batch_rows" not in str(result.exception) and "max_new_tokens" not in str(result.exception)
