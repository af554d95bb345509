"""Several choices (``n > 1``) kept apart: whole answers, streams (one choice per event, or several in one),
text completions, and the stream's end rule (``[DONE]``, or every choice's finish reason)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from azureml_chat import (
    AsyncChatClient,
    ChatChunk,
    Choice,
    CompletionChoice,
    StreamError,
    Usage,
)
from azureml_chat._messages import AssistantMessage
from azureml_chat.testing import MockResponse, MockTransport, fast_retry

CHAT_URL = "https://example.inference.ml.azure.com/v1/chat/completions"
TEXT_URL = "https://example.inference.ml.azure.com/v1/completions"
USAGE = {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}


def sse(*events: Any, done: bool = True) -> list[bytes]:
    """Events as SSE pieces (dicts as JSON, strings as raw data), then ``[DONE]`` unless told not to."""
    pieces = [
        f"data: {event if isinstance(event, str) else json.dumps(event)}\n\n".encode() for event in events
    ]
    return pieces + ([b"data: [DONE]\n\n"] if done else [])


def client(answer: MockResponse, *, url: str = CHAT_URL, **options: Any) -> AsyncChatClient:
    return AsyncChatClient(
        url, "key", transport=MockTransport(lambda request: answer), retry=fast_retry(0), **options
    )


def delta(index: int, **fields: Any) -> dict[str, Any]:
    finish = fields.pop("finish_reason", None)
    return {"id": "c1", "model": "m", "choices": [{"index": index, "delta": fields, "finish_reason": finish}]}


TWO_CHOICES = {
    "id": "c1",
    "model": "m",
    "choices": [
        {"index": 1, "message": {"role": "assistant", "content": "Second"}, "finish_reason": "length"},
        {
            "index": 0,
            "message": {"role": "assistant", "content": "First"},
            "finish_reason": "stop",
            "logprobs": {"content": [{"token": "First", "logprob": -0.1}]},
        },
    ],
    "usage": USAGE,
}


async def test_a_whole_answer_keeps_every_choice_by_index() -> None:
    """Two choices arrive as two Choice objects ordered by index; content and finish_reason are choice 0's."""
    async with client(MockResponse(200, json=TWO_CHOICES)) as chat:
        response = await chat.chat("Hi", n=2)
    assert (
        Choice(
            index=0,
            message=AssistantMessage("First"),
            finish_reason="stop",
            logprobs={"content": [{"token": "First", "logprob": -0.1}]},
        ),
        Choice(index=1, message=AssistantMessage("Second"), finish_reason="length"),
    ) == response.choices
    assert ("First", "stop", AssistantMessage("First")) == (
        response.content,
        response.finish_reason,
        response.message,
    )
    assert [{"content": [{"token": "First", "logprob": -0.1}]}, None] == [
        c.logprobs for c in response.choices
    ]
    assert hash(response) == hash(response)  # logprobs (a dict) is kept out of hashing, as raw is


async def test_a_stream_keeps_interleaved_choices_apart() -> None:
    """Interleaved events of two choices are never mixed: each chunk says its index, final_response() has both."""
    events = sse(
        delta(0, role="assistant"),
        delta(1, role="assistant"),
        delta(0, content="Hel"),
        delta(1, content="Bon"),
        delta(1, content="jour", finish_reason="stop"),
        delta(0, content="lo", finish_reason="length"),
        {"id": "c1", "model": "m", "choices": [], "usage": USAGE},
    )
    async with client(MockResponse(200, content=events)) as chat, chat.stream("Hi", n=2) as stream:
        chunks = [chunk async for chunk in stream]
        final = stream.final_response()
    assert ["Hel", "lo"] == [c.content for c in chunks if c.index == 0 and c.content]
    assert ["Bon", "jour"] == [c.content for c in chunks if c.index == 1 and c.content]
    assert [("Hello", "length"), ("Bonjour", "stop")] == [
        (c.message.content, c.finish_reason) for c in final.choices
    ]
    assert ([0, 1], Usage(5, 6, 11)) == ([c.index for c in final.choices], final.usage)
    assert "Hello" == final.content


