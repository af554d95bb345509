"""AsyncChatClient.stream() against real loopback servers."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from loopback import ANSWER, USAGE, Recorder, completion, serve, stream_events, write_sse

from azureml_chat import (
    APIStatusError,
    AsyncChatClient,
    InvalidRequestError,
    RetryPolicy,
    StreamError,
    Timeout,
    ToolCall,
    Usage,
    UserMessage,
)

FAST_RETRY = RetryPolicy(initial_delay=0.001, max_delay=0.005)
HI = [UserMessage("hi")]


def acquired(client: AsyncChatClient) -> int:
    """Connections the client's pool has handed out and not got back."""
    session = client._pipeline.transport._session
    assert session is not None
    return len(session.connector._acquired)  # type: ignore[union-attr]


@pytest.fixture
async def chat_server() -> AsyncIterator[tuple[str, Recorder]]:
    """An OpenAI-style server that streams when asked and answers JSON otherwise."""
    recorder = Recorder()

    async def handler(request: web.Request) -> web.StreamResponse:
        body = await recorder.record(request)
        if body.get("stream"):
            return await write_sse(request, stream_events())
        return web.json_response(completion())

    async for url in serve({"/v1/chat/completions": handler}):
        yield url, recorder


@pytest.fixture
async def slow_url() -> AsyncIterator[str]:
    """A server whose stream takes a while (50 events, 10 ms apart), so a test can act mid-stream."""

    async def slow(request: web.Request) -> web.StreamResponse:
        return await write_sse(request, stream_events() * 10, delay=0.01)

    async for base in serve({"/v1/chat/completions": slow}):
        yield base + "/v1/chat/completions"


@pytest.fixture
async def client(chat_server: tuple[str, Recorder]) -> AsyncIterator[AsyncChatClient]:
    url, _ = chat_server
    async with AsyncChatClient(url + "/v1/chat/completions", "key", retry=FAST_RETRY) as client:
        yield client


async def test_stream_content_equals_non_stream_content(client: AsyncChatClient) -> None:
    """The deltas of a stream join to exactly the text a non-streaming call returns."""
    whole = await client.chat(HI)
    async with client.stream(HI) as stream:
        pieces = [chunk.content async for chunk in stream if chunk.content]
    assert whole.content == "".join(pieces)
    assert ANSWER == whole.content


async def test_final_response_equals_non_stream_response(client: AsyncChatClient) -> None:
    """final_response() aggregates content, finish reason, usage, model and id like a non-streaming call."""
    whole = await client.chat(HI)
    async with client.stream(HI) as stream:
        async for _ in stream:
            pass
    final = stream.final_response()
    assert (whole.content, whole.finish_reason, whole.usage, whole.model, whole.id) == (
        final.content,
        final.finish_reason,
        final.usage,
        final.model,
        final.id,
    )
    assert Usage(**USAGE) == final.usage


async def test_stream_sends_stream_true_and_the_call_params(
    client: AsyncChatClient, chat_server: tuple[str, Recorder]
) -> None:
    """The request body says stream: true and carries the call's parameters."""
    _, recorder = chat_server
    async with client.stream(HI, max_tokens=5, temperature=0.5) as stream:
        async for _ in stream:
            pass
    assert {
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 5,
        "temperature": 0.5,
        "stream": True,
    } == (recorder.bodies[-1])


async def test_caller_cannot_set_stream(client: AsyncChatClient, chat_server: tuple[str, Recorder]) -> None:
    """stream=True as a model parameter is refused before anything is sent."""
    _, recorder = chat_server
    with pytest.raises(InvalidRequestError, match="stream"):
        client.stream(HI, stream=True)
    assert [] == recorder.bodies


async def test_final_response_before_the_end_raises(client: AsyncChatClient) -> None:
    """final_response() on an unfinished stream says so instead of returning a partial answer."""
    async with client.stream(HI) as stream:
        await stream.__anext__()
        with pytest.raises(RuntimeError, match="not finished"):
            stream.final_response()


async def test_request_id_comes_from_the_server(client: AsyncChatClient) -> None:
    """The stream's request id is the server's x-request-id once open."""
    async with client.stream(HI) as stream:
        async for _ in stream:
            pass
    assert "srv-req-1" == stream.request_id == stream.final_response().request_id


# --- release paths: every way out leaves no connection checked out --------------------------------------


async def test_release_on_exhaustion(client: AsyncChatClient) -> None:
    """Reading a stream to its end gives the connection back."""
    async with client.stream(HI) as stream:
        async for _ in stream:
            pass
        assert 0 == acquired(client)


async def test_release_on_break(slow_url: str) -> None:
    """Breaking out of the loop inside `async with` releases the connection."""
    async with AsyncChatClient(slow_url, "key") as client:
        async with client.stream(HI) as stream:
            async for _ in stream:
                assert 1 == acquired(client)
                break
        assert 0 == acquired(client)


async def test_release_on_break_without_context_manager(slow_url: str) -> None:
    """A stream dropped after `break` (no `async with`) releases its connection when collected."""
    async with AsyncChatClient(slow_url, "key") as client:
        async for _ in client.stream(HI):
            assert 1 == acquired(client)
            break
        gc.collect()
        assert 0 == acquired(client)


