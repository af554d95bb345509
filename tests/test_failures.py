"""What a failure tells the user: attempts counted as the server saw them, a DEBUG line per attempt, timeouts
named with their value, the retries a final error went through, and short tracebacks without internal chains.

Against real loopback servers (``conftest.loopback_server``); sync calls run in a worker thread, so that the
server keeps running on the test's loop.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import re
import traceback
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp import web
from conftest import LoopbackServer, Reply, scripted
from loopback import completion, stream_events, write_sse
from multidict import CIMultiDict, CIMultiDictProxy

import azureml_chat
from azureml_chat import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncChatClient,
    AuthenticationError,
    AzureMLChatError,
    BadRequestError,
    Client,
    InternalServerError,
    ModelError,
    RateLimitError,
    ResponseFormatError,
    StreamError,
    Timeout,
    UserMessage,
)
from azureml_chat.testing import fast_retry

StartServer = Callable[[Callable[[web.Request], Awaitable[web.StreamResponse]]], Awaitable[LoopbackServer]]

HI = [UserMessage("hi")]
KEY = "sk-secret-key-123"
ROUTE = "/v1/chat/completions"
OK = Reply(200, json=completion("hello"))
UNAUTHORIZED = Reply(401, json={"message": "token expired"})
UNAVAILABLE = Reply(503, json={"message": "busy"})
RETRIED = re.compile(r"\(after (\d+) attempts over \d+\.\d s\)")


def tokens() -> Callable[[], str]:
    """A credential callable handing out a new token each time it is asked."""
    numbers = iter(range(1, 100))
    return lambda: f"token-{next(numbers)}"


def debug_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "azureml_chat" and r.levelno == logging.DEBUG]


def outcome(line: str) -> str:
    """The outcome in a DEBUG attempt line ("POST <url> -> 503 in 1.2 ms ..." gives "503")."""
    return line.split(" -> ", 1)[1].split(" ", 1)[0]


# --- item 3: .attempts is what the server saw ---------------------------------------------------------------------


async def test_an_answer_counts_the_requests_it_took(loopback_server: StartServer) -> None:
    """A 503, a 401 refreshed, then the answer: the answer says three requests, as the server saw them, and an
    answer on the first try says one."""
    server = await loopback_server(scripted(UNAVAILABLE, UNAUTHORIZED, OK))
    async with AsyncChatClient(server.url(ROUTE), credential=tokens(), retry=fast_retry(2)) as client:
        retried = await client.chat(HI)
        first_try = await client.chat(HI)
    assert (3, 1) == (retried.attempts, first_try.attempts)
    assert 4 == len(server.requests)


async def test_a_streamed_answer_counts_the_requests_it_took(loopback_server: StartServer) -> None:
    served = 0

    async def handle(request: web.Request) -> web.StreamResponse:
        nonlocal served
        served += 1
        if served < 3:
            return UNAVAILABLE.response()
        return await write_sse(request, stream_events())

    server = await loopback_server(handle)
    async with AsyncChatClient(server.url(ROUTE), KEY, retry=fast_retry(2)) as client:
        async with client.stream(HI) as stream:
            text = "".join([chunk.content or "" async for chunk in stream])
        assert 3 == stream.final_response().attempts
    assert (3, "Hello there, world") == (len(server.requests), text)


async def test_attempts_count_the_request_sent_after_a_token_refresh(loopback_server: StartServer) -> None:
    """A 401, a refreshed token, a 401 again: the server saw two requests and the error says two."""
    server = await loopback_server(scripted(UNAUTHORIZED))
    async with AsyncChatClient(server.url(ROUTE), credential=tokens(), retry=fast_retry(2)) as client:
        with pytest.raises(AuthenticationError) as caught:
            await client.chat(HI)
    assert 2 == len(server.requests)
    assert len(server.requests) == caught.value.attempts


async def test_attempts_count_a_refresh_then_retried_failures(loopback_server: StartServer) -> None:
    """A 401 refreshed into 503s that are retried to the end: ``.attempts`` counts every request."""
    server = await loopback_server(scripted(UNAUTHORIZED, UNAVAILABLE))
    async with AsyncChatClient(server.url(ROUTE), credential=tokens(), retry=fast_retry(2)) as client:
        with pytest.raises(InternalServerError) as caught:
            await client.chat(HI)
    assert 4 == len(server.requests)
    assert len(server.requests) == caught.value.attempts


async def test_attempts_count_a_refresh_then_a_different_failure(loopback_server: StartServer) -> None:
    """A 401 refreshed into a 400: the 400 says two attempts."""
    server = await loopback_server(scripted(UNAUTHORIZED, Reply(400, json={"message": "bad"})))
    async with AsyncChatClient(server.url(ROUTE), credential=tokens(), retry=fast_retry(2)) as client:
        with pytest.raises(BadRequestError) as caught:
            await client.chat(HI)
    assert 2 == len(server.requests)
    assert len(server.requests) == caught.value.attempts


async def test_attempts_count_a_refresh_in_the_middle_of_retries(loopback_server: StartServer) -> None:
    """A 503, then a 401 refreshed into 503s: ``.attempts`` counts the refreshed request too."""
    server = await loopback_server(scripted(UNAVAILABLE, UNAUTHORIZED, UNAVAILABLE))
    async with AsyncChatClient(server.url(ROUTE), credential=tokens(), retry=fast_retry(2)) as client:
        with pytest.raises(InternalServerError) as caught:
            await client.chat(HI)
    assert 4 == len(server.requests)
    assert len(server.requests) == caught.value.attempts


async def test_a_stream_counts_a_refresh_then_retried_failures(loopback_server: StartServer) -> None:
    """A stream whose 401 is refreshed into retried 503s counts every request it sent."""
    server = await loopback_server(scripted(UNAUTHORIZED, UNAVAILABLE))
    async with AsyncChatClient(server.url(ROUTE), credential=tokens(), retry=fast_retry(1)) as client:
        with pytest.raises(InternalServerError) as caught:
            async for _ in client.stream(HI):
                pass
    assert 3 == len(server.requests)
    assert len(server.requests) == caught.value.attempts


async def test_a_stream_error_counts_the_attempts_before_it_opened(loopback_server: StartServer) -> None:
    """A stream opened on its second attempt that then breaks: the StreamError says two attempts."""
    replies = iter([UNAVAILABLE.response])

    async def handle(request: web.Request) -> web.StreamResponse:
        for reply in replies:
            return reply()
        return await write_sse(request, stream_events(), drop_after=2)

    server = await loopback_server(handle)
    async with AsyncChatClient(server.url(ROUTE), KEY, retry=fast_retry(2)) as client:
        with pytest.raises(StreamError) as caught:
            async for _ in client.stream(HI):
                pass
    assert 2 == len(server.requests)
    assert len(server.requests) == caught.value.attempts


# --- item 5: one DEBUG line per attempt, with its outcome -----------------------------------------------------------


async def test_a_refresh_that_succeeds_logs_both_requests(
    loopback_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A 401 refreshed into a 200 logs one DEBUG line per request the server saw: 401, then 200."""
    caplog.set_level(logging.DEBUG, logger="azureml_chat")
    server = await loopback_server(scripted(UNAUTHORIZED, OK))
    async with AsyncChatClient(server.url(ROUTE), credential=tokens()) as client:
        answer = await client.chat(HI)
    lines = debug_lines(caplog)
    assert "hello" == answer.content
    assert len(server.requests) == len(lines)
    assert ["401", "200"] == [outcome(line) for line in lines]


