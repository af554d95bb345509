"""The request pipeline (``_pipeline.py``, ``_stream.py``): attempts and their count, the stream retry rule, and
the instrumentation hook, driven through ``MockTransport`` (no sockets)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import pytest

from azureml_chat import (
    APIConnectionError,
    AsyncChatClient,
    AuthenticationError,
    ChatResponse,
    InternalServerError,
    StreamError,
    UserMessage,
)
from azureml_chat._endpoint import ResolvedEndpoint
from azureml_chat._transport import Request
from azureml_chat.testing import MockResponse, MockTransport, fast_retry

URL = "https://example.inference.ml.azure.com/v1/chat/completions"
HI = [UserMessage("hi")]
ANSWER = {"choices": [{"message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}]}


def sse(*texts: str, done: bool = True) -> list[bytes]:
    """A chat-completions SSE stream of ``texts``, one event per piece."""
    events = [
        "data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": text}}]}) + "\n\n"
        for text in texts
    ]
    return [event.encode() for event in events] + ([b"data: [DONE]\n\n"] if done else [])


def broken_after(pieces: list[bytes]) -> Iterator[bytes]:
    """The pieces, then a broken connection."""
    yield from pieces
    raise APIConnectionError("connection reset by the test")


class Script:
    """A MockTransport handler that answers from a list, recording every request."""

    def __init__(self, *answers: MockResponse | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[Request] = []

    def __call__(self, request: Request) -> MockResponse:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def client_for(script: Script, **options: Any) -> AsyncChatClient:
    return AsyncChatClient(URL, "key", transport=MockTransport(script), retry=fast_retry(2), **options)


# --- attempts -----------------------------------------------------------------------------------------------------


async def test_a_connection_error_from_the_transport_is_retried_and_counted() -> None:
    """A transport that raises APIConnectionError is retried like a network failure; the final error carries
    the number of attempts the server could have seen."""
    script = Script(*(APIConnectionError("down") for _ in range(3)))
    async with client_for(script) as client:
        with pytest.raises(APIConnectionError) as caught:
            await client.chat(HI)
    assert 3 == caught.value.attempts
    assert 3 == len(script.requests)


async def test_every_attempt_of_a_call_carries_the_same_request_id() -> None:
    """The retries of one call send the same ``x-ms-client-request-id``; the next call sends another."""
    script = Script(
        MockResponse(503, json={}), MockResponse(200, json=ANSWER), MockResponse(200, json=ANSWER)
    )
    async with client_for(script) as client:
        await client.chat(HI)
        await client.chat(HI)
    first, retry, second = (request.headers["x-ms-client-request-id"] for request in script.requests)
    assert first == retry
    assert first != second


async def test_a_refreshed_token_is_an_attempt_too() -> None:
    """After a 401 the token is refreshed and the call sent again: the error counts both attempts."""
    tokens = iter(["t1", "t2"])
    script = Script(MockResponse(401, json={"message": "expired"}), MockResponse(401, json={"message": "no"}))
    transport = MockTransport(script)
    async with AsyncChatClient(URL, transport=transport, credential=lambda: next(tokens)) as client:
        with pytest.raises(AuthenticationError) as caught:
            await client.chat(HI)
    assert 2 == caught.value.attempts
    assert ["Bearer t1", "Bearer t2"] == [request.headers["authorization"] for request in script.requests]


async def test_the_answer_carries_the_servers_request_id() -> None:
    """``x-request-id`` of the answer becomes ``response.request_id``, built into the answer by the parser."""
    script = Script(MockResponse(200, json=ANSWER, headers={"X-Request-Id": "server-id"}))
    async with client_for(script) as client:
        response = await client.chat(HI)
    assert ("hello", "server-id") == (response.content, response.request_id)


# --- the stream retry rule ------------------------------------------------------------------------------------------


async def test_a_stream_that_breaks_before_its_first_event_is_retried() -> None:
    """A connection that fails after the status line but before the first event is retried: nothing reached
    the caller."""
    script = Script(MockResponse(200, content=broken_after([])), MockResponse(200, content=sse("a", "b")))
    async with client_for(script) as client, client.stream(HI) as stream:
        texts = [chunk.content async for chunk in stream]
    assert ["a", "b"] == texts
    assert 2 == len(script.requests)


async def test_a_stream_that_ends_before_its_first_event_is_retried() -> None:
    """An empty 2xx stream body is a broken connection before the first event: retried."""
    script = Script(MockResponse(200, content=[]), MockResponse(200, content=sse("a")))
    async with client_for(script) as client, client.stream(HI) as stream:
        texts = [chunk.content async for chunk in stream]
    assert ["a"] == texts
    assert 2 == len(script.requests)


async def test_a_stream_that_breaks_after_its_first_chunk_is_never_retried() -> None:
    """Once a chunk reached the caller, a broken connection is a StreamError and nothing is sent again."""
    script = Script(
        MockResponse(200, content=broken_after(sse("a", done=False))), MockResponse(200, content=sse("b"))
    )
    async with client_for(script) as client:
        received: list[str | None] = []
        with pytest.raises(StreamError, match="mid-stream: connection reset by the test"):
            async for chunk in client.stream(HI):
                received.append(chunk.content)
    assert ["a"] == received
    assert 1 == len(script.requests)


async def test_a_stream_broken_before_its_first_event_every_time_raises_the_connection_error() -> None:
    """When every attempt breaks before the first event, the caller gets the connection error with the count."""
    script = Script(*(MockResponse(200, content=broken_after([])) for _ in range(3)))
    async with client_for(script) as client:
        with pytest.raises(APIConnectionError) as caught:
            async for _ in client.stream(HI):
                pass
    assert 3 == caught.value.attempts


async def test_an_async_iterable_body_is_streamed_piece_by_piece() -> None:
    """MockResponse content may be an async iterable: each piece arrives as sent, split events included."""

    async def pieces() -> AsyncIterator[bytes]:
        whole = b"".join(sse("one", "two"))
        for start in range(0, len(whole), 7):
            yield whole[start : start + 7]

    script = Script(MockResponse(200, content=pieces()))
    async with client_for(script) as client, client.stream(HI) as stream:
        texts = [chunk.content async for chunk in stream]
        final = stream.final_response()
    assert ["one", "two"] == texts
    assert "onetwo" == final.content


# --- the instrumentation hook ---------------------------------------------------------------------------------------


class Recorder:
    """An Instrumentation and its CallObserver in one, recording what it hears."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def start_call(
        self,
        operation: str,
        endpoint: ResolvedEndpoint,
        params: Mapping[str, Any],
        *,
        stream: bool,
        request_id: str,
        payload: Any,
    ) -> Recorder:
        self.events.append(("start", operation, dict(params), stream))
        return self

    def attempt(
        self,
        number: int,
        endpoint: ResolvedEndpoint,
        status: int | None,
        error: BaseException | None,
        started: float,
    ) -> None:
        self.events.append(("attempt", number, type(error).__name__ if error else None))

    def first_chunk(self) -> None:
        self.events.append(("first_chunk",))

    def end(self, response: Any, error: BaseException | None) -> None:
        content = response.content if isinstance(response, ChatResponse) else response
        self.events.append(("end", content, type(error).__name__ if error else None))


