"""How a model without a chat template reads a conversation (the CARDS paper's Llama-7B SFT and RM,
OPT, GPT-2, ...). A model with a chat template always uses its template; this is only the fallback.

- 'hh' (default): the HH-RLHF transcript those models were trained on, each turn as
  "\n\nHuman: ..." or "\n\nAssistant: ..." (a system message as plain text before them). The
  policy's prompt ends with the cue "\n\nAssistant:", so it writes the assistant's turn; the RM
  reads the same transcript with the response as the last assistant turn.
- 'plain': the message contents joined by blank lines, no roles and no cue; the RM reads
  (conversation, response) as a text pair (the tokenizer's own separator between them).
"""

from __future__ import annotations

from typing import Sequence

from .errors import SecateursError

PROMPT_FORMATS = ("hh", "plain")
DEFAULT_PROMPT_FORMAT = "hh"
_SPEAKERS = {"user": "Human", "assistant": "Assistant"}


def check_prompt_format(prompt_format: str) -> str:
    if prompt_format not in PROMPT_FORMATS:
        raise SecateursError(f"prompt_format must be one of {', '.join(PROMPT_FORMATS)}, got {prompt_format!r}")
    return prompt_format


def hh_transcript(messages: Sequence[dict], cue: bool) -> str:
    """The HH-RLHF transcript of the messages; `cue`: end with "\n\nAssistant:" (the policy's turn)."""
    parts = []
    for m in messages:
        speaker = _SPEAKERS.get(m["role"])
        if speaker is not None:
            parts.append(f"\n\n{speaker}: {m['content']}")
        else:  # a system message: plain text, as HH-style prompts put instructions before the first turn
            parts.append(f"\n\n{m['content']}" if parts else m["content"])
    return "".join(parts) + ("\n\nAssistant:" if cue else "")


def plain_text(messages: Sequence[dict]) -> str:
    return "\n\n".join(m["content"] for m in messages)
