"""`secateurs serve`: the real uvicorn server on a free loopback port, called with the real `openai` client
(and raw HTTP where the client hides what is tested: SSE comments, disconnects, bad JSON)."""

import asyncio
import json
import socket
import threading
import time

import httpx2 as httpx
import openai
import pytest
import uvicorn
from click.testing import CliRunner

from cli_main import run_main
from polling import wait_for
from secateurs.aligner import Aligner
from secateurs.backends.transformers import TransformersBackend
from secateurs.cli import cli
from secateurs.config import build_config
from secateurs.errors import SecateursError
from secateurs.models import load_policy
from secateurs.rewards import Reward, load_reward
from secateurs.serve import ServeDefaults, ServeSettings, create_app, warm_up
from secateurs.serve.text import AnswerText

REWARD = "sentiment+civility"
ROWS = 16
CHAT = [{"role": "system", "content": "you are kind"}, {"role": "user", "content": "how do i make tea"},
        {"role": "assistant", "content": "with hot water"}, {"role": "user", "content": "and green tea"}]
# Holds every row for seconds (its proposals keep their rows until it ends; max_tokens 200).
LONG = {"method": "cards", "proposals": ROWS}


class GatedReward(Reward):
    """The test's reward behind a gate: while the test holds it closed, the scheduler thread waits in its
    next RM call, so requests sent meanwhile stay queued (a full queue without racing the decoder)."""

    def __init__(self, inner: Reward):
        self.inner, self.name = inner, inner.name
        self.gate = threading.Event()
        self.gate.set()

    def _score(self, prompts, responses, partial):
        self.gate.wait(timeout=30)
        return self.inner._score(prompts, responses, partial)


class RecordingBackend(TransformersBackend):
    """The real backend, recording how many prompts each decode step served."""

    def __init__(self, policy):
        super().__init__(policy)
        self.prompts_per_step = []

    def step(self, seqs, score=None):
        self.prompts_per_step.append(len({id(s.request) for s in seqs}))
        return super().step(seqs, score)


@pytest.fixture(scope="module")
def server(tiny_policy_folder):
    policy = load_policy(str(tiny_policy_folder))  # as `secateurs serve --policy FOLDER` loads it
    backend = RecordingBackend(policy)
    reward = GatedReward(load_reward(REWARD))
    aligner = Aligner(policy, reward, max_batch_rows=ROWS, backend=backend)
    warm_up(aligner)
    settings = ServeSettings(model=policy.name, defaults=ServeDefaults("sampling", {"max_new_tokens": 16}, 0, ROWS),
                             max_queue=64, keepalive_s=0.05)
    app = create_app(aligner, settings)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not uv.started:
        time.sleep(0.02)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    yield {"url": url, "model": policy.name, "front": app.state.front, "backend": backend, "aligner": aligner,
           "gate": reward.gate, "folder": tiny_policy_folder}
    uv.should_exit = True
    thread.join(timeout=10)
    aligner.close()


def client(server, **kw):
    return openai.OpenAI(base_url=server["url"] + "/v1", api_key="unused", max_retries=0, **kw)


def aclient(server):
    return openai.AsyncOpenAI(base_url=server["url"] + "/v1", api_key="unused", max_retries=0)


def chat(server, messages=CHAT, **kw):
    secateurs = kw.pop("secateurs", {})
    return client(server).chat.completions.create(model=server["model"], messages=messages,
                                                  extra_body={"secateurs": secateurs}, **kw)


def health(server):
    return httpx.get(server["url"] + "/health").json()


def not_admitted(front):
    return sum(1 for r in list(front.pending) if r.policy is None)


def metric(server, name):
    for line in httpx.get(server["url"] + "/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{") and line.split(" ")[0] == name:
            return float(line.split(" ")[-1])
    return 0.0


