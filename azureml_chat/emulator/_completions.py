"""The OpenAI-compatible text-completions dialect (``/v1/completions``, ``/completions``,
``/models/completions``): validate a request, answer it, shape the body or the SSE chunks. No I/O.

Request ``{"prompt": str | [str], "max_tokens", "stop", "stream", "n", ...}``; answer ``{"object":
"text_completion", "choices": [{"index", "text", "finish_reason", "logprobs"}], "usage"}``, ``n`` choices per
prompt (prompt ``p``'s choice ``j`` has ``index`` ``p * n + j``, as OpenAI numbers them; choices after a
prompt's first append `` (choice j)`` to the echo, or take the next scripted reply). Streams send ``text``
deltas of a word each and each choice's ``finish_reason`` chunk, the choices' chunks interleaved, then a
usage-only chunk. Usage counts each prompt once and every choice's text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from ._answers import ECHO_PREFIX, apply_limits, control_faults, count_tokens, split_for_stream
from ._chat import Answer, parse_stop
from ._errors import BadRequest
from ._openai import interleave, parse_n, usage_object

__all__ = [
    "OPENAI_COMPLETION_FIELDS",
    "CompletionRequest",
    "answer_completion",
    "completion_chunks",
    "completion_usage",
    "parse_completion_request",
    "text_body",
]

# The request fields of OpenAI's (and vLLM's) text completions: the schema of the provider-native route when a
# request asks for ``extra-parameters: error`` there (Azure's own schema is in ._azure).
OPENAI_COMPLETION_FIELDS = frozenset(
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
    n: int = 1


def parse_completion_request(body: Any) -> CompletionRequest:
    """Validate a text-completions body as the service does (unknown fields are screened before, in ._azure).

    Raises:
        BadRequest: the body is not a text-completions request.
    """
    if not isinstance(body, Mapping):
        raise BadRequest("the request body must be a JSON object with a 'prompt'")
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise BadRequest("'prompt' must be a string or a non-empty list of strings", param="prompt")
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
        n=parse_n(body.get("n")),
    )


def answer_completion(request: CompletionRequest, *, reply: Callable[[], str | None]) -> list[Answer]:
    """Answer each prompt ``n`` times deterministically: the next scripted ``reply()``, else ``"You said:
    <prompt>"`` (control words removed, `` (choice j)`` appended after the first), cut by ``stop`` and
    ``max_tokens``."""
    answers = []
    for prompt in request.prompts:
        for choice in range(request.n):
            text = reply()
            if text is None:
                text = ECHO_PREFIX + control_faults(prompt)[0] + (f" (choice {choice})" if choice else "")
            content, finish_reason = apply_limits(text, stop=request.stop, max_tokens=request.max_tokens)
            answers.append(Answer(content, finish_reason, count_tokens(content)))
    return answers


def completion_usage(request: CompletionRequest, answers: list[Answer]) -> dict[str, Any]:
    """The ``usage`` object: every prompt once, every choice's text."""
    return usage_object(
        prompt_tokens=sum(count_tokens(prompt) for prompt in request.prompts),
        completion_tokens=sum(answer.completion_tokens for answer in answers),
    )


def text_body(
    answers: list[Answer], usage: dict[str, Any], *, completion_id: str, created: int, model: str
) -> dict[str, Any]:
    """The ``text_completion`` object for ``answers`` (one choice each, ``index`` in order)."""
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
        "usage": usage,
    }


def completion_chunks(
    answers: list[Answer], usage: dict[str, Any], *, completion_id: str, created: int, model: str
) -> list[dict[str, Any]]:
    """The ``text_completion`` chunks of a streamed answer, in order (``[DONE]`` not included).

    For each choice, ``text`` deltas of a word each and then its ``finish_reason`` chunk, the choices' chunks
    interleaved (each chunk holds one choice, tagged with its ``index``); then a usage-only chunk with
    ``"choices": []``.
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

    def deltas(index: int, answer: Answer) -> list[dict[str, Any]]:
        out = [
            chunk([{"index": index, "text": piece, "finish_reason": None, "logprobs": None}])
            for piece in split_for_stream(answer.content or "")
        ]
        out.append(
            chunk([{"index": index, "text": "", "finish_reason": answer.finish_reason, "logprobs": None}])
        )
        return out

    chunks = interleave([deltas(index, answer) for index, answer in enumerate(answers)])
    return [*chunks, chunk([], usage=usage)]
