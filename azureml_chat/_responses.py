"""What a call returns: :class:`ChatResponse` for a whole answer, :class:`ChatChunk` for a piece of a stream,
and their text-completion twins :class:`CompletionResponse` and :class:`CompletionChunk`.

An answer holds every choice the endpoint sent (``n > 1`` asks for several); its ``content``, ``message``,
``text`` and ``finish_reason`` are choice 0's, so a caller who asked for one never indexes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import attrs

from ._messages import AssistantMessage, ToolCall

__all__ = [
    "ChatChunk",
    "ChatResponse",
    "Choice",
    "CompletionChoice",
    "CompletionChunk",
    "CompletionResponse",
    "ToolCallDelta",
    "Usage",
]

# What `headers` holds until the client stamps the answer's own (a formatter's answer, a test's).
_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


@attrs.frozen
class Usage:
    """Token counts, as the endpoint reported them.

    Attributes:
        prompt_tokens: tokens of the prompt.
        completion_tokens: tokens generated, reasoning included.
        total_tokens: both (as reported; their sum when the endpoint did not say).
        cached_tokens: prompt tokens served from the prompt cache (``prompt_tokens_details.cached_tokens``),
            ``None`` when the endpoint does not say.
        reasoning_tokens: generated tokens spent on reasoning (``completion_tokens_details.reasoning_tokens``),
            ``None`` when the endpoint does not say.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = attrs.field()
    cached_tokens: int | None = attrs.field(default=None, kw_only=True)
    reasoning_tokens: int | None = attrs.field(default=None, kw_only=True)

    @total_tokens.default
    def _sum(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@attrs.frozen(kw_only=True)
class Choice:
    """One of the answers a chat call asked for (``n``), as the endpoint sent it.

    Attributes:
        index: its position among the choices (``0`` for the first).
        message: the assistant's message.
        finish_reason: ``stop``, ``length``, ``tool_calls``, ``content_filter``, or ``None`` when the route
            does not say (classic ``/score``).
        reasoning: the model's reasoning, kept apart from ``message.content`` (a ``reasoning_content`` field,
            or a ``<think>`` block opening the content), or ``None``.
        logprobs: the choice's ``logprobs`` object exactly as received, or ``None`` (not part of equality).
    """

    index: int = 0
    message: AssistantMessage
    finish_reason: str | None = None
    reasoning: str | None = None
    # As received (often a dict): like raw, kept out of equality and hashing.
    logprobs: Any = attrs.field(default=None, repr=False, eq=False)


def _choices(value: Iterable[Any], owner: str) -> tuple[Any, ...]:
    choices = tuple(value)
    if not choices:
        raise ValueError(f"{owner} needs at least one choice")
    return choices


@attrs.frozen(init=False)
class ChatResponse:
    """A complete answer.

    Build one with ``message=`` (and ``finish_reason=``, ``reasoning=``) for a single answer, as a custom
    formatter does, or with ``choices=`` for several.

    Attributes:
        choices: every answer the endpoint sent, by index (one unless the call asked for ``n > 1``).
        usage: token counts, when the endpoint reported them.
        model: the model name the endpoint reported.
        id: the completion id the endpoint reported.
        request_id: the id to quote in a support ticket (``x-request-id``, else our ``x-ms-client-request-id``).
        raw: the parsed JSON body exactly as received; nothing the endpoint sent is lost.
        endpoint: the name of the endpoint that answered (``Endpoint.name``; for a client over one URL,
            derived from it). Set by the client; not part of equality.
        headers: the HTTP response headers (read-only, case-insensitive names). Set by the client; not part
            of equality.
        attempts: the HTTP requests the call sent to get this answer, its retries included (as the errors'
            ``attempts``). Set by the client; not part of equality.
    """

    choices: tuple[Choice, ...]
    usage: Usage | None
    model: str | None
    id: str | None
    request_id: str | None
    raw: Any = attrs.field(repr=False, eq=False)
    endpoint: str | None = attrs.field(eq=False)
    headers: Mapping[str, str] = attrs.field(repr=False, eq=False)
    attempts: int = attrs.field(repr=False, eq=False)

    def __init__(
        self,
        *,
        message: AssistantMessage | None = None,
        finish_reason: str | None = None,
        reasoning: str | None = None,
        choices: Iterable[Choice] | None = None,
        usage: Usage | None = None,
        model: str | None = None,
        id: str | None = None,
        request_id: str | None = None,
        raw: Any = None,
        endpoint: str | None = None,
        headers: Mapping[str, str] = _NO_HEADERS,
        attempts: int = 1,
    ) -> None:
        if choices is None:
            if message is None:
                raise TypeError("ChatResponse needs message= (one answer) or choices= (several)")
            choices = (Choice(message=message, finish_reason=finish_reason, reasoning=reasoning),)
        elif (
            type(choices) is not tuple
            or not choices
            or message is not None
            or finish_reason is not None
            or reasoning is not None
        ):
            # Not the built-in formatters' tuple (checked inline: this runs once per answer).
            if message is not None or finish_reason is not None or reasoning is not None:
                raise TypeError(
                    "give ChatResponse either message= (with finish_reason=, reasoning=) or choices="
                )
            choices = _choices(choices, "ChatResponse")
        self.__attrs_init__(choices, usage, model, id, request_id, raw, endpoint, headers, attempts)

    @property
    def message(self) -> AssistantMessage:
        """The first choice's message."""
        return self.choices[0].message

    @property
    def finish_reason(self) -> str | None:
        """The first choice's finish reason."""
        return self.choices[0].finish_reason

    @property
    def reasoning(self) -> str | None:
        """The first choice's reasoning (``None`` when the model gave none, or splitting is off)."""
        return self.choices[0].reasoning

    @property
    def content(self) -> str | None:
        """The first choice's text (``None`` when the model only called tools)."""
        return self.choices[0].message.content

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        """The tool calls the first choice asked for, in order."""
        return self.choices[0].message.tool_calls


def chat_response(
    choices: tuple[Choice, ...],
    usage: Usage | None,
    model: str | None,
    id: str | None,
    request_id: str | None,
    raw: Any,
) -> ChatResponse:
    """A :class:`ChatResponse` of ``choices`` (a tuple of one or more), built without the constructor's argument
    checks: how the built-in formatters build every answer (the checks cost more than the rest)."""
    response = _new(ChatResponse)
    response.__attrs_init__(choices, usage, model, id, request_id, raw, None, _NO_HEADERS, 1)
    return response


def completion_response(
    choices: tuple[CompletionChoice, ...],
    usage: Usage | None,
    model: str | None,
    id: str | None,
    request_id: str | None,
    raw: Any,
) -> CompletionResponse:
    """A :class:`CompletionResponse` of ``choices`` (a tuple of one or more), built as :func:`chat_response`."""
    response = _new(CompletionResponse)
    response.__attrs_init__(choices, usage, model, id, request_id, raw, None, _NO_HEADERS, 1)
    return response


_new = object.__new__


@attrs.frozen(kw_only=True)
class ToolCallDelta:
    """A piece of a tool call in a stream. ``id``, ``name`` and ``type`` come only in the first piece of each
    ``index``; ``arguments`` pieces (``input`` pieces for a ``custom`` call) are concatenated in order."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    type: str | None = None
    input: str = ""


@attrs.frozen(kw_only=True)
class ChatChunk:
    """One event of a stream, for one choice.

    Attributes:
        content: the new text in this event (a delta), or ``None``.
        reasoning: the new reasoning text in this event (a delta), or ``None``.
        finish_reason: set on the event that ends the choice.
        usage: set on the usage event (usually the last one; it covers every choice).
        tool_calls: tool-call pieces in this event.
        role: the role, when the event announces it.
        index: the choice this event belongs to (``0`` unless the call asked for ``n > 1``).
        raw: the parsed event as received.
    """

    content: str | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()
    role: str | None = None
    model: str | None = None
    id: str | None = None
    reasoning: str | None = None
    index: int = 0
    raw: Any = attrs.field(default=None, repr=False, eq=False)


@attrs.frozen(kw_only=True)
class CompletionChoice:
    """One of the completions a text-completion call asked for (``n``).

    Attributes:
        index: its position among the choices.
        text: the generated text, exactly as the endpoint returned it.
        finish_reason: ``stop``, ``length``, ..., or ``None`` when the route does not say.
        logprobs: the choice's ``logprobs`` object exactly as received, or ``None`` (not part of equality).
    """

    index: int = 0
    text: str
    finish_reason: str | None = None
    # As received (often a dict): like raw, kept out of equality and hashing.
    logprobs: Any = attrs.field(default=None, repr=False, eq=False)


@attrs.frozen(init=False)
class CompletionResponse:
    """A complete text completion (``complete()`` on a text-generation endpoint).

    Build one with ``text=`` (and ``finish_reason=``) for a single completion, as a custom formatter does, or
    with ``choices=`` for several.

    Attributes:
        choices: every completion the endpoint sent, by index (one unless the call asked for ``n > 1``).
        usage: token counts, when the endpoint reported them.
        model: the model name the endpoint reported.
        id: the completion id the endpoint reported.
        request_id: the id to quote in a support ticket (``x-request-id``, else our ``x-ms-client-request-id``).
        raw: the parsed JSON body exactly as received; nothing the endpoint sent is lost.
        endpoint: the name of the endpoint that answered. Set by the client; not part of equality.
        headers: the HTTP response headers (read-only, case-insensitive names). Set by the client; not part
            of equality.
        attempts: the HTTP requests the call sent to get this answer, its retries included. Set by the
            client; not part of equality.
    """

    choices: tuple[CompletionChoice, ...]
    usage: Usage | None
    model: str | None
    id: str | None
    request_id: str | None
    raw: Any = attrs.field(repr=False, eq=False)
    endpoint: str | None = attrs.field(eq=False)
    headers: Mapping[str, str] = attrs.field(repr=False, eq=False)
    attempts: int = attrs.field(repr=False, eq=False)

    def __init__(
        self,
        *,
        text: str | None = None,
        finish_reason: str | None = None,
        choices: Iterable[CompletionChoice] | None = None,
        usage: Usage | None = None,
        model: str | None = None,
        id: str | None = None,
        request_id: str | None = None,
        raw: Any = None,
        endpoint: str | None = None,
        headers: Mapping[str, str] = _NO_HEADERS,
        attempts: int = 1,
    ) -> None:
        if choices is None:
            if text is None:
                raise TypeError("CompletionResponse needs text= (one completion) or choices= (several)")
            choices = (CompletionChoice(text=text, finish_reason=finish_reason),)
        elif type(choices) is not tuple or not choices or text is not None or finish_reason is not None:
            if text is not None or finish_reason is not None:
                raise TypeError("give CompletionResponse either text= (with finish_reason=) or choices=")
            choices = _choices(choices, "CompletionResponse")
        self.__attrs_init__(choices, usage, model, id, request_id, raw, endpoint, headers, attempts)

    @property
    def text(self) -> str:
        """The first choice's text, exactly as the endpoint returned it (not stripped; some text-generation
        deployments return the prompt followed by its continuation)."""
        return self.choices[0].text

    @property
    def finish_reason(self) -> str | None:
        """The first choice's finish reason."""
        return self.choices[0].finish_reason


@attrs.frozen(kw_only=True)
class CompletionChunk:
    """One event of a streamed text completion, for one choice.

    Attributes:
        text: the new text in this event (a delta; ``""`` when the event carries none, e.g. usage only).
        finish_reason: set on the event that ends the choice.
        usage: set on the usage event (usually the last one).
        index: the choice this event belongs to (``0`` unless the call asked for ``n > 1``).
        raw: the parsed event as received.
    """

    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str | None = None
    id: str | None = None
    index: int = 0
    raw: Any = attrs.field(default=None, repr=False, eq=False)
