"""`r_star dataset` (secateurs/calibration.py): one r* for a prompt set, calibrated once on its first prompts,
its cost reported once; answers as with that number given, whatever the slice or the batch."""

import json
import statistics

import pytest

from cli_main import run_main
from secateurs.aligner import Aligner
from secateurs.errors import SecateursError
from secateurs.methods.cards import CardsConfig
from secateurs.methods.rejection_sampling import RejectionSamplingConfig
from secateurs.methods.sampling import SamplingConfig
from secateurs.prompts import make_prompts
from secateurs.rewards import load_reward
from secateurs.runner import run_prompts

TEXTS = ["how do i make tea", "give me a good tip for sleep", "what is green", "tell me about the sea",
         "a calm night"]
PROMPTS = make_prompts(TEXTS)


@pytest.fixture(scope="module")
def reward():
    return load_reward("sentiment")


@pytest.mark.parametrize("method, config_class", [("cards", CardsConfig), ("rejection-sampling",
                                                                            RejectionSamplingConfig)])
def test_r_star_is_the_calibration_prompts_mean_plus_margin_times_their_std(method, config_class, tiny_policy,
                                                                             reward):
    options = dict(max_new_tokens=12, max_retries=3, r_star_prompts=2, r_star_samples=3, r_star_margin=0.5)
    results = run_prompts(PROMPTS, method, config_class(r_star="dataset", **options), tiny_policy, reward)
    # The calibration, recomputed by hand: 3 plain samples of each of the first 2 prompts at the method's
    # own sampling (temperature beta 0.7, top-k 40), keyed by "<id>#r_star/<j>".
    samples = make_prompts([{"id": f"{p.id}#r_star/{j}", "prompt": p.text} for p in PROMPTS[:2] for j in range(3)])
    drawn = run_prompts(samples, "sampling", SamplingConfig(max_new_tokens=12, temperature=0.7, top_k=40),
                        tiny_policy, reward)
    per_prompt = [[r.reward for r in drawn[i:i + 3]] for i in (0, 3)]
    want = statistics.fmean(x for xs in per_prompt for x in xs) + 0.5 * statistics.fmean(
        statistics.pstdev(xs) for xs in per_prompt)
    record = results[0].details["r_star_calibration"]
    assert record["r_star"] == pytest.approx(want)
    assert record["prompts"] == 2 and record["samples"] == 3
    assert record["cost"]["tokens_generated"] == sum(r.cost.tokens_generated for r in drawn)
    assert all(r.details["r_star_calibration"] == record for r in results)
    assert all(r.config["r_star"] == pytest.approx(want) for r in results)
    # The method then answers exactly as with that number given, and its own cost holds no calibration.
    fixed = run_prompts(PROMPTS, method, config_class(r_star=record["r_star"], **options), tiny_policy, reward)
    assert [r.response for r in results] == [r.response for r in fixed]
    assert [r.cost.tokens_generated for r in results] == [r.cost.tokens_generated for r in fixed]


def test_every_shard_gets_the_whole_files_r_star(tiny_policy_folder, tmp_path, monkeypatch, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"q{i}", "prompt": t}) + "\n" for i, t in enumerate(TEXTS)))
    common = ["run", "--method", "cards", "--policy", tiny_policy_folder, "--reward", "sentiment", "--prompts",
              prompts, "--max-new-tokens", "8", "--r-star", "dataset", "--r-star-prompts", "2", "--r-star-samples",
              "2", "--max-retries", "2", "--quiet"]
    values = set()
    answers = {}
    for shard in (None, "0/2", "1/2"):
        out = tmp_path / f"out-{shard or 'all'}.jsonl".replace("/2", "of2")
        code, err = run_main(monkeypatch, capsys, *common, "--out", out, *(["--shard", shard] if shard else []))
        assert code == 0, err
        for line in out.read_text().splitlines():
            record = json.loads(line)
            values.add(record["details"]["r_star_calibration"]["r_star"])
            answers.setdefault(record["id"], set()).add(record["response"])
    assert len(values) == 1  # the slices calibrate on the file's first prompts, not on their own
    assert all(len(a) == 1 for a in answers.values()) and len(answers) == len(TEXTS)


def test_a_request_answered_alone_runs_dataset_as_auto(tiny_policy, reward):
    """The request is its own prompt set, and the dataset formula on one prompt is auto's."""
    import asyncio

    aligner = Aligner(tiny_policy, reward, max_batch_rows=8)
    try:
        async def both():
            options = dict(method="cards", max_new_tokens=8, prompt_id="tea", max_retries=3)
            return (await aligner.submit("how do i make tea", r_star="dataset", **options),
                    await aligner.submit("how do i make tea", **options),  # CARDS' default: dataset
                    await aligner.submit("how do i make tea", r_star="auto", **options))
        dataset, default, auto = asyncio.run(both())
    finally:
        aligner.close()
    assert dataset.response == default.response == auto.response
    assert dataset.config["r_star"] == default.config["r_star"] == "auto"
    assert dataset.details["r_star"] == auto.details["r_star"]


def test_a_method_started_with_dataset_unresolved_is_one_line(tiny_policy, reward):
    from secateurs.calibration import refuse_unresolved

    with pytest.raises(SecateursError, match="^r_star 'dataset' is calibrated once on a prompt set before a run"):
        refuse_unresolved(CardsConfig())
    refuse_unresolved(CardsConfig(r_star="auto"))


def test_cards_defaults_to_dataset_and_rejection_sampling_to_auto():
    assert CardsConfig().r_star == "dataset" and RejectionSamplingConfig().r_star == "auto"


def test_bad_r_star_values_are_named():
    with pytest.raises(SecateursError, match="r_star must be a finite number, 'auto' or 'dataset', got 'data'"):
        CardsConfig(r_star="data").validate()
    with pytest.raises(SecateursError, match="r_star_prompts must be an integer >= 1, got 0"):
        CardsConfig(r_star="dataset", r_star_prompts=0).validate()


def test_bench_shows_cards_cost_with_and_without_calibration(tiny_policy_folder, tmp_path):
    from click.testing import CliRunner

    from secateurs.cli import cli

    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"q{i}", "prompt": t}) + "\n" for i, t in enumerate(TEXTS[:4])))
    out = tmp_path / "bench"
    result = CliRunner().invoke(cli, [str(a) for a in [
        "bench", "--prompts", prompts, "--methods", "cards:r_star=auto,dataset:r_star_prompts=2:max_retries=2",
        "--out", out, "--policy", tiny_policy_folder, "--reward", "sentiment", "--max-new-tokens", "8",
        "--bootstrap", "100"]])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    cells = {c["name"]: c for c in summary["cells"]}
    dataset = cells["cards r_star=dataset r_star_prompts=2 max_retries=2"]
    auto = cells["cards r_star=auto r_star_prompts=2 max_retries=2"]
    assert auto["r_star_calibration"] is None
    record = dataset["r_star_calibration"]
    own = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()
           if json.loads(line)["cell"] == "cards r_star=dataset r_star_prompts=2 max_retries=2"]
    mean_own = statistics.fmean(r["cost"]["lm_tokens_prefilled"] + r["cost"]["lm_tokens_decoded"] for r in own)
    calibration = record["cost"]["lm_tokens_prefilled"] + record["cost"]["lm_tokens_decoded"]
    assert calibration > 0
    assert dataset["lm_tokens"] == pytest.approx(mean_own + calibration / 4)  # paid once, shared by the 4 prompts
    assert f"r_star {record['r_star']:.3f}, calibrated once on 2 prompts x 4 samples" in result.output