async def test_every_attempt_logs_its_status(
    loopback_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Two 503s then a 200: three DEBUG lines, each with the URL, its status and the attempt number."""
    caplog.set_level(logging.DEBUG, logger="azureml_chat")
    server = await loopback_server(scripted(UNAVAILABLE, UNAVAILABLE, OK))
    async with AsyncChatClient(server.url(ROUTE + "?api-version=1"), KEY, retry=fast_retry(2)) as client:
        await client.chat(HI)
    lines = debug_lines(caplog)
    assert 3 == len(lines)
    for number, (status, line) in enumerate(zip(["503", "503", "200"], lines, strict=True), start=1):
        assert f"POST {server.url(ROUTE)} -> {status} " in line
        assert f"attempt {number}" in line
        assert "api-version" not in line


async def test_an_attempt_that_gets_no_answer_logs_the_error_class(
    closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Refused connections log a DEBUG line per attempt naming APIConnectionError."""
    caplog.set_level(logging.DEBUG, logger="azureml_chat")
    url = f"http://127.0.0.1:{closed_port}{ROUTE}"
    async with AsyncChatClient(url, KEY, retry=fast_retry(1)) as client:
        with pytest.raises(APIConnectionError):
            await client.chat(HI)
    lines = debug_lines(caplog)
    assert ["APIConnectionError"] * 2 == [outcome(line) for line in lines]
    assert all(line.startswith(f"POST {url} -> ") for line in lines)


async def test_a_timed_out_stream_attempt_logs_the_timeout_class(
    loopback_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A stream attempt whose answer never comes logs APITimeoutError."""
    caplog.set_level(logging.DEBUG, logger="azureml_chat")
    server = await loopback_server(scripted(Reply(200, json=completion(), delay=30)))
    async with AsyncChatClient(server.url(ROUTE), KEY, timeout=Timeout(total=0.2), max_retries=0) as client:
        with pytest.raises(APITimeoutError):
            async for _ in client.stream(HI):
                pass
    lines = debug_lines(caplog)
    assert ["APITimeoutError"] == [outcome(line) for line in lines]


async def test_debug_lines_hold_no_secret(
    loopback_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither the key nor a credential's token appears in any DEBUG line."""
    caplog.set_level(logging.DEBUG, logger="azureml_chat")
    server = await loopback_server(scripted(UNAUTHORIZED, UNAVAILABLE, OK))
    async with AsyncChatClient(server.url(ROUTE), credential=tokens()) as client:
        await client.chat(HI)
    async with AsyncChatClient(server.url(ROUTE), KEY) as client:
        await client.chat(HI)
    lines = debug_lines(caplog)
    assert 4 == len(lines)
    assert [] == [line for line in lines if KEY in line or "token-" in line]


# --- item 9: a timeout mid-stream names itself ----------------------------------------------------------------------


async def slow_stream(request: web.Request) -> web.StreamResponse:
    """One event, then nothing for far longer than any test waits."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(b'data: {"choices": [{"index": 0, "delta": {"content": "a"}}]}\n\n')
    await asyncio.sleep(30)
    return response


async def test_a_total_timeout_mid_stream_names_the_timeout_and_its_value(
    loopback_server: StartServer,
) -> None:
    """The total timeout running out after the first chunk is a StreamError naming that timeout and its value."""
    server = await loopback_server(slow_stream)
    async with AsyncChatClient(server.url(ROUTE), KEY, timeout=Timeout(total=1.0)) as client:
        received = []
        with pytest.raises(StreamError) as caught:
            async for chunk in client.stream(HI):
                received.append(chunk.content)
    assert ["a"] == received
    assert "the total timeout of 1.0 s per attempt ran out while reading the stream" in str(caught.value)


async def test_a_read_timeout_mid_stream_names_the_timeout_and_its_value(
    loopback_server: StartServer,
) -> None:
    """The read timeout running out between two events is a StreamError naming that timeout and its value."""
    server = await loopback_server(slow_stream)
    async with AsyncChatClient(server.url(ROUTE), KEY, timeout=Timeout(read=0.5)) as client:
        with pytest.raises(StreamError) as caught:
            async for _ in client.stream(HI):
                pass
    assert "the read timeout of 0.5 s ran out while reading the stream" in str(caught.value)


# --- item 11: the final error says what the client did ---------------------------------------------------------------


async def test_an_error_after_retries_says_how_many_attempts_over_how_long(
    loopback_server: StartServer,
) -> None:
    """Three 503s: the message ends with "(after 3 attempts over N.N s)", in ``.message`` and ``str()``."""
    server = await loopback_server(scripted(UNAVAILABLE))
    async with AsyncChatClient(server.url(ROUTE), KEY, retry=fast_retry(2)) as client:
        with pytest.raises(InternalServerError) as caught:
            await client.chat(HI)
    error = caught.value
    found = RETRIED.search(error.message)
    assert found is not None
    assert "3" == found.group(1)
    assert error.message in str(error)
    assert error.message == error.args[0]


async def test_an_error_of_a_single_attempt_says_nothing_of_retries(loopback_server: StartServer) -> None:
    """A 400 (never retried) has no "after N attempts" in its message."""
    server = await loopback_server(scripted(Reply(400, json={"message": "bad"})))
    async with AsyncChatClient(server.url(ROUTE), KEY, retry=fast_retry(2)) as client:
        with pytest.raises(BadRequestError) as caught:
            await client.chat(HI)
    assert "Error code: 400 - bad" == str(caught.value).split(" (request id")[0]


async def test_a_timeout_after_retries_says_it_is_per_attempt(loopback_server: StartServer) -> None:
    """A total timeout hit on each of two attempts says it is per attempt, and how many attempts were made."""
    server = await loopback_server(scripted(Reply(200, json=completion(), delay=30)))
    async with AsyncChatClient(
        server.url(ROUTE), KEY, timeout=Timeout(total=0.2), retry=fast_retry(1)
    ) as client:
        with pytest.raises(APITimeoutError) as caught:
            await client.chat(HI)
    text = str(caught.value)
    assert text.startswith(
        "the total timeout of 0.2 s per attempt ran out waiting for an answer from 127.0.0.1"
    )
    found = RETRIED.search(text)
    assert found is not None
    assert "2" == found.group(1)


# --- item 11: short tracebacks, no internal chains --------------------------------------------------------------------

# openai-python's sync 401 is 5 frames from the caller's frame down; ours may be no longer.
MAX_FRAMES = 5
INTERNAL = ("tenacity", "concurrent", "asyncio", "_retry.py")


def frames(error: BaseException) -> list[traceback.FrameSummary]:
    return traceback.extract_tb(error.__traceback__)


def chained(error: BaseException) -> BaseException | None:
    """The exception Python would print above ``error`` ("direct cause" or "during handling"), if any."""
    if error.__cause__ is not None:
        return error.__cause__
    return None if error.__suppress_context__ else error.__context__


async def async_failure(url: str) -> AzureMLChatError:
    async with AsyncChatClient(url, KEY, retry=fast_retry(2)) as client:
        try:
            await client.chat(HI)
        except AzureMLChatError as error:
            return error
    raise AssertionError("the call should have failed")


def sync_failure(url: str) -> AzureMLChatError:
    with Client(url, KEY, retry=fast_retry(2)) as client:
        try:
            client.chat(HI)
        except AzureMLChatError as error:
            return error
    raise AssertionError("the call should have failed")


@pytest.mark.parametrize("reply", [UNAUTHORIZED, UNAVAILABLE], ids=["401", "503-after-retries"])
@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_a_status_error_traceback_is_short_and_unchained(
    loopback_server: StartServer, reply: Reply, sync: bool
) -> None:
    """A 401 or a 503 after retries, async or sync: at most 5 frames, none from the retry loop, tenacity,
    asyncio or concurrent.futures, and no exception chained above it."""
    server = await loopback_server(scripted(reply))
    url = server.url(ROUTE)
    error = await asyncio.to_thread(sync_failure, url) if sync else await async_failure(url)
    assert reply.status == getattr(error, "status_code", None)
    assert len(frames(error)) <= MAX_FRAMES, traceback.format_list(frames(error))
    assert [] == [f.filename for f in frames(error) if any(part in f.filename for part in INTERNAL)]
    assert None is chained(error)


async def test_a_stream_error_traceback_holds_no_internal_frames(loopback_server: StartServer) -> None:
    """A stream whose every attempt gets a 503 raises with no retry-loop or tenacity frame and no chain."""
    server = await loopback_server(scripted(UNAVAILABLE))
    async with AsyncChatClient(server.url(ROUTE), KEY, retry=fast_retry(2)) as client:
        with pytest.raises(InternalServerError) as caught:
            async for _ in client.stream(HI):
                pass
    assert [] == [f.filename for f in frames(caught.value) if any(part in f.filename for part in INTERNAL)]
    assert None is chained(caught.value)


async def test_a_refused_connection_keeps_its_os_error_as_the_cause(closed_port: int) -> None:
    """A refused connection is chained to the OSError that says why (the one cause a person needs)."""
    error = await async_failure(f"http://127.0.0.1:{closed_port}{ROUTE}")
    assert isinstance(error, APIConnectionError)
    assert isinstance(error.__cause__, OSError)
    assert [] == [f.filename for f in frames(error) if any(part in f.filename for part in INTERNAL)]


async def test_a_timeout_has_no_chain_of_internal_timeouts(loopback_server: StartServer) -> None:
    """A client timeout shows no chained TimeoutError or CancelledError: its message says all there is."""
    server = await loopback_server(scripted(Reply(200, json=completion(), delay=30)))
    async with AsyncChatClient(server.url(ROUTE), KEY, timeout=Timeout(total=0.2), max_retries=0) as client:
        with pytest.raises(APITimeoutError) as caught:
            await client.chat(HI)
    assert None is chained(caught.value)


PUBLIC_ERRORS = [
    value
    for name in azureml_chat.__all__
    if isinstance(value := getattr(azureml_chat, name), type) and issubclass(value, AzureMLChatError)
]


@pytest.mark.parametrize("cls", PUBLIC_ERRORS, ids=lambda cls: cls.__name__)
def test_every_public_error_shows_the_package_as_its_module(cls: type[AzureMLChatError]) -> None:
    """Tracebacks name ``azureml_chat.AuthenticationError``, not the private module it is defined in."""
    assert "azureml_chat" == cls.__module__


async def test_a_traceback_names_the_error_by_its_public_path(loopback_server: StartServer) -> None:
    """The last line of a printed traceback is ``azureml_chat.AuthenticationError: ...``."""
    server = await loopback_server(scripted(UNAUTHORIZED))
    error = await async_failure(server.url(ROUTE))
    assert (
        "".join(traceback.format_exception(error))
        .splitlines()[-1]
        .startswith("azureml_chat.AuthenticationError: ")
    )


def headers(values: dict[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(values))


def examples() -> Iterator[AzureMLChatError]:
    yield AzureMLChatError("base")
    yield APIConnectionError("refused", url="http://127.0.0.1:1/score")
    yield APITimeoutError("slow", url="http://127.0.0.1:1/score")
    yield ResponseFormatError("not JSON", formatter="llama", excerpt="<html>")
    yield StreamError("cut")
    yield RateLimitError(
        "slow down",
        status_code=429,
        request_id="r-1",
        body={"message": "slow down"},
        headers=headers({"Retry-After": "3"}),
    )
    yield ModelError(
        "model failed", status_code=424, headers=headers({"ms-azureml-model-error-statuscode": "503"})
    )


@pytest.mark.parametrize("error", list(examples()), ids=lambda error: type(error).__name__)
def test_errors_survive_pickling(error: AzureMLChatError) -> None:
    """An error (a status error with its response headers too) pickles and comes back equal in every field."""
    error.attempts = 3
    back = pickle.loads(pickle.dumps(error))
    assert type(error) is type(back)
    assert (str(error), repr(error), error.args, error.attempts) == (
        str(back),
        repr(back),
        back.args,
        back.attempts,
    )
    assert {k: v for k, v in vars(error).items() if k != "headers"} == {
        k: v for k, v in vars(back).items() if k != "headers"
    }
    if isinstance(error, APIStatusError):
        assert dict(error.headers) == dict(back.headers)
        assert error.headers.get("retry-after") == back.headers.get("retry-after")


def test_repr_shows_the_class_and_message() -> None:
    """``repr`` of an error is its class name and its message, as for any exception."""
    error: Any = AuthenticationError("denied", status_code=401)
    assert "AuthenticationError('denied')" == repr(error)
