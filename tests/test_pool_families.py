"""A pool that mixes model families, against real emulators on 127.0.0.1: a dedicated Llama ``/score`` endpoint with
a serverless chat-completions fallback (issue 16 item 1). Each attempt's body is in its own endpoint's shape, and a
call only one family can carry goes where it can."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from azureml_chat import AsyncChatClient, Endpoint, InvalidRequestError, UserMessage
from azureml_chat.emulator import Emulator
from azureml_chat.testing import fast_retry

KEY = "test-key"
HI = [UserMessage("hi")]
TOOLS = [
    {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}
]


@pytest.fixture
async def servers() -> AsyncIterator[tuple[Emulator, Emulator]]:
    """A dedicated endpoint (served on /score) and a serverless one (on /v1/chat/completions)."""
    async with Emulator(key=KEY) as dedicated, Emulator(key=KEY) as serverless:
        yield dedicated, serverless


def client_for(dedicated: Emulator, serverless: Emulator) -> AsyncChatClient:
    """Dedicated Llama /score first, serverless chat completions as the fallback."""
    return AsyncChatClient(
        endpoints=[
            Endpoint(dedicated.score_url, KEY, name="dedicated"),
            Endpoint(serverless.chat_url, KEY, name="serverless", priority=1),
        ],
        retry=fast_retry(2),
    )


async def test_each_attempt_is_built_in_its_own_endpoints_shape(servers: tuple[Emulator, Emulator]) -> None:
    """A 503 on /score fails over: /score got the Llama input_data body, the fallback the chat-completions one."""
    dedicated, serverless = servers
    dedicated.add_fault("status=503,times=1")
    async with client_for(dedicated, serverless) as client:
        answer = await client.chat(HI, temperature=0.5)
    (scored,), (chatted,) = dedicated.requests, serverless.requests
    assert ("serverless", "/score", "/v1/chat/completions") == (answer.endpoint, scored.path, chatted.path)
    assert {
        "input_data": {
            "input_string": [{"role": "user", "content": "hi"}],
            "parameters": {"temperature": 0.5},
        }
    } == (scored.body)
    assert {"messages": [{"role": "user", "content": "hi"}], "temperature": 0.5} == chatted.body


async def test_a_call_only_one_family_can_carry_goes_to_that_endpoint(
    servers: tuple[Emulator, Emulator],
) -> None:
    """tools=, which Llama's /score cannot carry, goes straight to the chat-completions fallback; plain calls
    still go to /score first."""
    dedicated, serverless = servers
    async with client_for(dedicated, serverless) as client:
        with_tools = await client.chat(HI, tools=TOOLS)
        plain = await client.chat(HI)
    assert ("serverless", "dedicated") == (with_tools.endpoint, plain.endpoint)
    assert (1, TOOLS) == (len(dedicated.requests), serverless.requests[0].body["tools"])


async def test_a_call_no_endpoint_can_carry_is_refused_before_sending(
    servers: tuple[Emulator, Emulator],
) -> None:
    """With two /score endpoints, tools= raises InvalidRequestError and neither server sees a request."""
    first, second = servers
    endpoints = [Endpoint(first.score_url, KEY, name="first"), Endpoint(second.score_url, KEY, name="second")]
    async with AsyncChatClient(endpoints=endpoints, retry=fast_retry(2)) as client:
        with pytest.raises(InvalidRequestError):
            await client.chat(HI, tools=TOOLS)
    assert ([], []) == (first.requests, second.requests)


async def test_a_stream_fails_over_from_score_to_a_streaming_endpoint(
    servers: tuple[Emulator, Emulator],
) -> None:
    """A stream whose /score attempt fails with 503 is opened on the chat-completions fallback, which streams."""
    dedicated, serverless = servers
    dedicated.add_fault("status=503,times=1")
    async with client_for(dedicated, serverless) as client, client.stream(HI) as stream:
        chunks = [chunk async for chunk in stream]
    assert ("serverless", True) == (stream.final_response().endpoint, len(chunks) > 1)
    assert (False, True) == (dedicated.requests[0].stream, serverless.requests[0].stream)
