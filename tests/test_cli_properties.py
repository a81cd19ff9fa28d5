"""A property-based pass over `secateurs run` (hypothesis): hostile prompt files (random bytes, random
JSON shapes, unicode) and option values (ints, floats with nan / inf / huge / negative, text), run through
the real command line in-process against the tiny policy. Whatever comes in:

- the exit status is 0 (done) or 2 (bad input, one line), never 1 and never a traceback;
- the output is absent, or valid JSONL (strict JSON: no NaN / Infinity) with every prompt once;
- after exit 0, the same command again resumes: exit 0 and the output unchanged, byte for byte.

The examples come from a fixed seed (the suite is reproducible); SECATEURS_PROPERTY_SEED and
SECATEURS_PROPERTY_EXAMPLES (e.g. 500) explore others.
"""

import contextlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, seed, settings
from hypothesis import strategies as st

from secateurs.cli import main
from secateurs.prompts import load_prompts

EXAMPLES = int(os.environ.get("SECATEURS_PROPERTY_EXAMPLES", "50"))

WORDS = ["tea", "green", "hot", "water", "sleep", "how", "do", "i", "make", "good", "night", "calm", "kind"]

# --- prompt files -------------------------------------------------------------------------------------

words = st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map(" ".join)
unicode_text = st.builds(lambda w, t: f"{w} {t}", words, st.text(max_size=12))  # never blank
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=6)

# Well-formed entries (with unicode text): a prompt string, a messages list ending with a user turn, a bare
# string; their ids, where given, are unique.
good_entry = st.one_of(
    st.fixed_dictionaries({"prompt": unicode_text}),
    st.builds(lambda ms, last: {"messages": [*ms, {"role": "user", "content": last}]},
              st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system"]),
                                              "content": unicode_text}), max_size=2), unicode_text),
    unicode_text,
)
# Anything: random shapes under the keys a loader looks at, random ids, bare values.
ids = st.one_of(st.integers(-3, 3), st.text(max_size=6), values)
message = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "bot"]),
                                 "content": st.one_of(words, st.text(max_size=16), values)})
any_entry = st.one_of(
    st.fixed_dictionaries({"prompt": st.one_of(words, values)}, optional={"id": ids}),
    st.fixed_dictionaries({"messages": st.lists(message, max_size=3)}, optional={"id": ids}),
    st.dictionaries(st.sampled_from(["prompt", "messages", "id", "instruction", "input", "question",
                                     "conversations", "chosen", "text"]), values, max_size=3),
    words,
    values,
)


def encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


@st.composite
def good_prompt_file(draw):
    entries = draw(st.lists(good_entry, min_size=1, max_size=4))
    if draw(st.booleans()):  # explicit unique ids (strings or integers)
        names = draw(st.lists(st.one_of(st.integers(-5, 99), st.text(min_size=1, max_size=6)), min_size=len(entries),
                              max_size=len(entries), unique_by=str))
        entries = [{**(e if isinstance(e, dict) else {"prompt": e}), "id": i} for e, i in zip(entries, names)]
    ascii_only = draw(st.booleans())
    if draw(st.booleans()):
        return ".jsonl", encode("".join(json.dumps(e, ensure_ascii=ascii_only) + "\n" for e in entries))
    return ".json", encode(json.dumps(entries, ensure_ascii=ascii_only))


