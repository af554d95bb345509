"""OpenAI chat completions (the serverless dialect, and vLLM-style dedicated deployments) and OpenAI text
completions (``/v1/completions``: ``{"prompt": ...}`` in, ``choices[0].text`` out)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from .._errors import StreamError, error_message
from .._messages import AssistantMessage, Message, ToolCall
from .._responses import (
    ChatChunk,
    ChatResponse,
    Choice,
    CompletionChoice,
    CompletionChunk,
    CompletionResponse,
    ToolCallDelta,
    Usage,
    chat_response,
    completion_response,
)
from .._serialization import converter, messages_to_wire, structure_usage
from ._base import ContentFormatter, Route

__all__ = [
    "OpenAIFormatter",
    "build_text_completions",
    "chat_completions_body",
    "parse_chat_chunk",
    "parse_chat_completion",
    "parse_text_completion",
    "parse_text_completion_chunk",
]


def chat_completions_body(
    wire_messages: list[dict[str, Any]], params: Mapping[str, Any], *, stream: bool
) -> dict[str, Any]:
    """The chat-completions body: ``messages`` (already in the wire shape), then every parameter at the top level,
    with a ``stop`` string as a one-item list (Azure's schema takes only the list; OpenAI takes both)."""
    body: dict[str, Any] = {"messages": wire_messages, **params}
    if "stop" in body and type(body["stop"]) is str:
        body["stop"] = [body["stop"]]
    if stream:
        body["stream"] = True
    return body


def parse_chat_completion(
    formatter: ContentFormatter, body: Any, *, request_id: str | None = None
) -> ChatResponse:
    """Read every choice (message, finish reason, reasoning, logprobs) and the usage, model and id of a
    chat-completions body."""
    if not isinstance(body, dict):
        raise formatter.shape_error("expected a JSON object with 'choices'", body)
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        raise formatter.shape_error("'choices' must be a non-empty list of objects", body)
    # Inline type tests rather than helper calls: this runs once per answer (docs/performance.md).
    model, completion_id = body.get("model"), body.get("id")
    return chat_response(
        tuple(sorted(_chat_choices(formatter, body, choices), key=_by_index))
        if len(choices) > 1
        else (_chat_choice(formatter, body, choices[0], 0),),
        structure_usage(body.get("usage")),
        model if type(model) is str else None,
        completion_id if type(completion_id) is str else None,
        request_id,
        body,
    )


def _chat_choices(formatter: ContentFormatter, body: Any, choices: list[Any]) -> list[Choice]:
    return [_chat_choice(formatter, body, choice, position) for position, choice in enumerate(choices)]


def _by_index(choice: Choice | CompletionChoice) -> int:
    return choice.index


def _chat_choice(formatter: ContentFormatter, body: Any, choice: Any, position: int) -> Choice:
    if not isinstance(choice, dict):
        raise formatter.shape_error("'choices' must be a non-empty list of objects", body)
    message = choice.get("message")
    if not isinstance(message, dict):
        raise formatter.shape_error(f"'choices[{position}].message' must be an object", body)
    content = message.get("content")
    if content is not None and type(content) is not str:
        raise formatter.shape_error(f"'choices[{position}].message.content' must be a string or null", body)
    raw_calls = message.get("tool_calls")
    if raw_calls:
        if not isinstance(raw_calls, list):
            raise formatter.shape_error(f"'choices[{position}].message.tool_calls' must be a list", body)
        try:
            answer = AssistantMessage(
                content, tool_calls=[converter.structure(call, ToolCall) for call in raw_calls]
            )
        except (TypeError, ValueError) as exc:
            raise formatter.shape_error(f"a tool call is malformed ({exc})", body) from None
    else:
        answer = AssistantMessage(content)
    # Inline reads rather than helper calls: this runs once per choice of every answer (docs/performance.md).
    finish_reason, index = choice.get("finish_reason"), choice.get("index", position)
    # DeepSeek and vLLM send "reasoning_content"; newer vLLM releases call it "reasoning".
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    return Choice(
        index=index if type(index) is int else position,
        message=answer,
        finish_reason=finish_reason if type(finish_reason) is str else None,
        reasoning=reasoning if type(reasoning) is str else None,
        logprobs=choice.get("logprobs"),
    )


def _reasoning_of(fields: dict[str, Any]) -> str | None:
    # DeepSeek and vLLM send "reasoning_content"; newer vLLM releases call it "reasoning".
    reasoning = fields.get("reasoning_content") or fields.get("reasoning")
    return reasoning if type(reasoning) is str else None


def _index(choice: dict[str, Any], position: int) -> int:
    index = choice.get("index", position)
    return index if type(index) is int else position


def parse_chat_chunk(formatter: ContentFormatter, data: Any) -> ChatChunk | tuple[ChatChunk, ...] | None:
    """Read one ``chat.completion.chunk`` event: the delta of its choice (several chunks when the event
    carries several choices) and any usage."""
    return _event_chunks(_event_object(formatter, data), _chat_chunk, ChatChunk)


_ChunkT = TypeVar("_ChunkT", ChatChunk, CompletionChunk)


def _event_chunks(
    data: dict[str, Any],
    make: Callable[[dict[str, Any], int, Usage | None, str | None, str | None, Any], _ChunkT],
    bare: type[_ChunkT],
) -> _ChunkT | tuple[_ChunkT, ...]:
    """The chunks of one stream event: ``make(choice, position, usage, model, id, data)`` per choice object (the
    usage on the last), or a ``bare`` chunk with only the usage, model and id when it has none. One chunk, not a
    tuple, for an event of one choice: the common event, read without building a list."""
    choices = data.get("choices")
    usage = structure_usage(data.get("usage"))
    model, completion_id = _optional_str(data.get("model")), _optional_str(data.get("id"))
    if type(choices) is list:
        if len(choices) == 1 and type(choices[0]) is dict:
            return make(choices[0], 0, usage, model, completion_id, data)
        kept = [(position, choice) for position, choice in enumerate(choices) if isinstance(choice, dict)]
        if kept:
            last = kept[-1][0]
            chunks = tuple(
                make(choice, position, usage if position == last else None, model, completion_id, data)
                for position, choice in kept
            )
            return chunks[0] if len(chunks) == 1 else chunks
    return bare(usage=usage, model=model, id=completion_id, raw=data)


def _chat_chunk(
    choice: dict[str, Any],
    position: int,
    usage: Usage | None,
    model: str | None,
    completion_id: str | None,
    data: Any,
) -> ChatChunk:
    content = role = reasoning = None
    deltas: tuple[ToolCallDelta, ...] = ()
    delta = choice.get("delta")
    if isinstance(delta, dict):
        content = _optional_str(delta.get("content"))
        role = _optional_str(delta.get("role"))
        reasoning = _reasoning_of(delta)
        deltas = _tool_call_deltas(delta.get("tool_calls"))
    return ChatChunk(
        content=content,
        reasoning=reasoning,
        finish_reason=_optional_str(choice.get("finish_reason")),
        usage=usage,
        tool_calls=deltas,
        role=role,
        model=model,
        id=completion_id,
        index=_index(choice, position),
        raw=data,
    )


def build_text_completions(prompt: str, params: Mapping[str, Any], *, stream: bool) -> dict[str, Any]:
    """The text-completions body: ``prompt`` as given, then every parameter at the top level, with a ``stop``
    string as a one-item list (as in :func:`chat_completions_body`: a list is valid under both specs)."""
    body: dict[str, Any] = {"prompt": prompt, **params}
    if "stop" in body and type(body["stop"]) is str:
        body["stop"] = [body["stop"]]
    if stream:
        body["stream"] = True
    return body


def parse_text_completion(
    formatter: ContentFormatter, body: Any, *, request_id: str | None = None
) -> CompletionResponse:
    """Read every choice's text (and finish reason, logprobs), the usage, model and id of a text-completions
    body."""
    if not isinstance(body, dict):
        raise formatter.shape_error("expected a JSON object with 'choices'", body, completion=True)
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        raise formatter.shape_error("'choices' must be a non-empty list of objects", body, completion=True)
    read = [_text_choice(formatter, body, choice, position) for position, choice in enumerate(choices)]
    return completion_response(
        tuple(sorted(read, key=_by_index)) if len(read) > 1 else (read[0],),
        structure_usage(body.get("usage")),
        _optional_str(body.get("model")),
        _optional_str(body.get("id")),
        request_id,
        body,
    )


def _text_choice(formatter: ContentFormatter, body: Any, choice: Any, position: int) -> CompletionChoice:
    if not isinstance(choice, dict):
        raise formatter.shape_error("'choices' must be a non-empty list of objects", body, completion=True)
    if "text" not in choice:
        raise formatter.shape_error(f"'choices[{position}]' has no 'text'", body, completion=True)
    text = choice["text"]
    if text is not None and not isinstance(text, str):
        raise formatter.shape_error(
            f"'choices[{position}].text' must be a string or null", body, completion=True
        )
    return CompletionChoice(
        index=_index(choice, position),
        # A null text (a filtered completion) is no text, not a malformed body.
        text=text or "",
        finish_reason=_optional_str(choice.get("finish_reason")),
        logprobs=choice.get("logprobs"),
    )


def parse_text_completion_chunk(
    formatter: ContentFormatter, data: Any
) -> CompletionChunk | tuple[CompletionChunk, ...] | None:
    """Read one streamed ``text_completion`` event: the text delta of its choice (several chunks when the event
    carries several choices) and any usage."""
    return _event_chunks(_event_object(formatter, data), _text_chunk, CompletionChunk)


def _text_chunk(
    choice: dict[str, Any],
    position: int,
    usage: Usage | None,
    model: str | None,
    completion_id: str | None,
    data: Any,
) -> CompletionChunk:
    return CompletionChunk(
        text=_optional_str(choice.get("text")) or "",
        finish_reason=_optional_str(choice.get("finish_reason")),
        usage=usage,
        model=model,
        id=completion_id,
        index=_index(choice, position),
        raw=data,
    )


def _tool_call_deltas(raw: Any) -> tuple[ToolCallDelta, ...]:
    if not isinstance(raw, list):
        return ()
    deltas = []
    for position, item in enumerate(raw):
        if not isinstance(item, dict):
            continue
        kind = _optional_str(item.get("type"))
        custom = item.get("custom")
        function = custom if isinstance(custom, dict) else item.get("function")
        function = function if isinstance(function, dict) else {}
        index = item.get("index")
        deltas.append(
            ToolCallDelta(
                index=index if isinstance(index, int) and not isinstance(index, bool) else position,
                id=_optional_str(item.get("id")),
                name=_optional_str(function.get("name")),
                arguments=_optional_str(function.get("arguments")) or "",
                type=kind if kind is not None or not isinstance(custom, dict) else "custom",
                input=_optional_str(function.get("input")) or "",
            )
        )
    return tuple(deltas)


def _event_object(formatter: ContentFormatter, data: Any) -> dict[str, Any]:
    """A stream event's JSON object; a non-object or an ``{"error": ...}`` event is a :class:`StreamError`."""
    if not isinstance(data, dict):
        raise StreamError(f"stream event is not a JSON object [formatter: {formatter.name}]: {data!r:.200}")
    error = data.get("error")
    if error is not None:
        raise StreamError(f"the endpoint reported an error mid-stream: {error_message(data) or error!r:.500}")
    return data


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


class OpenAIFormatter(ContentFormatter):
    """OpenAI chat completions on ``/score`` (vLLM-style deployments) and chat-completions routes; OpenAI text
    completions on ``/v1/completions``."""

    name: ClassVar[str] = "openai"
    routes: ClassVar[frozenset[Route]] = frozenset(Route)
    completion_routes: ClassVar[frozenset[Route]] = frozenset({Route.COMPLETIONS})
    streaming_routes: ClassVar[frozenset[Route]] = frozenset(Route)

    def build_chat(
        self, route: Route, messages: list[dict[str, Any]], params: Mapping[str, Any], *, stream: bool
    ) -> dict[str, Any]:
        if route in self.completion_routes:
            raise self.cannot_chat(route)
        return chat_completions_body(messages, params, stream=stream)

    def build_request(
        self, route: Route, messages: Sequence[Message], params: Mapping[str, Any], *, stream: bool
    ) -> dict[str, Any]:
        return self.build_chat(route, messages_to_wire(messages), params, stream=stream)

    def read_chat(self, route: Route, body: Any, *, request_id: str | None) -> ChatResponse:
        return parse_chat_completion(self, body, request_id=request_id)

    def parse_response(self, route: Route, body: Any) -> ChatResponse:
        return parse_chat_completion(self, body)

    def parse_chunk(self, route: Route, data: Any) -> ChatChunk | tuple[ChatChunk, ...] | None:
        return parse_chat_chunk(self, data)

    def build_completion_request(
        self, route: Route, prompt: str, params: Mapping[str, Any], *, stream: bool
    ) -> dict[str, Any]:
        if route not in self.completion_routes:
            raise self.cannot_complete(route)
        return build_text_completions(prompt, params, stream=stream)

    def read_completion(self, route: Route, body: Any, *, request_id: str | None) -> CompletionResponse:
        return parse_text_completion(self, body, request_id=request_id)

    def parse_completion(self, route: Route, body: Any) -> CompletionResponse:
        return parse_text_completion(self, body)

    def parse_completion_chunk(
        self, route: Route, data: Any
    ) -> CompletionChunk | tuple[CompletionChunk, ...] | None:
        return parse_text_completion_chunk(self, data)
