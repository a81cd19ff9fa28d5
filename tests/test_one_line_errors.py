"""The rest of the hostile-input pass: each case is one line on stderr, exit status 2 (130 for Ctrl-C),
never a traceback: devices, max_new_tokens beyond the context, bench settings and grids of the wrong
type, non-finite method options from Python, and Ctrl-C while the models load."""

import json
import math

import pytest
import torch
import yaml

import secateurs.bench.run
import secateurs.cli
from cli_main import run_main
from secateurs.config import build_config
from secateurs.errors import SecateursError
from secateurs.models import resolve_device


def one_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"how do i make {w} tea"}) + "\n"
                            for i, w in enumerate(["green", "hot"])))
    return path


def run_args(folder, prompts, out, *extra):
    return ["run", "--method", "best-of-n", "--policy", folder, "--reward", "sentiment", "--n", 2,
            "--max-new-tokens", 4, "--quiet", "--prompts", prompts, "--out", out, *extra]


# --- devices ----------------------------------------------------------------------------------------

def test_cuda_without_cuda_is_one_line(tiny_policy_folder, prompts, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, err = run_main(monkeypatch, capsys, *run_args(tiny_policy_folder, prompts, tmp_path / "o.jsonl",
                                                        "--device", "cuda"))
    assert code == 2
    assert one_line(err) == "error: CUDA is not available on this machine; use --device cpu"
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize("device, message", [
    ("cuda:7", "device 'cuda:7' does not exist: this machine has 1 CUDA device(s), cuda:0 to cuda:0"),
    ("gpu", "unknown device 'gpu': use cpu, cuda or cuda:N"),
    ("cuda:x", "unknown device 'cuda:x'"),
    ("meta", "unsupported device 'meta': use cpu, cuda or cuda:N"),
    ("xla", "unsupported device 'xla'"),
    (7, "unknown device 7"),
])
def test_bad_devices_are_named(device, message, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(SecateursError) as err:
        resolve_device(device)
    assert message in str(err.value)


def test_good_devices_resolve(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ".lower()) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None) == torch.device("cpu") and resolve_device("auto") == torch.device("cpu")


def test_a_bad_device_fails_on_the_command_line(tiny_policy_folder, prompts, tmp_path, monkeypatch, capsys):
    code, err = run_main(monkeypatch, capsys, *run_args(tiny_policy_folder, prompts, tmp_path / "o.jsonl",
                                                        "--device", "meta"))
    assert code == 2 and one_line(err) == "error: unsupported device 'meta': use cpu, cuda or cuda:N"


# --- max_new_tokens beyond the context ----------------------------------------------------------------

def test_huge_max_new_tokens_blames_max_new_tokens_not_the_prompt(tiny_policy_folder, prompts, tmp_path,
                                                                  monkeypatch, capsys):
    code, err = run_main(monkeypatch, capsys, *run_args(tiny_policy_folder, prompts, tmp_path / "o.jsonl",
                                                        "--max-new-tokens", 1000000000))
    line = one_line(err)
    assert code == 2
    assert line.startswith("error: max_new_tokens 1000000000 exceeds the policy's context of 256 tokens")
    assert "prompt" not in line.split("(")[0] and "too long" not in line


def test_check_fits_names_the_part_that_does_not_fit(tiny_policy):
    from secateurs.prompts import make_prompt

    p = make_prompt("tea", "t")
    tiny_policy.check_fits(p, 100, 156)  # exactly the context: fine
    with pytest.raises(SecateursError, match="^max_new_tokens 256 exceeds the policy's context of 256"):
        tiny_policy.check_fits(p, 1, 256)
    with pytest.raises(SecateursError, match="^prompt 't' is too long: 300 tokens, but the policy's context is 256"):
        tiny_policy.check_fits(p, 300, 4)
    with pytest.raises(SecateursError, match=r"^prompt 't' is too long: 200 tokens \+ max_new_tokens 100"):
        tiny_policy.check_fits(p, 200, 100)


# --- bench: settings and grids of the wrong type ----------------------------------------------------

@pytest.mark.parametrize("setting, message", [
    ({"seed": "abc"}, "bench setting 'seed' must be an integer, got 'abc'"),
    ({"seed": [1]}, "bench setting 'seed' must be an integer, got [1]"),
    ({"seed": True}, "bench setting 'seed' must be an integer, got True"),
    ({"bootstrap": "many"}, "bench setting 'bootstrap' must be an integer, got 'many'"),
    ({"bootstrap": 1000.5}, "bench setting 'bootstrap' must be an integer, got 1000.5"),
    ({"tie_margin": "abc"}, "bench setting 'tie_margin' must be a finite number, got 'abc'"),
    ({"tie_margin": math.inf}, "bench setting 'tie_margin' must be a finite number, got inf"),
    ({"out": [1]}, "bench setting 'out' must be text, got [1]"),
    ({"prompts": 5}, "bench setting 'prompts' must be text, got 5"),
    ({"policy": {"a": 1}}, "bench setting 'policy' must be text"),
    ({"methods": 5}, "'methods' must be a list of methods, got 5"),
    ({"methods": [{"best-of-n": {5: 1}}]}, "method 'best-of-n': option names must be text, got 5"),
    ({"methods": [{"best-of-n": {"n": []}}]}, "option 'n' has an empty list of values"),
    ({"methods": [{5: {"n": 1}}]}, "bad methods entry {5: {'n': 1}}"),
    ({"methods": [{"speculative-rejection": {"decision_tokens": 5}}]},
     "decision_tokens must be increasing integers >= 1, got 5"),
    ({"methods": [{"best-of-n": {"n": ["abc"]}}]}, "best-of-n n=abc: n must be an integer, got 'abc'"),
    ({"methods": [{"speculative-rejection": {"alpha": math.nan}}]}, "alpha must be in [0, 1), got nan"),
    ({5: "x"}, "--config: unknown keys ['5']"),
])
def test_bench_yaml_of_the_wrong_type_is_one_line(setting, message, tmp_path, monkeypatch, capsys):
    config = {"methods": ["sampling"], "out": str(tmp_path / "bench"), **setting}
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setattr(secateurs.bench.run, "load_models", None)  # nothing may load: all checked before
    code, err = run_main(monkeypatch, capsys, "bench", "--config", path)
    assert code == 2 and message in one_line(err)
    assert not (tmp_path / "bench" / "cells").exists()


@pytest.mark.parametrize("grid, message", [
    ("best-of-n:n=abc", "best-of-n n=abc: n must be an integer, got 'abc'"),
    ("best-of-n:n=1,,2", "n must be an integer, got ''"),
    ("best-of-n:n=1.5", "n must be an integer >= 1, got 1.5"),
    ("best-of-n:n=inf", "n must be an integer >= 1, got inf"),
    ("speculative-rejection:alpha=nan", "alpha must be in [0, 1), got nan"),
    ("speculative-rejection:decision-tokens=8,16/x", "decision_tokens must be"),
    ("cards:entropy-threshold=inf", "entropy_threshold must be > 0 and finite, got inf"),
    ("cards:r-star=inf", "r_star must be a finite number, 'auto' or 'dataset', got inf"),
    ("args:weight=-inf", "weight must be a finite number, got -inf"),
    ("best-of-n::n=1", "bad method spec 'best-of-n::n=1'"),
])
def test_bench_grid_values_that_are_wrong_are_one_line(grid, message, tmp_path, monkeypatch, capsys):
    code, err = run_main(monkeypatch, capsys, "bench", "--methods", grid, "--out", tmp_path / "bench")
    assert code == 2 and message in one_line(err)


def test_a_bench_seed_given_as_a_number_in_text_is_read(tmp_path):
    from secateurs.bench import BenchSpec

    spec = BenchSpec(prompts=None, cells=[], out=str(tmp_path), seed="7", bootstrap=1000, tie_margin="0.5")
    assert (spec.seed, spec.bootstrap, spec.tie_margin, spec.out) == (7, 1000, 0.5, tmp_path)


# --- non-finite method options (the align() path: values, not text) ----------------------------------

@pytest.mark.parametrize("method, option", [
    ("speculative-rejection", "alpha"), ("speculative-rejection", "memory_gib"),
    ("speculative-rejection", "kv_budget_tokens"),
    ("cards", "beta"), ("cards", "entropy_threshold"), ("cards", "r_star"), ("cards", "r_star_margin"),
    ("cards", "r_star_weight"), ("rejection-sampling", "beta"), ("rejection-sampling", "r_star"),
    ("rejection-sampling", "r_star_margin"), ("args", "weight"),
])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, [1], True])
def test_method_options_must_be_finite_numbers(method, option, value):
    with pytest.raises(SecateursError, match=option):
        build_config(method, {option: value})


@pytest.mark.parametrize("method, option, value", [
    ("speculative-rejection", "decision_tokens", 16), ("speculative-rejection", "decision_tokens", (8, True)),
    ("cards", "proposals", True), ("cards", "min_segment_tokens", True), ("cards", "acceptance", 1),
    ("cards", "max_retries", True), ("rejection-sampling", "proposals", True),
])
def test_method_options_of_the_wrong_type_are_named(method, option, value):
    with pytest.raises(SecateursError, match=option):
        build_config(method, {option: value})


# --- Ctrl-C while starting up ------------------------------------------------------------------------

@pytest.mark.parametrize("module, where", [("secateurs.models", "load_policy"), ("secateurs.rewards", "load_reward"),
                                           ("secateurs.cli", "load_prompts")])
def test_ctrl_c_while_loading_is_exit_130_with_one_line(module, where, tiny_policy_folder, prompts, tmp_path,
                                                        monkeypatch, capsys):
    import importlib

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib.import_module(module), where, interrupted)
    code, err = run_main(monkeypatch, capsys, *run_args(tiny_policy_folder, prompts, tmp_path / "o.jsonl"))
    assert code == 130
    assert one_line(err) == "interrupted: finished results are kept; run the same command again to resume"


