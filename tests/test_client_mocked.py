"""Request/response unit tests of AsyncChatClient.chat() with aiohttp mocked by aioresponses.

aioresponses 0.7.9 breaks on aiohttp 3.14 (it builds ClientResponse objects itself), so this module runs only where
the ``test-aioresponses`` extra is installed (CI's second job); the loopback tests in ``test_client.py`` cover the
same paths on every aiohttp.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from aioresponses import aioresponses
from yarl import URL

from azureml_chat import (
    AssistantMessage,
    AsyncChatClient,
    AuthenticationError,
    ChatResponse,
    InternalServerError,
    ModelError,
    RetryPolicy,
    SystemMessage,
    ToolCall,
    Usage,
    UserMessage,
)

pytestmark = [pytest.mark.aioresponses, pytest.mark.usefixtures("hermetic_env")]

KEY = "sk-mocked-51c0a2"
SCORE = "https://my-endpoint.eastus2.inference.ml.azure.com/score"
SERVERLESS = "https://Meta-Llama-3-8B-abcd.eastus2.models.ai.azure.com/v1/chat/completions"
FAST = RetryPolicy(initial_delay=0.001, max_delay=0.01)


@pytest.fixture
def mocked() -> Iterator[aioresponses]:
    with aioresponses() as mock:
        yield mock


def sent(mock: aioresponses, url: str) -> list[Any]:
    """The calls aiohttp was asked to make to ``url``."""
    return mock.requests[("POST", URL(url))]


def sent_json(call: Any) -> Any:
    return json.loads(call.kwargs["data"])


async def test_score_request_and_response(mocked: aioresponses) -> None:
    """A /score call sends the llama body with a Bearer key and parses ``{"output": ...}``."""
    mocked.post(SCORE, payload={"output": "Paris."}, headers={"x-request-id": "req-1"})
    async with AsyncChatClient(SCORE, KEY) as client:
        response = await client.chat(
            [SystemMessage("Answer in one word."), UserMessage("Capital of France?")], temperature=0.0
        )
    assert ChatResponse(message=AssistantMessage("Paris."), request_id="req-1") == response
    (call,) = sent(mocked, SCORE)
    assert {
        "input_data": {
            "input_string": [
                {"role": "system", "content": "Answer in one word."},
                {"role": "user", "content": "Capital of France?"},
            ],
            "parameters": {"temperature": 0.0},
        }
    } == sent_json(call)
    assert f"Bearer {KEY}" == call.kwargs["headers"]["authorization"]


async def test_serverless_tool_call_response(mocked: aioresponses) -> None:
    """A serverless completion that only calls tools yields null content, the tool calls and the usage."""
    body = {
        "id": "cmpl-7",
        "model": "Meta-Llama-3-8B-Instruct",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                        }
                    ],
                },
            }
        ],
        "usage": {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29},
    }
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    mocked.post(SERVERLESS, payload=body)
    async with AsyncChatClient(SERVERLESS, KEY) as client:
        response = await client.chat([UserMessage("Weather in Paris?")], tools=[tool], tool_choice="auto")
    assert response.content is None
    assert "tool_calls" == response.finish_reason
    assert (ToolCall("call_1", "get_weather", '{"city": "Paris"}'),) == response.tool_calls
    assert Usage(20, 9, 29) == response.usage
    assert {
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [tool],
        "tool_choice": "auto",
    } == sent_json(sent(mocked, SERVERLESS)[0])


async def test_401_maps_to_authentication_error(mocked: aioresponses) -> None:
    """A 401 with the documented serverless body is AuthenticationError carrying the endpoint's message."""
    mocked.post(
        SERVERLESS,
        status=401,
        payload={"error": "Unauthorized", "message": "Invalid key", "status": 401},
        headers={"x-request-id": "req-401"},
    )
    async with AsyncChatClient(SERVERLESS, KEY, retry=FAST) as client:
        with pytest.raises(AuthenticationError) as caught:
            await client.chat([UserMessage("hi")])
    assert (401, "req-401") == (caught.value.status_code, caught.value.request_id)
    assert "Invalid key" in str(caught.value)
    assert 1 == len(sent(mocked, SERVERLESS))


async def test_retry_then_success(mocked: aioresponses) -> None:
    """A 503 then a 200: the call succeeds after two requests with the same client request id."""
    mocked.post(SCORE, status=503)
    mocked.post(SCORE, payload={"output": "ok"})
    async with AsyncChatClient(SCORE, KEY, retry=FAST) as client:
        assert "ok" == (await client.chat([UserMessage("hi")])).content
    first, second = sent(mocked, SCORE)
    assert (
        first.kwargs["headers"]["x-ms-client-request-id"]
        == second.kwargs["headers"]["x-ms-client-request-id"]
    )


async def test_424_inner_status_not_retried(mocked: aioresponses) -> None:
    """A 424 whose container answered 400 is raised at once as ModelError with the inner status."""
    mocked.post(
        SCORE,
        status=424,
        payload={"message": "input too long"},
        headers={"ms-azureml-model-error-statuscode": "400", "ms-azureml-model-error-reason": "model_error"},
    )
    async with AsyncChatClient(SCORE, KEY, retry=FAST) as client:
        with pytest.raises(ModelError) as caught:
            await client.chat([UserMessage("hi")])
    assert (400, "model_error") == (caught.value.inner_status_code, caught.value.inner_reason)
    assert 1 == len(sent(mocked, SCORE))


async def test_exhausted_retries_count_attempts(mocked: aioresponses) -> None:
    """Three 500s with max_retries=2: InternalServerError after 3 requests, ``attempts == 3``."""
    mocked.post(SCORE, status=500, repeat=True)
    async with AsyncChatClient(SCORE, KEY, retry=FAST) as client:
        with pytest.raises(InternalServerError) as caught:
            await client.chat([UserMessage("hi")])
    assert 3 == caught.value.attempts
    assert 3 == len(sent(mocked, SCORE))
