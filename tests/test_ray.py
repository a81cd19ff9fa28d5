"""secateurs.ray on a real local Ray (2 CPUs): same answers as a local run, resume, dead workers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from secateurs.errors import SecateursError
from secateurs.methods import get_method
from secateurs.models import load_policy
from secateurs.prompts import make_prompts
from secateurs.rewards import load_reward
from secateurs.runner import run_prompts

REWARD = "sentiment+civility"
METHOD = "best-of-n"
OPTIONS = {"n": 3, "max_new_tokens": 8}
SEED = 5
TEXTS = ["how do i make tea", "give me a good tip for sleep", "what is green", "thank you",
         "can you help me with my work", "is it hot water", "a calm night", "what do you think about tea",
         "please help", "good day to you"]
MEASURED = ("seconds", "lm_seconds", "rm_seconds", "other_seconds", "peak_memory_bytes",
            "lm_positions_prefilled", "lm_positions_decoded")  # positions: padding depends on the batch


def config():
    return get_method(METHOD).config_class(**OPTIONS)


def comparable(record: dict) -> dict:
    """A result line without what differs between runs of one configuration (timings, memory)."""
    record = dict(record)
    record["cost"] = {k: v for k, v in record["cost"].items() if k not in MEASURED}
    return record


def lines_by_id(path: Path) -> dict[str, dict]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    by_id = {r["id"]: comparable(r) for r in records}
    assert len(by_id) == len(records), "a prompt was written twice"
    return by_id


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def pool(ray_local, tiny_policy_folder):
    """Two workers shared by the tests below (a worker's start-up, importing torch, takes seconds)."""
    from secateurs.ray import RayWorkers

    with RayWorkers(str(tiny_policy_folder), REWARD, workers=2) as workers:
        yield workers


@pytest.fixture(scope="module")
def local_run(tiny_policy_folder, tmp_path_factory):
    """The single-process run every Ray run must equal, line for line (timings aside)."""
    out = tmp_path_factory.mktemp("local") / "out.jsonl"
    run_prompts(make_prompts(TEXTS), METHOD, config(), load_policy(str(tiny_policy_folder)), load_reward(REWARD),
                seed=SEED, out=out)
    return out


def test_same_answers_as_a_local_run_with_one_worker(ray_local, tiny_policy_folder, local_run, tmp_path):
    from secateurs.ray import align_dataset

    out = tmp_path / "ray.jsonl"
    results = align_dataset(make_prompts(TEXTS), METHOD, config(), str(tiny_policy_folder), REWARD, seed=SEED,
                            out=out, workers=1)
    assert [r.id for r in results] == [str(i) for i in range(len(TEXTS))]
    assert lines_by_id(out) == lines_by_id(local_run)


def test_bench_cells_on_ray_equal_a_local_bench(ray_local, tiny_policy_folder, tmp_path):
    from secateurs.bench import BenchSpec, parse_method_spec, run_bench

    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in TEXTS[:4]))

    def bench(out, ray):
        spec = BenchSpec(prompts=str(prompts), cells=parse_method_spec("best-of-n:n=1,2"), out=tmp_path / out,
                         policy=str(tiny_policy_folder), reward=REWARD, seed=SEED, common={"max_new_tokens": 6},
                         bootstrap=100)
        return run_bench(spec, progress=False, ray=ray)[1]

    local, on_ray = bench("local", None), bench("ray", {"workers": 1})
    assert [c.name for c in local] == [c.name for c in on_ray]
    for a, b in zip(local, on_ray):
        assert [comparable(r.to_json()) for r in a.results] == [comparable(r.to_json()) for r in b.results]


def test_user_errors_from_workers_are_one_line(ray_local, tmp_path):
    from secateurs.ray import align_dataset

    with pytest.raises(SecateursError) as e:
        align_dataset(["hi"], "sampling", None, str(tmp_path / "no-such-model"), REWARD, workers=1)
    assert "unknown policy" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(SecateursError, match="spec string"):
        align_dataset(["hi"], "sampling", None, None, lambda p, r: 0.0, workers=1)
    with pytest.raises(SecateursError, match="n must be"):
        align_dataset(["hi"], "best-of-n", {"n": 0}, None, None, workers=1)


@pytest.mark.parametrize("shard_size", [None, 1])
def test_same_answers_as_a_local_run_with_two_workers(pool, local_run, tmp_path, shard_size):
    out = tmp_path / "ray.jsonl"
    results = pool.run(make_prompts(TEXTS), METHOD, config(), seed=SEED, out=out, shard_size=shard_size)
    assert [r.id for r in results] == [str(i) for i in range(len(TEXTS))]
    assert lines_by_id(out) == lines_by_id(local_run)


def test_killed_driver_rerun_resumes(pool, local_run, tmp_path):
    """What a driver killed mid-run leaves (some lines, the last cut off) is completed, nothing redone."""
    out = tmp_path / "ray.jsonl"
    lines = local_run.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:5]) + lines[5][:40])
    computed = []
    pool.run(make_prompts(TEXTS), METHOD, config(), seed=SEED, out=out,
             on_results=lambda rs: computed.extend(r.id for r in rs))
    assert sorted(computed, key=int) == [str(i) for i in range(5, len(TEXTS))]
    assert lines_by_id(out) == lines_by_id(local_run)
    # Another configuration's file is refused, as in a local run.
    with pytest.raises(SecateursError, match="different configuration"):
        pool.run(make_prompts(TEXTS), METHOD, config(), seed=SEED + 1, out=out)


