"""The two operations a call can be, as data: chat (messages in, an assistant message out) and text
completion (a prompt in, text out).

The pipeline and the stream are written once; an :class:`Operation` tells them how to read a whole answer, a
stream event, and how to fold chunks back into the answer a non-streaming call would have returned.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

import attrs

from ._messages import AssistantMessage, ToolCall
from ._responses import ChatChunk, ChatResponse, CompletionChunk, CompletionResponse, ToolCallDelta, Usage

__all__ = ["CHAT", "TEXT_COMPLETION", "Accumulator", "Operation"]


class _Chunk(Protocol):
    @property
    def finish_reason(self) -> str | None: ...
    @property
    def usage(self) -> Usage | None: ...
    @property
    def model(self) -> str | None: ...
    @property
    def id(self) -> str | None: ...


ResponseT = TypeVar("ResponseT")
ChunkT = TypeVar("ChunkT", bound=_Chunk)


@attrs.frozen
class Operation(Generic[ResponseT, ChunkT]):
    """How one kind of call reads answers and chunks.

    Attributes:
        name: the operation's name in traces (OpenTelemetry's ``gen_ai.operation.name``).
        what: what the answer is called in messages ("the answer may be truncated").
        able: the name of the formatter's predicate saying whether it can do this on a route (``can_chat``).
        unable: the name of the formatter's hook making the error that says why not (``cannot_chat``).
        build: the name of the formatter's hook that builds a body: ``hook(route, payload, params, stream=)``,
            the payload being the wire messages or the prompt.
        read: the name of the formatter's hook that reads a whole 2xx body: ``hook(route, body, request_id=)``.
        read_chunk: the name of the formatter's hook that reads one stream event: ``hook(route, data)``
            (``None`` skips the event).
        whole_chunk: the whole answer as one chunk (routes that cannot stream, servers that ignore ``stream``).
        text_of: a chunk's text delta.
        calls_of: a chunk's tool-call pieces.
        assemble: the answer from folded chunks.
    """

    name: str
    what: str
    # Hooks by name, looked up on the endpoint's formatter where they run: a subclass's override is what
    # runs, with no wrapper call in between on every request.
    able: str
    unable: str
    build: str
    read: str
    read_chunk: str
    whole_chunk: Callable[[ResponseT], ChunkT]
    text_of: Callable[[ChunkT], str | None]
    calls_of: Callable[[ChunkT], tuple[ToolCallDelta, ...]]
    assemble: Callable[[Accumulator[ResponseT, ChunkT], str | None], ResponseT]


class Accumulator(Generic[ResponseT, ChunkT]):
    """Folds the chunks of one stream into the answer a non-streaming call would have returned: text joined,
    tool calls reassembled by index, the last finish reason and usage, the first model and id."""

    def __init__(self, operation: Operation[ResponseT, ChunkT]) -> None:
        self._operation = operation
        self.text: list[str] = []
        self.calls: dict[int, list[Any]] = {}  # index -> [id, name, [argument pieces]]
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.model: str | None = None
        self.id: str | None = None

    def add(self, chunk: ChunkT) -> None:
        operation = self._operation
        text = operation.text_of(chunk)
        if text:
            self.text.append(text)
        for delta in operation.calls_of(chunk):
            # id and name arrive only in the first piece of each index; keying by index keeps calls apart.
            call = self.calls.setdefault(delta.index, [None, None, []])
            call[0] = call[0] or delta.id
            call[1] = call[1] or delta.name
            call[2].append(delta.arguments)
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
        if chunk.usage is not None:
            self.usage = chunk.usage
        self.model = self.model or chunk.model
        self.id = self.id or chunk.id

    def response(self, *, request_id: str | None) -> ResponseT:
        return self._operation.assemble(self, request_id)


# --- chat ----------------------------------------------------------------------------------------------


def _chat_whole_chunk(response: ChatResponse) -> ChatChunk:
    deltas = tuple(
        ToolCallDelta(index=index, id=call.id, name=call.name, arguments=call.arguments)
        for index, call in enumerate(response.tool_calls)
    )
    return ChatChunk(
        content=response.content,
        finish_reason=response.finish_reason,
        usage=response.usage,
        tool_calls=deltas,
        role="assistant",
        model=response.model,
        id=response.id,
        raw=response.raw,
    )


def _chat_assemble(folded: Accumulator[ChatResponse, ChatChunk], request_id: str | None) -> ChatResponse:
    calls = tuple(
        ToolCall(id=call_id or f"call_{index}", name=name or "", arguments="".join(pieces))
        for index, (call_id, name, pieces) in sorted(folded.calls.items())
    )
    content = "".join(folded.text) if folded.text or not calls else None
    return ChatResponse(
        message=AssistantMessage(content, tool_calls=calls),
        finish_reason=folded.finish_reason,
        usage=folded.usage,
        model=folded.model,
        id=folded.id,
        request_id=request_id,
    )


CHAT: Operation[ChatResponse, ChatChunk] = Operation(
    name="chat",
    what="answer",
    able="can_chat",
    unable="cannot_chat",
    build="build_chat",
    read="read_chat",
    read_chunk="parse_chunk",
    whole_chunk=_chat_whole_chunk,
    text_of=lambda chunk: chunk.content,
    calls_of=lambda chunk: chunk.tool_calls,
    assemble=_chat_assemble,
)


# --- text completion -----------------------------------------------------------------------------------


def _completion_whole_chunk(response: CompletionResponse) -> CompletionChunk:
    return CompletionChunk(
        text=response.text,
        finish_reason=response.finish_reason,
        usage=response.usage,
        model=response.model,
        id=response.id,
        raw=response.raw,
    )


def _completion_assemble(
    folded: Accumulator[CompletionResponse, CompletionChunk], request_id: str | None
) -> CompletionResponse:
    return CompletionResponse(
        text="".join(folded.text),
        finish_reason=folded.finish_reason,
        usage=folded.usage,
        model=folded.model,
        id=folded.id,
        request_id=request_id,
    )


TEXT_COMPLETION: Operation[CompletionResponse, CompletionChunk] = Operation(
    name="text_completion",
    what="completion",
    able="can_complete",
    unable="cannot_complete",
    build="build_completion_request",
    read="read_completion",
    read_chunk="parse_completion_chunk",
    whole_chunk=_completion_whole_chunk,
    text_of=lambda chunk: chunk.text,
    calls_of=lambda chunk: (),
    assemble=_completion_assemble,
)
