"""The server under failures and limits: a reward failing on one of several concurrent requests answers
that one with a 500 (not echoing the others) and the others normally; a huge n is refused at once and a
cancelled big request does not hold up the next one. Real uvicorn server, real openai client."""

import socket
import threading
import time

import httpx2 as httpx
import openai
import pytest
import uvicorn

from polling import wait_for
from secateurs.aligner import Aligner
from secateurs.rewards import Reward
from secateurs.serve import ServeDefaults, ServeSettings, create_app


class GatedPoison(Reward):
    """Length as the score; a call holding a prompt with 'poison' raises as a whole (as a failing RM call does).
    While the gate is closed the scheduler waits inside the next call (requests sent meanwhile queue up)."""

    name = "gated-poison"

    def __init__(self):
        self.gate, self.calls = threading.Event(), []
        self.gate.set()

    def _score(self, prompts, responses, partial):
        self.gate.wait(timeout=30)
        self.calls.append([p.id for p in prompts])
        if any("poison" in p.text for p in prompts):
            raise ValueError("the RM choked on " + " | ".join(responses))
        return [float(len(r)) for r in responses], [1] * len(responses)


@pytest.fixture(scope="module")
def server(endless):
    reward = GatedPoison()
    aligner = Aligner(endless, reward, max_batch_rows=16)  # no stop token: every answer runs to max_tokens
    settings = ServeSettings(model=endless.name, defaults=ServeDefaults("sampling", {"max_new_tokens": 3}, 0, 16),
                             max_queue=64)
    app = create_app(aligner, settings)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not uv.started:
        time.sleep(0.02)
    yield {"url": f"http://127.0.0.1:{sock.getsockname()[1]}", "model": endless.name, "front": app.state.front,
           "reward": reward}
    uv.should_exit = True
    thread.join(timeout=10)
    aligner.close()


def ask(server, text, prompt_id, timeout=60, **secateurs):
    client = openai.OpenAI(base_url=server["url"] + "/v1", api_key="unused", max_retries=0, timeout=timeout)
    return client.chat.completions.create(model=server["model"], messages=[{"role": "user", "content": text}],
                                          max_tokens=3, extra_body={"secateurs": {"prompt_id": prompt_id,
                                                                                  **secateurs}})


def test_a_reward_failing_on_one_request_fails_it_alone_with_a_500(server):
    front, reward = server["front"], server["reward"]
    texts = {"tea": "how do i make tea", "bad": "poison pill", "sleep": "a tip for sleep", "calm": "a calm night"}
    answers, errors = {}, {}

    def send(pid):
        try:
            answers[pid] = ask(server, texts.get(pid, "hello there"), pid).choices[0].message.content
        except openai.APIStatusError as e:
            errors[pid] = e

    reward.gate.clear()  # the blocker's RM call waits: the four requests queue up and are admitted together
    try:
        blocker = threading.Thread(target=send, args=("blocker",))
        blocker.start()
        assert wait_for(lambda: len(front.pending) == 1 and front.queue_depth() == 0)
        threads = [threading.Thread(target=send, args=(pid,)) for pid in texts]
        for t in threads:
            t.start()
        assert wait_for(lambda: len(front.pending) == 5)  # all four wait behind the blocker's RM call
    finally:
        reward.gate.set()
    for t in [blocker, *threads]:
        t.join(timeout=60)
    assert any(sorted(call) == sorted(texts) for call in reward.calls)  # the four shared one RM call
    assert sorted(answers) == ["blocker", "calm", "sleep", "tea"] and list(errors) == ["bad"]
    bad = errors["bad"]
    assert bad.status_code == 500
    message = bad.body["message"] if isinstance(bad.body, dict) else str(bad.body)
    assert message.startswith("the reward failed for this request: reward 'gated-poison' failed on prompt 'bad'")
    for pid in ("tea", "sleep", "calm"):  # nothing of the other requests leaks into its error
        assert f"'{pid}'" not in message and answers[pid] not in message
    for pid in ("tea", "sleep", "calm"):  # the others' answers are those they get alone
        assert ask(server, texts[pid], pid).choices[0].message.content == answers[pid]
    assert ask(server, "still there", "after").choices[0].message.content is not None


def test_a_huge_n_is_refused_at_once_and_a_cancelled_big_request_does_not_hold_up_the_next(server):
    front = server["front"]
    started = time.time()
    with pytest.raises(openai.BadRequestError, match="n=100000000 samples per prompt") as caught:
        ask(server, "how do i make tea", "huge", timeout=30, method="best-of-n", n=100_000_000)
    assert time.time() - started < 20 and "\n" not in caught.value.body["message"]
    assert not front.pending
    # A big but valid n whose client gives up: its request is cancelled and the next one is answered.
    body = {"model": server["model"], "messages": [{"role": "user", "content": "how do i make tea"}], "max_tokens": 3,
            "secateurs": {"method": "best-of-n", "n": 100_000}}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server["url"] + "/v1/chat/completions", json=body, timeout=1.0)
    assert wait_for(lambda: not front.pending, 20)
    assert ask(server, "what is green", "next", timeout=30).choices[0].message.content is not None
    assert front.rows_busy() == 0 and not server["front"].aligner.scheduler.active


def test_a_streamed_request_whose_reward_fails_ends_with_a_server_error_event(server):
    body = {"model": server["model"], "messages": [{"role": "user", "content": "poison pill"}], "max_tokens": 3,
            "stream": True, "secateurs": {"method": "best-of-n", "n": 2, "prompt_id": "bad"}}
    with httpx.stream("POST", server["url"] + "/v1/chat/completions", json=body, timeout=60) as r:
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    error = lines[-2]
    assert '"type": "server_error"' in error and "the reward failed for this request" in error