@pytest.mark.parametrize("no_restart", [True, False], ids=["killed-for-good", "restarted-by-ray"])
def test_a_killed_worker_loses_and_duplicates_nothing(ray_local, pool, local_run, tmp_path, no_restart):
    out = tmp_path / "ray.jsonl"
    killed = []

    def kill_one(results):
        if not killed:  # both workers still hold queued shards
            killed.append(pool.actors[0])
            ray_local.kill(pool.actors[0], no_restart=no_restart)

    started = pool._started
    results = pool.run(make_prompts(TEXTS), METHOD, config(), seed=SEED, out=out, shard_size=1, on_results=kill_one)
    assert killed
    assert len(results) == len(TEXTS)
    assert lines_by_id(out) == lines_by_id(local_run)
    # Killed for good: the driver started a fresh worker and handed the dead one's shards out again.
    # Restarted: Ray restarted the actor and retried its tasks.
    assert pool._started == started + (1 if no_restart else 0)


def test_without_ray_one_line_says_what_to_install():
    code = ("import sys; sys.modules['ray'] = None\n"
            "from secateurs.errors import SecateursError\n"
            "from secateurs.ray import align_dataset\n"
            "try:\n    align_dataset(['hi'], 'sampling', None, None, None)\n"
            "except SecateursError as e:\n    print(e)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "--ray needs Ray: pip install 'secateurs[ray]'", done.stderr[-2000:]


def run_cli(*args, timeout=120):
    import os

    env = {**os.environ, "RAY_ADDRESS": ""}
    return subprocess.run([sys.executable, "-m", "secateurs.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_an_unreachable_ray_address_fails_at_once_in_one_line(tmp_path):
    pytest.importorskip("ray")
    # Ray itself retries such an address for minutes; the subprocess timeout is the test's bound.
    done = run_cli("run", "--method", "sampling", "--ray", "--ray-address", "127.0.0.1:1", "--quiet",
                   "--out", str(tmp_path / "out.jsonl"), timeout=60)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip() == "error: cannot reach Ray at 127.0.0.1:1: Connection refused"


@pytest.mark.parametrize("flag, value", [("--workers", "0"), ("--workers", "-1"), ("--gpus-per-worker", "-1")])
def test_ray_pool_sizes_out_of_range_are_refused(flag, value, monkeypatch, capsys):
    from cli_main import run_main

    code, stderr = run_main(monkeypatch, capsys, "run", "--method", "sampling", "--ray", flag, value, "--quiet")
    assert code == 2 and flag in stderr and value in stderr, stderr


def test_python_names_in_pool_size_errors(ray_local):
    from secateurs.ray import RayWorkers

    with pytest.raises(SecateursError, match=r"^workers must be an integer >= 1, got 0$"):
        RayWorkers(None, None, workers=0)
    with pytest.raises(SecateursError, match=r"^gpus_per_worker must be a number >= 0, got nan$"):
        RayWorkers(None, None, gpus_per_worker=float("nan"))


@pytest.mark.parametrize("seed", [1.0, "1", None])
def test_a_seed_that_is_not_an_integer_is_refused_before_ray_starts(seed):
    pytest.importorskip("ray")
    from secateurs.ray import align_dataset

    with pytest.raises(SecateursError, match=r"^seed must be an integer, got "):
        align_dataset(["hi"], "sampling", None, seed=seed)


def test_a_reward_failing_on_some_prompts_fails_only_those_as_a_local_run(ray_local, tiny_policy_folder, tmp_path,
                                                                          monkeypatch):
    """The workers' answered prompts are written and the failures come back as one PromptsFailed naming them,
    as in a local run (before, the first failing shard's error ended the run and its answered prompts were lost)."""
    from secateurs.ray import align_dataset
    from secateurs.runner import PromptsFailed

    module = tmp_path / "picky_reward.py"
    module.write_text("def score(prompt, response):\n"
                      "    if 'green' in prompt or 'calm' in prompt:\n"
                      "        raise ValueError('no colours, no calm')\n"
                      "    return float(len(response))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "ray.jsonl"
    with pytest.raises(PromptsFailed) as e:
        align_dataset(make_prompts(TEXTS), METHOD, config(), str(tiny_policy_folder), "py:picky_reward:score",
                      seed=SEED, out=out, workers=2, shard_size=3)
    failing = {str(i) for i, t in enumerate(TEXTS) if "green" in t or "calm" in t}
    assert set(e.value.errors) == failing and "no colours, no calm" in str(e.value)
    written = lines_by_id(out)
    assert set(written) == {str(i) for i in range(len(TEXTS))} - failing  # every other prompt, once
    assert [r.id for r in e.value.results] == [str(i) for i in range(len(TEXTS)) if str(i) not in failing]


def test_dataset_r_star_on_ray_equals_a_local_run(pool, tiny_policy_folder):
    """CARDS' default r_star dataset: calibrated once on the workers, after every prompt is checked; the same
    r* and answers as a local run."""
    from secateurs.methods.cards import CardsConfig

    config = CardsConfig(max_new_tokens=6, r_star_prompts=2, r_star_samples=2, max_retries=2)
    prompts = make_prompts(TEXTS[:4])
    on_ray = pool.run(prompts, "cards", config, seed=SEED)
    local = run_prompts(prompts, "cards", config, load_policy(str(tiny_policy_folder)), load_reward(REWARD), seed=SEED)
    assert [r.response for r in on_ray] == [r.response for r in local]
    assert on_ray[0].details["r_star_calibration"]["r_star"] == local[0].details["r_star_calibration"]["r_star"]
    assert all(r.config["r_star"] == local[0].config["r_star"] for r in on_ray)
