"""Messages: the attrs classes, their OpenAI wire shape, and dict input (``_messages.py``, ``_serialization.py``)."""

from __future__ import annotations

import json
import re
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from azureml_chat import (
    AssistantMessage,
    ImagePart,
    InvalidRequestError,
    SystemMessage,
    TextPart,
    ToolCall,
    ToolMessage,
    Usage,
    UserMessage,
)
from azureml_chat._serialization import (
    message_to_wire,
    messages_from_input,
    messages_to_wire,
    structure_usage,
    wire_messages,
)

# --- objects -> wire (azure_protocol.md 2.4 and 2.7) ------------------------------------------------------

WIRE_TABLE: list[tuple[str, Any, dict[str, Any]]] = [
    ("system", SystemMessage("Be brief."), {"role": "system", "content": "Be brief."}),
    ("system-named", SystemMessage("x", name="ops"), {"role": "system", "content": "x", "name": "ops"}),
    ("user-text", UserMessage("hi"), {"role": "user", "content": "hi"}),
    ("user-named", UserMessage("hi", name="ann"), {"role": "user", "content": "hi", "name": "ann"}),
    (
        "user-parts",
        UserMessage([TextPart("What is this?"), ImagePart("https://example.com/cat.png")]),
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            ],
        },
    ),
    (
        "user-image-detail",
        UserMessage([ImagePart("data:image/png;base64,iVBORw0KGgo=", detail="low")]),
        {
            "role": "user",
            "content": [
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"},
                }
            ],
        },
    ),
    ("assistant-text", AssistantMessage("Hello!"), {"role": "assistant", "content": "Hello!"}),
    (
        "assistant-tool-calls",
        AssistantMessage(tool_calls=[ToolCall("call_1", "get_weather", '{"city": "Paris"}')]),
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
    ),
    (
        "assistant-text-and-tool-calls",
        AssistantMessage("Checking.", tool_calls=[ToolCall("call_2", "now")]),
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {"id": "call_2", "type": "function", "function": {"name": "now", "arguments": "{}"}}
            ],
        },
    ),
    (
        "tool",
        ToolMessage("18C", tool_call_id="call_1"),
        {"role": "tool", "content": "18C", "tool_call_id": "call_1"},
    ),
]


@pytest.mark.parametrize(
    ("message", "expected"), [row[1:] for row in WIRE_TABLE], ids=[row[0] for row in WIRE_TABLE]
)
def test_message_wire_shape(message: Any, expected: dict[str, Any]) -> None:
    """Each message serialises to the OpenAI chat shape, with unset optional fields left out."""
    assert expected == json.loads(json.dumps(message_to_wire(message)))


@pytest.mark.parametrize("message", [row[1] for row in WIRE_TABLE], ids=[row[0] for row in WIRE_TABLE])
def test_role_and_type_discriminators_are_always_written(message: Any) -> None:
    """``role`` is on every wire message and ``type`` on every part and tool call (the omit-if-default trap)."""
    wire = message_to_wire(message)
    assert message.role == wire["role"]
    content = wire.get("content")
    for part in content if isinstance(content, list) else []:
        assert part["type"] in ("text", "image_url")
    for call in wire.get("tool_calls", []):
        assert "function" == call["type"]


def test_messages_to_wire_keeps_order() -> None:
    """A conversation serialises message by message, in order."""
    conversation = [SystemMessage("s"), UserMessage("u"), AssistantMessage("a")]
    assert ["system", "user", "assistant"] == [wire["role"] for wire in messages_to_wire(conversation)]


@given(st.text())
def test_any_text_round_trips_through_json_unchanged(text: str) -> None:
    """Whatever a user types (quotes, newlines, backslashes, emoji) is on the wire as exactly that text."""
    wire = json.loads(json.dumps(messages_to_wire([UserMessage(text)])))
    assert text == wire[0]["content"]


def test_no_hand_escaping() -> None:
    """A quote and a newline stay one character each (LangChain sends backslash-quote and backslash-n)."""
    assert 'Be "nice"\nnow' == message_to_wire(UserMessage('Be "nice"\nnow'))["content"]


# --- the classes --------------------------------------------------------------------------------------------


def test_messages_are_frozen_and_list_content_becomes_a_tuple() -> None:
    """Messages are immutable; list content and tool calls are stored as tuples, so messages are hashable."""
    message = UserMessage([TextPart("a")])
    assert (TextPart("a"),) == message.content
    assert hash(message) == hash(UserMessage([TextPart("a")]))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        message.content = "b"  # type: ignore[misc]
    assert (ToolCall("c", "f"),) == AssistantMessage(tool_calls=[ToolCall("c", "f")]).tool_calls