def test_answer_equals_secateurs_run_for_the_same_prompt_id_and_seed(server, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"id": "q7", "messages": CHAT}) + "\n")
    out = tmp_path / "o.jsonl"
    result = CliRunner().invoke(cli, ["run", "--method", "best-of-n", "--n", "4", "--max-new-tokens", "12",
                                      "--seed", "3", "--policy", str(server["folder"]), "--reward", REWARD,
                                      "--quiet", "--prompts", str(prompts), "--out", str(out)])
    assert result.exit_code == 0, result.output
    expected = json.loads(out.read_text())
    r = chat(server, seed=3, max_tokens=12, secateurs={"method": "best-of-n", "n": 4, "prompt_id": "q7"})
    assert r.choices[0].message.content == expected["response"]
    ext = r.model_extra["secateurs"]
    assert ext["reward"] == pytest.approx(expected["reward"])
    assert ext["details"] == expected["details"]
    assert ext["config"] == {**expected["config"], "max_batch_rows": ROWS}  # rows are the server's
    assert ext["cost"]["tokens_generated"] == expected["cost"]["tokens_generated"]
    assert ext["cost"]["rm_calls"] == expected["cost"]["rm_calls"]
    assert r.usage.completion_tokens == expected["response_tokens"]
    policy = server["aligner"].policy
    assert r.usage.prompt_tokens == len(policy.encode(server["aligner"].request(CHAT).prompt))
    assert r.choices[0].finish_reason == {"eos": "stop", "length": "length"}[expected["finish_reason"]]
    # Another prompt id draws another answer: the id is part of the key.
    other = chat(server, seed=3, max_tokens=12, secateurs={"method": "best-of-n", "n": 4, "prompt_id": "q8"})
    assert other.model_extra["secateurs"]["details"] != ext["details"]


MIXED = [({"method": "sampling"}, 5), ({"method": "best-of-n", "n": 3}, 1),
         ({"method": "cards", "max_segment_tokens": 4}, 2), ({"method": "speculative-rejection", "n": 4}, 4)]


def test_same_answer_alone_and_among_concurrent_requests_joining_the_running_batch(server):
    words = ["tea", "sleep", "water", "night", "help", "dream", "calm", "work", "day", "cup", "leaf", "bed"]

    async def ask(c, ext, seed, word):
        r = await c.chat.completions.create(model=server["model"], seed=seed, max_tokens=16,
                                            messages=[{"role": "user", "content": f"tell me about {word}"}],
                                            extra_body={"secateurs": ext})
        return r.choices[0].message.content, r.model_extra["secateurs"]["reward"]

    async def alone():
        c = aclient(server)
        return [await ask(c, ext, seed, "tea") for ext, seed in MIXED]

    async def together():
        c = aclient(server)
        probes = [ask(c, ext, seed, "tea") for ext, seed in MIXED]
        others = [ask(c, MIXED[i % 4][0], i, w) for i, w in enumerate(words)]
        results = await asyncio.gather(*probes, *others)
        return results[:len(MIXED)]

    single = asyncio.run(alone())
    backend = server["backend"]
    mark = len(backend.prompts_per_step)
    assert asyncio.run(together()) == single
    assert max(backend.prompts_per_step[mark:]) >= 4  # they really decoded together


def test_streaming_sampling_sends_tokens_as_decoded_and_ends_with_usage(server):
    whole = chat(server, seed=2, max_tokens=24, secateurs={"method": "sampling"})
    chunks = list(chat(server, seed=2, max_tokens=24, stream=True, secateurs={"method": "sampling"}))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 3  # token by token, not one piece at the end
    assert "".join(pieces) == whole.choices[0].message.content
    last = chunks[-1]
    assert last.choices[0].finish_reason == whole.choices[0].finish_reason
    assert last.usage.completion_tokens == whole.usage.completion_tokens
    assert last.usage.prompt_tokens == whole.usage.prompt_tokens
    assert last.model_extra["secateurs"]["reward"] == pytest.approx(whole.model_extra["secateurs"]["reward"])


