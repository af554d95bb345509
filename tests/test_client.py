"""AsyncChatClient.chat() against real HTTP servers on 127.0.0.1: wire, headers, retries, timeouts, errors, lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import logging
import re
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from conftest import LoopbackServer, Reply, scripted

from azureml_chat import (
    APIConnectionError,
    APITimeoutError,
    AssistantMessage,
    AsyncChatClient,
    AuthenticationError,
    AzureMLChatError,
    BadRequestError,
    ChatResponse,
    ImagePart,
    InternalServerError,
    InvalidRequestError,
    ModelError,
    RateLimitError,
    RequestTimeoutError,
    ResponseFormatError,
    RetryPolicy,
    SystemMessage,
    TextPart,
    Timeout,
    ToolCall,
    ToolMessage,
    Usage,
    UserMessage,
)
from azureml_chat.formatters import LlamaFormatter, Route

pytestmark = pytest.mark.usefixtures("hermetic_env")

StartServer = Callable[..., Awaitable[LoopbackServer]]

KEY = "sk-loopback-7f3c9e21d0"
FAST = RetryPolicy(initial_delay=0.001, max_delay=0.01)
HI = [UserMessage("hi")]
OUTPUT = Reply(json={"output": "Hello!"})
COMPLETION = {
    "id": "cmpl-9",
    "object": "chat.completion",
    "model": "Meta-Llama-3-8B-Instruct",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "4"}}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
}
CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9-]{1,40}$")


def connect(server: LoopbackServer, path: str = "/score", **options: Any) -> AsyncChatClient:
    """A client for ``server`` with fast retries (unless the test passes its own)."""
    options.setdefault("retry", FAST)
    return AsyncChatClient(server.url(path), KEY, **options)


# --- the request on the wire -------------------------------------------------------------------------------------


async def test_score_round_trip(loopback_server: StartServer) -> None:
    """A /score call POSTs the llama body to /score and returns the ``output`` text."""
    server = await loopback_server(scripted(OUTPUT))
    async with connect(server) as client:
        response = await client.chat([SystemMessage("Be brief."), UserMessage("hi")], max_tokens=5)
    assert "Hello!" == response.content
    (request,) = server.requests
    assert ("POST", "/score") == (request.method, request.path)
    assert {
        "input_data": {
            "input_string": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
            "parameters": {"max_new_tokens": 5},
        }
    } == request.json()


async def test_chat_completions_round_trip_keeps_api_version(loopback_server: StartServer) -> None:
    """A chat-completions call keeps ``?api-version=``, sends the OpenAI body and parses the completion."""
    server = await loopback_server(scripted(Reply(json=COMPLETION)))
    async with connect(server, "/models/chat/completions?api-version=2024-05-01-preview") as client:
        response = await client.chat(HI, temperature=0.2, max_tokens=5)
    assert ("4", "stop", Usage(12, 1, 13)) == (response.content, response.finish_reason, response.usage)
    assert COMPLETION == response.raw
    (request,) = server.requests
    assert "/models/chat/completions" == request.path
    assert {"api-version": "2024-05-01-preview"} == request.query
    assert {
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.2,
        "max_tokens": 5,
    } == request.json()
    assert "application/json" == request.headers["Content-Type"]


@pytest.mark.parametrize(
    ("path", "reply"),
    [("/score", OUTPUT), ("/v1/chat/completions", Reply(json=COMPLETION))],
    ids=["score", "chat-completions"],
)
async def test_text_arrives_exactly_as_written(loopback_server: StartServer, path: str, reply: Reply) -> None:
    """A newline, a double quote and a backslash arrive at the server as exactly those characters."""
    text = 'Be "nice"\nnow \\ ok'
    server = await loopback_server(scripted(reply))
    async with connect(server, path) as client:
        await client.chat([UserMessage(text)])
    body = server.requests[0].json()
    messages = body["input_data"]["input_string"] if path == "/score" else body["messages"]
    assert [{"role": "user", "content": text}] == messages


PLAIN_CONVERSATION = [
    {"role": "system", "content": "s"},
    {"role": "user", "content": 'quote " newline \n ünï'},
    {"role": "assistant", "content": ""},
    {"role": "user", "content": "u"},
]
AS_OBJECTS = [
    SystemMessage("s"),
    UserMessage('quote " newline \n ünï'),
    AssistantMessage(""),
    UserMessage("u"),
]


@pytest.mark.parametrize(
    ("path", "formatter"),
    [
        ("/v1/chat/completions", "openai"),
        ("/score", "openai"),
        ("/v1/chat/completions", "llama"),
        ("/score", "llama"),
        ("/score", "mistral"),
    ],
)
async def test_dict_messages_are_sent_like_objects(
    loopback_server: StartServer, path: str, formatter: str
) -> None:
    """OpenAI-shaped dicts produce the same request as message objects, whichever formatter builds the body
    (the OpenAI formatter sends plain dicts without converting them; the caller's list is left as it was)."""
    reply = Reply(json=COMPLETION) if formatter == "openai" or path != "/score" else OUTPUT
    server = await loopback_server(scripted(reply, reply, reply))
    given = [dict(message) for message in PLAIN_CONVERSATION]
    async with connect(server, path, formatter=formatter) as client:
        await client.chat(given, max_tokens=5)
        await client.chat(AS_OBJECTS, max_tokens=5)
        await client.chat((*PLAIN_CONVERSATION[:-1], UserMessage("u")), max_tokens=5)
    first, second, third = (request.json() for request in server.requests)
    assert first == second == third
    assert PLAIN_CONVERSATION == given


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([], "messages is empty"),
        ([{"role": "tool", "content": "x"}], r"tool_call_id is required"),
        ([{"role": "usr", "content": "x"}], r"messages\[0\]\.role must be one of"),
        ([{"role": "user", "content": "x"}, {"role": "user", "content": 5}], r"messages\[1\]"),
        ([{"role": "user", "content": None}], r"messages\[0\]"),
        ([{"role": ["user"], "content": "x"}], r"messages\[0\]\.role"),
    ],
)
async def test_bad_dict_messages_are_refused_on_the_openai_route(
    loopback_server: StartServer, messages: list[Any], error: str
) -> None:
    """Dicts that only look plain still get the full check, and nothing is sent."""
    server = await loopback_server(scripted(Reply(json=COMPLETION)))
    async with connect(server, "/v1/chat/completions") as client:
        with pytest.raises(InvalidRequestError, match=error):
            await client.chat(messages)
    assert [] == server.requests


