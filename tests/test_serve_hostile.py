"""`secateurs serve` against hostile input (issue 20): bodies that once made 5xx, start-up flags that once
printed tracebacks, a queue that refused bursts while rows sat idle, and an HTTP fuzz over the server's own
OpenAPI document. The real uvicorn server on loopback, as in test_serve.py (its fixture)."""

import json
import socket
import threading

import httpx2 as httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from cli_main import run_main
from secateurs.serve.text import AnswerText
from test_serve import CHAT, REWARD, aclient, chat, server, wait_for  # noqa: F401 - server: the fixture

OK = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def post(server, body, path="/v1/chat/completions"):
    raw = body if isinstance(body, bytes) else json.dumps({"model": server["model"], **body}).encode()
    r = httpx.post(server["url"] + path, content=raw, timeout=60)
    error = r.json().get("error") or {}
    assert "\n" not in error.get("message", "") and "Traceback" not in error.get("message", "")
    return r.status_code, error.get("message"), error.get("param")


def test_bodies_that_made_5xx_get_400_naming_the_field(server):
    head = b'{"model": "%s", ' % server["model"].encode()
    deep = 100_000
    cases = [
        (head + b'"messages": [{"role": "user", "content": "tea \\ud800"}]}', "messages",
         "messages[0].content holds a lone UTF-16 surrogate (\\ud800), which is not text"),
        (head + b'"messages": [{"role": "user", "content": "hi"}], "max_tokens": ' + b"7" * 5000 + b"}",
         "max_tokens", "max_tokens: 77777777777777777777... is not a number secateurs takes "
                       "(an integer of 5000 digits)"),
        (head + b'"messages": ' + b"[" * deep + b"]" * deep + b"}", "messages",
         "'messages' nests arrays/objects more than 32 deep"),
        (head + b'"messages": [{"role": "user", "content": "hi"}], "secateurs": ' + b'{"a": ' * deep + b"1"
         + b"}" * deep + b"}", "secateurs", "'secateurs' nests arrays/objects more than 32 deep"),
        (head + b'"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', "temperature",
         "temperature: NaN is not a number secateurs takes (NaN (JSON has no such number))"),
    ]
    for raw, param, message in cases:
        assert post(server, raw) == (400, message, param)
    assert post(server, {**OK, "secateurs": {"seed": 3}}) == (
        400, "secateurs.seed is not an option: use the top-level 'seed' field", "secateurs")
    assert post(server, {**OK, "model": 5}) == (
        400, "'model' must be a string (see GET /v1/models), got 5", "model")
    assert post(server, {**OK, "model": None})[1].startswith("'model' must be a string")
    assert chat(server, max_tokens=4).choices[0].message.content is not None  # still serving


def test_compatibility_fields_are_checked_and_include_usage_false_sends_no_usage(server):
    assert post(server, {**OK, "user": 5}) == (400, "'user' must be a string, got 5", "user")
    assert post(server, {**OK, "metadata": {"a": 1}})[2] == "metadata"
    assert post(server, {**OK, "service_tier": "flex"})[2] == "service_tier"
    assert post(server, {**OK, "stream_options": {"include_usage": False}}) == (
        400, "'stream_options' is only allowed with stream=true", "stream_options")
    r = chat(server, max_tokens=4, user="u1", metadata={"k": "v"}, service_tier="auto", parallel_tool_calls=True,
             modalities=["text"])
    assert r.choices[0].message.content is not None
    # stream_options.include_usage=false: no chunk carries usage (it was always sent)
    stream = chat(server, max_tokens=4, stream=True, stream_options={"include_usage": False})
    chunks = list(stream)
    assert chunks[-1].choices[0].finish_reason and all(c.usage is None for c in chunks)
    stream = chat(server, max_tokens=4, stream=True, stream_options={"include_usage": True})
    assert [c for c in stream][-1].usage.completion_tokens >= 1


def test_a_burst_on_free_rows_is_not_refused_as_a_full_queue(server):
    """Requests arriving together while rows are free are not waiting for rows: the scheduler admits
    them at its next step. The scheduler is held in one request's RM call while the burst arrives."""
    front, gate = server["front"], server["gate"]
    front.settings.max_queue = 2
    answers, refused = [], []

    def ask():
        try:
            answers.append(chat(server, max_tokens=4).choices[0].message.content)
        except openai.RateLimitError:
            refused.append(1)

    threads = [threading.Thread(target=ask) for _ in range(13)]
    gate.clear()
    try:
        threads[0].start()
        assert wait_for(lambda: len(front.pending) == 1 and front.queue_depth() == 0)
        for t in threads[1:]:
            t.start()
        assert wait_for(lambda: len(front.pending) == 13 or refused)
        assert not refused and front.queue_depth() == 0
    finally:
        gate.set()
        front.settings.max_queue = 64
    for t in threads:
        t.join(timeout=60)
    assert len(answers) == 13 and not refused


