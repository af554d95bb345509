"""Entra ID / token credentials: caching, refresh ahead of expiry, one shared refresh, 401 refresh-once."""

from __future__ import annotations

import asyncio
import functools
import itertools
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import pytest
from aiohttp import web
from loopback import completion, serve

from azureml_chat import AsyncChatClient, AuthenticationError, ConfigurationError, Secret, UserMessage
from azureml_chat._auth import DEFAULT_SCOPE, TokenProvider
from azureml_chat._transport import Request
from azureml_chat.testing import MockResponse, MockTransport

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


# --- what credential= accepts, and a key beside it (issue 14 item 7) -----------------------------------------------

SCOPE = "api://my-endpoint/.default"
CHAT_URL = "https://x.eastus2.models.ai.azure.com/v1/chat/completions"


class Recorder:
    """Stands for every credential shape; records the arguments it was called with."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str) -> AccessToken:
        self.calls.append(scopes)
        return AccessToken("tok", int(time.time() + 3600))

    async def aget_token(self, *scopes: str) -> AccessToken:
        self.calls.append(scopes)
        return AccessToken("tok", int(time.time() + 3600))

    def scoped(self, scope: str) -> str:
        self.calls.append((scope,))
        return "tok"

    async def ascoped(self, scope: str) -> str:
        self.calls.append((scope,))
        return "tok"

    def bare(self) -> str:
        self.calls.append(())
        return "tok"

    async def abare(self) -> str:
        self.calls.append(())
        return "tok"

    def awaitable(self) -> Any:
        self.calls.append(())
        return asyncio.sleep(0, "tok")


class SyncTokenCredential:
    """azure-identity's TokenCredential shape: an object with a sync get_token(*scopes)."""

    def __init__(self, recorder: Recorder) -> None:
        self.get_token = recorder.get_token


class AsyncTokenCredential:
    """azure-identity's AsyncTokenCredential shape: an object with an async get_token(*scopes)."""

    def __init__(self, recorder: Recorder) -> None:
        self.get_token = recorder.aget_token


class CallableWithScope:
    """A callable object taking the scope: ``__call__(self, scope)``."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def __call__(self, scope: str) -> str:
        return self.recorder.scoped(scope)


# (id, the credential made from a recorder, the arguments it must be called with)
SHAPES: list[tuple[str, Callable[[Recorder], Any], tuple[str, ...]]] = [
    ("token-credential", SyncTokenCredential, (SCOPE,)),
    ("async-token-credential", AsyncTokenCredential, (SCOPE,)),
    ("bound-get-token", lambda r: r.get_token, (SCOPE,)),
    ("bound-async-get-token", lambda r: r.aget_token, (SCOPE,)),
    ("def-cred-scope", lambda r: r.scoped, (SCOPE,)),
    ("async-def-cred-scope", lambda r: r.ascoped, (SCOPE,)),
    ("callable-object-scope", CallableWithScope, (SCOPE,)),
    ("lambda-scope", lambda r: lambda scope: r.scoped(scope), (SCOPE,)),
    ("def-cred", lambda r: r.bare, ()),
    ("async-def-cred", lambda r: r.abare, ()),
    ("returns-awaitable", lambda r: r.awaitable, ()),
]


@pytest.mark.parametrize(("make", "arguments"), [row[1:] for row in SHAPES], ids=[row[0] for row in SHAPES])
async def test_each_credential_shape_authorizes_the_request(
    make: Callable[[Recorder], Any], arguments: tuple[str, ...]
) -> None:
    """Every accepted shape is called with the scope when it takes one (else with nothing) and its token sent."""
    sent: list[str | None] = []

    def handler(request: Request) -> MockResponse:
        sent.append(request.headers.get("authorization"))
        return MockResponse(200, json=completion())

    recorder = Recorder()
    transport = MockTransport(handler)
    async with AsyncChatClient(
        CHAT_URL, credential=make(recorder), credential_scope=SCOPE, transport=transport
    ) as client:
        await client.chat(HI)
    assert (["Bearer tok"], [arguments]) == (sent, recorder.calls)


@pytest.mark.parametrize("key", ["key", Secret("key")], ids=["str", "secret"])
def test_a_key_and_a_credential_together_are_refused(key: Any) -> None:
    """api_key= and credential= together are a ConfigurationError saying to pass one, not a silent key."""
    with pytest.raises(ConfigurationError, match="pass api_key= or credential=, not both"):
        AsyncChatClient(CHAT_URL, key, credential=lambda: "tok")


async def test_with_options_switches_from_a_key_to_a_credential_only_explicitly() -> None:
    """A sibling given a credential while its parent has a key is refused, unless the key is set to None."""
    sent: list[str | None] = []

    def handler(request: Request) -> MockResponse:
        sent.append(request.headers.get("authorization"))
        return MockResponse(200, json=completion())

    async with AsyncChatClient(CHAT_URL, "key", transport=MockTransport(handler)) as client:
        with pytest.raises(ConfigurationError, match="set the one you are replacing to None"):
            client.with_options(credential=lambda: "tok")
        await client.with_options(api_key=None, credential=lambda: "tok").chat(HI)
    assert ["Bearer tok"] == sent


async def test_an_explicit_credential_wins_over_a_key_from_the_environment(
    hermetic_env: pytest.MonkeyPatch,
) -> None:
    """With AZUREML_ENDPOINT_API_KEY set and credential= passed, the credential's token is sent, and no key."""
    hermetic_env.setenv("AZUREML_ENDPOINT_API_KEY", "env-key")
    seen: list[tuple[str | None, str | None]] = []

    def handler(request: Request) -> MockResponse:
        seen.append((request.headers.get("authorization"), request.headers.get("api-key")))
        return MockResponse(200, json=completion())

    async with AsyncChatClient(
        CHAT_URL, credential=lambda: "tok", auth_header="both", transport=MockTransport(handler)
    ) as client:
        await client.chat(HI)
    assert [("Bearer tok", None)] == seen


async def test_a_callable_without_a_readable_signature_is_called_with_nothing() -> None:
    """A callable whose parameters cannot be read (a partial of a builtin) is called with no arguments."""
    sent: list[str | None] = []

    def handler(request: Request) -> MockResponse:
        sent.append(request.headers.get("authorization"))
        return MockResponse(200, json=completion())

    credential = functools.partial(next, itertools.repeat("tok"))
    async with AsyncChatClient(CHAT_URL, credential=credential, transport=MockTransport(handler)) as client:
        await client.chat(HI)
    assert ["Bearer tok"] == sent