# --- headers -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "expected_authorization", "expected_api_key"),
    [("bearer", f"Bearer {KEY}", None), ("api-key", None, KEY), ("both", f"Bearer {KEY}", KEY)],
)
async def test_auth_header_modes(
    loopback_server: StartServer, mode: str, expected_authorization: str | None, expected_api_key: str | None
) -> None:
    """The key goes as ``Authorization: Bearer``, as ``api-key``, or as both, as configured."""
    server = await loopback_server(scripted(OUTPUT))
    async with connect(server, auth_header=mode) as client:
        await client.chat(HI)
    headers = server.requests[0].headers
    assert expected_authorization == headers.get("Authorization")
    assert expected_api_key == headers.get("api-key")


async def test_deployment_header_only_when_set_and_never_sticky(loopback_server: StartServer) -> None:
    """No deployment: no header; a per-call deployment is sent on that call only."""
    server = await loopback_server(scripted(OUTPUT))
    async with connect(server) as client:
        await client.chat(HI)
        await client.chat(HI, deployment="blue")
        await client.chat(HI)
    assert [None, "blue", None] == [r.headers.get("azureml-model-deployment") for r in server.requests]


async def test_per_call_deployment_overrides_the_clients(loopback_server: StartServer) -> None:
    """A per-call deployment replaces the client's for that call; the next call goes back to the client's."""
    server = await loopback_server(scripted(OUTPUT))
    async with connect(server, deployment="green") as client:
        await client.chat(HI)
        await client.chat(HI, deployment="blue")
        await client.chat(HI)
    assert ["green", "blue", "green"] == [r.headers.get("azureml-model-deployment") for r in server.requests]


async def test_client_request_id_is_stable_across_retries_and_new_per_call(
    loopback_server: StartServer,
) -> None:
    """One ``x-ms-client-request-id`` (<= 40 of [A-Za-z0-9-]) per call, the same on its retries, new per call."""
    server = await loopback_server(scripted(Reply(status=503), Reply(status=503), OUTPUT))
    async with connect(server) as client:
        await client.chat(HI)
        await client.chat(HI)
    ids = [request.headers["x-ms-client-request-id"] for request in server.requests]
    assert 4 == len(ids)
    for value in ids:
        assert CLIENT_REQUEST_ID.match(value), value
    assert ids[0] == ids[1] == ids[2]
    assert ids[3] != ids[0]


async def test_user_agent_names_the_package_and_version(loopback_server: StartServer) -> None:
    """The User-Agent starts with ``azureml-chat/<installed version>``."""
    server = await loopback_server(scripted(OUTPUT))
    async with connect(server) as client:
        await client.chat(HI)
    expected = f"azureml-chat/{importlib.metadata.version('azureml-chat')}"
    assert server.requests[0].headers["User-Agent"].startswith(expected)


@pytest.mark.parametrize("value", ["pass-through", "drop", "error"])
async def test_extra_parameters_header(loopback_server: StartServer, value: str) -> None:
    """``extra_parameters=`` is sent as the ``extra-parameters`` header (azure_protocol.md 2.3)."""
    server = await loopback_server(scripted(Reply(json=COMPLETION)))
    async with connect(server, "/v1/chat/completions", extra_parameters=value) as client:
        await client.chat(HI)
    assert value == server.requests[0].headers["extra-parameters"]


