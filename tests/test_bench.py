"""`secateurs bench` end to end on the tiny policy and two prompts."""

import json

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
        (["--methods", "best-of-n:n=2", "beam-search"], "unknown method 'beam-search'"),
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
