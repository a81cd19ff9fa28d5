"""The output file: nothing a user wrote is cut or overwritten, a resumed run only reuses results of
the same prompts, two processes never write one file, and write failures are one clear line."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from secateurs.errors import SecateursError
from secateurs.meter import Cost
from secateurs.prompts import make_prompts
from secateurs.results import AlignResult, ResultWriter, open_results, read_results

FP = "fingerprint-1"
PROMPTS = make_prompts([{"id": "a", "prompt": "how do i make tea"}, {"id": "b", "prompt": "give me a tip"},
                        {"id": "c", "prompt": "what is green"}])


def result(prompt, response="heat the water", reward=0.5, fingerprint=FP, **extra) -> AlignResult:
    return AlignResult(id=prompt.id, prompt=prompt.to_json(), response=response, reward=reward,
                       method="best-of-n", config={"n": 2}, seed=0, policy="tiny", reward_model="sentiment",
                       finish_reason="eos", response_tokens=3, cost=Cost(rm_calls=2), details={"n": 2},
                       run_fingerprint=fingerprint, **extra)


def write_results(path: Path, results) -> bytes:
    done, writer = open_results(path, FP, PROMPTS)
    with writer:
        writer.write(results)
    return path.read_bytes()


# --- 1. a foreign file is refused before anything is changed ---------------------------------------

def genuine_line() -> str:
    return json.dumps(result(PROMPTS[0]).to_json(), ensure_ascii=False) + "\n"


@pytest.mark.parametrize("content", [
    b"my notes\nremember the milk",  # notes whose last line has no newline
    b'{"id": "p0", "prompt": "how do i make tea"}\n{"id": "p1", "prompt": "a tip"}',  # a prompt file
    b'{"id": "p0", "prompt": "how do i make tea"}',  # a one-line prompt file: complete JSON, not cut off
    "caf\xe9 au lait\n".encode("latin-1") + b"more",  # not UTF-8
    b"\xff\xfe{\x00",  # binary, no newline at all
    genuine_line().encode() + b"and then my own notes",  # results followed by a foreign tail
    genuine_line().encode() + b"notes\n" + genuine_line().encode()[:30],  # a foreign line in the middle
    b"[1, 2",  # a JSON prefix, but not the start of a result line
])
def test_foreign_file_is_refused_and_left_byte_for_byte(tmp_path, content):
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    with pytest.raises(SecateursError, match="not a secateurs results file") as err:
        open_results(path, FP, PROMPTS)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert path.read_bytes() == content
    with pytest.raises(SecateursError, match="not a secateurs results file"):
        read_results(path, FP, [p.id for p in PROMPTS])  # the old entry point is as careful
    assert path.read_bytes() == content


def test_results_of_another_configuration_with_a_cut_off_line_are_refused_untouched(tmp_path):
    path = tmp_path / "out.jsonl"
    content = write_results(path, [result(PROMPTS[0])]) + genuine_line().encode()[:40]
    path.write_bytes(content)
    with pytest.raises(SecateursError, match="different configuration"):
        open_results(path, "another-fingerprint", PROMPTS)
    assert path.read_bytes() == content


@pytest.mark.parametrize("cut", [1, 7, 40, -30, -2])
def test_only_a_cut_off_last_line_of_genuine_results_is_dropped(tmp_path, cut):
    path = tmp_path / "out.jsonl"
    complete = write_results(path, [result(PROMPTS[0], "réponse ✓"), result(PROMPTS[1], "thé vert ✓")])
    partial = json.dumps(result(PROMPTS[2], "un thé ✓✓✓").to_json(), ensure_ascii=False).encode()[:cut]
    path.write_bytes(complete + partial)
    done, writer = open_results(path, FP, PROMPTS)
    writer.close()
    assert sorted(done) == ["a", "b"] and done["a"].response == "réponse ✓"
    assert path.read_bytes() == complete


def test_a_cut_inside_a_multibyte_character_is_a_cut_off_line(tmp_path):
    path = tmp_path / "out.jsonl"
    line = json.dumps(result(PROMPTS[0], "✓✓✓").to_json(), ensure_ascii=False).encode()
    cut = line.index("✓".encode()) + 1  # half of a UTF-8 character
    path.write_bytes(line[:cut])
    done, writer = open_results(path, FP, PROMPTS)
    writer.close()
    assert done == {} and path.read_bytes() == b""


def test_a_whole_last_result_without_its_newline_is_kept(tmp_path):
    path = tmp_path / "out.jsonl"
    complete = write_results(path, [result(PROMPTS[0]), result(PROMPTS[1])])
    path.write_bytes(complete[:-1])  # an editor saved it without the final newline
    done, writer = open_results(path, FP, PROMPTS)
    with writer:
        writer.write([result(PROMPTS[2])])
    assert sorted(done) == ["a", "b"]
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["a", "b", "c"]


def test_responses_with_unicode_line_separators_resume(tmp_path):
    path = tmp_path / "out.jsonl"
    odd = "one\u2028two\x85three\u2029four\x1cfive"
    write_results(path, [result(PROMPTS[0], odd), result(PROMPTS[1])])
    done, writer = open_results(path, FP, PROMPTS)
    writer.close()
    assert done["a"].response == odd and sorted(done) == ["a", "b"]


# --- 2. a stored result must answer the same prompt --------------------------------------------------

def test_prompt_fingerprint_is_stored_and_a_different_prompt_under_the_same_id_is_refused(tmp_path):
    path = tmp_path / "out.jsonl"
    first = make_prompts(["how do i make tea", "give me a tip"])  # ids "0", "1": line numbers
    second = make_prompts(["what is green", "give me a tip"])
    assert first[0].fingerprint != second[0].fingerprint and first[1].fingerprint == second[1].fingerprint
    done, writer = open_results(path, FP, first)
    with writer:
        writer.write([result(p) for p in first])
    stored = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["prompt_fingerprint"] for r in stored] == [p.fingerprint for p in first]
    before = path.read_bytes()
    with pytest.raises(SecateursError, match=r"different prompt under id '0'") as err:
        open_results(path, FP, second)
    assert str(path) in str(err.value)
    assert path.read_bytes() == before
    done, writer = open_results(path, FP, first)  # the same prompts resume
    writer.close()
    assert sorted(done) == ["0", "1"]


def test_results_written_without_a_prompt_fingerprint_are_checked_by_their_prompt(tmp_path):
    path = tmp_path / "out.jsonl"
    record = result(PROMPTS[0]).to_json()
    del record["prompt_fingerprint"]  # as written before the field existed
    path.write_text(json.dumps(record) + "\n")
    other = make_prompts([{"id": "a", "prompt": "something else entirely"}])
    with pytest.raises(SecateursError, match="different prompt under id 'a'"):
        open_results(path, FP, other)
    done, writer = open_results(path, FP, PROMPTS)
    writer.close()
    assert done["a"].prompt_fingerprint == PROMPTS[0].fingerprint


def test_results_for_ids_not_in_this_run_are_refused(tmp_path):
    path = tmp_path / "out.jsonl"
    write_results(path, [result(PROMPTS[2])])
    with pytest.raises(SecateursError, match="prompt id 'c', which is not in this run's prompts"):
        open_results(path, FP, PROMPTS[:2])


# --- 3. one writer at a time ----------------------------------------------------------------------

def test_a_second_writer_fails_at_once_and_the_lock_goes_with_close(tmp_path):
    path = tmp_path / "out.jsonl"
    done, writer = open_results(path, FP, PROMPTS)
    writer.write([result(PROMPTS[0])])
    other = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        from pathlib import Path
        from secateurs.errors import SecateursError
        from secateurs.prompts import make_prompts
        from secateurs.results import open_results
        try:
            open_results(Path({str(path)!r}), {FP!r}, make_prompts(["x"]))
        except SecateursError as e:
            print(e)
        """)], capture_output=True, text=True, timeout=120)
    assert "being written by another running secateurs process" in other.stdout and str(path) in other.stdout
    with pytest.raises(SecateursError, match="being written by another"):
        open_results(path, FP, PROMPTS)  # another open of the file in this process is refused too
    writer.write([result(PROMPTS[1])])  # the holder goes on writing
    writer.close()
    done, writer = open_results(path, FP, PROMPTS)
    writer.close()
    assert sorted(done) == ["a", "b"]