def _byte_level_tokenizer():
    """GPT-2's byte-level scheme with no merges: one token per byte, so a cut can split a character."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(sorted(alphabet))}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def test_final_text_drops_a_character_that_max_tokens_cut():
    tok = _byte_level_tokenizer()
    ids = tok.encode("thé ✓")
    cut = ids[:-1]  # the check mark's last byte never came
    assert tok.decode(cut).endswith("\ufffd")
    whole = AnswerText(tok.decode)  # Best-of-N, CARDS: the answer at once
    assert whole.update(cut, final=True, text=tok.decode(cut)) == "thé "
    streamed = AnswerText(tok.decode)  # a stream: token by token, then the final text
    pieces = [streamed.update(cut[:k]) for k in range(1, len(cut) + 1)]
    pieces.append(streamed.update(cut, final=True, text=tok.decode(cut)))
    assert "".join(pieces) == "thé "


@pytest.mark.parametrize("args, message", [
    (["--port", "70000"], "Invalid value for '--port': 70000 is not in the range 0<=x<=65535."),
    (["--keepalive", "nan"], "Invalid value for '--keepalive': nan is not a finite number"),
    (["--keepalive", "inf"], "Invalid value for '--keepalive': inf is not a finite number"),
    (["--host", "no-such-host.invalid"], "error: --host 'no-such-host.invalid': "),
])
def test_serve_refuses_bad_flags_in_one_line_before_loading(monkeypatch, capsys, args, message):
    code, err = run_main(monkeypatch, capsys, "serve", *args)
    assert code == 2 and message in err and "Traceback" not in err and "serving" not in err
    assert len([line for line in err.splitlines() if line.startswith(("Error", "error"))]) == 1


def test_serve_refuses_a_taken_port_and_a_default_max_new_tokens_beyond_the_context(
        monkeypatch, capsys, tiny_policy_folder):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        code, err = run_main(monkeypatch, capsys, "serve", "--port", str(port), "--policy", str(tiny_policy_folder))
    finally:
        taken.close()
    assert code == 2 and err == f"error: --host 127.0.0.1 --port {port}: cannot listen there (Address already in use)\n"
    code, err = run_main(monkeypatch, capsys, "serve", "--port", "0", "--policy", str(tiny_policy_folder),
                         "--reward", REWARD, "--max-new-tokens", "100000")
    assert code == 2 and err == ("error: max_new_tokens 100000 exceeds the policy's context of 256 tokens (prompt "
                                 "included): lower --max-new-tokens below 256\n")


def test_openapi_document_describes_the_request_bodies(server):
    doc = httpx.get(server["url"] + "/openapi.json").json()
    body = doc["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    chat_schema = doc["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
    assert {"model", "messages"} <= set(chat_schema["required"]) and chat_schema["additionalProperties"] is False
    assert "prompt" in doc["components"]["schemas"]["CompletionRequest"]["properties"]


def test_fuzz_from_the_openapi_document_gets_no_5xx_and_no_hang(server):
    schemathesis = pytest.importorskip("schemathesis")
    from schemathesis.core import NOT_SET
    from schemathesis.generation.modes import GenerationMode

    doc = httpx.get(server["url"] + "/openapi.json").json()
    schema = schemathesis.openapi.from_dict(doc)
    cases = st.one_of(schema.as_strategy(GenerationMode.POSITIVE), schema.as_strategy(GenerationMode.NEGATIVE))
    seen = []

    @settings(max_examples=100, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=cases)
    def fuzz(case):
        body = case.body
        raw = b"" if body is NOT_SET else body if isinstance(body, bytes) else json.dumps(body).encode()
        r = httpx.request(case.method, server["url"] + case.formatted_path, content=raw or None,
                          headers={"content-type": "application/json"}, timeout=60)
        seen.append(r.status_code)
        assert r.status_code < 500, (case.method, case.path, raw[:300], r.text[:300])

    fuzz()
    assert any(s == 200 for s in seen) and any(s == 400 for s in seen)
    assert chat(server, max_tokens=4).choices[0].message.content is not None  # still serving