def test_streaming_cards_sends_each_accepted_segment(server):
    ext = {"method": "cards", "max_segment_tokens": 4, "min_segment_tokens": 2}
    whole = chat(server, seed=1, max_tokens=24, secateurs=ext)
    segments = whole.model_extra["secateurs"]["details"]["segments"]
    assert segments >= 3
    chunks = list(chat(server, seed=1, max_tokens=24, stream=True, secateurs=ext))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert 2 <= len(pieces) <= segments
    assert "".join(pieces) == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_streaming_best_of_n_keeps_alive_then_sends_the_chosen_answer(server):
    body = {"model": server["model"], "messages": CHAT, "max_tokens": 24, "seed": 4, "stream": True,
            "secateurs": {"method": "best-of-n", "n": 8}}
    whole = chat(server, seed=4, max_tokens=24, secateurs={"method": "best-of-n", "n": 8})
    with httpx.stream("POST", server["url"] + "/v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[0] == ": keep-alive"
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    contents = [e["choices"][0]["delta"].get("content") for e in events]
    assert [c for c in contents if c] == [whole.choices[0].message.content]  # the chosen answer, once
    assert events[-1]["usage"] == whole.usage.model_dump(exclude_none=True)


def test_completions_endpoint_and_stop_strings(server):
    c = client(server)
    text = c.completions.create(model=server["model"], prompt="how do i make tea", seed=5, max_tokens=16,
                                extra_body={"secateurs": {"method": "sampling"}})
    as_chat = chat(server, [{"role": "user", "content": "how do i make tea"}], seed=5, max_tokens=16)
    assert text.choices[0].text == as_chat.choices[0].message.content
    full = text.choices[0].text
    words = full.split(" ")
    assert len(words) >= 4
    stop = " " + words[2]
    cut = chat(server, [{"role": "user", "content": "how do i make tea"}], seed=5, max_tokens=16, stop=[stop])
    assert cut.choices[0].message.content == full[:full.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    assert cut.usage.completion_tokens < text.usage.completion_tokens
    streamed = chat(server, [{"role": "user", "content": "how do i make tea"}], seed=5, max_tokens=16, stop=stop,
                    stream=True)
    chunks = list(streamed)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == cut.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == cut.usage.completion_tokens


def test_streamed_text_never_splits_a_character_and_holds_back_a_stop_string_start():
    def decode(ids):  # byte-level decoding, as byte-BPE tokenizers do
        return bytes(ids).decode("utf-8", errors="replace")

    text = "thé ✓ 日本 done"
    data = list(text.encode())
    stream = AnswerText(decode)
    pieces = [stream.update(data[:k]) for k in range(1, len(data) + 1)]
    assert "\ufffd" not in "".join(pieces) and "".join(pieces) == text
    stream = AnswerText(decode, stops=["日本"])
    pieces = [stream.update(data[:k]) for k in range(1, len(data) + 1)]
    pieces.append(stream.update(data, final=True))
    assert "".join(pieces) == "thé ✓ " and stream.stopped
    assert stream.stopped_at == len("thé ✓ 日本".encode())


def test_disconnect_cancels_the_request_and_frees_its_rows(server):
    front, gate = server["front"], server["gate"]
    gone_before = metric(server, 'secateurs_requests_total{method="cards",status="499"}')
    body = {"model": server["model"], "messages": CHAT, "max_tokens": 200, "seed": 0, "stream": True,
            "secateurs": LONG}
    with httpx.stream("POST", server["url"] + "/v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        (request,) = front.pending
        for line in r.iter_lines():  # up to the first accepted segment: the request is mid-answer
            if '"content": "' in line and '"content": ""' not in line:
                break
        assert request.outcome is None and front.rows_busy() > 0
    # the stream was dropped: the request is cancelled, not finished, and its rows are free
    assert wait_for(lambda: request.cancelled and front.rows_busy() == 0 and not front.pending, 10)
    assert request.outcome is None

    # A non-streaming client that stops waiting while its request is queued (the scheduler is held
    # in another request's RM call) has its request dropped from the queue.
    body.update(stream=False, max_tokens=4, secateurs={"method": "cards"})
    blocker = threading.Thread(target=lambda: chat(server, max_tokens=4))
    gate.clear()
    try:
        blocker.start()
        assert wait_for(lambda: len(front.pending) == 1 and not_admitted(front) == 0)
        gave_up = []

        def give_up():
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(server["url"] + "/v1/chat/completions", json=body, timeout=1.0)
            gave_up.append(True)

        client_thread = threading.Thread(target=give_up)
        client_thread.start()
        assert wait_for(lambda: not_admitted(front) == 1)
        (queued,) = [r for r in front.pending if r.policy is None]
        client_thread.join(timeout=30)
        assert gave_up
        # The server has seen the client go (and asked the scheduler to drop the request) before the
        # scheduler is let go: otherwise, on a slow machine, it could admit the request first.
        gone_metric = 'secateurs_requests_total{method="cards",status="499"}'
        assert wait_for(lambda: metric(server, gone_metric) - gone_before == 2, 10)
    finally:
        gate.set()
    blocker.join(timeout=30)
    assert wait_for(lambda: queued.cancelled and not front.pending, 10)
    assert queued.outcome is None and queued.policy is None  # dropped from the queue, never admitted
    gone = metric(server, 'secateurs_requests_total{method="cards",status="499"}')
    assert gone - gone_before == 2
    assert chat(server, max_tokens=4).choices[0].message.content is not None  # still serving


def test_full_queue_answers_429_with_retry_after(server):
    front, gate = server["front"], server["gate"]
    front.settings.max_queue = 2
    answers = []
    ask = lambda: answers.append(chat(server, max_tokens=4).choices[0].message.content)  # noqa: E731
    hold = lambda: answers.append(chat(server, max_tokens=200, secateurs=LONG).choices[0].message.content)  # noqa: E731
    threads = [threading.Thread(target=hold)] + [threading.Thread(target=ask) for _ in range(2)]
    try:
        # Takes every row; then the gate holds the scheduler in its next RM call, rows taken: requests
        # sent now wait for rows (one the free rows would take at the next step is not counted as waiting).
        threads[0].start()
        assert wait_for(lambda: front.rows_busy() == ROWS)
        gate.clear()
        assert wait_for(lambda: not front.aligner.scheduler.waiting and front.rows_busy() == ROWS)
        for t in threads[1:]:
            t.start()
        assert wait_for(lambda: front.queue_depth() == 2)
        with pytest.raises(openai.RateLimitError) as e:
            chat(server, max_tokens=4)
        assert e.value.response.headers["retry-after"] == "1"
        assert e.value.response.json()["error"]["message"].startswith("the queue is full (2 requests wait")
    finally:
        gate.set()
        front.settings.max_queue = 64
    for t in threads:
        t.join(timeout=30)
    assert len(answers) == 3  # the queued requests are answered once rows free up
    assert metric(server, 'secateurs_requests_total{method="sampling",status="429"}') >= 1


@pytest.mark.parametrize("ext, cli_args", [
    ({"method": "best-of-n", "n": 0}, ["--method", "best-of-n", "--n", "0"]),
    ({"method": "sampling", "n": 4}, ["--method", "sampling", "--n", "4"]),
    ({"method": "cards", "temperature": -1.5}, ["--method", "cards", "--temperature", "-1.5"]),
])
def test_bad_options_get_400_with_the_cli_message(server, ext, cli_args, monkeypatch, capsys):
    from secateurs.config import _as_flags, option_specs

    with pytest.raises(openai.BadRequestError) as e:
        chat(server, secateurs=ext)
    assert e.value.status_code == 400
    message = e.value.response.json()['error']['message']
    assert "--" not in message  # the body's field names, not the command line's flags
    code, err = run_main(monkeypatch, capsys, "run", "--quiet", *cli_args)
    assert code == 2 and err == f"error: {_as_flags(message, set(option_specs()))}\n"  # the same line, as flags


def test_bad_input_gets_one_line_errors_and_the_server_keeps_serving(server):
    url = server["url"] + "/v1/chat/completions"
    ok = {"model": server["model"], "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}

    def post(body, **kw):
        r = httpx.post(url, content=body if isinstance(body, bytes) else json.dumps(body), **kw)
        message = r.json()["error"]["message"]
        assert "\n" not in message and "Traceback" not in message
        return r.status_code, message

    assert post(b'{"model": "x", "messages": [')[0] == 400
    assert post(b'[1, 2]') == (400, "the request body must be a JSON object, got list")
    assert post({**ok, "secateurs": {"method": "beam"}}) == (400, str(_error(lambda: build_config("beam", {}))))
    assert post({**ok, "n": 2}) == (400, "n=2 is not supported by secateurs serve (accepted: null, 1)")
    assert post({**ok, "tools": [{"type": "function", "function": {"name": "f"}}]})[0] == 400
    assert post({**ok, "logprobs": True})[1].startswith("logprobs=true is not supported")
    assert post({**ok, "frobnicate": 1}) == (400, "unknown field 'frobnicate'")
    assert post({**ok, "max_tokens": 4, "secateurs": {"max_new_tokens": 8}})[1].startswith(
        "secateurs.max_new_tokens=8 conflicts with max_tokens=4")
    assert post({**ok, "max_completion_tokens": 8}) == (
        400, "max_completion_tokens=8 conflicts with max_tokens=4")
    assert post({**ok, "secateurs": {"max_batch_rows": 2}})[1].startswith("secateurs.max_batch_rows is the server")
    assert post({**ok, "messages": [{"role": "user", "content": "tea " * 300}]})[1].startswith(
        "prompt '0' is too long")
    assert post({**ok, "messages": [{"role": "tool", "content": "x"}]})[0] == 400
    assert post({**ok, "model": "gpt-4"})[0] == 404
    assert post(b"x" * (2 << 20))[0] == 413
    assert post({**ok, "seed": "abc"}) == (400, "'seed' must be an integer, got 'abc'")
    front = server["front"]
    front.settings.api_key = "sesame"
    try:
        with pytest.raises(openai.AuthenticationError):
            chat(server)
        assert post(ok, headers={"Authorization": "Bearer wrong"})[0] == 401
        good = openai.OpenAI(base_url=server["url"] + "/v1", api_key="sesame", max_retries=0)
        assert good.chat.completions.create(model=server["model"], messages=CHAT, max_tokens=4).choices
    finally:
        front.settings.api_key = None
    assert chat(server, max_tokens=4).choices[0].message.content is not None


def _error(fn):
    try:
        fn()
    except SecateursError as e:
        return e
    raise AssertionError("no error")


def test_models_health_and_metrics(server):
    models = client(server).models.list().data
    assert [m.id for m in models] == [server["model"]]
    assert health(server)["status"] == "ok"
    before = metric(server, "secateurs_rm_calls_total")
    answered = metric(server, 'secateurs_requests_total{method="best-of-n",status="200"}')
    r = chat(server, max_tokens=6, secateurs={"method": "best-of-n", "n": 2})
    assert metric(server, "secateurs_rm_calls_total") - before == r.model_extra["secateurs"]["cost"]["rm_calls"]
    assert metric(server, 'secateurs_requests_total{method="best-of-n",status="200"}') == answered + 1
    text = httpx.get(server["url"] + "/metrics").text
    for name in ("secateurs_queue_depth", "secateurs_rows_busy", "secateurs_tokens_total",
                 "secateurs_request_seconds_bucket"):
        assert name in text