def test_ctrl_c_while_importing_torch_is_exit_130_with_one_line():
    import subprocess
    import sys

    # The child interrupts itself at the moment torch starts loading (deterministic, unlike a timer). It
    # restores Ctrl-C's default handling first: a test run started in the background (`make test &`, as
    # CI may) ignores SIGINT, and children inherit that.
    child = """
import builtins, os, signal
signal.signal(signal.SIGINT, signal.default_int_handler)
real_import = builtins.__import__
def interrupting_import(name, *args, **kwargs):
    if name == "torch" and not getattr(builtins, "_interrupted", False):
        builtins._interrupted = True
        os.kill(os.getpid(), signal.SIGINT)
    return real_import(name, *args, **kwargs)
builtins.__import__ = interrupting_import
from secateurs.entry import main
main()
"""
    proc = subprocess.run([sys.executable, "-c", child, "run", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130, (proc.stdout[-200:], proc.stderr[-500:])
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "interrupted: finished results are kept; run the same command again to resume"


@pytest.mark.parametrize("method, option", [("speculative-rejection", "n"), ("cards", "proposals")])
def test_python_callers_get_keywords_not_flags(method, option):
    with pytest.raises(SecateursError) as err:
        build_config(method, {option: 100, "max_batch_rows": 4})
    assert "--" not in str(err.value) and f"lower {option} or raise max_batch_rows" in str(err.value)
