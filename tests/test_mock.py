"""``MockTransport`` and ``MockResponse`` (``_mock.py``): what a handler receives and what it can answer."""

from __future__ import annotations

import json
from typing import Any

import pytest

from azureml_chat import AsyncChatClient, BadRequestError, UserMessage
from azureml_chat._transport import Request
from azureml_chat.testing import MockResponse, MockTransport

URL = "https://example.inference.ml.azure.com/score"


async def test_the_handler_sees_the_request_as_sent() -> None:
    """The handler gets the method, the URL, the headers and the body (bytes and parsed) of the request."""
    seen: list[Request] = []

    def handler(request: Request) -> MockResponse:
        seen.append(request)
        return MockResponse(200, json={"output": "ok"})

    async with AsyncChatClient(URL, "secret", transport=MockTransport(handler)) as client:
        response = await client.chat([UserMessage("hi")], max_tokens=3)
    (request,) = seen
    assert "ok" == response.content
    assert ("POST", URL) == (request.method, request.url)
    assert "Bearer secret" == request.headers["authorization"]
    expected = {
        "input_data": {
            "input_string": [{"role": "user", "content": "hi"}],
            "parameters": {"max_new_tokens": 3},
        }
    }
    assert expected == request.json()
    assert expected == json.loads(request.content)


async def test_an_async_handler_is_awaited() -> None:
    """A coroutine function works as a handler."""

    async def handler(request: Request) -> MockResponse:
        return MockResponse(200, json={"output": "async"})

    async with AsyncChatClient(URL, "key", transport=MockTransport(handler)) as client:
        assert "async" == (await client.chat([UserMessage("hi")])).content


async def test_a_status_from_the_handler_becomes_the_typed_error() -> None:
    """A 400 with an error body raises BadRequestError with the endpoint's message and headers."""

    def handler(request: Request) -> MockResponse:
        return MockResponse(400, json={"error": {"message": "bad input"}}, headers={"X-Request-Id": "rid"})

    async with AsyncChatClient(URL, "key", transport=MockTransport(handler)) as client:
        with pytest.raises(BadRequestError, match="bad input") as caught:
            await client.chat([UserMessage("hi")])
    assert "rid" == caught.value.request_id


def test_a_response_sets_the_content_type_that_fits_its_body() -> None:
    """JSON bodies say application/json, iterables say text/event-stream, given headers win; text is UTF-8."""
    assert "application/json" == MockResponse(200, json={}).headers["content-type"]
    assert "text/event-stream" == MockResponse(200, content=[b"data: x\n\n"]).headers["Content-Type"]
    assert (
        "text/plain"
        == MockResponse(200, content=[b"x"], headers={"Content-Type": "text/plain"}).headers["content-type"]
    )
    assert "é".encode() == MockResponse(200, content="é").content


@pytest.mark.parametrize(
    ("status", "options"),
    [(99, {}), (600, {}), (True, {}), (200, {"json": {}, "content": b"x"})],
)
def test_a_response_refuses_what_it_cannot_be(status: Any, options: dict[str, Any]) -> None:
    """A status outside 100-599 (or not a whole number), or both json and content, is a TypeError."""
    with pytest.raises(TypeError):
        MockResponse(status, **options)


async def test_a_handler_that_returns_something_else_is_a_clear_error() -> None:
    """A handler must return a MockResponse; anything else says so."""
    transport = MockTransport(lambda request: {"output": "x"})  # type: ignore[arg-type,return-value]
    async with AsyncChatClient(URL, "key", transport=transport) as client:
        with pytest.raises(TypeError, match="MockResponse"):
            await client.chat([UserMessage("hi")])
