"""The same prompts locally (one process) and on Ray (W workers), in one run: wall time of each, the
overhead ratio (Ray / local) and whether the outputs are identical.

    python benchmarks/ray.py                               # a local Ray on this machine's cores
    python benchmarks/ray.py --ray-address auto --workers 8 --gpus-per-worker 1   # a running cluster

Defaults: the first 32 prompts of ../shared/data/alpaca_farm_100.json, the packaged policy and
reward, Best-of-4, 32 new tokens, seed 0, 2 workers. Each measurement starts from nothing: the
local run loads the models, the Ray run starts Ray (unless --ray-address), its workers and their
models; "run only" times exclude that start-up (models loaded, workers ready).
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named ray.py: its folder on sys.path would shadow the `ray` package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

SHARED_DATA = _HERE.parent / ".." / "shared" / "data"
MEASURED = ("seconds", "lm_seconds", "rm_seconds", "other_seconds", "peak_memory_bytes")


def comparable(result) -> dict:
    d = result.to_json()
    d["cost"] = {k: v for k, v in d["cost"].items() if k not in MEASURED}
    return d


def worker_cpu(_actor) -> float:
    return time.process_time()


def rewards(result) -> list[float]:
    """The chosen reward and every candidate's (Best-of-N details)."""
    return [result.reward, *result.details.get("candidate_rewards", [])]


def strip_rewards(d: dict) -> dict:
    """A result without its reward values: the RM's float rounding can depend on which responses
    it scored together (padding), so rewards may differ in the last bits between batchings."""
    d = dict(d, reward=None)
    d["details"] = {k: v for k, v in d["details"].items() if k != "candidate_rewards"}
    return d


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="alpaca_farm_100.json", help="file in ../shared/data with a 'prompt' field")
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--method", default="best-of-n")
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--policy", default=None)
    parser.add_argument("--reward", default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--ray-address", default=None, help="auto or HOST:PORT of a running cluster (default: start a local Ray)")
    parser.add_argument("--gpus-per-worker", type=float, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--shard-size", type=int, default=None, help="prompts per Ray task (default: automatic)")
    parser.add_argument("--local-threads", type=int, default=None, help="torch threads of the local run (default: torch's)")
    args = parser.parse_args()

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from secateurs.methods import get_method
    from secateurs.models import load_policy
    from secateurs.prompts import make_prompts
    from secateurs.ray import RayWorkers, _import_ray
    from secateurs.rewards import load_reward
    from secateurs.runner import run_prompts

    records = json.loads((SHARED_DATA / args.data).read_text())[:args.count]
    prompts = make_prompts([r["prompt"] for r in records])
    options = {"max_new_tokens": args.max_new_tokens}
    if "n" in {f for f in get_method(args.method).config_class.__dataclass_fields__}:
        options["n"] = args.n
    config = get_method(args.method).config_class(**options)
    out_dir = Path(tempfile.mkdtemp(prefix="secateurs-ray-bench-"))
    torch.set_num_threads(args.local_threads or torch.get_num_threads())
    print(f"{len(prompts)} prompts from {args.data}, {args.method} {options}, seed {args.seed}, "
          f"policy {args.policy or 'default'}, reward {args.reward or 'default'}; {os.cpu_count()} CPU cores, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads locally); outputs in {out_dir}")

    start = time.perf_counter()
    policy, reward = load_policy(args.policy, device=args.device), load_reward(args.reward, device=args.device)
    loaded = time.perf_counter()
    cpu = time.process_time()
    local = run_prompts(prompts, args.method, config, policy, reward, seed=args.seed, out=out_dir / "local.jsonl")
    local_done = time.perf_counter()
    local_cpu = time.process_time() - cpu
    del policy, reward

    ray = _import_ray()
    start_ray = time.perf_counter()
    with RayWorkers(args.policy, args.reward, workers=args.workers, ray_address=args.ray_address,
                    gpus_per_worker=args.gpus_per_worker, device=args.device) as pool:
        # Wait for the workers (Ray start, model loading) so start-up and the run are timed apart.
        ray.get([a.describe.remote(args.method, config, args.seed) for a in pool.actors])
        ready = time.perf_counter()
        cpu = ray.get([a.__ray_call__.remote(worker_cpu) for a in pool.actors])
        on_ray = pool.run(prompts, args.method, config, seed=args.seed, out=out_dir / "ray.jsonl",
                          shard_size=args.shard_size)
        ray_done = time.perf_counter()
        ray_cpu = sum(ray.get([a.__ray_call__.remote(worker_cpu) for a in pool.actors])) - sum(cpu)
        cpus = pool.cpus_per_worker

    identical = [comparable(a) for a in local] == [comparable(b) for b in on_ray]
    same_tokens = [strip_rewards(comparable(a)) for a in local] == [strip_rewards(comparable(b)) for b in on_ray]
    reward_diff = max(abs(x - y) for a, b in zip(local, on_ray) for x, y in zip(rewards(a), rewards(b)))
    local_total, local_run = local_done - start, local_done - loaded
    ray_total, ray_run = ray_done - start_ray, ray_done - ready
    load = os.getloadavg()[0]
    print(f"{'':30}{'end to end':>12}{'run only':>12}{'run CPU':>12}")
    print(f"{f'local (1 process, {torch.get_num_threads()} threads)':30}{local_total:11.1f}s{local_run:11.1f}s"
          f"{local_cpu:11.1f}s")
    print(f"{f'Ray ({args.workers} workers x {cpus:g} CPU)':30}{ray_total:11.1f}s{ray_run:11.1f}s{ray_cpu:11.1f}s")
    print(f"{'overhead ratio Ray/local':30}{ray_total / local_total:12.2f}{ray_run / local_run:12.2f}"
          f"{ray_cpu / local_cpu:12.2f}")
    print(f"(load average at the end: {load:.1f} on {os.cpu_count()} cores; run CPU: the processes' CPU "
          "seconds, Ray workers summed, driver excluded)")
    print(f"outputs identical (every field but timings): {'yes' if identical else 'no'}")
    print(f"responses, chosen samples, token and call counts identical: {'yes' if same_tokens else 'NO'}; "
          f"largest reward difference {reward_diff:.2g}")
    if not same_tokens:
        sys.exit(1)


if __name__ == "__main__":
    main()