# --- outputs that cannot be written -----------------------------------------------------------------

def test_an_output_that_is_a_folder_or_under_a_file_is_named(tmp_path):
    with pytest.raises(SecateursError, match="is a folder") as err:
        open_results(tmp_path, FP, PROMPTS)
    assert str(tmp_path) in str(err.value)
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    with pytest.raises(SecateursError, match="is a file, not a folder") as err:
        open_results(notes / "out.jsonl", FP, PROMPTS)
    assert str(notes / "out.jsonl") in str(err.value) and notes.read_text() == "keep me"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_an_output_in_a_read_only_folder_is_named(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(SecateursError, match="permission denied") as err:
            open_results(folder / "out.jsonl", FP, PROMPTS)
        assert str(folder / "out.jsonl") in str(err.value)
    finally:
        folder.chmod(0o700)


def test_a_full_disk_is_one_line_and_leaves_no_partial_line(tmp_path):
    """A real write failure: the file-size limit (RLIMIT_FSIZE) makes write() fail as a full disk does."""
    path = tmp_path / "out.jsonl"
    code = textwrap.dedent(f"""
        import resource, signal
        from pathlib import Path
        from secateurs.errors import SecateursError
        from secateurs.meter import Cost
        from secateurs.prompts import make_prompts
        from secateurs.results import AlignResult, open_results
        prompts = make_prompts(["how do i make tea", "give me a tip"])
        def result(p, text):
            return AlignResult(id=p.id, prompt=p.to_json(), response=text, reward=0.5, method="m", config={{}},
                               seed=0, policy="p", reward_model="r", finish_reason="eos", response_tokens=1,
                               cost=Cost(), run_fingerprint="fp")
        done, writer = open_results(Path({str(path)!r}), "fp", prompts)
        writer.write([result(prompts[0], "short")])
        size = Path({str(path)!r}).stat().st_size
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100, size + 100))
        try:
            writer.write([result(prompts[1], "x" * 5000)])
        except SecateursError as e:
            print("ERROR:", e)
        writer.close()
        """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ERROR: cannot write output") and str(path) in out.stdout
    assert "Traceback" not in out.stdout + out.stderr
    lines = path.read_text().split("\n")
    assert len(lines) == 2 and lines[1] == "" and json.loads(lines[0])["response"] == "short"


# --- JSON has no NaN or infinity ------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [{"reward": float("nan")}, {"reward": float("inf")},
                                 {"details": {"r_star": float("-inf")}}])
def test_non_finite_numbers_are_never_written(tmp_path, bad):
    path = tmp_path / "out.jsonl"
    done, writer = open_results(path, FP, PROMPTS)
    fine = result(PROMPTS[0])
    broken = result(PROMPTS[1], **{k: v for k, v in bad.items() if k == "reward"})
    if "details" in bad:
        broken.details = bad["details"]
    with pytest.raises(SecateursError, match="prompt 'b' holds NaN or infinity"):
        writer.write([fine, broken])
    writer.close()
    assert path.read_bytes() == b""  # the batch is written whole or not at all


def test_result_writer_still_opens_a_path_and_locks_it(tmp_path):
    path = tmp_path / "out.jsonl"
    with ResultWriter(path) as writer:
        writer.write([result(PROMPTS[0])])
        with pytest.raises(SecateursError, match="being written by another"):
            ResultWriter(path)
    assert sorted(read_results(path, FP, PROMPTS)) == ["a"]