def test_tool_call_parsed_arguments() -> None:
    """``parsed_arguments`` decodes the model's JSON text; empty text means no arguments."""
    assert {"city": "Paris"} == ToolCall("c", "f", '{"city": "Paris"}').parsed_arguments()
    assert {} == ToolCall("c", "f", "").parsed_arguments()
    with pytest.raises(ValueError):
        ToolCall("c", "f", "{not json").parsed_arguments()


# --- dict input -> objects -------------------------------------------------------------------------------------

DICT_TABLE: list[tuple[str, dict[str, Any], Any]] = [
    ("system", {"role": "system", "content": "s"}, SystemMessage("s")),
    ("user", {"role": "user", "content": "u", "name": "ann"}, UserMessage("u", name="ann")),
    (
        "user-parts",
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "high"}},
            ],
        },
        UserMessage([TextPart("look"), ImagePart("https://example.com/a.png", detail="high")]),
    ),
    (
        "image-url-shorthand",
        {"role": "user", "content": [{"type": "image_url", "image_url": "https://example.com/a.png"}]},
        UserMessage([ImagePart("https://example.com/a.png")]),
    ),
    ("assistant", {"role": "assistant", "content": "a"}, AssistantMessage("a")),
    (
        "assistant-tool-calls",
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        AssistantMessage(None, tool_calls=[ToolCall("c1", "f", "{}")]),
    ),
    ("tool", {"role": "tool", "content": "r", "tool_call_id": "c1"}, ToolMessage("r", tool_call_id="c1")),
    ("unknown-keys-ignored", {"role": "user", "content": "u", "x-trace": 1}, UserMessage("u")),
    (
        "part-objects-in-dict",
        {"role": "user", "content": [TextPart("a"), ImagePart("https://example.com/a.png")]},
        UserMessage([TextPart("a"), ImagePart("https://example.com/a.png")]),
    ),
    (
        "tool-call-object-in-dict",
        {"role": "assistant", "tool_calls": [ToolCall("c1", "f", "{}")]},
        AssistantMessage(tool_calls=[ToolCall("c1", "f", "{}")]),
    ),
    (
        "tool-call-null-arguments",
        {
            "role": "assistant",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": None}}],
        },
        AssistantMessage(tool_calls=[ToolCall("c1", "f", "{}")]),
    ),
]


@pytest.mark.parametrize(
    ("given", "expected"), [row[1:] for row in DICT_TABLE], ids=[row[0] for row in DICT_TABLE]
)
def test_dict_messages_become_objects(given: dict[str, Any], expected: Any) -> None:
    """OpenAI-shaped dicts convert to the matching message objects."""
    assert (expected,) == messages_from_input([given])


def test_tool_call_arguments_given_as_an_object_are_kept_as_json_text() -> None:
    """Tool-call arguments passed as an object (some servers echo them so) are kept, as JSON text."""
    (message,) = messages_from_input(
        [
            {
                "role": "assistant",
                "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": {"a": [1]}}}],
            }
        ]
    )
    assert {"a": [1]} == json.loads(message.tool_calls[0].arguments)


def test_canonical_dicts_round_trip() -> None:
    """A conversation of canonical OpenAI dicts converts to objects and back to the very same dicts."""
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {
            "role": "assistant",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "content": "done", "tool_call_id": "c1"},
        {"role": "assistant", "content": "Done."},
    ]
    assert conversation == json.loads(json.dumps(messages_to_wire(messages_from_input(conversation))))


def test_objects_and_dicts_mix() -> None:
    """Message objects and dicts can be mixed in one conversation; objects pass through unchanged."""
    system = SystemMessage("s")
    assert (system, UserMessage("u")) == messages_from_input([system, {"role": "user", "content": "u"}])


def test_any_iterable_of_messages_is_accepted() -> None:
    """A generator of messages works like a list."""
    assert (UserMessage("a"), UserMessage("b")) == messages_from_input(UserMessage(t) for t in "ab")


