"""max_batch_rows 'auto' (admission.resolve_rows): on a GPU the rows memory admission lets fit (Speculative
Rejection with B0 from memory: the authors' cap of 1000), on a CPU today's 64. The GPU arithmetic runs here
with the free memory given; the runs are on this CPU."""

import json

import pytest

from cli_main import run_main
from secateurs.admission import CPU_AUTO_ROWS, MAX_AUTO_ROWS, check_memory, resolve_rows
from secateurs.config import build_config
from secateurs.errors import SecateursError
from secateurs.prompts import make_prompts
from secateurs.rewards import load_reward
from secateurs.runner import run_prompts

GiB = 2**30


def test_a_cpu_keeps_the_default_rows(tiny_policy):
    for method in ("best-of-n", "speculative-rejection", "cards"):
        config = resolve_rows(build_config(method, {"max_batch_rows": "auto"}), tiny_policy, [40])
        assert config.max_batch_rows == CPU_AUTO_ROWS


def test_a_gpu_gets_the_rows_admission_lets_fit(tiny_policy, caplog):
    config = build_config("best-of-n", {"max_batch_rows": "auto", "n": 8, "max_new_tokens": 100})
    available = 3 * 2**20
    rows = resolve_rows(config, tiny_policy, [28, 40], available=available, device="cuda").max_batch_rows
    assert 1 < rows < MAX_AUTO_ROWS
    # The largest batch admission accepts without a warning at this memory: one more row gets one.
    with caplog.at_level("WARNING"):
        check_memory(tiny_policy, build_config("best-of-n", {"max_batch_rows": rows, "n": 8, "max_new_tokens": 100}),
                     [40] * 1000, available=available)
        assert not caplog.records
        check_memory(tiny_policy, build_config("best-of-n", {"max_batch_rows": rows + 1, "n": 8,
                                                             "max_new_tokens": 100}), [40] * 1000, available=available)
        assert "may run out of memory" in caplog.text
    # Plenty of memory: at most MAX_AUTO_ROWS.
    assert resolve_rows(config, tiny_policy, [40], available=80 * GiB, device="cuda").max_batch_rows == MAX_AUTO_ROWS


def test_speculative_rejection_from_memory_takes_the_authors_b0_cap(tiny_policy):
    config = build_config("speculative-rejection", {"max_batch_rows": "auto"})
    assert resolve_rows(config, tiny_policy, [40], available=1 * GiB, device="cuda").max_batch_rows == 1000
    # With n given, its rows are what fits at full length, as for the other methods.
    config = build_config("speculative-rejection", {"max_batch_rows": "auto", "n": 4})
    assert resolve_rows(config, tiny_policy, [40], available=80 * GiB, device="cuda").max_batch_rows == MAX_AUTO_ROWS


def test_too_little_memory_for_the_methods_own_rows_is_one_line(tiny_policy):
    config = build_config("cards", {"max_batch_rows": "auto", "proposals": 8, "max_new_tokens": 100})
    with pytest.raises(SecateursError, match="proposals=8 decode together but max_batch_rows is 1"):
        resolve_rows(config, tiny_policy, [40], available=2**16, device="cuda")


def test_a_run_with_auto_rows_answers_as_with_the_default(tiny_policy):
    reward = load_reward("sentiment")
    prompts = make_prompts(["how do i make tea", "a calm night"])
    auto = run_prompts(prompts, "best-of-n", build_config("best-of-n", {"max_batch_rows": "auto", "n": 3,
                                                                          "max_new_tokens": 8}), tiny_policy, reward)
    fixed = run_prompts(prompts, "best-of-n", build_config("best-of-n", {"n": 3, "max_new_tokens": 8}), tiny_policy,
                        reward)
    assert [r.response for r in auto] == [r.response for r in fixed]
    assert all(r.config["max_batch_rows"] == CPU_AUTO_ROWS for r in auto)  # the number it ran with


def test_cli_takes_auto_and_names_a_bad_value(tiny_policy_folder, tmp_path, monkeypatch, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "a", "prompt": "how do i make tea"}\n')
    out = tmp_path / "o.jsonl"
    common = ["run", "--method", "speculative-rejection", "--policy", tiny_policy_folder, "--reward", "sentiment",
              "--prompts", prompts, "--max-new-tokens", "8", "--quiet"]
    code, err = run_main(monkeypatch, capsys, *common, "--max-batch-rows", "auto", "--out", out)
    assert code == 0, err
    assert json.loads(out.read_text())["config"]["max_batch_rows"] == CPU_AUTO_ROWS
    code, err = run_main(monkeypatch, capsys, *common, "--max-batch-rows", "lots", "--out", tmp_path / "p.jsonl2")
    assert code != 0 and err.strip() == "error: --max-batch-rows must be an integer >= 1 or auto, got 'lots'"


def test_serve_sizes_auto_rows_at_start(tiny_policy_folder, monkeypatch, capsys):
    """serve resolves 'auto' once, after loading and before its first check (here: the default max_new_tokens
    beyond the tiny policy's context, the same one line as with a number)."""
    import secateurs.admission as admission

    seen = []
    original = admission.resolve_rows

    def spy(config, *args, **kwargs):
        out = original(config, *args, **kwargs)
        seen.append((config.max_batch_rows, out.max_batch_rows))
        return out

    monkeypatch.setattr("secateurs.cli.resolve_rows", spy)
    code, err = run_main(monkeypatch, capsys, "serve", "--port", "0", "--policy", tiny_policy_folder, "--reward",
                         "sentiment", "--max-batch-rows", "auto", "--max-new-tokens", "100000")
    assert seen == [("auto", CPU_AUTO_ROWS)]
    assert code == 2 and err.startswith("error: max_new_tokens 100000 exceeds the policy's context")
