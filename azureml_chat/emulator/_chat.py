"""The OpenAI-compatible chat-completions dialect: validate a request and answer it (shaping the body or the
SSE chunks is :mod:`._chat_body`). No I/O.

With ``n`` > 1 the answer has ``n`` choices: the first as with ``n`` = 1, each next one a different scripted
reply (the next in turn) or, when echoing, the same text with `` (choice i)`` appended, so the texts differ
and stay deterministic. Tool calls repeat in each choice, with their own ids.
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
)
from ._errors import BadRequest
from ._openai import parse_n
from ._reasoning import REASONING, ReasoningMode, think

__all__ = [
    "OPENAI_CHAT_FIELDS",
    "Answer",
    "BadRequest",
    "ChatRequest",
    "answer_chat",
    "check_message",
    "parse_chat_request",
    "parse_stop",
    "prompt_tokens",
]

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
_RESPONSE_FORMATS = frozenset({"text", "json_object", "json_schema"})
# The request fields of OpenAI's (and vLLM's) chat completions: the schema of the provider-native routes when a
# request asks for ``extra-parameters: error`` there (Azure's own schema is in ._azure).
OPENAI_CHAT_FIELDS = frozenset(
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
    n: int = 1


@attrs.frozen
class Answer:
    """One choice of what the model answers, before it is shaped as a body or as chunks.

    ``completion_tokens`` includes ``reasoning_tokens``; ``content`` includes a ``<think>`` block in ``think``
    mode, while ``reasoning_content`` holds the reasoning in ``field`` mode.
    """

    content: str | None
    finish_reason: str
    completion_tokens: int
    tool_calls: tuple[dict[str, Any], ...] = ()
    reasoning_content: str | None = None
    reasoning_tokens: int = 0


def parse_chat_request(body: Any) -> ChatRequest:
    """Validate a chat-completions body as the service does (unknown fields are screened before, in ._azure).

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
        n=parse_n(body.get("n")),
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


def prompt_tokens(request: ChatRequest) -> int:
    """The prompt's tokens: the words of every message's text."""
    return sum(count_tokens(content_text(m.get("content"))) for m in request.messages)


def answer_chat(
    request: ChatRequest,
    *,
    reply: Callable[[], str | None],
    call_id: Callable[[], str],
    reasoning: ReasoningMode | None = None,
) -> list[Answer]:
    """Answer a chat request deterministically, one :class:`Answer` per choice (``n``).

    A tool call to the chosen tool when tools are offered and the last message is the user's; otherwise text:
    the next scripted ``reply()``, else the tool result after a tool message, else an echo of the user. Text
    then honours ``response_format``, ``stop`` and ``max_tokens``, and gets the deployment's ``reasoning``.
    """
    return [
        _answer(request, choice, reply=reply, call_id=call_id, reasoning=reasoning)
        for choice in range(request.n)
    ]


def _answer(
    request: ChatRequest,
    choice: int,
    *,
    reply: Callable[[], str | None],
    call_id: Callable[[], str],
    reasoning: ReasoningMode | None,
) -> Answer:
    tool = _chosen_tool(request)
    if tool is not None:
        user_text = control_faults(content_text(request.messages[-1].get("content")))[0]
        parameters = tool.get("parameters")
        arguments = json.dumps(
            example_for_schema(parameters, user_text) if isinstance(parameters, Mapping) else {}
        )
        call = {
            "id": call_id(),
            "type": "function",
            "function": {"name": tool["name"], "arguments": arguments},
        }
        return Answer(None, "tool_calls", count_tokens(arguments), tool_calls=(call,))
    text = reply()
    if text is None:
        last = request.messages[-1]
        text = TOOL_RESULT_PREFIX + content_text(last.get("content")) if last.get("role") == "tool" else None
        text = echo(request.messages) if text is None else text
        text = f"{text} (choice {choice})" if choice else text
    text = json_answer(text, request.response_format)
    content, finish_reason = apply_limits(text, stop=request.stop, max_tokens=request.max_tokens)
    tokens = count_tokens(content)
    if reasoning == "think":
        content, thought = think(content)
        return Answer(content, finish_reason, tokens + thought, reasoning_tokens=thought)
    if reasoning == "field":
        thought = count_tokens(REASONING)
        return Answer(
            content, finish_reason, tokens + thought, reasoning_content=REASONING, reasoning_tokens=thought
        )
    return Answer(content, finish_reason, tokens)
