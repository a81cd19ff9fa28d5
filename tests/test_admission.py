"""Memory admission: a setting whose largest batch cannot fit is refused before generating, in one line
naming the setting and what would fit; a normal setting passes."""

import json

import pytest

from secateurs import admission
from secateurs.admission import check_memory, rows_at_most
from cli_main import run_main
from secateurs.config import build_config
from secateurs.errors import SecateursError


def test_absurd_max_batch_rows_is_refused_naming_what_fits(tiny_policy, caplog):
    config = build_config("best-of-n", {"n": 10**9, "max_batch_rows": 10**9, "max_new_tokens": 8})
    with pytest.raises(SecateursError) as err:
        check_memory(tiny_policy, config, [12, 30, 7], available=8 * 2**30)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("max_batch_rows=1000000000 x (prompt 30 + 8 new tokens) needs ")
    assert "but 8.0 GiB is available" in message
    per_row = 38 * tiny_policy.kv_bytes_per_token() + admission.vocab_size(tiny_policy) * 4 * admission.LOGITS_BUFFERS
    suggested = int(8 * 2**30 // (per_row * admission.HEADROOM))
    assert message.endswith(f"--max-batch-rows {suggested} would fit")
    # the suggestion fits with room for the allocator: no error, no warning
    fits = build_config("best-of-n", {"n": 10**9, "max_batch_rows": suggested, "max_new_tokens": 8})
    check_memory(tiny_policy, fits, [12, 30, 7], available=8 * 2**30)
    assert not caplog.records


def test_a_batch_that_fits_only_without_headroom_runs_with_a_warning(tiny_policy, caplog):
    config = build_config("sampling", {"max_batch_rows": 1000, "max_new_tokens": 8})
    per_row = 18 * tiny_policy.kv_bytes_per_token() + admission.vocab_size(tiny_policy) * 4 * admission.LOGITS_BUFFERS
    check_memory(tiny_policy, config, [10] * 1000, available=int(1000 * per_row * 1.2))  # no error
    [record] = caplog.records
    assert record.levelname == "WARNING" and "it may run out of memory" in record.getMessage()
    assert "--max-batch-rows 750 would fit" in record.getMessage()


def test_a_normal_setting_passes_with_the_real_memory(tiny_policy):
    check_memory(tiny_policy, build_config("best-of-n", {"n": 4, "max_new_tokens": 128}), [200] * 50)
    check_memory(tiny_policy, build_config("sampling", {}), [])  # nothing to run: nothing to check


def test_gang_methods_are_told_to_lower_their_gang_too(tiny_policy):
    config = build_config("speculative-rejection", {"n": 10**8, "max_batch_rows": 10**8})
    with pytest.raises(SecateursError, match=r"--max-batch-rows \d+ with --n at most \d+ would fit"):
        check_memory(tiny_policy, config, [10], available=2**30)
    config = build_config("cards", {"proposals": 10**8, "max_batch_rows": 10**8})
    with pytest.raises(SecateursError, match=r"with --proposals at most \d+ would fit"):
        check_memory(tiny_policy, config, [10], available=2**30)


def test_not_even_one_row_says_lower_max_new_tokens(tiny_policy):
    with pytest.raises(SecateursError, match="not even one row fits: lower --max-new-tokens"):
        check_memory(tiny_policy, build_config("sampling", {"max_new_tokens": 100}), [10], available=1000)


def test_rows_are_what_the_prompts_can_use_at_most():
    # 3 prompts of Best-of-2 never hold more than 6 rows, whatever max_batch_rows says
    assert rows_at_most(build_config("best-of-n", {"n": 2, "max_batch_rows": 10**9}), 3) == 6
    assert rows_at_most(build_config("best-of-n", {"n": 500, "max_batch_rows": 64}), 3) == 64
    # auto r_star calibrates with r_star_samples rows per prompt
    assert rows_at_most(build_config("cards", {"max_batch_rows": 100, "r_star": "auto"}), 2) == 8
    assert rows_at_most(build_config("cards", {"max_batch_rows": 100, "r_star": 1.0}), 2) == 2
    # dataset r_star calibrates in a run of its own before (its own rows), so a prompt holds its one row
    assert rows_at_most(build_config("cards", {"max_batch_rows": 100}), 2) == 2


def test_unreadable_memory_means_no_check(tiny_policy, monkeypatch):
    monkeypatch.setattr(admission, "available_bytes", lambda device: None)
    check_memory(tiny_policy, build_config("best-of-n", {"n": 10**12, "max_batch_rows": 10**12}), [10])


def test_the_cli_refuses_before_generating_and_writes_nothing(tiny_policy_folder, tmp_path, monkeypatch, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "how do i make tea"}) + "\n")
    out = tmp_path / "o.jsonl"
    code, err = run_main(monkeypatch, capsys, "run", "--method", "speculative-rejection", "--policy",
                         tiny_policy_folder, "--reward", "sentiment", "--n", 10**9, "--max-batch-rows", 10**9,
                         "--max-new-tokens", 8, "--quiet", "--prompts", prompts, "--out", out)
    assert code == 2 and "Traceback" not in err
    [line] = err.strip().splitlines()
    assert line.startswith("error: max_batch_rows=1000000000 x (prompt ") and "would fit" in line
    assert not out.exists()
    # a normal setting runs
    code, err = run_main(monkeypatch, capsys, "run", "--method", "best-of-n", "--policy", tiny_policy_folder,
                         "--reward", "sentiment", "--n", 2, "--max-new-tokens", 4, "--quiet", "--prompts", prompts,
                         "--out", out)
    assert code == 0, err
    assert len(out.read_text().splitlines()) == 1


def test_a_reward_model_on_the_policys_device_is_counted_before_the_rows(tiny_policy, tiny_rm_folder):
    from secateurs.rewards import load_reward
    from secateurs.rewards.hf import HFReward

    rm = HFReward(tiny_rm_folder)  # on the CPU, as the tiny policy
    config = build_config("best-of-n", {"n": 64, "max_batch_rows": 64, "max_new_tokens": 8})
    per_row = 38 * tiny_policy.kv_bytes_per_token() + admission.vocab_size(tiny_policy) * 4 * admission.LOGITS_BUFFERS
    rm_bytes = admission.reward_bytes(rm, tiny_policy.device, 38, rows=64)
    # a decoder RM: a batch's activations, its keys and values, and what its prefix cache keeps of 64 texts
    kv = 2 * 2 * 2 * 8 * 4  # K and V, 2 layers, 2 KV heads of 8 dims, fp32
    assert rm_bytes == 16 * 38 * max(32 * 4, 64 * 2) * 4 + (16 * 38 + 64 * 38) * kv
    assert admission.reward_bytes(load_reward("sentiment"), tiny_policy.device, 38) == 0  # no model on the device
    one_row = int((rm_bytes + per_row) * admission.HEADROOM) + 1
    check_memory(tiny_policy, config, [30], available=one_row * 8)  # the 64 rows alone fit
    with pytest.raises(SecateursError) as err:
        check_memory(tiny_policy, config, [30], available=one_row, reward=rm)
    message = str(err.value)
    assert "\n" not in message and "beside the reward model's" in message
    assert message.endswith("; --max-batch-rows 1 would fit")
    with pytest.raises(SecateursError, match="the reward model alone does not fit beside the policy"):
        check_memory(tiny_policy, config, [30], available=rm_bytes, reward=rm)
    check_memory(tiny_policy, config, [30], available=int((64 * per_row + rm_bytes) * admission.HEADROOM) + 1, reward=rm)
