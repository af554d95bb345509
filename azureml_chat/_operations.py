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
from ._responses import (
    ChatChunk,
    ChatResponse,
    Choice,
    CompletionChoice,
    CompletionChunk,
    CompletionResponse,
    ToolCallDelta,
    Usage,
)

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
    @property
    def index(self) -> int: ...


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
            (a chunk, a tuple of chunks for an event with several choices, or ``None`` to skip the event).
        whole_chunks: the whole answer as chunks, one per choice (routes that cannot stream, servers that
            ignore ``stream``).
        text_of: a chunk's text delta.
        calls_of: a chunk's tool-call pieces.
        assemble: the answer from folded chunks.
        splits_reasoning: whether its answers may open with a ``<think>`` block to keep apart (``_reasoning.py``).
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
    whole_chunks: Callable[[ResponseT], tuple[ChunkT, ...]]
    text_of: Callable[[ChunkT], str | None]
    calls_of: Callable[[ChunkT], tuple[ToolCallDelta, ...]]
    assemble: Callable[[Accumulator[ResponseT, ChunkT], str | None], ResponseT]
    splits_reasoning: bool


class Folded:
    """One choice's pieces so far."""

    __slots__ = ("calls", "finish_reason", "reasoning", "text")

    def __init__(self) -> None:
        self.text: list[str] = []
        self.reasoning: list[str] = []
        # tool index -> [id, name, type, [argument or input pieces]]
        self.calls: dict[int, list[Any]] = {}
        self.finish_reason: str | None = None


class Accumulator(Generic[ResponseT, ChunkT]):
    """Folds the chunks of one stream into the answer a non-streaming call would have returned: each choice's
    text and reasoning joined, its tool calls reassembled by index, its finish reason; the last usage, the
    first model and id."""

    def __init__(self, operation: Operation[ResponseT, ChunkT]) -> None:
        self._operation = operation
        self.choices: dict[int, Folded] = {}
        self.usage: Usage | None = None
        self.model: str | None = None
        self.id: str | None = None

    def add(self, chunk: ChunkT) -> None:
        operation = self._operation
        folded = self.choices.get(chunk.index)
        if folded is None:
            folded = self.choices[chunk.index] = Folded()
        text = operation.text_of(chunk)
        if text:
            folded.text.append(text)
        reasoning = getattr(chunk, "reasoning", None)
        if reasoning:
            folded.reasoning.append(reasoning)
        for delta in operation.calls_of(chunk):
            # id, name and type arrive only in the first piece of each index; keying by index keeps calls apart.
            call = folded.calls.setdefault(delta.index, [None, None, None, []])
            call[0] = call[0] or delta.id
            call[1] = call[1] or delta.name
            call[2] = call[2] or delta.type
            call[3].append(delta.input or delta.arguments)
        if chunk.finish_reason is not None:
            folded.finish_reason = chunk.finish_reason
        if chunk.usage is not None:
            self.usage = chunk.usage
        self.model = self.model or chunk.model
        self.id = self.id or chunk.id

    def complete(self, expected: int) -> bool:
        """Whether every choice has its finish reason: the ``expected`` first ones (the call's ``n``) and any
        other one seen."""
        choices = self.choices
        return all(index in choices for index in range(expected)) and all(
            folded.finish_reason is not None for folded in choices.values()
        )

    def folded(self) -> list[tuple[int, Folded]]:
        """Each choice's pieces by index; choice 0 always (empty when the stream carried none)."""
        if 0 not in self.choices:
            self.choices[0] = Folded()
        return sorted(self.choices.items())

    def response(self, *, request_id: str | None) -> ResponseT:
        return self._operation.assemble(self, request_id)


# --- chat ----------------------------------------------------------------------------------------------


def _chat_whole_chunks(response: ChatResponse) -> tuple[ChatChunk, ...]:
    return tuple(
        ChatChunk(
            content=choice.message.content,
            reasoning=choice.reasoning,
            finish_reason=choice.finish_reason,
            usage=response.usage if position == len(response.choices) - 1 else None,
            tool_calls=tuple(
                ToolCallDelta(
                    index=index,
                    id=call.id,
                    name=call.name,
                    arguments=call.arguments,
                    type=call.type,
                    input=call.input or "",
                )
                for index, call in enumerate(choice.message.tool_calls)
            ),
            role="assistant",
            model=response.model,
            id=response.id,
            index=choice.index,
            raw=response.raw,
        )
        for position, choice in enumerate(response.choices)
    )


def _tool_call(
    index: int, call_id: str | None, name: str | None, kind: str | None, pieces: list[str]
) -> ToolCall:
    if kind == "custom":
        return ToolCall(call_id or f"call_{index}", name or "", "", type="custom", input="".join(pieces))
    return ToolCall(call_id or f"call_{index}", name or "", "".join(pieces))


def _chat_assemble(folded: Accumulator[ChatResponse, ChatChunk], request_id: str | None) -> ChatResponse:
    choices = []
    for index, choice in folded.folded():
        calls = tuple(_tool_call(position, *call) for position, call in sorted(choice.calls.items()))
        content = "".join(choice.text) if choice.text or not calls else None
        choices.append(
            Choice(
                index=index,
                message=AssistantMessage(content, tool_calls=calls),
                finish_reason=choice.finish_reason,
                reasoning="".join(choice.reasoning) or None,
            )
        )
    return ChatResponse(
        choices=choices,
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
    whole_chunks=_chat_whole_chunks,
    text_of=lambda chunk: chunk.content,
    calls_of=lambda chunk: chunk.tool_calls,
    assemble=_chat_assemble,
    splits_reasoning=True,
)


# --- text completion -----------------------------------------------------------------------------------


def _completion_whole_chunks(response: CompletionResponse) -> tuple[CompletionChunk, ...]:
    return tuple(
        CompletionChunk(
            text=choice.text,
            finish_reason=choice.finish_reason,
            usage=response.usage if position == len(response.choices) - 1 else None,
            model=response.model,
            id=response.id,
            index=choice.index,
            raw=response.raw,
        )
        for position, choice in enumerate(response.choices)
    )


def _completion_assemble(
    folded: Accumulator[CompletionResponse, CompletionChunk], request_id: str | None
) -> CompletionResponse:
    return CompletionResponse(
        choices=[
            CompletionChoice(index=index, text="".join(choice.text), finish_reason=choice.finish_reason)
            for index, choice in folded.folded()
        ],
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
    whole_chunks=_completion_whole_chunks,
    text_of=lambda chunk: chunk.text,
    calls_of=lambda chunk: (),
    assemble=_completion_assemble,
    splits_reasoning=False,
)
