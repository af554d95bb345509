"""What a call returns: :class:`ChatResponse` for a whole answer, :class:`ChatChunk` for a piece of a stream,
and their text-completion twins :class:`CompletionResponse` and :class:`CompletionChunk`."""

from __future__ import annotations

from typing import Any

import attrs

from ._messages import AssistantMessage, ToolCall

__all__ = ["ChatChunk", "ChatResponse", "CompletionChunk", "CompletionResponse", "ToolCallDelta", "Usage"]


@attrs.frozen
class Usage:
    """Token counts, as the endpoint reported them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = attrs.field()

    @total_tokens.default
    def _sum(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@attrs.frozen(kw_only=True)
class ChatResponse:
    """A complete answer.

    Attributes:
        message: the assistant's message (``content`` and ``tool_calls`` are read from it).
        finish_reason: ``stop``, ``length``, ``tool_calls``, ``content_filter``, or ``None`` when the route
            does not say (classic ``/score``).
        usage: token counts, when the endpoint reported them.
        model: the model name the endpoint reported.
        id: the completion id the endpoint reported.
        request_id: the id to quote in a support ticket (``x-request-id``, else our ``x-ms-client-request-id``).
        raw: the parsed JSON body exactly as received; nothing the endpoint sent is lost.
        endpoint: the name of the endpoint that answered (``Endpoint.name``; for a client over one URL,
            derived from it). Set by the client; not part of equality.
    """

    message: AssistantMessage
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str | None = None
    id: str | None = None
    request_id: str | None = None
    raw: Any = attrs.field(default=None, repr=False, eq=False)
    endpoint: str | None = attrs.field(default=None, eq=False)

    @property
    def content(self) -> str | None:
        """The answer's text (``None`` when the model only called tools)."""
        return self.message.content

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        """The tool calls the model asked for, in order."""
        return self.message.tool_calls


@attrs.frozen(kw_only=True)
class ToolCallDelta:
    """A piece of a tool call in a stream. ``id`` and ``name`` come only in the first piece of each ``index``;
    ``arguments`` pieces are concatenated in order."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@attrs.frozen(kw_only=True)
class ChatChunk:
    """One event of a stream.

    Attributes:
        content: the new text in this event (a delta), or ``None``.
        finish_reason: set on the event that ends the answer.
        usage: set on the usage event (usually the last one).
        tool_calls: tool-call pieces in this event.
        role: the role, when the event announces it.
        raw: the parsed event as received.
    """

    content: str | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()
    role: str | None = None
    model: str | None = None
    id: str | None = None
    raw: Any = attrs.field(default=None, repr=False, eq=False)


@attrs.frozen(kw_only=True)
class CompletionResponse:
    """A complete text completion (``complete()`` on a text-generation endpoint).

    Attributes:
        text: the generated text, exactly as the endpoint returned it (not stripped; some text-generation
            deployments return the prompt followed by its continuation).
        finish_reason: ``stop``, ``length``, ..., or ``None`` when the route does not say (``/score``).
        usage: token counts, when the endpoint reported them.
        model: the model name the endpoint reported.
        id: the completion id the endpoint reported.
        request_id: the id to quote in a support ticket (``x-request-id``, else our ``x-ms-client-request-id``).
        raw: the parsed JSON body exactly as received; nothing the endpoint sent is lost.
        endpoint: the name of the endpoint that answered (``Endpoint.name``; for a client over one URL,
            derived from it). Set by the client; not part of equality.
    """

    text: str
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str | None = None
    id: str | None = None
    request_id: str | None = None
    raw: Any = attrs.field(default=None, repr=False, eq=False)
    endpoint: str | None = attrs.field(default=None, eq=False)


@attrs.frozen(kw_only=True)
class CompletionChunk:
    """One event of a streamed text completion.

    Attributes:
        text: the new text in this event (a delta; ``""`` when the event carries none, e.g. usage only).
        finish_reason: set on the event that ends the completion.
        usage: set on the usage event (usually the last one).
        raw: the parsed event as received.
    """

    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str | None = None
    id: str | None = None
    raw: Any = attrs.field(default=None, repr=False, eq=False)
