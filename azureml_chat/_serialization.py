"""The cattrs converter: messages to and from the OpenAI wire shape, and response pieces from JSON.

All hooks are registered once, at import; cattrs compiles one function per class, so the per-call cost is
straight-line code. Discriminators (``role``, ``type``) are written by tagged unions and by explicit hooks,
never as defaulted fields, which avoids the omit-if-default trap (sdk_design.md 3.3).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeGuard

import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.preconf.json import make_converter

from ._errors import InvalidRequestError
from ._messages import (
    AssistantMessage,
    ContentPart,
    ImagePart,
    Message,
    SystemMessage,
    TextPart,
    ToolCall,
    ToolMessage,
    UserMessage,
)
from ._responses import Usage

__all__ = [
    "CONVERSATION",
    "converter",
    "describe_type",
    "is_conversation",
    "message_to_wire",
    "messages_from_input",
    "messages_to_wire",
    "plain_messages",
    "structure_usage",
    "wire_messages",
]

converter = make_converter()


def _strict_str(value: Any, _: Any) -> str:
    # cattrs coerces 5 -> "5" by default; a caller's malformed message must be reported, not repaired.
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


converter.register_structure_hook(str, _strict_str)

_MESSAGE_CLASSES: dict[str, type[Message]] = {
    cls.role: cls for cls in (SystemMessage, UserMessage, AssistantMessage, ToolMessage)
}


# --- content parts: {"type": "text", "text"} | {"type": "image_url", "image_url": {"url", "detail"}} --------


def _unstructure_part(part: ContentPart) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    image: dict[str, Any] = {"url": part.url}
    if part.detail is not None:
        image["detail"] = part.detail
    return {"type": "image_url", "image_url": image}


def _structure_part(value: Any, _: Any) -> ContentPart:
    if isinstance(value, (TextPart, ImagePart)):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"a content part must be an object, got {type(value).__name__}")
    kind = value.get("type")
    if kind == "text":
        return TextPart(converter.structure(value.get("text"), str))
    if kind == "image_url":
        image = value.get("image_url")
        if isinstance(image, str):
            return ImagePart(image)
        if not isinstance(image, Mapping) or not isinstance(image.get("url"), str):
            raise ValueError('an image_url part needs {"image_url": {"url": "..."}}')
        detail = image.get("detail")
        if detail not in (None, "auto", "low", "high"):
            raise ValueError(f"image detail must be auto, low or high, got {detail!r}")
        return ImagePart(image["url"], detail=detail)
    raise ValueError(f"content part type must be 'text' or 'image_url', got {kind!r}")


def _structure_user_content(value: Any, _: Any) -> str | tuple[ContentPart, ...]:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_structure_part(item, ContentPart) for item in value)
    raise TypeError(f"content must be a string or a list of parts, got {type(value).__name__}")


converter.register_unstructure_hook(TextPart, _unstructure_part)
converter.register_unstructure_hook(ImagePart, _unstructure_part)
converter.register_structure_hook(ContentPart, _structure_part)


# --- tool calls: {"id", "type": "function", "function": {"name", "arguments"}}, or a custom tool's
# {"id", "type": "custom", "custom": {"name", "input"}} ---------------------------------------------------------


def _unstructure_tool_call(call: ToolCall) -> dict[str, Any]:
    if call.type == "custom":
        return {"id": call.id, "type": "custom", "custom": {"name": call.name, "input": call.input or ""}}
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def _structure_tool_call(value: Any, _: Any) -> ToolCall:
    if isinstance(value, ToolCall):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"a tool call must be an object, got {type(value).__name__}")
    if value.get("type") == "custom":
        custom = value.get("custom")
        if not isinstance(custom, Mapping):
            raise ValueError('a custom tool call needs {"custom": {"name": ..., "input": ...}}')
        text = custom.get("input")
        return ToolCall(
            id=converter.structure(value.get("id"), str),
            name=converter.structure(custom.get("name"), str),
            arguments="",
            type="custom",
            input="" if text is None else converter.structure(text, str),
        )
    function = value.get("function")
    if not isinstance(function, Mapping):
        raise ValueError('a tool call needs {"function": {"name": ..., "arguments": ...}}')
    arguments = function.get("arguments", "{}")
    if arguments is None:
        arguments = "{}"
    elif not isinstance(arguments, str):
        # Some servers send the arguments as an object instead of JSON text; keep them, as text.
        arguments = converter.dumps(arguments)
    return ToolCall(
        id=converter.structure(value.get("id"), str),
        name=converter.structure(function.get("name"), str),
        arguments=arguments,
    )


converter.register_unstructure_hook(ToolCall, _unstructure_tool_call)
converter.register_structure_hook(ToolCall, _structure_tool_call)


# --- messages ------------------------------------------------------------------------------------------

for _cls in _MESSAGE_CLASSES.values():
    # Unset fields are left out. So an assistant message that only calls tools has no "content": Azure's schema
    # types it as a string (no null), and OpenAI's needs it only when there are no tool_calls.
    converter.register_unstructure_hook(
        _cls, make_dict_unstructure_fn(_cls, converter, _cattrs_omit_if_default=True)
    )
converter.register_structure_hook(
    UserMessage,
    make_dict_structure_fn(UserMessage, converter, content=override(struct_hook=_structure_user_content)),
)


def message_to_wire(message: Message) -> dict[str, Any]:
    """One message in the OpenAI chat shape (``role`` first, unset optional fields omitted): valid under both
    OpenAI's and Azure's schemas, so an assistant message with tool calls and no text has no ``content``, and one
    with neither says ``""``."""
    if (
        isinstance(message, (SystemMessage, UserMessage))
        and message.name is None
        and type(message.content) is str
    ):
        return {"role": message.role, "content": message.content}  # the common case, without cattrs
    wire: dict[str, Any] = {"role": message.role, **converter.unstructure(message)}
    if message.role == "assistant" and "content" not in wire and "tool_calls" not in wire:
        wire["content"] = ""
    return wire


def messages_to_wire(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The messages in the OpenAI chat shape."""
    return [message_to_wire(message) for message in messages]