async def test_no_extra_parameters_header_unless_asked(loopback_server: StartServer) -> None:
    """Without ``extra_parameters=`` the header is not sent (the service default applies)."""
    server = await loopback_server(scripted(Reply(json=COMPLETION)))
    async with connect(server, "/v1/chat/completions") as client:
        await client.chat(HI)
    assert "extra-parameters" not in server.requests[0].headers


async def test_client_headers_always_and_call_headers_once(loopback_server: StartServer) -> None:
    """Client ``headers=`` go on every request; ``extra_headers=`` only on their call."""
    server = await loopback_server(scripted(OUTPUT))
    async with connect(server, headers={"X-Team": "search"}) as client:
        await client.chat(HI, extra_headers={"X-Trace": "t-1"})
        await client.chat(HI)
    first, second = (request.headers for request in server.requests)
    assert ("search", "t-1") == (first["X-Team"], first["X-Trace"])
    assert "search" == second["X-Team"]
    assert "X-Trace" not in second


# --- nothing is sent for a caller's mistake ------------------------------------------------------------------------

TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


@pytest.mark.parametrize(
    ("messages", "params"),
    [
        (HI, {"tools": [TOOL]}),
        (HI, {"tool_choice": "auto"}),
        (HI, {"response_format": {"type": "json_object"}}),
        ([UserMessage([TextPart("what?"), ImagePart("https://example.com/a.png")])], {}),
        (
            [
                UserMessage("weather?"),
                AssistantMessage(tool_calls=[ToolCall("c1", "get_weather")]),
                ToolMessage("18C", tool_call_id="c1"),
            ],
            {},
        ),
    ],
    ids=["tools", "tool_choice", "response_format", "image-part", "tool-message"],
)
async def test_score_rejects_unsupported_features_before_sending(
    loopback_server: StartServer, messages: list[Any], params: dict[str, Any]
) -> None:
    """On /score, tools, tool_choice, response_format, images and tool turns fail before any request."""
    server = await loopback_server(scripted(OUTPUT))
    async with connect(server) as client:
        with pytest.raises(InvalidRequestError):
            await client.chat(messages, **params)
    assert [] == server.requests


@pytest.mark.parametrize(
    ("messages", "options"),
    [
        ([{"role": "user"}], {}),
        ([], {}),
        (HI, {"temperature": "hot"}),
        (HI, {"stream": True}),
        (HI, {"deployment": "bad name"}),
        (HI, {"extra_headers": {"x-evil": "a\r\nb"}}),
        (HI, {"timeout": -1}),
        (HI, {"unencodable": object()}),
    ],
    ids=[
        "malformed-message",
        "no-messages",
        "bad-temperature",
        "reserved-stream",
        "bad-deployment",
        "header-injection",
        "bad-timeout",
        "not-json",
    ],
)
async def test_invalid_calls_send_nothing(
    loopback_server: StartServer, messages: list[Any], options: dict[str, Any]
) -> None:
    """Every caller-side mistake is an InvalidRequestError raised before any byte leaves the client."""
    server = await loopback_server(scripted(OUTPUT))
    async with connect(server) as client:
        with pytest.raises(InvalidRequestError):
            await client.chat(messages, **options)
    assert [] == server.requests


# --- parameters on the wire ----------------------------------------------------------------------------------------


async def test_model_kwargs_are_never_mutated_and_calls_do_not_leak(loopback_server: StartServer) -> None:
    """A call's parameters override ``model_kwargs`` for that call only; the caller's dict stays as it was."""
    model_kwargs = {"temperature": 0.1, "top_p": 0.9}
    server = await loopback_server(scripted(Reply(json=COMPLETION)))
    async with connect(server, "/v1/chat/completions", model_kwargs=model_kwargs) as client:
        await client.chat(HI, temperature=0.7, max_tokens=5, best_of=3)
        await client.chat(HI)
    assert {"temperature": 0.1, "top_p": 0.9} == model_kwargs
    first, second = (request.json() for request in server.requests)
    assert {"temperature": 0.7, "top_p": 0.9, "max_tokens": 5, "best_of": 3} == {
        k: v for k, v in first.items() if k != "messages"
    }
    assert {"temperature": 0.1, "top_p": 0.9} == {k: v for k, v in second.items() if k != "messages"}


async def test_call_max_tokens_beats_max_new_tokens_in_model_kwargs(loopback_server: StartServer) -> None:
    """On /score a call's ``max_tokens`` overrides a LangChain-style ``max_new_tokens`` left in ``model_kwargs``."""
    server = await loopback_server(scripted(OUTPUT))
    async with connect(server, model_kwargs={"max_new_tokens": 256, "temperature": 0.1}) as client:
        await client.chat(HI, max_tokens=5)
        await client.chat(HI)
    first, second = (request.json()["input_data"]["parameters"] for request in server.requests)
    assert {"max_new_tokens": 5, "temperature": 0.1} == first
    assert {"max_new_tokens": 256, "temperature": 0.1} == second