MALFORMED: list[tuple[str, Any, str]] = [
    # (id, the second message, the field the error must name)
    ("missing-role", {"content": "hi"}, "role"),
    ("unknown-role", {"role": "bot", "content": "hi"}, "role"),
    ("missing-content", {"role": "user"}, "content"),
    ("system-content-int", {"role": "system", "content": 5}, "content"),
    ("user-content-int", {"role": "user", "content": 5}, "content"),
    ("user-content-dict", {"role": "user", "content": {"text": "hi"}}, "content"),
    ("name-int", {"role": "user", "content": "hi", "name": 5}, "name"),
    ("part-unknown-type", {"role": "user", "content": [{"type": "input_audio"}]}, "content"),
    ("part-text-int", {"role": "user", "content": [{"type": "text", "text": 5}]}, "content"),
    ("part-not-object", {"role": "user", "content": ["hi"]}, "content"),
    ("image-without-url", {"role": "user", "content": [{"type": "image_url", "image_url": {}}]}, "content"),
    (
        "image-bad-detail",
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u", "detail": "ultra"}}]},
        "content",
    ),
    ("assistant-empty", {"role": "assistant"}, "tool_calls"),
    ("assistant-content-list", {"role": "assistant", "content": ["x"]}, "content"),
    ("tool-call-without-function", {"role": "assistant", "tool_calls": [{"id": "c"}]}, "tool_calls"),
    (
        "tool-call-name-int",
        {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": 5}}]},
        "tool_calls",
    ),
    ("tool-call-not-object", {"role": "assistant", "tool_calls": ["get_weather"]}, "tool_calls"),
    ("tool-calls-not-list", {"role": "assistant", "tool_calls": 5}, "tool_calls"),
    ("tool-missing-call-id", {"role": "tool", "content": "r"}, "tool_call_id"),
    ("tool-call-id-int", {"role": "tool", "content": "r", "tool_call_id": 5}, "tool_call_id"),
    ("tool-call-id-empty", {"role": "tool", "content": "r", "tool_call_id": ""}, "tool_call_id"),
    ("not-a-message", "hi", "messages[1]"),
    ("object-bad-content", UserMessage(5), "content"),  # type: ignore[arg-type]
    ("object-system-bad-content", SystemMessage(None), "content"),  # type: ignore[arg-type]
    ("object-assistant-bad-content", AssistantMessage(5), "content"),  # type: ignore[arg-type]
    ("object-assistant-bad-tool-call", AssistantMessage(tool_calls=[{"id": "c"}]), "tool_calls[0]"),  # type: ignore[list-item]
    ("object-bad-part", UserMessage(["hi"]), "content"),  # type: ignore[list-item]
    ("object-empty-parts", UserMessage([]), "content"),
    ("object-assistant-empty", AssistantMessage(), "tool_calls"),
    ("object-tool-call-id-empty", ToolMessage("r", tool_call_id=""), "tool_call_id"),
]


@pytest.mark.parametrize(("bad", "field"), [row[1:] for row in MALFORMED], ids=[row[0] for row in MALFORMED])
def test_malformed_message_names_index_and_field(bad: Any, field: str) -> None:
    """A malformed message is an InvalidRequestError that names its index and the offending field."""
    with pytest.raises(InvalidRequestError) as caught:
        messages_from_input([{"role": "user", "content": "fine"}, bad])
    text = str(caught.value)
    assert "messages[1]" in text
    assert field in text


@pytest.mark.parametrize(
    ("messages", "named"),
    [
        (b"hi", "got bytes"),
        ({"role": "user", "content": "hi"}, "got dict"),
        (UserMessage("hi"), "got UserMessage"),
        (None, "got None"),
        (42, "got int"),
        ([], "messages is empty"),
    ],
    ids=["bytes", "single-dict", "single-message", "none", "int", "empty"],
)
def test_what_is_not_a_conversation_is_refused(messages: Any, named: str) -> None:
    """Bytes, a single dict or message, None or an empty list is an InvalidRequestError saying what it got."""
    with pytest.raises(InvalidRequestError, match=named):
        messages_from_input(messages)


def test_a_bare_string_is_one_user_message() -> None:
    """A string given as the messages is one user message, on the wire and as objects."""
    assert (UserMessage("Hi!"),) == messages_from_input("Hi!")
    assert [{"role": "user", "content": "Hi!"}] == wire_messages("Hi!")


def test_a_string_inside_the_list_is_still_not_a_message() -> None:
    """Only the whole input may be a bare string: a string among the messages is refused, naming its index."""
    with pytest.raises(InvalidRequestError, match=re.escape("messages[1] must be a message object")):
        messages_from_input([UserMessage("a"), "b"])


# --- usage ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}, Usage(10, 5, 15)),
        ({"prompt_tokens": 10, "completion_tokens": 5}, Usage(10, 5, 15)),
        ({"total_tokens": 7}, Usage(0, 0, 7)),
        ({"prompt_tokens": "10", "completion_tokens": 5}, Usage(0, 5, 5)),
        ({"prompt_tokens": True, "completion_tokens": 5}, Usage(0, 5, 5)),
        ({}, None),
        (None, None),
        ([1, 2], None),
    ],
    ids=[
        "full",
        "no-total",
        "total-only",
        "string-count-ignored",
        "bool-count-ignored",
        "empty",
        "null",
        "list",
    ],
)
def test_usage_is_read_leniently(value: Any, expected: Usage | None) -> None:
    """Token counts are read when they are integers; a missing total is the sum; junk gives no usage."""
    assert expected == structure_usage(value)