# What a conversation is, in the words every "not a conversation" error uses.
CONVERSATION = "a string (one user message) or a list of messages"
_EXAMPLES = "e.g. 'Hi!', [UserMessage('Hi!')] or [{'role': 'user', 'content': 'Hi!'}]"


def is_conversation(value: object) -> bool:
    """Whether ``value`` has the shape of a conversation: a string (one user message), or an iterable of messages,
    which a single dict, a single message object, ``None`` and bytes are not."""
    return isinstance(value, str) or (
        isinstance(value, Iterable) and not isinstance(value, (bytes, bytearray, memoryview, Mapping))
    )


def describe_type(value: object) -> str:
    """How an error names what it got instead: ``None`` or the type's name."""
    return "None" if value is None else type(value).__name__


def messages_from_input(messages: str | Iterable[Message | Mapping[str, Any]]) -> tuple[Message, ...]:
    """Validate and convert what a caller passed as ``messages``; a bare string is one user message.

    Raises:
        InvalidRequestError: for what is not a conversation (:func:`is_conversation`), or naming the index and
            the field of the first bad message.
    """
    if isinstance(messages, str):
        return (UserMessage(messages),)
    if not is_conversation(messages):
        raise InvalidRequestError(
            f"messages must be {CONVERSATION}, got {describe_type(messages)}: {_EXAMPLES}"
        )
    result: list[Message] = []
    for index, item in enumerate(messages):
        if _is_plain(item):
            # Built from checked strings, without cattrs: nothing left to check.
            result.append(_SIMPLE_CLASSES[item["role"]](item["content"]))
            continue
        if isinstance(item, (SystemMessage, UserMessage, AssistantMessage, ToolMessage)):
            message: Message = item
        elif isinstance(item, Mapping):
            message = _structure_message(item, index)
        else:
            raise InvalidRequestError(
                f"messages[{index}] must be a message object or a dict with 'role' and 'content', "
                f"got {describe_type(item)}"
            )
        _check_message(message, index)
        result.append(message)
    if not result:
        raise InvalidRequestError("messages is empty: pass at least one message")
    return tuple(result)


_SIMPLE_CLASSES: dict[str, type[SystemMessage] | type[UserMessage] | type[AssistantMessage]] = {
    "system": SystemMessage,
    "user": UserMessage,
    "assistant": AssistantMessage,
}


def _is_plain(item: object) -> TypeGuard[dict[str, str]]:
    """The common case, exactly ``{"role": "system"|"user"|"assistant", "content": "<text>"}``: its wire form is
    itself. Anything else (other keys, non-string content, tool messages) takes the full, checked path."""
    if type(item) is not dict or len(item) != 2:
        return False
    role, content = item.get("role"), item.get("content")
    return type(content) is str and type(role) is str and role in _SIMPLE_CLASSES


def plain_messages(messages: object) -> list[dict[str, str]] | None:
    """``messages`` itself when it is a non-empty list of plain dicts (:func:`_is_plain`), ready for the wire
    with nothing to convert; ``None`` otherwise (then :func:`messages_from_input` checks and converts)."""
    if type(messages) is not list or not messages:
        return None
    for item in messages:
        if not _is_plain(item):
            return None
    return messages


