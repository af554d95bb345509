"""Entra ID / token credentials: caching, refresh ahead of expiry, one shared refresh, 401 refresh-once."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
from aiohttp import web
from loopback import completion, serve

from azureml_chat import AsyncChatClient, AuthenticationError, ConfigurationError, UserMessage
from azureml_chat._auth import DEFAULT_SCOPE, TokenProvider

HI = [UserMessage("hi")]


@attrs.frozen
class AccessToken:
    token: str
    expires_on: int


class AsyncCredential:
    """Counts get_token calls; hands out token-1, token-2, ... expiring after ``lifetime`` seconds."""

    def __init__(self, lifetime: float = 3600) -> None:
        self.calls = 0
        self.scopes: list[str] = []
        self.lifetime = lifetime

    async def get_token(self, *scopes: str) -> AccessToken:
        self.calls += 1
        self.scopes.extend(scopes)
        await asyncio.sleep(0.01)  # a real credential does I/O; concurrent callers pile up here
        return AccessToken(f"token-{self.calls}", int(time.time() + self.lifetime))


class SyncCredential:
    """An azure-identity-style sync credential recording which thread called it."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []

    def get_token(self, *scopes: str) -> AccessToken:
        self.threads.append(threading.current_thread())
        return AccessToken("sync-token", int(time.time() + 3600))


@pytest.fixture
async def endpoint() -> AsyncIterator[tuple[str, list[str], set[str]]]:
    """A server that accepts the bearer tokens in ``valid`` and records every Authorization header."""
    seen: list[str] = []
    valid: set[str] = set()

    async def handler(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        seen.append(auth)
        if auth.removeprefix("Bearer ") not in valid:
            return web.json_response(
                {"error": {"code": "Unauthorized", "message": "token expired"}}, status=401
            )
        return web.json_response(completion())

    async for url in serve({"/v1/chat/completions": handler}):
        yield url + "/v1/chat/completions", seen, valid


async def test_async_credential_token_is_cached(endpoint: tuple[str, list[str], set[str]]) -> None:
    """A token with a distant expiry is fetched once for many calls, with the Azure ML scope."""
    url, seen, valid = endpoint
    valid.add("token-1")
    credential = AsyncCredential()
    async with AsyncChatClient(url, credential=credential) as client:
        for _ in range(3):
            await client.chat(HI)
    assert (1, [DEFAULT_SCOPE]) == (credential.calls, credential.scopes)
    assert ["Bearer token-1"] * 3 == seen


async def test_concurrent_calls_share_one_refresh(endpoint: tuple[str, list[str], set[str]]) -> None:
    """Twenty concurrent first calls trigger a single token fetch."""
    url, _, valid = endpoint
    valid.add("token-1")
    credential = AsyncCredential()
    async with AsyncChatClient(url, credential=credential) as client:
        await asyncio.gather(*(client.chat(HI) for _ in range(20)))
    assert 1 == credential.calls


async def test_token_near_expiry_is_refreshed(endpoint: tuple[str, list[str], set[str]]) -> None:
    """A token within five minutes of expiry is replaced before the next call."""
    url, seen, valid = endpoint
    valid.update({"token-1", "token-2"})
    credential = AsyncCredential(lifetime=60)
    async with AsyncChatClient(url, credential=credential) as client:
        await client.chat(HI)
        await client.chat(HI)
    assert ["Bearer token-1", "Bearer token-2"] == seen


async def test_401_refreshes_the_token_and_retries_once(endpoint: tuple[str, list[str], set[str]]) -> None:
    """A rejected token is dropped, a new one fetched, and the call retried once with it."""
    url, seen, valid = endpoint
    valid.add("token-2")
    credential = AsyncCredential()
    async with AsyncChatClient(url, credential=credential) as client:
        response = await client.chat(HI)
    assert "Hello there, world" == response.content
    assert ["Bearer token-1", "Bearer token-2"] == seen


async def test_second_401_is_raised(endpoint: tuple[str, list[str], set[str]]) -> None:
    """When the fresh token is rejected too, AuthenticationError is raised after exactly two requests."""
    url, seen, _ = endpoint
    async with AsyncChatClient(url, credential=AsyncCredential()) as client:
        with pytest.raises(AuthenticationError, match="token expired"):
            await client.chat(HI)
    assert 2 == len(seen)


async def test_401_with_a_key_is_not_retried(endpoint: tuple[str, list[str], set[str]]) -> None:
    """With a static key there is nothing to refresh: a 401 is raised after one request."""
    url, seen, _ = endpoint
    async with AsyncChatClient(url, "wrong-key") as client:
        with pytest.raises(AuthenticationError):
            await client.chat(HI)
    assert 1 == len(seen)


async def test_sync_credential_runs_off_the_loop(endpoint: tuple[str, list[str], set[str]]) -> None:
    """A sync get_token is called in a worker thread, never on the event loop's thread."""
    url, _, valid = endpoint
    valid.add("sync-token")
    credential = SyncCredential()
    async with AsyncChatClient(url, credential=credential) as client:
        await client.chat(HI)
    assert 1 == len(credential.threads)
    assert threading.current_thread() is not credential.threads[0]


@pytest.mark.parametrize(
    "credential",
    [lambda: "plain-token", lambda: asyncio.sleep(0, "plain-token")],
    ids=["sync-callable", "async-callable"],
)
async def test_callables_returning_a_string(
    endpoint: tuple[str, list[str], set[str]], credential: Any
) -> None:
    """A callable (sync or returning an awaitable) that gives a token string is accepted."""
    url, seen, valid = endpoint
    valid.add("plain-token")
    async with AsyncChatClient(url, credential=credential) as client:
        await client.chat(HI)
    assert ["Bearer plain-token"] == seen


async def test_stream_uses_the_credential(endpoint: tuple[str, list[str], set[str]]) -> None:
    """Streams send the credential's token too (here the server answers JSON, streamed as one chunk)."""
    url, seen, valid = endpoint
    valid.add("token-1")
    async with AsyncChatClient(url, credential=AsyncCredential()) as client:
        chunks = [chunk async for chunk in client.stream(HI)]
    assert ["Bearer token-1"] == seen
    assert 1 == len(chunks)


@pytest.mark.parametrize("bad", [42, "a-string", object()], ids=["int", "str", "object"])
def test_unusable_credential_is_a_configuration_error(bad: Any) -> None:
    """Something that is neither a credential nor a callable is refused at construction."""
    with pytest.raises(ConfigurationError, match="credential"):
        AsyncChatClient("http://127.0.0.1:9/score", credential=bad)


async def test_credential_returning_garbage_is_a_configuration_error() -> None:
    """A credential that returns neither a string nor an object with .token raises a clear error."""
    provider = TokenProvider(lambda: 12)
    with pytest.raises(ConfigurationError, match="int"):
        await provider.token()


async def test_credential_against_the_emulator() -> None:
    """Through the public client against the emulator: the credential's token is the bearer the endpoint
    checks, fetched once for chat, stream and a second call."""
    from azureml_chat.emulator import Deployment, Emulator

    credential = AsyncCredential()
    async with Emulator(key="token-1", deployments=[Deployment("m", family="openai")]) as emu:
        async with AsyncChatClient(emu.chat_url, credential=credential) as client:
            assert "hi" in ((await client.chat(HI)).content or "")
            chunks = [chunk.content async for chunk in client.stream(HI) if chunk.content]
        assert "hi" in "".join(chunks)
        assert [200, 200] == [record.status for record in emu.requests]
    assert 1 == credential.calls
