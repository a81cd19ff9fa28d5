"""`secateurs bench` end to end on the tiny policy and two prompts."""

import json
from pathlib import Path

from click.testing import CliRunner

from secateurs.cli import cli


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_bench_end_to_end_and_resume(tiny_policy_folder, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "a", "prompt": "how do i make tea"}\n{"id": "b", "prompt": "calm night please"}\n')
    out = tmp_path / "bench"
    args = ["bench", "--prompts", prompts, "--methods", "best-of-n:n=1,2,4", "speculative-rejection:n=4:alpha=0.5",
            "cards:r_star=0.1:acceptance=hard", "--out", out, "--policy", tiny_policy_folder, "--reward", "sentiment",
            "--gold-reward", "civility", "--max-new-tokens", "10", "--bootstrap", "200"]
    result = invoke(*args)
    assert result.exit_code == 0, result.exception
    for name in ("results.jsonl", "summary.json", "reward_vs_compute.png", "reward_distribution.png", "report.html"):
        assert (out / name).stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    names = [c["name"] for c in summary["cells"]]
    assert names == ["best-of-n n=1", "best-of-n n=2", "best-of-n n=4", "speculative-rejection n=4 alpha=0.5",
                     "cards r_star=0.1 acceptance=hard"]
    assert summary["reference"] == "best-of-n n=4" and summary["judge"] == "gold"
    by_name = {c["name"]: c for c in summary["cells"]}
    assert by_name["best-of-n n=4"]["improvement_score"]["value"] == 100.0
    sr = by_name["speculative-rejection n=4 alpha=0.5"]
    assert {"speedup_seconds", "speedup_tokens", "vs_reference", "gold_reward"} <= set(sr)
    assert sr["reward"]["ci_low"] <= sr["reward"]["value"] <= sr["reward"]["ci_high"]
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 5 * 2 and all(r["gold_reward"] is not None and "cost" in r for r in records)
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "secateurs bench" in html and "how do i make tea" in html
    # a second run recomputes nothing: the cell files are unchanged
    before = {p.name: p.read_text() for p in (out / "cells").glob("*.jsonl")}
    assert invoke(*args).exit_code == 0
    assert {p.name: p.read_text() for p in (out / "cells").glob("*.jsonl")} == before


def test_bench_yaml_config(tiny_policy_folder, tmp_path):
    config = tmp_path / "bench.yaml"
    config.write_text(f"""
methods:
  - sampling
  - best-of-n: {{n: [2]}}
policy: {tiny_policy_folder}
reward: sentiment
max_new_tokens: 6
out: {tmp_path / 'out'}
bootstrap: 100
""")
    result = invoke("bench", "--config", config)
    assert result.exit_code == 0, result.exception
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [c["name"] for c in summary["cells"]] == ["sampling", "best-of-n n=2"]
    assert summary["judge"] == "reward"


def test_bench_errors_come_before_any_model_loads(tmp_path):
    # the policy does not exist: if it were loaded first, the error would name it instead
    for args, message in [
        (["--methods", "best-of-n:n=2", "no-such-search"], "unknown method 'no-such-search'"),
        (["--methods", "speculative-rejection:alpha=2"], "alpha must be in [0, 1), got 2"),
        (["--methods", "best-of-n:q=2"], "unknown option 'q' for method 'best-of-n'"),
        (["--methods", "best-of-n:n=2", "--reference", "cards"], "reference method 'cards' is not in this run"),
        ([], "no methods to compare"),
    ]:
        result = invoke("bench", "--policy", "/no/such/policy", "--out", tmp_path / "o", *args)
        assert result.exit_code != 0 and message in str(result.exception), (args, result.exception)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    result = invoke("bench", "--methods", "sampling", "--prompts", empty, "--out", tmp_path / "o")
    assert result.exit_code != 0 and "no prompts" in str(result.exception)