# --- retries ---------------------------------------------------------------------------------------------------------


async def test_503_twice_then_success(loopback_server: StartServer) -> None:
    """Two 503s then a 200: the call succeeds, and the server saw three requests."""
    server = await loopback_server(scripted(Reply(status=503), Reply(status=503), OUTPUT))
    async with connect(server) as client:
        assert "Hello!" == (await client.chat(HI)).content
    assert 3 == len(server.requests)


async def test_400_is_not_retried(loopback_server: StartServer) -> None:
    """A 400 is raised after one request."""
    server = await loopback_server(scripted(Reply(status=400, json={"message": "bad input"}), OUTPUT))
    async with connect(server) as client:
        with pytest.raises(BadRequestError, match="bad input"):
            await client.chat(HI)
    assert 1 == len(server.requests)


async def test_429_with_retry_after_zero_is_retried(loopback_server: StartServer) -> None:
    """A 429 asking to retry after 0 s is retried at once and the call succeeds."""
    server = await loopback_server(scripted(Reply(status=429, headers={"Retry-After": "0"}), OUTPUT))
    async with connect(server) as client:
        assert "Hello!" == (await client.chat(HI)).content
    assert 2 == len(server.requests)


async def test_429_demanding_more_than_the_cap_is_raised_at_once(loopback_server: StartServer) -> None:
    """A 429 demanding a wait above the cap is raised immediately as RateLimitError carrying that wait."""
    server = await loopback_server(scripted(Reply(status=429, headers={"Retry-After": "120"}), OUTPUT))
    async with connect(
        server, retry=RetryPolicy(initial_delay=0.001, max_delay=0.01, max_retry_after=60)
    ) as client:
        with pytest.raises(RateLimitError) as caught:
            await client.chat(HI)
    assert 120.0 == caught.value.retry_after
    assert 1 == len(server.requests)


@pytest.mark.parametrize(
    ("inner", "expected_requests"),
    [("503", 2), ("429", 2), ("400", 1)],
    ids=["inner-503", "inner-429", "inner-400"],
)
async def test_424_retry_follows_the_inner_status(
    loopback_server: StartServer, inner: str, expected_requests: int
) -> None:
    """A 424 is retried when the container's own status is 408/429/5xx, not when it is a 4xx."""
    failure = Reply(status=424, headers={"ms-azureml-model-error-statuscode": inner})
    server = await loopback_server(scripted(failure, OUTPUT))
    async with connect(server) as client:
        if expected_requests == 1:
            with pytest.raises(ModelError):
                await client.chat(HI)
        else:
            assert "Hello!" == (await client.chat(HI)).content
    assert expected_requests == len(server.requests)


async def test_x_should_retry_false_stops_a_retry(loopback_server: StartServer) -> None:
    """A 503 with ``x-should-retry: false`` is raised after one request."""
    server = await loopback_server(scripted(Reply(status=503, headers={"x-should-retry": "false"}), OUTPUT))
    async with connect(server) as client:
        with pytest.raises(InternalServerError):
            await client.chat(HI)
    assert 1 == len(server.requests)


async def test_max_retries_zero_sends_once(loopback_server: StartServer) -> None:
    """With ``max_retries=0`` a 503 is raised after the single request."""
    server = await loopback_server(scripted(Reply(status=503), OUTPUT))
    async with connect(server, max_retries=0) as client:
        with pytest.raises(InternalServerError) as caught:
            await client.chat(HI)
    assert 1 == caught.value.attempts
    assert 1 == len(server.requests)


@pytest.mark.parametrize("max_retries", [1, 3])
async def test_exhausted_retries_raise_the_last_error(loopback_server: StartServer, max_retries: int) -> None:
    """When every attempt fails, the last error is raised with ``attempts == max_retries + 1``."""
    server = await loopback_server(
        scripted(Reply(status=502), Reply(status=502), Reply(status=502), Reply(status=503))
    )
    async with connect(server, max_retries=max_retries) as client:
        with pytest.raises(InternalServerError) as caught:
            await client.chat(HI)
    assert max_retries + 1 == caught.value.attempts
    assert max_retries + 1 == len(server.requests)
    assert (503 if max_retries == 3 else 502) == caught.value.status_code


async def test_endpoint_408_is_not_retried(loopback_server: StartServer) -> None:
    """The endpoint's own 408 (model ran past request_timeout_ms) is RequestTimeoutError, not retried."""
    server = await loopback_server(scripted(Reply(status=408), OUTPUT))
    async with connect(server) as client:
        with pytest.raises(RequestTimeoutError):
            await client.chat(HI)
    assert 1 == len(server.requests)