async def test_release_on_exception_in_loop_body(client: AsyncChatClient) -> None:
    """An exception raised by the caller's loop body releases the connection."""
    with pytest.raises(ZeroDivisionError):
        async with client.stream(HI) as stream:
            async for _ in stream:
                1 / 0  # noqa: B018
    assert 0 == acquired(client)


async def test_release_on_aclose(slow_url: str) -> None:
    """aclose() mid-stream releases the connection and ends the iteration."""
    async with AsyncChatClient(slow_url, "key") as client:
        stream = client.stream(HI)
        await stream.__anext__()
        assert 1 == acquired(client)
        await stream.aclose()
        assert 0 == acquired(client)
        assert [] == [chunk async for chunk in stream]


async def test_release_on_cancellation(slow_url: str) -> None:
    """Cancelling the task that reads a slow stream releases the connection."""
    started = asyncio.Event()
    async with AsyncChatClient(slow_url, "key") as client:

        async def consume() -> None:
            async for _ in client.stream(HI):
                started.set()

        task = asyncio.create_task(consume())
        await started.wait()
        assert 1 == acquired(client)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert 0 == acquired(client)


# --- failures --------------------------------------------------------------------------------------------


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[str, list[Any]]]:
    """A server whose handler is the head of a list the test fills (one per request)."""
    script: list[Any] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        return await script.pop(0)(request)  # type: ignore[no-any-return]

    async for url in serve({"/v1/chat/completions": handler}):
        yield url + "/v1/chat/completions", script


async def test_error_event_mid_stream_raises_stream_error(scripted: tuple[str, list[Any]]) -> None:
    """An {"error": ...} payload mid-stream raises StreamError carrying the endpoint's message."""
    url, script = scripted
    error = {"error": {"code": "content_filter", "message": "filtered by policy"}}
    script.append(lambda r: write_sse(r, [*stream_events()[:2], error]))
    async with AsyncChatClient(url, "key") as client:
        with pytest.raises(StreamError, match="filtered by policy"):
            async with client.stream(HI) as stream:
                async for _ in stream:
                    pass
        assert 0 == acquired(client)


async def test_event_named_error_raises_stream_error(scripted: tuple[str, list[Any]]) -> None:
    """An `event: error` SSE event raises StreamError."""
    url, script = scripted

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'event: error\ndata: {"message": "overloaded"}\n\n')
        await response.write_eof()
        return response

    script.append(handler)
    async with AsyncChatClient(url, "key") as client:
        with pytest.raises(StreamError, match="overloaded"):
            async for _ in client.stream(HI):
                pass


async def test_stream_without_done_is_truncated(scripted: tuple[str, list[Any]]) -> None:
    """A stream that ends without [DONE] raises StreamError instead of silently truncating."""
    url, script = scripted
    script.append(lambda r: write_sse(r, stream_events()[:3], done=False))
    async with AsyncChatClient(url, "key") as client:
        received: list[str | None] = []
        with pytest.raises(StreamError, match=r"without \[DONE\]"):
            async for chunk in client.stream(HI):
                received.append(chunk.content)
        assert [None, "Hello", " there,"] == received


async def test_dropped_connection_mid_stream_is_not_retried(scripted: tuple[str, list[Any]]) -> None:
    """A connection dropped after chunks reached the caller raises StreamError and is not retried."""
    url, script = scripted
    script.append(lambda r: write_sse(r, stream_events(), drop_after=2))
    script.append(lambda r: write_sse(r, stream_events()))
    async with AsyncChatClient(url, "key", retry=FAST_RETRY) as client:
        with pytest.raises(StreamError):
            async for _ in client.stream(HI):
                pass
    assert 1 == len(script)  # the second scripted answer was never asked for


async def test_opening_is_retried_before_the_first_chunk(scripted: tuple[str, list[Any]]) -> None:
    """A 503 when opening the stream is retried; the stream then works."""
    url, script = scripted
    script.append(lambda r: asyncio.sleep(0, web.json_response({"message": "busy"}, status=503)))
    script.append(lambda r: write_sse(r, stream_events()))
    async with AsyncChatClient(url, "key", retry=FAST_RETRY) as client, client.stream(HI) as stream:
        text = "".join([chunk.content async for chunk in stream if chunk.content])
    assert ANSWER == text
    assert [] == script


async def test_non_retryable_status_raises_typed_error(scripted: tuple[str, list[Any]]) -> None:
    """A 400 when opening the stream raises the typed status error with the endpoint's message."""
    url, script = scripted
    script.append(lambda r: asyncio.sleep(0, web.json_response({"message": "bad schema"}, status=400)))
    async with AsyncChatClient(url, "key", retry=FAST_RETRY) as client:
        with pytest.raises(APIStatusError, match="bad schema") as caught:
            async for _ in client.stream(HI):
                pass
        assert 400 == caught.value.status_code
        assert 0 == acquired(client)


