"""The OpenAI-compatible text-completions dialect (``/v1/completions``, ``/completions``): validate a request,
answer it, shape the body or the SSE chunks. No I/O.

Request ``{"prompt": str | [str], "max_tokens", "stop", "stream", ...}``; answer ``{"object": "text_completion",
"choices": [{"index", "text", "finish_reason", "logprobs"}], "usage"}``, one choice per prompt. Streams send
``text`` deltas of a word each, then each choice's ``finish_reason`` chunk, then a usage-only chunk.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from ._answers import ECHO_PREFIX, apply_limits, control_faults, count_tokens, split_for_stream
from ._chat import Answer, BadRequest, parse_stop

__all__ = [
    "CompletionRequest",
    "answer_completion",
    "completion_chunks",
    "parse_completion_request",
    "text_body",
]

# The request fields of OpenAI's (and vLLM's) text completions; anything else is an "extra parameter".
_KNOWN_FIELDS = frozenset(
    {
        "prompt",
        "model",
        "max_tokens",
        "temperature",
        "top_p",
        "n",
        "stream",
        "stream_options",
        "logprobs",
        "echo",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "best_of",
        "logit_bias",
        "user",
        "seed",
        "suffix",
    }
)


@attrs.frozen
class CompletionRequest:
    """The fields of a text-completions body that shape the emulator's answer."""

    prompts: tuple[str, ...]
    stream: bool = False
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()


def parse_completion_request(body: Any, *, refuse_extras: bool = False) -> CompletionRequest:
    """Validate a text-completions body as the service does.

    Raises:
        BadRequest: the body is not a text-completions request.
    """
    if not isinstance(body, Mapping):
        raise BadRequest("the request body must be a JSON object with a 'prompt'")
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise BadRequest("'prompt' must be a string or a non-empty list of strings", param="prompt")
    if refuse_extras and (extras := sorted(set(body) - _KNOWN_FIELDS)):
        raise BadRequest(f"extra parameters {extras} are not allowed when 'extra-parameters' is 'error'")
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
    ):
        raise BadRequest("'max_tokens' must be a positive integer", param="max_tokens")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise BadRequest("'stream' must be a boolean", param="stream")
    return CompletionRequest(
        prompts=tuple(prompts),
        stream=bool(stream),
        max_tokens=max_tokens,
        stop=parse_stop(body.get("stop")),
    )


def answer_completion(request: CompletionRequest, *, reply: Callable[[], str | None]) -> list[Answer]:
    """Answer each prompt deterministically: the next scripted ``reply()``, else ``"You said: <prompt>"``
    (control words removed), cut by ``stop`` and ``max_tokens``."""
    answers = []
    for prompt in request.prompts:
        scripted = reply()
        text = ECHO_PREFIX + control_faults(prompt)[0] if scripted is None else scripted
        content, finish_reason = apply_limits(text, stop=request.stop, max_tokens=request.max_tokens)
        answers.append(Answer(content, finish_reason, count_tokens(prompt), count_tokens(content)))
    return answers


def _usage(answers: list[Answer]) -> dict[str, int]:
    prompt = sum(answer.prompt_tokens for answer in answers)
    completion = sum(answer.completion_tokens for answer in answers)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def text_body(answers: list[Answer], *, completion_id: str, created: int, model: str) -> dict[str, Any]:
    """The ``text_completion`` object for ``answers`` (one choice per prompt)."""
    choices = [
        {"index": index, "text": answer.content, "finish_reason": answer.finish_reason, "logprobs": None}
        for index, answer in enumerate(answers)
    ]
    return {
        "id": completion_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": _usage(answers),
    }


def completion_chunks(
    answers: list[Answer], *, completion_id: str, created: int, model: str
) -> list[dict[str, Any]]:
    """The ``text_completion`` chunks of a streamed answer, in order (``[DONE]`` not included).

    For each choice, ``text`` deltas of a word each and then its ``finish_reason`` chunk; then a usage-only
    chunk with ``"choices": []``.
    """

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "id": completion_id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": choices,
            **extra,
        }

    chunks = []
    for index, answer in enumerate(answers):
        for piece in split_for_stream(answer.content or ""):
            chunks.append(chunk([{"index": index, "text": piece, "finish_reason": None, "logprobs": None}]))
        chunks.append(
            chunk([{"index": index, "text": "", "finish_reason": answer.finish_reason, "logprobs": None}])
        )
    return [*chunks, chunk([], usage=_usage(answers))]