async def test_a_retried_call_logs_one_info_line(
    loopback_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    """One retry logs exactly one INFO line from ``azureml_chat`` naming the status and the wait."""
    caplog.set_level(logging.INFO, logger="azureml_chat")
    server = await loopback_server(scripted(Reply(status=503, headers={"retry-after-ms": "10"}), OUTPUT))
    async with connect(server) as client:
        await client.chat(HI)
    lines = [r for r in caplog.records if r.name == "azureml_chat" and r.levelno >= logging.INFO]
    assert 1 == len(lines)
    assert logging.INFO == lines[0].levelno
    assert "503" in lines[0].getMessage()
    assert "0.01" in lines[0].getMessage()


# --- connection failures and timeouts --------------------------------------------------------------------------------


async def test_connection_refused_is_an_api_connection_error(closed_port: int) -> None:
    """A refused connection is retried, then raised as APIConnectionError after every attempt."""
    async with AsyncChatClient(f"http://127.0.0.1:{closed_port}/score", KEY, retry=FAST) as client:
        with pytest.raises(APIConnectionError) as caught:
            await client.chat(HI)
    assert not isinstance(caught.value, APITimeoutError)
    assert 3 == caught.value.attempts


async def stall_before_headers(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(5)
    return web.json_response({"output": "too late"})


async def stall_mid_body(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    await response.write(b'{"output": "par')
    await asyncio.sleep(5)
    await response.write(b'tial"}')
    return response


async def test_connect_timeout_covers_the_wait_for_a_pooled_connection(loopback_server: StartServer) -> None:
    """With the pool full, a call that cannot get a connection within ``connect`` gives APITimeoutError."""
    server = await loopback_server(scripted(Reply(json={"output": "slow"}, delay=0.3)))
    timeout = Timeout(connect=0.05, read=None, total=None)
    async with connect(server, max_connections=1, max_retries=0, timeout=timeout) as client:
        first, second = await asyncio.gather(client.chat(HI), client.chat(HI), return_exceptions=True)
    assert isinstance(first, ChatResponse)
    assert "slow" == first.content
    assert isinstance(second, APITimeoutError)
    assert "connect" in str(second)
    assert 1 == len(server.requests)


async def test_dropped_connection_is_retried(loopback_server: StartServer) -> None:
    """A connection the server drops before answering is an APIConnectionError, retried into a success."""
    calls = 0

    async def drop_first(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        if calls == 1:
            assert request.transport is not None
            request.transport.close()
        return web.json_response({"output": "second try"})

    server = await loopback_server(drop_first)
    async with connect(server) as client:
        assert "second try" == (await client.chat(HI)).content
    assert 2 == len(server.requests)


async def test_dropped_connection_without_retries(loopback_server: StartServer) -> None:
    """With retries off, a dropped connection surfaces as APIConnectionError (not a bare aiohttp error)."""

    async def drop(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.close()
        return web.json_response({"output": "never"})

    server = await loopback_server(drop)
    async with connect(server, max_retries=0) as client:
        with pytest.raises(APIConnectionError):
            await client.chat(HI)


async def test_huge_error_body_is_read_bounded(loopback_server: StartServer) -> None:
    """A multi-megabyte error page is cut to a bounded excerpt in the error."""
    server = await loopback_server(scripted(Reply(status=500, body="E" * 3_000_000)))
    async with connect(server, max_retries=0) as client:
        with pytest.raises(InternalServerError) as caught:
            await client.chat(HI)
    assert isinstance(caught.value.body, str)
    assert caught.value.body.startswith("EEEE")
    assert len(caught.value.body) < 100_000
    assert len(str(caught.value)) < 2_000


async def test_cancelled_call_releases_its_connection(loopback_server: StartServer) -> None:
    """Cancelling a call in flight closes its connection, and the client stays usable."""
    arrived = asyncio.Event()

    async def stall_first(request: web.Request) -> web.StreamResponse:
        if not arrived.is_set():
            arrived.set()
            await asyncio.sleep(5)
        return web.json_response({"output": "Hello!"})

    server = await loopback_server(stall_first)
    async with connect(server) as client:
        call = asyncio.create_task(client.chat(HI))
        await arrived.wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert await closed_within(server.transports[0])
        assert "Hello!" == (await client.chat(HI)).content


async def test_retry_waits_as_long_as_the_server_asks(loopback_server: StartServer) -> None:
    """A demanded ``retry-after-ms: 150`` is slept through even though the backoff cap is 10 ms."""
    server = await loopback_server(scripted(Reply(status=503, headers={"retry-after-ms": "150"}), OUTPUT))
    async with connect(server) as client:
        started = asyncio.get_running_loop().time()
        await client.chat(HI)
        elapsed = asyncio.get_running_loop().time() - started
    assert elapsed >= 0.15
    assert 2 == len(server.requests)


async def test_total_timeout(loopback_server: StartServer) -> None:
    """A server that does not answer within ``total`` gives APITimeoutError."""
    server = await loopback_server(stall_before_headers)
    async with connect(server, timeout=Timeout(total=0.1, read=None), max_retries=0) as client:
        with pytest.raises(APITimeoutError, match="total"):
            await client.chat(HI)


async def test_read_timeout_between_body_bytes(loopback_server: StartServer) -> None:
    """A body that stalls longer than ``read`` after the headers arrived gives APITimeoutError."""
    server = await loopback_server(stall_mid_body)
    async with connect(server, timeout=Timeout(read=0.1, total=None), max_retries=0) as client:
        with pytest.raises(APITimeoutError, match="read"):
            await client.chat(HI)


async def test_client_timeouts_are_retried(loopback_server: StartServer) -> None:
    """A timed-out attempt is retried; the next, prompt answer is returned."""
    server = await loopback_server(scripted(Reply(json={"output": "late"}, delay=5), OUTPUT))
    async with connect(server, timeout=Timeout(total=0.1, read=None)) as client:
        assert "Hello!" == (await client.chat(HI)).content
    assert 2 == len(server.requests)


async def test_per_call_timeout_shorter_than_the_clients(loopback_server: StartServer) -> None:
    """A short per-call timeout applies even though the client's is long."""
    server = await loopback_server(stall_before_headers)
    async with connect(server, timeout=30, max_retries=0) as client:
        with pytest.raises(APITimeoutError):
            await client.chat(HI, timeout=0.1)


async def test_per_call_timeout_longer_than_the_clients(loopback_server: StartServer) -> None:
    """A longer per-call timeout lets a slow answer through that the client's timeout would cut."""
    server = await loopback_server(scripted(Reply(json={"output": "slow"}, delay=0.3)))
    async with connect(server, timeout=0.05, max_retries=0) as client:
        assert "slow" == (await client.chat(HI, timeout=Timeout(total=5, read=5))).content
        with pytest.raises(APITimeoutError):
            await client.chat(HI)


# --- error details -------------------------------------------------------------------------------------------------------


async def test_status_error_details(loopback_server: StartServer) -> None:
    """A non-2xx error carries the status, the server's request id, the parsed body and the endpoint's message."""
    body = {"error": {"code": "ServiceUnavailable", "message": "Model is overloaded"}}
    server = await loopback_server(scripted(Reply(status=503, json=body, headers={"x-request-id": "srv-77"})))
    async with connect(server, max_retries=0) as client:
        with pytest.raises(InternalServerError) as caught:
            await client.chat(HI)
    error = caught.value
    assert (503, "srv-77", body) == (error.status_code, error.request_id, error.body)
    assert "Model is overloaded" in error.message
    assert "srv-77" in str(error)


async def test_model_error_details(loopback_server: StartServer) -> None:
    """A 424 exposes the container's status and reason."""
    headers = {"ms-azureml-model-error-statuscode": "400", "ms-azureml-model-error-reason": "model_error"}
    server = await loopback_server(
        scripted(Reply(status=424, json={"message": "bad prompt"}, headers=headers))
    )
    async with connect(server) as client:
        with pytest.raises(ModelError) as caught:
            await client.chat(HI)
    assert (400, "model_error") == (caught.value.inner_status_code, caught.value.inner_reason)
    assert "bad prompt" in str(caught.value)


async def test_401_is_an_authentication_error(loopback_server: StartServer) -> None:
    """A 401 is AuthenticationError with the endpoint's message, sent once."""
    body = {"error": "Unauthorized", "message": "Key based authentication failed", "status": 401}
    server = await loopback_server(scripted(Reply(status=401, json=body)))
    async with connect(server) as client:
        with pytest.raises(AuthenticationError, match="Key based authentication failed"):
            await client.chat(HI)
    assert 1 == len(server.requests)


@pytest.mark.parametrize(
    "reply",
    [
        Reply(body="<html><body>Welcome to nginx</body></html>", headers={"Content-Type": "text/html"}),
        Reply(body='{"output": "cut off', headers={"Content-Type": "application/json"}),
        Reply(body=b"", headers={"Content-Type": "application/json"}),
        Reply(json=COMPLETION),
        Reply(json='{"output": "cut'),
        Reply(json="just a string"),
    ],
    ids=["html", "truncated-json", "empty", "wrong-family", "double-encoded-truncated", "json-string"],
)
async def test_bad_2xx_body_is_a_response_format_error(loopback_server: StartServer, reply: Reply) -> None:
    """A 2xx body that is not JSON, or not the formatter's shape, is a ResponseFormatError naming the formatter."""
    server = await loopback_server(scripted(reply))
    async with connect(server) as client:
        with pytest.raises(ResponseFormatError) as caught:
            await client.chat(HI)
    assert "llama" == caught.value.formatter
    assert 1 == len(server.requests)


async def test_wrong_family_error_suggests_the_right_one(loopback_server: StartServer) -> None:
    """An OpenAI completion from a /score deployment suggests ``formatter='openai'``."""
    server = await loopback_server(scripted(Reply(json=COMPLETION)))
    async with connect(server) as client:
        with pytest.raises(ResponseFormatError, match="formatter='openai'"):
            await client.chat(HI)


async def test_double_encoded_json_body_is_decoded(loopback_server: StartServer) -> None:
    """A 2xx body that is a JSON string holding JSON (custom score.py) is decoded."""
    server = await loopback_server(scripted(Reply(json=json.dumps({"output": "inner"}))))
    async with connect(server) as client:
        assert "inner" == (await client.chat(HI)).content


async def test_response_request_id(loopback_server: StartServer) -> None:
    """The response's request id is the server's ``x-request-id``, else the client request id that was sent."""
    server = await loopback_server(
        scripted(Reply(json={"output": "a"}, headers={"x-request-id": "srv-1"}), Reply(json={"output": "b"}))
    )
    async with connect(server) as client:
        first = await client.chat(HI)
        second = await client.chat(HI)
    assert "srv-1" == first.request_id
    assert server.requests[1].headers["x-ms-client-request-id"] == second.request_id


async def test_a_custom_parser_s_answer_is_copied_not_stamped(loopback_server: StartServer) -> None:
    """The package's own parsers build a new answer per call, which is stamped in place; an answer from a
    formatter's own ``parse_response`` may be shared, so it gets the request id on a copy and stays untouched."""

    shared = ChatResponse(message=AssistantMessage("canned"))

    class Canned(LlamaFormatter):
        def parse_response(self, route: Route, body: Any) -> ChatResponse:
            return shared

    server = await loopback_server(scripted(Reply(json={"output": "a"}, headers={"x-request-id": "srv-1"})))
    async with connect(server, formatter=Canned()) as client:
        answer = await client.chat(HI)
    assert ("canned", "srv-1") == (answer.content, answer.request_id)
    assert shared.request_id is None
    assert answer is not shared


# --- session lifecycle ------------------------------------------------------------------------------------------------


async def closed_within(transport: asyncio.BaseTransport, seconds: float = 2.0) -> bool:
    """Whether the server side of a connection sees it closed within ``seconds``."""
    for _ in range(int(seconds / 0.01)):
        if transport.is_closing():
            return True
        await asyncio.sleep(0.01)
    return False


def open_pool(client: AsyncChatClient, server: LoopbackServer) -> tuple[Any, Any, asyncio.BaseTransport]:
    """The client's session, its connector, and the server side of the one pooled connection (still open)."""
    session = client._pipeline.transport._session
    assert session is not None
    connector = session.connector
    assert connector is not None
    (transport,) = set(server.transports)
    assert not transport.is_closing()  # keep-alive: the pooled connection stays open until the client closes
    return session, connector, transport


async def test_async_with_releases_every_connection(loopback_server: StartServer) -> None:
    """Leaving ``async with`` closes the session and connector, and the server sees the connection closed."""
    server = await loopback_server(scripted(OUTPUT))
    async with connect(server) as client:
        await client.chat(HI)
        session, connector, transport = open_pool(client, server)
    assert (True, True, True) == (session.closed, connector.closed, client.closed)
    assert await closed_within(transport)


async def test_aclose_releases_every_connection(loopback_server: StartServer) -> None:
    """``aclose()`` (safe to call twice) closes the session and connector, and the server sees the connection closed."""
    server = await loopback_server(scripted(OUTPUT))
    client = connect(server)
    await client.chat(HI)
    session, connector, transport = open_pool(client, server)
    await client.aclose()
    await client.aclose()
    assert (True, True, True) == (session.closed, connector.closed, client.closed)
    assert await closed_within(transport)


async def test_callers_session_is_not_closed(loopback_server: StartServer) -> None:
    """A ``session=`` the caller owns stays open and usable after the client is closed."""
    server = await loopback_server(scripted(OUTPUT))
    async with aiohttp.ClientSession() as session:
        async with connect(server, session=session) as client:
            await client.chat(HI)
        assert not session.closed
        async with session.post(server.url(), json={}) as response:
            assert 200 == response.status
    assert 2 == len(server.requests)


async def test_a_closed_client_cannot_be_used(loopback_server: StartServer) -> None:
    """Calling, or re-entering, a closed client raises instead of silently opening a new session."""
    server = await loopback_server(scripted(OUTPUT))
    client = connect(server)
    async with client:
        await client.chat(HI)
    with pytest.raises(RuntimeError, match="closed"):
        await client.chat(HI)
    with pytest.raises(RuntimeError, match="closed"):
        async with client:
            pass
    assert 1 == len(server.requests)


async def test_concurrent_calls_share_one_session(loopback_server: StartServer) -> None:
    """Concurrent calls on one client all succeed over the one session it owns."""
    server = await loopback_server(scripted(Reply(json={"output": "x"}, delay=0.02)))
    async with connect(server) as client:
        responses = await asyncio.gather(*(client.chat(HI) for _ in range(10)))
        session = client._pipeline.transport._session
        assert session is not None
    assert ["x"] * 10 == [response.content for response in responses]
    assert 10 == len(server.requests)
    assert session.closed


# --- the key never shows ------------------------------------------------------------------------------------------------


async def test_key_never_appears_in_reprs_errors_or_logs(
    loopback_server: StartServer, closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """``repr(client)``, every error text and every log record (DEBUG, over retried failing calls) are free of the key."""
    caplog.set_level(logging.DEBUG)
    server = await loopback_server(
        scripted(
            Reply(status=503, json={"message": "busy"}),
            Reply(status=503, json={"message": "busy"}),
            Reply(status=503, json={"message": "busy"}),
            Reply(status=401, json={"message": "denied"}),
            OUTPUT,
            Reply(json={"output": "x"}, delay=5),
        )
    )
    errors: list[BaseException] = []
    async with connect(server, auth_header="both", timeout=Timeout(total=0.05, read=None)) as client:
        assert KEY not in repr(client)
        for _ in range(2):  # 503 (retried, then raised), then 401
            with pytest.raises(Exception) as caught:
                await client.chat(HI)
            errors.append(caught.value)
        assert KEY not in repr(await client.chat(HI))
        with pytest.raises(APITimeoutError) as timed_out:  # retried, then raised
            await client.chat(HI)
        errors.append(timed_out.value)
    async with AsyncChatClient(f"http://127.0.0.1:{closed_port}/score", KEY, retry=FAST) as refused:
        with pytest.raises(APIConnectionError) as caught:
            await refused.chat(HI)
        errors.append(caught.value)
    assert [InternalServerError, AuthenticationError, APITimeoutError, APIConnectionError] == [
        type(e) for e in errors
    ]
    for error in errors:
        assert KEY not in str(error)
        assert KEY not in repr(error)
        assert KEY not in repr(getattr(error, "headers", ""))
    assert caplog.records, "the retried calls should have logged"
    for record in caplog.records:
        assert KEY not in record.getMessage()
        assert KEY not in repr(record.args)
    assert KEY == server.requests[0].headers["api-key"]  # the key did go where it belongs


async def test_key_is_not_sent_to_another_origin_on_redirect(loopback_server: StartServer) -> None:
    """A 307 to another origin never carries the key there, in any header (redirect refused or key stripped)."""
    elsewhere = await loopback_server(scripted(OUTPUT))

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPTemporaryRedirect(elsewhere.url())

    endpoint = await loopback_server(redirect)
    async with connect(endpoint, auth_header="both", max_retries=0) as client:
        with contextlib.suppress(AzureMLChatError):
            await client.chat(HI)
    assert 1 == len(endpoint.requests)
    leaked = [(name, value) for r in elsewhere.requests for name, value in r.headers.items() if KEY in value]
    assert [] == leaked


@pytest.mark.parametrize("bad", [5, "x-header", ["a", "b"]], ids=["int", "str", "list"])
async def test_extra_headers_must_be_a_mapping(bad: Any) -> None:
    """extra_headers that is not a mapping is an InvalidRequestError, not an AttributeError."""
    async with AsyncChatClient("http://127.0.0.1:9/v1/chat/completions", KEY) as client:
        with pytest.raises(InvalidRequestError, match="extra_headers must be a mapping"):
            await client.chat(HI, extra_headers=bad)


async def test_a_client_used_from_another_thread_s_loop_says_so() -> None:
    """While its own loop runs, a client called from a loop in another thread is refused clearly (the quick
    same-loop test must not let it through)."""
    client = AsyncChatClient("http://127.0.0.1:9/score", KEY, max_retries=0)
    try:
        client._pipeline.transport.session()  # bound to this (running) loop

        def elsewhere() -> str:
            async def call() -> str:
                try:
                    await client.chat(HI)
                except RuntimeError as exc:
                    return str(exc)
                return "no error"

            return asyncio.run(call())

        message = await asyncio.to_thread(elsewhere)
        assert "bound to the event loop it first ran in" in message
        assert (
            client._pipeline.transport.session() is client._pipeline.transport.session()
        )  # and still fine here
    finally:
        await client.aclose()


def test_a_client_used_from_a_second_event_loop_says_so() -> None:
    """asyncio.run() twice with one client: the second run gets a clear RuntimeError, not aiohttp's."""
    script = textwrap.dedent(
        """
        import asyncio
        from azureml_chat import AsyncChatClient, UserMessage
        client = AsyncChatClient("http://127.0.0.1:9/score", "key", max_retries=0)
        async def first():
            client._pipeline.transport.session()  # what the first call does: bind the session to this loop
        async def second():
            try:
                await client.chat([UserMessage("hi")])
            except RuntimeError as exc:
                print(exc)
        asyncio.run(first())
        asyncio.run(second())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert "bound to the event loop it first ran in" in done.stdout, done.stderr
