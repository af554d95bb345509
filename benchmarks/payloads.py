"""What goes over the wire: the request every client sends and the answers the fake endpoint gives.

Shared by the server (which builds its canned replies from it) and the client workers (which check every
answer against it), so "the right answer" is defined in exactly one place.

* Chat completions: a realistic ``chat.completion`` (about 620 bytes for 16 tokens, usage details included);
  a stream of N tokens is N ``chat.completion.chunk`` events, one HTTP chunk each, then ``data: [DONE]``.
* ``/score`` (the classic foundation-model schema): ``{"output": "<answer>"}``.

The answer text has no leading or trailing blanks and no characters JSON must escape, so clients that
strip or escape text (LangChain does both) see the same bytes as everyone else.
"""

from __future__ import annotations

import json
from typing import Any

MODEL = "bench-model"
SYSTEM_PROMPT = "You are a concise assistant."
USER_PROMPT = "Say hello in a few words."
# Tokens in a non-streaming answer, and chunks in the streaming scenario.
ANSWER_TOKENS = 16
STREAM_TOKENS = 256

# The request every chat-completions client sends: model, these two messages, max_tokens (+ stream).
MESSAGES: list[dict[str, str]] = [
    {"role": "system", "content": SYSTEM_PROMPT},
    {"role": "user", "content": USER_PROMPT},
]

_WORDS = ("Hello", "there", "this", "is", "a", "benchmark", "answer", "from", "the", "fake", "endpoint", "ok")
_PROMPT_TOKENS = 24
_ID = "chatcmpl-bench0000000000000001"
_CREATED = 1_760_000_000


def token(index: int) -> str:
    """The ``index``-th token of every answer (tokens after the first carry their leading blank)."""
    word = _WORDS[index % len(_WORDS)]
    return word if index == 0 else " " + word


def expected_content(tokens: int) -> str:
    """The answer text of ``tokens`` tokens, as every client must read it."""
    return "".join(token(i) for i in range(tokens))


def _usage(tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": _PROMPT_TOKENS,
        "completion_tokens": tokens,
        "total_tokens": _PROMPT_TOKENS + tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def chat_completion(tokens: int) -> bytes:
    """A whole ``chat.completion`` body answering with ``tokens`` tokens."""
    body = {
        "id": _ID,
        "object": "chat.completion",
        "created": _CREATED,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": expected_content(tokens), "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(tokens),
        "system_fingerprint": "fp_bench_0001",
    }
    return json.dumps(body).encode()


def chat_chunks(tokens: int) -> list[bytes]:
    """The SSE events of a streamed answer: one ``chat.completion.chunk`` per token, then ``[DONE]``."""
    events = []
    for i in range(tokens):
        delta = {"role": "assistant", "content": token(i)} if i == 0 else {"content": token(i)}
        chunk = {
            "id": _ID,
            "object": "chat.completion.chunk",
            "created": _CREATED,
            "model": MODEL,
            "system_fingerprint": "fp_bench_0001",
            "choices": [
                {
                    "index": 0,
                    "delta": delta,
                    "logprobs": None,
                    "finish_reason": "stop" if i == tokens - 1 else None,
                }
            ],
        }
        events.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


def score_output(tokens: int) -> bytes:
    """A ``/score`` body in the classic chat schema."""
    return json.dumps({"output": expected_content(tokens)}).encode()


def score_request(max_new_tokens: int) -> dict[str, Any]:
    """The ``/score`` request body (``input_data`` schema) the /score clients send."""
    return {"input_data": {"input_string": MESSAGES, "parameters": {"max_new_tokens": max_new_tokens}}}
