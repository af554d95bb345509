"""Every answer carries its HTTP response headers, read-only; a stream once it is open; and custom tool calls
round-trip with their type and input."""

from __future__ import annotations

import json
from typing import Any

import pytest

from azureml_chat import AsyncChatClient, Client, ToolCall
from azureml_chat._messages import AssistantMessage
from azureml_chat._serialization import message_to_wire
from azureml_chat.testing import MockResponse, MockTransport, fast_retry

URL = "https://example.inference.ml.azure.com/v1/chat/completions"
ANSWER = {
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]
}
HEADERS = {"x-ratelimit-remaining-requests": "41", "X-Request-Id": "req-9"}
EVENTS = [
    b'data: {"choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]}\n\n',
    b"data: [DONE]\n\n",
]


def client(answer: MockResponse) -> AsyncChatClient:
    return AsyncChatClient(URL, "key", transport=MockTransport(lambda request: answer), retry=fast_retry(0))


async def test_an_answer_carries_its_headers_read_only_and_case_insensitive() -> None:
    """response.headers holds what the server sent; names in any case; it cannot be changed."""
    async with client(MockResponse(200, json=ANSWER, headers=HEADERS)) as chat:
        response = await chat.chat("Hi")
    assert ("41", "req-9") == (
        response.headers["X-RateLimit-Remaining-Requests"],
        response.headers["x-request-id"],
    )
    with pytest.raises(TypeError):
        response.headers["x-new"] = "1"  # type: ignore[index]


async def test_a_stream_has_its_headers_once_open_and_in_its_final_response() -> None:
    """stream.headers raises before the stream opens, then holds the answer's headers, as final_response() does."""
    async with (
        client(MockResponse(200, content=EVENTS, headers=HEADERS)) as chat,
        chat.stream("Hi") as stream,
    ):
        with pytest.raises(RuntimeError, match="not open yet"):
            _ = stream.headers
        _ = [chunk async for chunk in stream]
        assert "41" == stream.headers["x-ratelimit-remaining-requests"]
        assert "req-9" == stream.final_response().headers["x-request-id"]


def test_the_sync_client_gives_headers_too() -> None:
    """Client.chat answers and sync streams carry the headers as the async ones do."""
    answers = iter(
        [MockResponse(200, json=ANSWER, headers=HEADERS), MockResponse(200, content=EVENTS, headers=HEADERS)]
    )
    with Client(
        URL, "key", transport=MockTransport(lambda request: next(answers)), retry=fast_retry(0)
    ) as chat:
        assert "41" == chat.chat("Hi").headers["x-ratelimit-remaining-requests"]
        with chat.stream("Hi") as stream:
            _ = list(stream)
            assert "req-9" == stream.headers["x-request-id"]


def test_headers_are_not_part_of_equality() -> None:
    """Two answers that differ only in their headers are equal (like endpoint and raw)."""
    from azureml_chat import ChatResponse

    assert ChatResponse(message=AssistantMessage("a"), headers={"a": "1"}) == ChatResponse(
        message=AssistantMessage("a")
    )


# --- custom tool calls ----------------------------------------------------------------------------------------

CUSTOM = {"id": "call_1", "type": "custom", "custom": {"name": "run_sql", "input": "SELECT 1"}}


async def test_a_custom_tool_call_is_read_with_its_type_and_input() -> None:
    """A type 'custom' call (payload in input) is a ToolCall saying so, not a ResponseFormatError."""
    message = {"role": "assistant", "content": None, "tool_calls": [CUSTOM]}
    body = {"choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}]}
    async with client(MockResponse(200, json=body)) as chat:
        response = await chat.chat("Query")
    assert (ToolCall("call_1", "run_sql", "", type="custom", input="SELECT 1"),) == response.tool_calls
    with pytest.raises(ValueError, match="custom"):
        response.tool_calls[0].parsed_arguments()


async def test_a_streamed_custom_tool_call_is_reassembled() -> None:
    """Streamed pieces of a custom call's input are joined into one custom ToolCall."""
    pieces: list[dict[str, Any]] = [
        {"index": 0, "id": "call_1", "type": "custom", "custom": {"name": "run_sql", "input": "SELECT"}},
        {"index": 0, "custom": {"input": " 1"}},
    ]
    events = [
        f"data: {json.dumps({'choices': [{'index': 0, 'delta': {'tool_calls': [piece]}}]})}\n\n".encode()
        for piece in pieces
    ]
    events += [
        b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}\n\n',
        b"data: [DONE]\n\n",
    ]
    async with client(MockResponse(200, content=events)) as chat, chat.stream("Query") as stream:
        _ = [chunk async for chunk in stream]
    assert (
        ToolCall("call_1", "run_sql", "", type="custom", input="SELECT 1"),
    ) == stream.final_response().tool_calls


def test_a_custom_tool_call_goes_back_in_the_wire_shape() -> None:
    """Replayed as history, a custom call is sent as {"type": "custom", "custom": {"name", "input"}}."""
    call = ToolCall("call_1", "run_sql", "", type="custom", input="SELECT 1")
    assert [CUSTOM] == message_to_wire(AssistantMessage(None, tool_calls=[call]))["tool_calls"]


def test_a_tool_call_type_must_be_function_or_custom() -> None:
    """Any other type is refused when the ToolCall is built."""
    with pytest.raises(ValueError, match="'function' or 'custom'"):
        ToolCall("c", "f", type="code")  # type: ignore[arg-type]