hostile_prompt_file = st.one_of(
    st.tuples(st.just(".jsonl"), st.lists(st.one_of(good_entry, any_entry), min_size=1, max_size=4).map(
        lambda es: encode("".join(json.dumps(e) + "\n" for e in es)))),
    st.tuples(st.just(".json"), st.lists(st.one_of(good_entry, any_entry), max_size=4).map(
        lambda es: encode(json.dumps(es)))),
    st.tuples(st.sampled_from([".jsonl", ".json"]), st.binary(max_size=48)),
    st.tuples(st.just(".jsonl"), st.text(max_size=48).map(encode)),
    st.tuples(st.just(".jsonl"), st.builds(lambda a, b: a[: len(a) // 2] + b, good_prompt_file().map(lambda f: f[1]),
                                           st.binary(max_size=8))),  # a file cut short
)

# --- options ------------------------------------------------------------------------------------------

BAD_NUMBERS = ["nan", "inf", "-inf", "1e309", "abc", "", "1,5", "0x10", "-0"]


def floats_between(lo, hi):
    return st.floats(lo, hi).map(lambda x: repr(round(x, 3)))


# flag: (good values, bad values) as text
COMMON = {
    "--max-new-tokens": (st.integers(1, 5).map(str), ["0", "-1", "250", "300", "1000000000", "2.5"]),
    "--temperature": (floats_between(0, 2), ["-1", "1e300"]),
    "--top-k": (st.integers(0, 60).map(str), ["-1", "99999999999999999999"]),
    "--top-p": (floats_between(0.05, 1), ["0", "1.5", "-0.5"]),
    "--max-batch-rows": (st.integers(1, 8).map(str), ["0", "-4", "1000000000000", "1e3"]),
    "--seed": (st.integers(-2**70, 2**70).map(str), ["1.5"]),
    "--device": (st.sampled_from(["cpu", "", "auto"]), ["cuda:9", "meta", "gpu"]),
}
PER_METHOD = {
    "sampling": {},
    "best-of-n": {"--n": (st.integers(1, 3).map(str), ["0", "-2", "2.0"])},
    "speculative-rejection": {"--n": (st.integers(1, 4).map(str), ["0", "100000"]),
                              "--alpha": (floats_between(0, 0.9), ["1", "-0.1"]),
                              "--memory-gib": (floats_between(1e-6, 1), ["0", "-1"]),
                              "--decision-tokens": (st.sampled_from(["1,2", "2", "1,3"]), ["3,1", "x", "0", "1,1"])},
    "cards": {"--entropy-threshold": (floats_between(0.1, 5), ["0", "-1"]),
              "--r-star": (st.one_of(floats_between(-1, 1), st.just("auto")), ["AUTO", "lots"]),
              "--beta": (floats_between(0.1, 2), ["0"]),
              "--r-star-margin": (floats_between(-1, 1), []),
              "--max-retries": (st.integers(1, 3).map(str), ["0"])},
    "rejection-sampling": {"--r-star": (st.one_of(floats_between(-1, 1), st.just("auto")), ["x"]),
                           "--max-retries": (st.integers(1, 4).map(str), ["0"]),
                           "--proposals": (st.integers(1, 3).map(str), ["0"])},
    "args": {"--weight": (floats_between(-2, 2), ["1e308"]), "--top-k": (st.integers(1, 8).map(str), ["0"])},
}


@st.composite
def case(draw):
    """(prompt file suffix, its bytes, the command's options): well-formed, or hostile in the file, the
    options or both."""
    hostile = draw(st.sampled_from(["none", "none", "file", "options", "both"]))
    suffix, content = draw(hostile_prompt_file if hostile in ("file", "both") else good_prompt_file())
    methods = ["sampling", "best-of-n", "speculative-rejection", "cards", "rejection-sampling", "args"]
    method = draw(st.sampled_from(methods + (["no-such-method"] if hostile in ("options", "both") else [])))
    flags = {**COMMON, **PER_METHOD.get(method, {})}
    chosen = draw(st.lists(st.sampled_from(sorted(flags)), unique=True, max_size=4))
    args = ["--method", method]
    for flag in chosen:
        good, bad = flags[flag]
        if hostile in ("options", "both") and draw(st.booleans()):
            value = draw(st.sampled_from([*BAD_NUMBERS, *bad]))
        else:
            value = draw(good)
        args += [flag, value]
    if "--max-new-tokens" not in chosen:
        args += ["--max-new-tokens", "4"]  # the default (128) would make the pass slow
    return suffix, content, args


def run_cli(args) -> tuple[int, str]:
    """`secateurs ARGS` in this process, as the console script runs it; (exit status, stderr)."""
    err, out = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["secateurs", *args]
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                main()
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
    return code, err.getvalue()


def strict_json(line: str):
    def refuse(constant):
        raise ValueError(f"non-JSON constant {constant}")

    return json.loads(line, parse_constant=refuse)


def check_output(out: Path, prompts_path: Path, complete: bool) -> None:
    """Valid JSONL, strict JSON, every id once; with `complete`, one line per prompt of the file."""
    if not out.exists():
        return
    data = out.read_bytes()
    assert not data or data.endswith(b"\n"), "a run leaves whole lines"
    # JSONL lines end at "\n" only (a response may hold U+0085 or U+2028, which str.splitlines splits at)
    rows = [strict_json(line) for line in data.decode("utf-8").split("\n")[:-1]]
    got = [r["id"] for r in rows]
    assert len(got) == len(set(got)), f"an id written twice: {got}"
    expected = {p.id for p in load_prompts(prompts_path)}
    assert set(got) == expected if complete else set(got) <= expected


@seed(int(os.environ.get("SECATEURS_PROPERTY_SEED", "13")))
@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                                 HealthCheck.large_base_example])
@given(case=case())
# the cases, every time: a device that cannot run, a NEL in a prompt (a line break to
# str.splitlines, not to JSONL), a non-UTF-8 file, non-finite options, max_new_tokens beyond the context
@example(case=(".jsonl", b'{"prompt": "tea"}\n', ["--method", "best-of-n", "--device", "meta"]))
@example(case=(".json", b'[{"prompt": "tea \xc2\x85 water"}]', ["--method", "sampling", "--max-new-tokens", "3"]))
@example(case=(".jsonl", b'{"prompt": "tea"}\n{"prompt": "caf\xe9"}\n', ["--method", "sampling"]))
@example(case=(".jsonl", b'{"prompt": "tea"}\n', ["--method", "speculative-rejection", "--memory-gib", "inf",
                                                   "--max-new-tokens", "3"]))
@example(case=(".jsonl", b'{"prompt": "tea"}\n', ["--method", "best-of-n", "--max-new-tokens", "1000000000"]))
def test_hostile_prompt_files_and_options_exit_0_or_2_with_resumable_output(tiny_policy_folder, case):
    suffix, content, options = case
    with tempfile.TemporaryDirectory() as tmp:
        prompts_path = Path(tmp) / f"prompts{suffix}"
        prompts_path.write_bytes(content)
        out = Path(tmp) / "out" / "results.jsonl"
        args = ["run", "--policy", str(tiny_policy_folder), "--reward", "sentiment", "--quiet",
                "--prompts", str(prompts_path), "--out", str(out), *options]
        code, err = run_cli(args)
        assert "Traceback" not in err, err
        assert code in (0, 2), f"exit {code}: {err}"
        if code == 2:  # one line, or click's usage message for a value click itself refuses
            assert len(err.strip().splitlines()) == 1 or ("Usage:" in err and "Error:" in err), err
            check_output(out, prompts_path, complete=False)
            return
        assert out.exists()
        check_output(out, prompts_path, complete=True)
        first = out.read_bytes()
        code, err = run_cli(args)  # the same command again: everything is done, nothing changes
        assert code == 0 and "Traceback" not in err, err
        assert out.read_bytes() == first