async def test_an_event_with_two_choices_gives_a_chunk_for_each() -> None:
    """An event carrying both choices becomes two chunks, each with its index; usage rides on the last."""
    both = {
        "id": "c1",
        "choices": [
            {"index": 0, "delta": {"content": "A"}, "finish_reason": "stop"},
            {"index": 1, "delta": {"content": "B"}, "finish_reason": "stop"},
        ],
        "usage": USAGE,
    }
    async with client(MockResponse(200, content=sse(both))) as chat, chat.stream("Hi", n=2) as stream:
        chunks = [chunk async for chunk in stream]
    assert [(0, "A", None), (1, "B", Usage(5, 6, 11))] == [(c.index, c.content, c.usage) for c in chunks]


async def test_tool_calls_of_two_choices_are_reassembled_apart() -> None:
    """Tool-call pieces of two choices with the same tool index become each choice's own call."""

    def call(index: int, **function: str) -> dict[str, Any]:
        piece: dict[str, Any] = {"index": 0, "function": function}
        if "name" in function:
            piece |= {"id": f"call_{index}", "type": "function"}
        return delta(index, tool_calls=[piece])

    events = sse(
        call(0, name="f", arguments='{"a":'),
        call(1, name="g", arguments='{"b":'),
        call(1, arguments="2}"),
        call(0, arguments="1}"),
        delta(0, finish_reason="tool_calls"),
        delta(1, finish_reason="tool_calls"),
    )
    async with client(MockResponse(200, content=events)) as chat, chat.stream("Hi", n=2) as stream:
        _ = [chunk async for chunk in stream]
        final = stream.final_response()
    assert [("call_0", "f", '{"a":1}'), ("call_1", "g", '{"b":2}')] == [
        (c.message.tool_calls[0].id, c.message.tool_calls[0].name, c.message.tool_calls[0].arguments)
        for c in final.choices
    ]


async def test_a_route_that_cannot_stream_hands_out_each_choice_as_a_chunk() -> None:
    """A server that answers a stream request with one JSON body gives one chunk per choice."""
    async with client(MockResponse(200, json=TWO_CHOICES)) as chat, chat.stream("Hi", n=2) as stream:
        chunks = [chunk async for chunk in stream]
        final = stream.final_response()
    assert [(0, "First"), (1, "Second")] == [(c.index, c.content) for c in chunks]
    assert ["First", "Second"] == [c.message.content for c in final.choices]


async def test_text_completion_keeps_every_choice() -> None:
    """complete(n=2) reads both texts by index; .text is choice 0's; each stream chunk says its index."""
    body = {
        "choices": [
            {"index": 1, "text": " two", "finish_reason": "stop"},
            {"index": 0, "text": " one", "finish_reason": "length", "logprobs": {"tokens": [" one"]}},
        ]
    }
    async with client(MockResponse(200, json=body), url=TEXT_URL) as chat:
        response = await chat.complete("Count:", n=2)
    assert (
        CompletionChoice(index=0, text=" one", finish_reason="length", logprobs={"tokens": [" one"]}),
        CompletionChoice(index=1, text=" two", finish_reason="stop"),
    ) == response.choices
    assert " one" == response.text
    events = sse(
        {"choices": [{"index": 1, "text": " t"}]},
        {"choices": [{"index": 0, "text": " o"}]},
        {"choices": [{"index": 0, "text": "ne", "finish_reason": "stop"}]},
        {"choices": [{"index": 1, "text": "wo", "finish_reason": "stop"}]},
    )
    streaming = client(MockResponse(200, content=events), url=TEXT_URL)
    async with streaming as chat, chat.stream_complete("Count:", n=2) as stream:
        chunks = [chunk async for chunk in stream]
        final = stream.final_response()
    assert [1, 0, 0, 1] == [c.index for c in chunks]
    assert [" one", " two"] == [c.text for c in final.choices]


# --- the end of a stream ---------------------------------------------------------------------------------------


async def test_a_stream_without_done_is_whole_once_every_choice_finished() -> None:
    """A server that never sends [DONE] still gives a whole answer when each choice had its finish_reason."""
    events = sse(
        delta(0, content="A"),
        delta(1, content="B"),
        delta(0, finish_reason="stop"),
        delta(1, finish_reason="stop"),
        done=False,
    )
    async with client(MockResponse(200, content=events)) as chat, chat.stream("Hi", n=2) as stream:
        _ = [chunk async for chunk in stream]
        final = stream.final_response()
    assert ["A", "B"] == [c.message.content for c in final.choices]


