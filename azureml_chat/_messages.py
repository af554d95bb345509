"""Chat messages and their parts: frozen attrs classes, one per role.

The role is a class constant, not a field: it cannot be set wrong, and the serializer writes it as the
tag of the message union (``_serialization.py``), so it is never dropped from the wire.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, ClassVar, Literal, TypeAlias

import attrs

__all__ = [
    "AssistantMessage",
    "ContentPart",
    "ImagePart",
    "Message",
    "SystemMessage",
    "TextPart",
    "ToolCall",
    "ToolMessage",
    "UserMessage",
]


def _tuple_of_calls(value: Iterable[ToolCall]) -> tuple[ToolCall, ...]:
    return tuple(value)


def _tuple_of_parts(value: Any) -> Any:
    # Lists are accepted for convenience and frozen into tuples, so a message stays immutable and hashable.
    return tuple(value) if isinstance(value, list) else value


@attrs.frozen
class TextPart:
    """A piece of text inside a multimodal user message."""

    text: str


@attrs.frozen
class ImagePart:
    """An image inside a user message: an ``https://`` URL or a ``data:image/...;base64,`` URL."""

    url: str
    detail: Literal["auto", "low", "high"] | None = attrs.field(default=None, kw_only=True)


ContentPart: TypeAlias = TextPart | ImagePart


def _tool_call_type(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value not in ("function", "custom"):
        raise ValueError(f"a tool call's type is 'function' or 'custom', got {value!r}")


@attrs.frozen
class ToolCall:
    """A tool call the model asked for: a function call (JSON ``arguments``), or a call of a ``custom`` tool
    (free-form ``input`` text).

    Attributes:
        id: the call id, echoed back in the :class:`ToolMessage` that answers it.
        name: the function's (or custom tool's) name.
        arguments: a function call's arguments as the JSON text the model produced (see
            :meth:`parsed_arguments`); ``""`` for a custom call.
        type: ``"function"`` or ``"custom"``.
        input: a custom call's input, exactly as the model produced it; ``None`` for a function call.
    """

    id: str
    name: str
    arguments: str = "{}"
    type: Literal["function", "custom"] = attrs.field(
        default="function", kw_only=True, validator=_tool_call_type
    )
    input: str | None = attrs.field(default=None, kw_only=True)

    def parsed_arguments(self) -> Any:
        """The arguments decoded from JSON (raises ``ValueError`` when the model produced invalid JSON, or for a
        custom call, whose ``input`` is free-form text)."""
        if self.type == "custom":
            raise ValueError(
                f"tool call {self.id!r} is a custom call: its input is free-form text, read .input"
            )
        return json.loads(self.arguments) if self.arguments else {}


@attrs.frozen
class SystemMessage:
    """Instructions for the model."""

    role: ClassVar[str] = "system"
    content: str
    name: str | None = attrs.field(default=None, kw_only=True)


@attrs.frozen
class UserMessage:
    """What the user said: text, or a sequence of :class:`TextPart` / :class:`ImagePart`."""

    role: ClassVar[str] = "user"
    content: str | tuple[ContentPart, ...] = attrs.field(converter=_tuple_of_parts)
    name: str | None = attrs.field(default=None, kw_only=True)


@attrs.frozen
class AssistantMessage:
    """What the model said: text, tool calls, or both (replayed as history in later calls)."""

    role: ClassVar[str] = "assistant"
    content: str | None = None
    tool_calls: tuple[ToolCall, ...] = attrs.field(default=(), kw_only=True, converter=_tuple_of_calls)
    name: str | None = attrs.field(default=None, kw_only=True)


@attrs.frozen
class ToolMessage:
    """The result of a tool call, answering the :class:`ToolCall` with id ``tool_call_id``."""

    role: ClassVar[str] = "tool"
    content: str
    tool_call_id: str = attrs.field(kw_only=True)


Message: TypeAlias = SystemMessage | UserMessage | AssistantMessage | ToolMessage
