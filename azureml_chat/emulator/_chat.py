"""The OpenAI-compatible chat-completions dialect: validate a request, answer it, shape the body or the SSE chunks.

No I/O. The server decides ids and time; this module decides everything a client parses.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from ._answers import (
    TOOL_RESULT_PREFIX,
    apply_limits,
    content_text,
    control_faults,
    count_tokens,
    echo,
    example_for_schema,
    json_answer,
    split_for_stream,
)

__all__ = [
    "Answer",
    "BadRequest",
    "ChatRequest",
    "answer_chat",
    "check_message",
    "completion_body",
    "parse_chat_request",
    "parse_stop",
    "stream_chunks",
]

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
_RESPONSE_FORMATS = frozenset({"text", "json_object", "json_schema"})
# The request fields of the Azure AI Model Inference API and OpenAI (reference section 2.4); anything else is
# an "extra parameter", refused only when the caller sends ``extra-parameters: error``.
_KNOWN_FIELDS = frozenset(
    {
        "messages",
        "model",
        "frequency_penalty",
        "presence_penalty",
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "seed",
        "stop",
        "stream",
        "stream_options",
        "response_format",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "n",
        "user",
        "logprobs",
        "top_logprobs",
        "logit_bias",
    }
)
# Small enough that any real argument string arrives over several deltas, as models stream them.
_ARGUMENT_PIECE = 8


class BadRequest(Exception):
    """A request body the endpoint would refuse with 400; ``param`` names the offending field."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@attrs.frozen
class ChatRequest:
    """The fields of a chat-completions body that shape the emulator's answer."""

    messages: tuple[Mapping[str, Any], ...]
    stream: bool = False
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    tools: tuple[Mapping[str, Any], ...] = ()
    tool_choice: Any = None
    response_format: Any = None


