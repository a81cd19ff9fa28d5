"""Response bodies in the OpenAI format (chat.completion, text_completion and their stream chunks),
with `usage` of the answer and the `secateurs` extension: reward, method details, full cost."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from ..results import AlignResult

FINISH = {"eos": "stop", "length": "length"}


def new_id(chat: bool) -> str:
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def extension(result: AlignResult) -> dict[str, Any]:
    """What secateurs adds: the answer's reward, the method's details and the cost of all it generated."""
    return {"method": result.method, "prompt_id": result.id, "seed": result.seed, "reward": result.reward,
            "config": result.config, "details": result.details, "cost": result.cost.to_dict()}


def finish_reason(result: AlignResult, stopped: bool) -> str:
    return "stop" if stopped else FINISH.get(result.finish_reason or "", result.finish_reason or "stop")


class Shape:
    """The body of one request's response: chat or completion, whole or as stream chunks."""

    def __init__(self, chat: bool, model: str):
        self.chat, self.model = chat, model
        self.id, self.created = new_id(chat), int(time.time())

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def whole(self, text: str, reason: str, use: dict, ext: dict) -> dict[str, Any]:
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                      "finish_reason": reason}
            return {**self._head("chat.completion"), "choices": [choice], "usage": use, "secateurs": ext}
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}
        return {**self._head("text_completion"), "choices": [choice], "usage": use, "secateurs": ext}

    def chunk(self, text: str | None, reason: str | None = None, use: dict | None = None,
              ext: dict | None = None, role: bool = False) -> str:
        """One SSE event."""
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant"} if role else {}
            if text is not None:
                delta["content"] = text
            body = {**self._head("chat.completion.chunk"),
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}]}
        else:
            body = {**self._head("text_completion"),
                    "choices": [{"index": 0, "text": text or "", "logprobs": None, "finish_reason": reason}]}
        if use is not None:
            body["usage"] = use
        if ext is not None:
            body["secateurs"] = ext
        return sse(body)


def sse(body: dict) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


KEEP_ALIVE = ": keep-alive\n\n"  # an SSE comment: clients skip it; proxies see the stream is alive
DONE = "data: [DONE]\n\n"
