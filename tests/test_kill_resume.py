"""kill -9 at random moments, restarting the same command each time: the output ends up equal to an
uninterrupted run's, id for id and response for response, every id exactly once.

The moments (from a fixed seed): during start-up (imports, model loading), after a random number of
results were written, right after the output grew, and in the middle of a write (a hook writes the
first half of a result line, then SIGKILLs its own process: the torn line a kill leaves mid-write).
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from click.testing import CliRunner

from secateurs.cli import cli

N_PROMPTS = 30

# `python -c HOOK ARGS...`: the real command line, whose K-th result write is cut in half by SIGKILL.
HOOK = r"""
import os, signal, sys
from secateurs import results

at = int(os.environ["SECATEURS_TEST_KILL_AT_WRITE"])
calls = 0
original = results.ResultWriter.write

def write(self, batch):
    global calls
    batch = list(batch)
    calls += 1
    if calls == at:
        data = b"".join(results.result_line(r, self.path) for r in batch)
        os.write(self._file.fileno(), data[: len(data) // 2])  # half the line reaches the file...
        os.kill(os.getpid(), signal.SIGKILL)  # ...and the process dies mid-write
    return original(self, batch)

results.ResultWriter.write = write
from secateurs.cli import main
main()
"""


def whole_lines(out: Path) -> int:
    return out.read_bytes().count(b"\n") if out.exists() else 0


def size(out: Path) -> int:
    return out.stat().st_size if out.exists() else 0


def kill_when(proc: subprocess.Popen, moment, timeout: float = 120) -> bool:
    """SIGKILL `proc` as soon as `moment()` holds; False if it finished first."""
    deadline = time.monotonic() + timeout
    while not moment():
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.001)
    proc.kill()
    proc.wait()
    return proc.returncode == -signal.SIGKILL


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text(encoding="utf-8").split("\n")[:-1]]


def test_kill_9_at_random_moments_then_resume_equals_an_uninterrupted_run(tiny_policy_folder, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"tea number {i} please, hot water"}) + "\n"
                               for i in range(N_PROMPTS)))
    # One prompt at a time (n=2 rows of 2): results are written one by one through the run.
    args = ["run", "--method", "best-of-n", "--policy", str(tiny_policy_folder), "--reward", "sentiment",
            "--n", "2", "--max-new-tokens", "6", "--max-batch-rows", "2", "--quiet", "--prompts", str(prompts)]
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "secateurs.cli", *args, "--out", str(out)]
    # One thread: on a busy machine, torch's thread pool spinning against other processes makes each
    # forward of the tiny model ~100x slower; the reference below runs with one thread too.
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def start(hook_at: int | None = None) -> subprocess.Popen:
        if hook_at is None:
            return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        return subprocess.Popen([sys.executable, "-c", HOOK, *cmd[3:]], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env={**env, "SECATEURS_TEST_KILL_AT_WRITE": str(hook_at)})

    rng = random.Random(20240613)
    kills = 0

    # 1. during start-up (imports, model loading) or the first results
    proc, t0, wait = start(), time.monotonic(), rng.uniform(0.2, 2.5)
    kills += kill_when(proc, lambda: time.monotonic() - t0 >= wait)
    # 2.-3. after a random number of written results, a random few milliseconds later
    for _ in range(2):
        target = whole_lines(out) + rng.randint(2, 5)
        delay = rng.uniform(0, 0.03)
        proc = start()
        kills += kill_when(proc, lambda: whole_lines(out) >= target and (time.sleep(delay) or True))
    # 4. right after the output grew (between the write and its fsync, or just after)
    before = size(out)
    proc = start()
    kills += kill_when(proc, lambda: size(out) > before)
    # 5. in the middle of a write: a torn line is left behind
    proc = start(hook_at=rng.randint(1, 3))
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    kills += 1
    torn = out.read_bytes()
    assert not torn.endswith(b"\n"), "the hook's kill leaves half a line"
    # 6. once more at a random point, on top of the torn line
    target = whole_lines(out) + rng.randint(1, 4)
    proc = start()
    kills += kill_when(proc, lambda: whole_lines(out) >= target)
    assert kills >= 5, f"only {kills} of the kills landed before the run finished"
    assert whole_lines(out) < N_PROMPTS, "the run should still have prompts to do"

    # the same command to the end
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    assert done.returncode == 0, done.stderr

    reference = tmp_path / "reference.jsonl"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = CliRunner().invoke(cli, [*args, "--out", str(reference)])
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output

    got, want = records(out), records(reference)
    ids = [r["id"] for r in got]
    assert sorted(ids) == sorted(f"q{i}" for i in range(N_PROMPTS)) and len(ids) == len(set(ids)) == N_PROMPTS
    fields = ("prompt", "response", "reward", "response_tokens", "finish_reason", "details", "seed", "config")
    by_id = {r["id"]: r for r in got}
    for r in want:
        assert {f: by_id[r["id"]][f] for f in fields} == {f: r[f] for f in fields}, r["id"]