@attrs.frozen
class Answer:
    """What the model answers, before it is shaped as a body or as chunks."""

    content: str | None
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    tool_calls: tuple[dict[str, Any], ...] = ()

    @property
    def usage(self) -> dict[str, int]:
        """The ``usage`` object of the answer."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


def parse_chat_request(body: Any, *, refuse_extras: bool = False) -> ChatRequest:
    """Validate a chat-completions body as the service does.

    Raises:
        BadRequest: the body is not a chat-completions request.
    """
    if not isinstance(body, Mapping):
        raise BadRequest("the request body must be a JSON object with a 'messages' list")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list", param="messages")
    for index, message in enumerate(messages):
        check_message(index, message)
    if refuse_extras and (extras := sorted(set(body) - _KNOWN_FIELDS)):
        raise BadRequest(f"extra parameters {extras} are not allowed when 'extra-parameters' is 'error'")
    max_tokens = body.get("max_completion_tokens")
    max_tokens = body.get("max_tokens") if max_tokens is None else max_tokens
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
    ):
        raise BadRequest("'max_tokens' must be a positive integer", param="max_tokens")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise BadRequest("'stream' must be a boolean", param="stream")
    response_format = body.get("response_format")
    if response_format is not None and (
        not isinstance(response_format, Mapping) or response_format.get("type") not in _RESPONSE_FORMATS
    ):
        raise BadRequest(
            f"'response_format' type must be one of {sorted(_RESPONSE_FORMATS)}", param="response_format"
        )
    return ChatRequest(
        messages=tuple(messages),
        stream=bool(stream),
        max_tokens=max_tokens,
        stop=parse_stop(body.get("stop")),
        tools=_parse_tools(body.get("tools")),
        tool_choice=body.get("tool_choice"),
        response_format=response_format,
    )


def parse_stop(stop: Any) -> tuple[str, ...]:
    """The ``stop`` parameter as a tuple of strings.

    Raises:
        BadRequest: ``stop`` is neither a string nor a list of strings.
    """
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,)
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return tuple(stop)
    raise BadRequest("'stop' must be a string or a list of strings", param="stop")


def check_message(index: int, message: Any, *, field: str = "messages") -> None:
    """Check one chat message (``{"role", "content"}``, a tool message with ``tool_call_id``).

    Raises:
        BadRequest: the message names where it sits, e.g. ``messages[2].role``.
    """
    where = f"{field}[{index}]"
    if not isinstance(message, Mapping):
        raise BadRequest(f"{where} must be an object", param=where)
    if message.get("role") not in _ROLES:
        raise BadRequest(
            f"{where}.role must be one of {sorted(_ROLES)}, got {message.get('role')!r}", param=where
        )
    content = message.get("content")
    if not (content is None or isinstance(content, str | list)):
        raise BadRequest(f"{where}.content must be a string, a list of parts or null", param=where)
    if message["role"] == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise BadRequest(f"{where}.tool_call_id is required for a tool message", param=where)


def _parse_tools(tools: Any) -> tuple[Mapping[str, Any], ...]:
    if tools is None:
        return ()
    if not isinstance(tools, list):
        raise BadRequest("'tools' must be a list", param="tools")
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise BadRequest(
                f"tools[{index}] must be {{'type': 'function', 'function': {{'name': ...}}}}", param="tools"
            )
    return tuple(tools)


def _chosen_tool(request: ChatRequest) -> Mapping[str, Any] | None:
    # A model calls a tool when offered one and the user just spoke; after a tool result it answers in text.
    if not request.tools or request.tool_choice == "none" or request.messages[-1].get("role") != "user":
        return None
    choice = request.tool_choice
    if not isinstance(choice, Mapping):
        return request.tools[0]["function"]  # type: ignore[no-any-return]
    function = choice.get("function")
    name = function.get("name") if isinstance(function, Mapping) else None
    for tool in request.tools:
        if tool["function"]["name"] == name:
            return tool["function"]  # type: ignore[no-any-return]
    raise BadRequest(f"tool_choice names {name!r}, which is not among the offered tools", param="tool_choice")


def answer_chat(request: ChatRequest, *, reply: Callable[[], str | None], call_id: str) -> Answer:
    """Answer a chat request deterministically.

    A tool call to the chosen tool when tools are offered and the last message is the user's; otherwise text:
    the next scripted ``reply()``, else the tool result after a tool message, else an echo of the user. Text
    then honours ``response_format``, ``stop`` and ``max_tokens``.
    """
    prompt_tokens = sum(count_tokens(content_text(m.get("content"))) for m in request.messages)
    tool = _chosen_tool(request)
    if tool is not None:
        user_text = control_faults(content_text(request.messages[-1].get("content")))[0]
        parameters = tool.get("parameters")
        arguments = json.dumps(
            example_for_schema(parameters, user_text) if isinstance(parameters, Mapping) else {}
        )
        call = {"id": call_id, "type": "function", "function": {"name": tool["name"], "arguments": arguments}}
        return Answer(None, "tool_calls", prompt_tokens, count_tokens(arguments), tool_calls=(call,))
    text = reply()
    if text is None:
        last = request.messages[-1]
        text = TOOL_RESULT_PREFIX + content_text(last.get("content")) if last.get("role") == "tool" else None
    text = json_answer(echo(request.messages) if text is None else text, request.response_format)
    content, finish_reason = apply_limits(text, stop=request.stop, max_tokens=request.max_tokens)
    return Answer(content, finish_reason, prompt_tokens, count_tokens(content))


def completion_body(answer: Answer, *, completion_id: str, created: int, model: str) -> dict[str, Any]:
    """The ``chat.completion`` object for ``answer``."""
    message = {"role": "assistant", "content": answer.content, "tool_calls": list(answer.tool_calls) or None}
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": answer.finish_reason, "logprobs": None}
        ],
        "usage": answer.usage,
    }


def stream_chunks(answer: Answer, *, completion_id: str, created: int, model: str) -> list[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects of a streamed ``answer``, in order (``[DONE]`` not included).

    A role delta, then content deltas of a word each, or tool-call deltas (``id`` and ``name`` only in each
    call's first delta, ``arguments`` in pieces), then the ``finish_reason`` chunk, then a usage-only chunk
    with ``"choices": []``.
    """

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        return {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [choice],
        }

    chunks = [chunk({"role": "assistant", "content": "" if answer.content is not None else None})]
    chunks += [chunk({"content": piece}) for piece in split_for_stream(answer.content or "")]
    for index, call in enumerate(answer.tool_calls):
        function = call["function"]
        first = {
            "index": index,
            "id": call["id"],
            "type": "function",
            "function": {"name": function["name"], "arguments": ""},
        }
        chunks.append(chunk({"tool_calls": [first]}))
        arguments = function["arguments"]
        for start in range(0, len(arguments), _ARGUMENT_PIECE):
            piece = arguments[start : start + _ARGUMENT_PIECE]
            chunks.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
    chunks.append(chunk({}, answer.finish_reason))
    usage_chunk = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": answer.usage,
    }
    return [*chunks, usage_chunk]