def wire_messages(messages: str | Iterable[Message | Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The messages in the OpenAI wire shape, checked (a bare string is one user message). Plain
    ``{"role", "content"}`` dicts already are: the caller's list is used as is (formatters never change it),
    with no message objects built in between (docs/performance.md)."""
    plain = plain_messages(messages)
    if plain is not None:
        return plain
    return messages_to_wire(messages_from_input(messages))


def _structure_message(item: Mapping[str, Any], index: int) -> Message:
    role = item.get("role")
    if not isinstance(role, str) or role not in _MESSAGE_CLASSES:
        known = ", ".join(sorted(_MESSAGE_CLASSES))
        raise InvalidRequestError(f"messages[{index}].role must be one of {known}, got {role!r}")
    cls = _MESSAGE_CLASSES[role]
    missing = [field for field in _REQUIRED[cls] if field not in item]
    if missing:
        raise InvalidRequestError(f"messages[{index}].{missing[0]} is required for a {role} message")
    try:
        return converter.structure(item, cls)
    except cattrs.BaseValidationError as exc:
        details = cattrs.transform_error(exc, path=f"messages[{index}]", format_exception=_describe)
        raise InvalidRequestError("invalid message: " + "; ".join(details)) from None
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(f"invalid message: {exc} @ messages[{index}]") from None


def _describe(exc: BaseException, _: Any) -> str:
    # Our hooks raise messages written for people; show them instead of cattrs' generic wording.
    if isinstance(exc, KeyError):
        return "required field missing"
    return str(exc)


_REQUIRED: dict[type[Message], tuple[str, ...]] = {
    SystemMessage: ("content",),
    UserMessage: ("content",),
    AssistantMessage: (),
    ToolMessage: ("content", "tool_call_id"),
}


def _check_message(message: Message, index: int) -> None:
    # attrs does not check types at runtime; these are the mistakes that would otherwise reach the wire.
    where = f"messages[{index}]"
    if isinstance(message, AssistantMessage):
        if message.content is None and not message.tool_calls:
            raise InvalidRequestError(f"{where}: an assistant message needs content or tool_calls")
        if message.content is not None and not isinstance(message.content, str):
            raise InvalidRequestError(f"{where}.content must be a string or None")
        for position, call in enumerate(message.tool_calls):
            if not isinstance(call, ToolCall):
                raise InvalidRequestError(f"{where}.tool_calls[{position}] must be a ToolCall")
            if call.type == "custom" and not isinstance(call.input, str):
                raise InvalidRequestError(
                    f"{where}.tool_calls[{position}] is a custom call: its input must be a string"
                )
    elif isinstance(message, UserMessage):
        if isinstance(message.content, tuple):
            if not message.content:
                raise InvalidRequestError(f"{where}.content is an empty list of parts")
            for position, part in enumerate(message.content):
                if not isinstance(part, (TextPart, ImagePart)):
                    raise InvalidRequestError(f"{where}.content[{position}] must be a TextPart or ImagePart")
        elif not isinstance(message.content, str):
            raise InvalidRequestError(f"{where}.content must be a string or a list of parts")
    elif not isinstance(message.content, str):
        raise InvalidRequestError(f"{where}.content must be a string")
    if isinstance(message, ToolMessage) and not (
        isinstance(message.tool_call_id, str) and message.tool_call_id
    ):
        raise InvalidRequestError(f"{where}.tool_call_id must be a non-empty string")


def structure_usage(value: Any) -> Usage | None:
    """Token counts from a ``usage`` object, with the cached and reasoning counts of its ``*_details`` when
    given; ``None`` when absent or unusable (usage is never worth failing for)."""
    if type(value) is not dict and not isinstance(value, Mapping):
        return None
    prompt, completion, total = (
        value.get("prompt_tokens"),
        value.get("completion_tokens"),
        value.get("total_tokens"),
    )
    # Inline reads, not helper calls: this runs once per answer (docs/performance.md).
    details = value.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if type(details) is dict else None
    details = value.get("completion_tokens_details")
    reasoning = details.get("reasoning_tokens") if type(details) is dict else None
    if type(cached) is not int:
        cached = None
    if type(reasoning) is not int:
        reasoning = None
    if type(prompt) is int and type(completion) is int and type(total) is int:
        return Usage(prompt, completion, total, cached_tokens=cached, reasoning_tokens=reasoning)
    counts = {
        key: value[key]
        for key in ("prompt_tokens", "completion_tokens", "total_tokens")
        if isinstance(value.get(key), int) and not isinstance(value.get(key), bool)
    }
    if not counts:
        return None
    return Usage(**counts, cached_tokens=cached, reasoning_tokens=reasoning)
