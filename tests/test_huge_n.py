"""No unbounded n: samples beyond the rows are made only as they get rows, and samples that cannot all be
kept in memory are refused at once, naming the option (`run`, align(), Aligner)."""

import asyncio

import pytest

from cli_main import run_main
from secateurs import align
from secateurs.admission import check_samples
from secateurs.aligner import Aligner
from secateurs.config import build_config
from secateurs.errors import SecateursError

GIB = 2**30


@pytest.mark.parametrize("method, options, named", [
    ("best-of-n", {"n": 10**8}, "n=100000000 samples per prompt"),
    ("best-of-n", {"n": 10**30}, "n=1000000000000000000000000000000 samples per prompt"),
    ("cards", {"r_star_samples": 10**9}, "r_star_samples=1000000000 samples per prompt"),
    ("rejection-sampling", {"max_retries": 10**9}, "max_retries=1000000000 samples per prompt"),
])
def test_samples_that_cannot_all_be_kept_are_refused_naming_the_option(method, options, named):
    with pytest.raises(SecateursError, match=named) as caught:
        check_samples(build_config(method, options), 1, available=16 * GIB)
    assert "at most" in str(caught.value) and "\n" not in str(caught.value)
    check_samples(build_config(method, {}), 1000, available=16 * GIB)  # the defaults fit easily


def test_run_and_align_refuse_a_huge_n_before_generating(tiny_policy, tiny_policy_folder, tmp_path, monkeypatch,
                                                        capsys):
    with pytest.raises(SecateursError, match="n=1000000000000000000000000000000 samples per prompt"):
        align("Hi", policy=tiny_policy, reward="sentiment", n=10**30, max_new_tokens=4)
    out = tmp_path / "o.jsonl"
    code, err = run_main(monkeypatch, capsys, "run", "--method", "best-of-n", "--policy", tiny_policy_folder,
                         "--reward", "sentiment", "--n", "99999999999999999999", "--max-new-tokens", 4, "--quiet",
                         "--out", out)
    assert code == 2 and "Traceback" not in err
    [line] = err.strip().splitlines()
    assert line.startswith("error: n=99999999999999999999 samples per prompt") and "n at most" in line
    assert not out.exists()


def test_a_big_n_makes_samples_only_as_they_get_rows_and_a_cancel_frees_everything(endless):
    aligner = Aligner(endless, "sentiment", max_batch_rows=4)

    async def scenario():
        big = aligner.request("how do i make tea", method="best-of-n", n=100_000, max_new_tokens=2)
        task = asyncio.ensure_future(aligner.submit_request(big))
        while aligner.scheduler.stats.steps < 3:
            await asyncio.sleep(0.005)
        # the samples that got rows so far (the scheduler's thread goes on stepping meanwhile), not 100,000 handles
        assert len(big.live) < 1000 and sum(s.status != "released" for s in big.live) <= 8
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        small = await asyncio.wait_for(aligner.submit("what is green", method="best-of-n", n=2, max_new_tokens=2), 30)
        return big, small

    big, small = asyncio.run(scenario())
    aligner.close()
    assert big.cancelled and small.response is not None
    assert aligner.backend.live_rows == 0 and not aligner.scheduler.active