def test_bench_refuses_an_out_it_did_not_write_before_any_model_loads(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "results.jsonl").write_text("my results\n")
    (mine / "summary.json").write_text('{"my": "summary"}\n')
    a_file = tmp_path / "notes.txt"
    a_file.write_text("notes\n")
    # the policy does not exist: were it loaded first, the error would name it instead
    for out, message in [(mine, "holds files a bench did not write (results.jsonl, summary.json)"),
                         (a_file, "is a file"), (a_file / "sub", "is a file")]:
        result = invoke("bench", "--methods", "sampling", "--policy", "/no/such/policy", "--out", out)
        assert result.exit_code != 0 and message in str(result.exception), (out, result.exception)
        assert str(out) in str(result.exception) and "\n" not in str(result.exception)
    assert sorted(p.name for p in mine.iterdir()) == ["results.jsonl", "summary.json"]
    assert (mine / "results.jsonl").read_text() == "my results\n" and a_file.read_text() == "notes\n"
    # a new or empty folder passes the check (and the missing policy is what fails)
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "empty", tmp_path / "new"):
        result = invoke("bench", "--methods", "sampling", "--policy", "/no/such/policy", "--out", out)
        assert "/no/such/policy" in str(result.exception), result.exception


def test_bench_resumes_in_its_own_folder_marked_by_its_manifest(tiny_policy_folder, tmp_path):
    out = tmp_path / "bench"
    args = ["bench", "--methods", "sampling", "--policy", tiny_policy_folder, "--reward", "sentiment",
            "--max-new-tokens", "4", "--bootstrap", "100", "--out", out]
    assert invoke(*args).exit_code == 0
    manifest = json.loads((out / "secateurs-bench.json").read_text())
    assert manifest["written_by"] == "secateurs bench"
    (out / "summary.json").unlink()  # killed before the report: the manifest alone marks the folder
    result = invoke(*args)
    assert result.exit_code == 0, result.exception
    assert (out / "summary.json").exists()


def test_a_repeated_method_key_is_refused(tmp_path):
    result = invoke("bench", "--methods", "best-of-n:n=2:n=3", "--policy", "/no/such/policy", "--out", tmp_path / "o")
    assert result.exit_code != 0 and "option 'n' is given twice" in str(result.exception), result.exception
    config = tmp_path / "bench.yaml"
    config.write_text("methods:\n  - best-of-n: {n: [2], max-new-tokens: 4, max_new_tokens: 5}\n")
    result = invoke("bench", "--config", config, "--policy", "/no/such/policy", "--out", tmp_path / "o")
    assert result.exit_code != 0 and "option 'max_new_tokens' is given twice" in str(result.exception)
    assert not (tmp_path / "o").exists()


def test_bench_help_config_keys_and_prompt_formats_agree(tiny_policy_folder, tmp_path):
    from secateurs.bench.spec import CONFIG_KEYS

    help_text = " ".join(invoke("bench", "--help").output.split())
    run_help = " ".join(invoke("run", "--help").output.split())
    for key in CONFIG_KEYS:
        assert key in help_text, key
    formats = "Prompts: a JSONL/JSON, Parquet, Arrow or CSV/TSV file, a saved dataset folder, or hf:OWNER/NAME"
    assert formats in help_text and formats in run_help
    # every key --help lists works in --config, e.g. a dataset's field and the device
    prompts = tmp_path / "questions.jsonl"
    prompts.write_text('{"question": "how do i make tea"}\n{"question": "a calm night"}\n')
    config = tmp_path / "bench.yaml"
    config.write_text(f"methods: [sampling]\nprompts: {prompts}\nprompt_field: question\ndevice: cpu\n"
                      f"backend: transformers\npolicy: {tiny_policy_folder}\nreward: sentiment\nmax_new_tokens: 4\n"
                      f"bootstrap: 100\nout: {tmp_path / 'out'}\n")
    result = invoke("bench", "--config", config)
    assert result.exit_code == 0, result.exception
    records = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in records] == ["how do i make tea", "a calm night"]
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme[readme.index("## Comparing methods: `secateurs bench`"):readme.index("## Many workers")]
    for key in CONFIG_KEYS:
        assert f"`{key}`" in section, key


def test_bench_spec_takes_a_numpy_seed_as_its_int(tmp_path):
    import numpy as np

    from secateurs.bench import BenchSpec

    spec = BenchSpec(prompts=None, cells=[], out=tmp_path / "b", seed=np.int64(3), bootstrap=np.int32(200))
    assert spec.seed == 3 and type(spec.seed) is int and spec.bootstrap == 200
