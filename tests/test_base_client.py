"""Construction, siblings and closing (``_base_client.py``): ``with_options``, ``transport=``, and what siblings
share."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from azureml_chat import (
    AsyncChatClient,
    ClientClosedError,
    ConfigurationError,
    RateLimit,
    Timeout,
    UserMessage,
)
from azureml_chat._transport import AiohttpTransport, Request
from azureml_chat.testing import MockResponse, MockTransport

URL = "https://example.inference.ml.azure.com/v1/chat/completions"
HI = [UserMessage("hi")]
ANSWER = {"choices": [{"message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}]}


def answer(request: Request) -> MockResponse:
    return MockResponse(200, json=ANSWER)


async def test_a_sibling_has_the_changes_and_everything_else_of_its_parent() -> None:
    """``with_options`` changes what it is given and keeps the rest (URL, key, deployment, formatter)."""
    async with AsyncChatClient(URL, "key", deployment="blue", transport=MockTransport(answer)) as client:
        sibling = client.with_options(timeout=5, max_retries=0)
        assert (URL, "blue", "openai") == (sibling.endpoint_url, sibling.deployment, sibling.formatter.name)
        assert Timeout.coerce(5) == sibling.timeout
        assert 0 == sibling._config.retry.max_retries
        assert client.timeout != sibling.timeout


async def test_a_sibling_shares_the_pool_and_the_limiter() -> None:
    """A sibling uses its parent's connection pool and rate limiter (one RateLimit, enforced once)."""
    async with AsyncChatClient(URL, "key", rate_limit=RateLimit(max_concurrency=2)) as client:
        sibling = client.with_options(timeout=5)
        assert client._pipeline.transport is sibling._pipeline.transport
        assert client._pipeline.router.first.limiter is sibling._pipeline.router.first.limiter


async def test_a_sibling_with_its_own_rate_limit_or_pool_gets_its_own() -> None:
    """Giving a sibling a new ``rate_limit`` or pool size gives it its own limiter or pool."""
    async with AsyncChatClient(URL, "key") as client:
        paced = client.with_options(rate_limit=RateLimit(requests_per_minute=60))
        sized = client.with_options(max_connections=4)
        assert client._pipeline.router.first.limiter is not paced._pipeline.router.first.limiter
        assert client._pipeline.transport is not sized._pipeline.transport
        await sized.aclose()


async def test_a_rate_limit_is_enforced_once_across_a_client_and_its_siblings() -> None:
    """With ``max_concurrency=1``, calls made through a client and its sibling never overlap."""
    in_flight, most = 0, 0

    async def slow(request: Request) -> MockResponse:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return MockResponse(200, json=ANSWER)

    transport = MockTransport(slow)
    async with AsyncChatClient(
        URL, "key", transport=transport, rate_limit=RateLimit(max_concurrency=1)
    ) as client:
        sibling = client.with_options(timeout=30)
        await asyncio.gather(*(c.chat(HI) for c in (client, sibling, client, sibling)))
    assert 1 == most


async def test_closing_a_sibling_leaves_its_parent_open() -> None:
    """A sibling's ``aclose`` does not close the pool it shares; the parent's closes both."""
    async with AsyncChatClient(URL, "key", transport=MockTransport(answer)) as client:
        sibling = client.with_options(timeout=5)
        await sibling.aclose()
        assert sibling.closed
        assert not client.closed
        assert "hello" == (await client.chat(HI)).content


async def test_closing_the_parent_closes_the_shared_pool() -> None:
    """A sibling of a closed client reports closed and refuses ``async with``."""
    client = AsyncChatClient(URL, "key")
    sibling = client.with_options(timeout=5)
    await client.aclose()
    assert sibling.closed
    with pytest.raises(ClientClosedError, match="closed"):
        async with sibling:
            pass


def test_with_options_refuses_what_the_constructor_refuses() -> None:
    """An unknown option, or a bad value, raises ConfigurationError as the constructor would."""
    client = AsyncChatClient(URL, "key")
    with pytest.raises(ConfigurationError, match="unknown option"):
        client.with_options(temprature=0.1)  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError, match="max_retries"):
        client.with_options(max_retries=-1)


def test_a_transport_must_have_the_transport_protocol() -> None:
    """``transport=`` takes an object with async send/open/aclose, and not together with ``session=``."""
    with pytest.raises(ConfigurationError, match="send"):
        AsyncChatClient(URL, "key", transport=object())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="not both"):
        AsyncChatClient(URL, "key", transport=AiohttpTransport(), session=object())  # type: ignore[arg-type]


async def test_a_transport_you_pass_stays_open() -> None:
    """Closing the client leaves a transport the caller passed in untouched (it is theirs)."""
    transport = MockTransport(answer)
    async with AsyncChatClient(URL, "key", transport=transport) as client:
        await client.chat(HI)
    assert not transport.closed


async def test_the_client_owns_and_closes_its_default_transport() -> None:
    """Without ``transport=``, the client's aiohttp pool is closed by ``aclose``."""
    client = AsyncChatClient(URL, "key")
    transport: Any = client._pipeline.transport
    assert isinstance(transport, AiohttpTransport)
    await client.aclose()
    assert transport.closed