async def test_a_bare_done_line_ends_the_stream_like_no_done() -> None:
    """A '[DONE]' line without 'data:' is no event; the finish reason makes the answer whole."""
    events = [*sse(delta(0, content="A"), delta(0, finish_reason="stop"), done=False), b"[DONE]\n\n"]
    async with client(MockResponse(200, content=events)) as chat, chat.stream("Hi") as stream:
        text = "".join([chunk.content or "" async for chunk in stream])
    assert ("A", "stop") == (text, stream.final_response().finish_reason)


@pytest.mark.parametrize(
    "events",
    [
        [delta(0, content="A")],
        [delta(0, content="A"), delta(1, content="B"), delta(0, finish_reason="stop")],
        [delta(0, content="A"), delta(0, finish_reason="stop")],
    ],
    ids=["no-finish", "one-of-two-unfinished", "second-choice-never-came"],
)
async def test_a_stream_cut_before_every_choice_finished_is_a_stream_error(events: list[Any]) -> None:
    """A body ending without [DONE] before every asked-for choice finished is a StreamError, not a short answer."""
    async with client(MockResponse(200, content=sse(*events, done=False))) as chat:
        with pytest.raises(StreamError, match="finish_reason"):
            async with chat.stream("Hi", n=2) as stream:
                _ = [chunk async for chunk in stream]


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/octet-stream", "text/event-stream; charset=utf-8"]
)
async def test_any_content_type_but_json_is_read_as_events(content_type: str) -> None:
    """A 2xx answer to a stream request is SSE whatever its content type, unless it is JSON."""
    answer = MockResponse(
        200,
        content=sse(delta(0, content="A"), delta(0, finish_reason="stop")),
        headers={"content-type": content_type},
    )
    async with client(answer) as chat, chat.stream("Hi") as stream:
        chunks: list[ChatChunk] = [chunk async for chunk in stream]
    assert "A" == "".join(c.content or "" for c in chunks)


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/vnd.api+json"],
)
async def test_a_json_answer_to_a_stream_request_is_one_whole_answer(content_type: str) -> None:
    """A JSON body (any JSON media type, any case, with parameters) is read as one whole answer."""
    answer = MockResponse(
        200, content=json.dumps(TWO_CHOICES).encode(), headers={"content-type": content_type}
    )
    async with client(answer) as chat, chat.stream("Hi") as stream:
        chunks = [chunk async for chunk in stream]
    assert ["First", "Second"] == [c.content for c in chunks]


async def test_a_stream_with_no_content_type_at_all_is_read_as_events() -> None:
    """A server that sends no Content-Type (the official openai client streams from it) is read as SSE."""
    body = b"".join(sse(delta(0, content="Hi there"), delta(0, finish_reason="stop")))

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (await reader.readline()) not in (b"\r\n", b""):
            pass  # the request line and headers
        # The request body is small and ignored: the answer does not depend on it.
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        writer.write(head + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with (
            AsyncChatClient(
                f"http://127.0.0.1:{port}/v1/chat/completions", "key", retry=fast_retry(0)
            ) as chat,
            chat.stream("Hi") as stream,
        ):
            text = "".join([chunk.content or "" async for chunk in stream])
            assert "content-type" not in stream.headers
    finally:
        server.close()
        await server.wait_closed()
    assert "Hi there" == text


def test_an_events_usage_rides_on_its_last_choice_object() -> None:
    """Usage goes on the last choice that is an object, so a stray non-object after it does not lose it."""
    from azureml_chat.formatters import Route, get_formatter

    event = {"choices": [{"index": 0, "delta": {"content": "A"}}, "stray"], "usage": USAGE}
    chunk = get_formatter("openai").parse_chunk(Route.CHAT_COMPLETIONS, event)
    assert isinstance(chunk, ChatChunk)
    assert ("A", Usage(5, 6, 11)) == (chunk.content, chunk.usage)
