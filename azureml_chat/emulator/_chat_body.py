"""Chat answers on the wire's terms: the ``chat.completion`` body and the ``chat.completion.chunk`` stream.
No I/O; the server decides ids and time.
"""

from __future__ import annotations

from typing import Any

from ._chat import Answer
from ._openai import interleave
from ._reasoning import stream_pieces

__all__ = ["completion_body", "stream_chunks"]

# Small enough that any real argument string arrives over several deltas, as models stream them.
_ARGUMENT_PIECE = 8


def completion_body(
    answers: list[Answer], usage: dict[str, Any], *, completion_id: str, created: int, model: str
) -> dict[str, Any]:
    """The ``chat.completion`` object: one choice per answer, ``index`` 0, 1, ..."""
    choices = []
    for index, answer in enumerate(answers):
        message: dict[str, Any] = {
            "role": "assistant",
            "content": answer.content,
            "tool_calls": list(answer.tool_calls) or None,
        }
        if answer.reasoning_content is not None:
            message["reasoning_content"] = answer.reasoning_content
        choices.append(
            {"index": index, "message": message, "finish_reason": answer.finish_reason, "logprobs": None}
        )
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": usage,
    }


def stream_chunks(
    answers: list[Answer], usage: dict[str, Any], *, completion_id: str, created: int, model: str
) -> list[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects of a streamed answer, in order (``[DONE]`` not included).

    Per choice: a role delta, then ``reasoning_content`` deltas (``field`` mode), then content deltas of a
    word each (a ``<think>`` block's tags split, see :mod:`._reasoning`) or tool-call deltas (``id`` and
    ``name`` only in each call's first delta, ``arguments`` in pieces), then its ``finish_reason`` chunk. Each
    chunk holds one choice, tagged with its ``index``; with several choices their chunks are interleaved.
    Last comes a usage-only chunk with ``"choices": []``.
    """

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
            **extra,
        }

    def deltas(index: int, answer: Answer) -> list[dict[str, Any]]:
        def one(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            return chunk([{"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": None}])

        out = [one({"role": "assistant", "content": "" if answer.content is not None else None})]
        out += [one({"reasoning_content": piece}) for piece in stream_pieces(answer.reasoning_content or "")]
        out += [one({"content": piece}) for piece in stream_pieces(answer.content or "")]
        for position, call in enumerate(answer.tool_calls):
            function = call["function"]
            first = {
                "index": position,
                "id": call["id"],
                "type": "function",
                "function": {"name": function["name"], "arguments": ""},
            }
            out.append(one({"tool_calls": [first]}))
            arguments = function["arguments"]
            for start in range(0, len(arguments), _ARGUMENT_PIECE):
                piece = arguments[start : start + _ARGUMENT_PIECE]
                out.append(one({"tool_calls": [{"index": position, "function": {"arguments": piece}}]}))
        out.append(one({}, answer.finish_reason))
        return out

    chunks = interleave([deltas(index, answer) for index, answer in enumerate(answers)])
    return [*chunks, chunk([], usage=usage)]