async def test_read_idle_timeout_between_events(scripted: tuple[str, list[Any]]) -> None:
    """A server that stalls between events longer than the read timeout raises StreamError."""
    url, script = scripted
    script.append(lambda r: write_sse(r, stream_events(), delay=0.5))
    async with AsyncChatClient(url, "key", timeout=Timeout(read=0.1)) as client:
        with pytest.raises(StreamError, match="read timeout"):
            async for _ in client.stream(HI):
                pass


async def test_oversized_event_raises(scripted: tuple[str, list[Any]]) -> None:
    """An event larger than max_event_bytes raises StreamError instead of buffering without bound."""
    url, script = scripted
    big = {"choices": [{"index": 0, "delta": {"content": "x" * 5000}}]}
    script.append(lambda r: write_sse(r, [big]))
    async with AsyncChatClient(url, "key", max_event_bytes=1000) as client:
        with pytest.raises(StreamError, match="max_event_bytes"):
            async for _ in client.stream(HI):
                pass


async def test_large_event_beyond_aiohttp_line_limit(scripted: tuple[str, list[Any]]) -> None:
    """A 300 KiB event (over aiohttp's 128 KiB line limit) streams intact."""
    url, script = scripted
    big_text = "y" * (300 * 1024)
    script.append(lambda r: write_sse(r, [{"choices": [{"index": 0, "delta": {"content": big_text}}]}]))
    async with AsyncChatClient(url, "key") as client:
        chunks = [chunk async for chunk in client.stream(HI)]
    assert [big_text] == [chunk.content for chunk in chunks]


async def test_parallel_tool_calls_are_reassembled_by_index(scripted: tuple[str, list[Any]]) -> None:
    """Interleaved deltas of two tool calls reassemble into two calls, id and name from each first piece."""
    url, script = scripted

    def delta(
        index: int, *, id: str | None = None, name: str | None = None, args: str = ""
    ) -> dict[str, Any]:
        function: dict[str, Any] = {"arguments": args}
        if name:
            function["name"] = name
        call: dict[str, Any] = {"index": index, "function": function}
        if id:
            call["id"] = id
            call["type"] = "function"
        return {"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}

    events = [
        delta(0, id="call_a", name="weather", args='{"ci'),
        delta(1, id="call_b", name="time", args='{"tz"'),
        delta(0, args='ty": "Oslo"}'),
        delta(1, args=': "UTC"}'),
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ]
    script.append(lambda r: write_sse(r, events))
    async with AsyncChatClient(url, "key") as client, client.stream(HI) as stream:
        async for _ in stream:
            pass
    final = stream.final_response()
    assert (
        ToolCall("call_a", "weather", '{"city": "Oslo"}'),
        ToolCall("call_b", "time", '{"tz": "UTC"}'),
    ) == final.tool_calls
    assert "tool_calls" == final.finish_reason
    assert final.content is None


async def test_usage_only_chunks_both_shapes(scripted: tuple[str, list[Any]]) -> None:
    """Usage arrives from a chunk with empty choices and from one whose choice has an empty delta."""
    url, script = scripted
    events_a = [{"choices": [{"index": 0, "delta": {"content": "a"}}]}, {"choices": [], "usage": USAGE}]
    events_b = [
        {"choices": [{"index": 0, "delta": {"content": "b"}}]},
        {"choices": [{"index": 0, "delta": {}}], "usage": USAGE},
    ]
    script.append(lambda r: write_sse(r, events_a))
    script.append(lambda r: write_sse(r, events_b))
    async with AsyncChatClient(url, "key") as client:
        for _ in range(2):
            async with client.stream(HI) as stream:
                async for _ in stream:
                    pass
            assert Usage(**USAGE) == stream.final_response().usage


async def test_server_ignoring_stream_answers_as_one_chunk(scripted: tuple[str, list[Any]]) -> None:
    """A server that answers a stream request with plain JSON is streamed as one chunk."""
    url, script = scripted
    script.append(lambda r: asyncio.sleep(0, web.json_response(completion())))
    async with AsyncChatClient(url, "key") as client, client.stream(HI) as stream:
        chunks = [chunk async for chunk in stream]
    assert [ANSWER] == [chunk.content for chunk in chunks]
    assert "stop" == stream.final_response().finish_reason


async def test_score_route_streams_the_whole_answer_as_one_chunk() -> None:
    """On classic /score (no streaming) stream() makes a normal request and yields one chunk."""
    recorder = Recorder()

    async def score(request: web.Request) -> web.Response:
        await recorder.record(request)
        return web.json_response({"output": "the whole answer"})

    async for base in serve({"/score": score}):
        async with (
            AsyncChatClient(base + "/score", "key") as client,
            client.stream(HI, max_tokens=3) as stream,
        ):
            chunks = [chunk async for chunk in stream]
    assert ["the whole answer"] == [chunk.content for chunk in chunks]
    assert "the whole answer" == stream.final_response().content
    sent = recorder.bodies[0]
    assert "stream" not in json.dumps(sent)
    assert {"max_new_tokens": 3} == sent["input_data"]["parameters"]