def instrumented(script: Script) -> tuple[AsyncChatClient, Recorder]:
    client = client_for(script)
    recorder = Recorder()
    client._pipeline.instrumentation = recorder
    return client, recorder


async def test_the_hook_hears_a_call_its_attempts_and_its_end() -> None:
    """A call reports its start (operation, parameters), each attempt with its error, and its answer."""
    script = Script(MockResponse(503, json={}), MockResponse(200, json=ANSWER))
    client, recorder = instrumented(script)
    async with client:
        await client.chat(HI, max_tokens=5)
    assert [
        ("start", "chat", {"max_tokens": 5}, False),
        ("attempt", 1, "InternalServerError"),
        ("attempt", 2, None),
        ("end", "hello", None),
    ] == recorder.events


async def test_the_hook_hears_a_failed_call_end_with_its_error() -> None:
    """A call that fails for good ends with its error."""
    script = Script(*(MockResponse(500, json={}) for _ in range(3)))
    client, recorder = instrumented(script)
    async with client:
        with pytest.raises(InternalServerError):
            await client.chat(HI)
    assert ("end", None, "InternalServerError") == recorder.events[-1]
    assert 3 == sum(1 for event in recorder.events if event[0] == "attempt")


async def test_the_hook_hears_a_stream_first_chunk_and_its_aggregated_end() -> None:
    """A stream reports its first chunk once, and ends with the aggregated answer when read to the end."""
    script = Script(MockResponse(200, content=sse("a", "b")))
    client, recorder = instrumented(script)
    async with client, client.stream(HI) as stream:
        async for _ in stream:
            pass
    assert [
        ("start", "chat", {}, True),
        ("attempt", 1, None),
        ("first_chunk",),
        ("end", "ab", None),
    ] == recorder.events


async def test_a_stream_left_early_ends_without_an_answer_or_an_error() -> None:
    """A caller that stops reading is not a failure: the call ends with neither answer nor error, once."""
    script = Script(MockResponse(200, content=sse("a", "b", "c")))
    client, recorder = instrumented(script)
    async with client, client.stream(HI) as stream:
        async for _ in stream:
            break
    assert [("end", None, None)] == [event for event in recorder.events if event[0] == "end"]
