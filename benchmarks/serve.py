"""`secateurs serve` under load, driven on loopback with the `openai` async client.

1. 64 chat requests mixing Best-of-N (n=4), Speculative Rejection (n=8), CARDS and plain sampling:
   all 64 at once, then the same 64 one at a time, against the same server. Prints the throughput
   ratio, p50 / p95 latency of each, failed requests, the server's peak RSS, and whether every
   concurrent answer equals its sequential one (answers are keyed by seed and prompt id only).
2. A flood: 500 requests at once against a server with a small queue. Every request must get 200
   or 429 (none hangs, none is lost); prints the counts and the server's RSS before and after.

Both servers are `secateurs serve` subprocesses on the offline default policy and reward.

    python benchmarks/serve.py [--max-tokens 32] [--flood 500] [--flood-queue 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx
import openai

from secateurs.prompts import builtin_prompts

METHODS = [{"method": "best-of-n", "n": 4}, {"method": "speculative-rejection", "n": 8}, {"method": "cards"},
           {"method": "sampling"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`secateurs serve` in a subprocess."""

    def __init__(self, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-c", "from secateurs.cli import main; main()", "serve", "--port", str(self.port),
               *args]
        self.proc = subprocess.Popen(cmd, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        end = time.time() + 600
        while time.time() < end:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
            if self.proc.poll() is not None:
                raise SystemExit(f"the server exited with status {self.proc.returncode}")
        self.model = httpx.get(self.url + "/v1/models").json()["data"][0]["id"]

    def rss_mib(self, field: str) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def requests(max_tokens: int) -> list[dict]:
    prompts = builtin_prompts()
    out = []
    for i in range(64):
        p = prompts[i % len(prompts)]
        ext = {**METHODS[i % len(METHODS)], "prompt_id": p.id}
        out.append(dict(messages=list(p.messages), seed=i // len(prompts), max_tokens=max_tokens,
                        extra_body={"secateurs": ext}))
    return out


async def ask(client: openai.AsyncOpenAI, model: str, req: dict) -> tuple[str | None, float]:
    start = time.perf_counter()
    try:
        r = await client.chat.completions.create(model=model, **req)
        return r.choices[0].message.content, time.perf_counter() - start
    except openai.APIError as e:
        print(f"  failed: {e}", file=sys.stderr)
        return None, time.perf_counter() - start


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


async def mixed(server: Server, max_tokens: int) -> None:
    client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=1800)
    reqs = requests(max_tokens)
    await ask(client, server.model, {**reqs[0], "max_tokens": 4})  # warm-up
    start = time.perf_counter()
    together = await asyncio.gather(*(ask(client, server.model, r) for r in reqs))
    concurrent_s = time.perf_counter() - start
    start = time.perf_counter()
    alone = [await ask(client, server.model, r) for r in reqs]
    sequential_s = time.perf_counter() - start
    failed = sum(a is None for a, _ in together) + sum(a is None for a, _ in alone)
    equal = sum(a == b and a is not None for (a, _), (b, _) in zip(together, alone))
    print(f"mixed: {len(reqs)} chat requests ({', '.join(m['method'] for m in METHODS)}), max_tokens {max_tokens}")
    print(f"  concurrent: {concurrent_s:7.1f} s  {len(reqs) / concurrent_s:6.3f} req/s  "
          f"p50 {pct([t for _, t in together], 50):6.1f} s  p95 {pct([t for _, t in together], 95):6.1f} s")
    print(f"  sequential: {sequential_s:7.1f} s  {len(reqs) / sequential_s:6.3f} req/s  "
          f"p50 {pct([t for _, t in alone], 50):6.1f} s  p95 {pct([t for _, t in alone], 95):6.1f} s")
    print(f"  throughput ratio (concurrent / sequential): {sequential_s / concurrent_s:.2f}x")
    print(f"  failed requests: {failed}")
    print(f"  concurrent answers equal to sequential: {equal}/{len(reqs)}")
    print(f"  server peak RSS: {server.rss_mib('VmHWM'):.0f} MiB")
    await client.close()


async def flood(server: Server, count: int, queue: int, rounds: int = 2) -> None:
    client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=600)

    async def one(i: int, statuses: dict[str, int]) -> None:
        try:
            await client.chat.completions.create(model=server.model, max_tokens=8, seed=i,
                                                 messages=[{"role": "user", "content": f"Say something kind, {i}"}],
                                                 extra_body={"secateurs": {"method": "sampling"}})
            key = "200"
        except openai.RateLimitError:
            key = "429"
        except openai.APIStatusError as e:
            key = str(e.status_code)
        except (openai.APITimeoutError, openai.APIConnectionError) as e:
            key = type(e).__name__
        statuses[key] = statuses.get(key, 0) + 1

    await one(-1, {})  # warm-up: the first decode allocates what every later one reuses
    print(f"flood: {count} requests at once, {rounds} rounds, --max-queue {queue}; "
          f"server RSS after warm-up {server.rss_mib('VmRSS'):.0f} MiB")
    for round_ in range(1, rounds + 1):
        statuses: dict[str, int] = {}
        start = time.perf_counter()
        await asyncio.gather(*(one(i, statuses) for i in range(count)))
        seconds = time.perf_counter() - start
        answered = statuses.get("200", 0) + statuses.get("429", 0)
        health = httpx.get(server.url + "/health").json()
        print(f"  round {round_}: {seconds:.1f} s, statuses {dict(sorted(statuses.items()))}; 200 or 429: "
              f"{answered}/{count}; lost or hung: {count - sum(statuses.values())}; server RSS "
              f"{server.rss_mib('VmRSS'):.0f} MiB (peak {server.rss_mib('VmHWM'):.0f}); after: in flight "
              f"{health['in_flight']}, queue {health['queue_depth']}, rows busy {health['rows_busy']}")
    await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--flood", type=int, default=500)
    parser.add_argument("--flood-queue", type=int, default=8)
    args = parser.parse_args()
    server = Server("--max-queue", "128")
    try:
        asyncio.run(mixed(server, args.max_tokens))
    finally:
        server.close()
    server = Server("--max-queue", str(args.flood_queue), "--max-batch-rows", "16")
    try:
        asyncio.run(flood(server, args.flood, args.flood_queue))
    finally:
        server.close()


if __name__ == "__main__":
    main()
