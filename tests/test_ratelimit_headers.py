"""Azure's rate-limit headers (``_retry_after.py``): the wait a 429 asks for, and the pause an answer whose quota
is spent asks for, as the retry wait, the shared cooldown and a pool's health all read them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from loopback import completion, serve
from multidict import CIMultiDict, CIMultiDictProxy

from azureml_chat import (
    AsyncChatClient,
    Endpoint,
    RateLimit,
    RateLimitError,
    RetryPolicy,
    UserMessage,
    _defaults,
)
from azureml_chat._errors import make_status_error
from azureml_chat._ratelimit import RateLimiter
from azureml_chat._retry import retry_decision
from azureml_chat._retry_after import reset_after, spent_wait, throttle_wait
from azureml_chat.testing import fast_retry

KEY = "headers-key"
HI = [UserMessage("hi")]
REQ, TOK = "x-ratelimit-remaining-requests", "x-ratelimit-remaining-tokens"
RESET_REQ, RESET_TOK = "x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"


def headers(values: dict[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(values))


# --- the rules (pure) -------------------------------------------------------------------------------------------

THROTTLE_WAIT = [
    # (headers of a 429, seconds it asks for)
    ({}, None),
    ({"Retry-After": "7"}, 7.0),
    ({"retry-after-ms": "1500", RESET_REQ: "55"}, 1.5),  # the Retry-After family first
    ({RESET_REQ: "55"}, 55.0),  # Azure OpenAI: a bare number of seconds
    ({RESET_TOK: "1s"}, 1.0),  # OpenAI: a duration
    ({RESET_TOK: "6m0s"}, 360.0),
    ({RESET_TOK: "1200ms"}, 1.2),
    ({RESET_TOK: "1m7.5s"}, 67.5),
    ({RESET_REQ: "2", RESET_TOK: "30"}, 30.0),  # no remaining counts: the later reset
    ({REQ: "0", RESET_REQ: "2", TOK: "9000", RESET_TOK: "50"}, 2.0),  # the spent quota's own reset
    ({REQ: "0", RESET_REQ: "2", TOK: "0", RESET_TOK: "50"}, 50.0),  # both spent: the later
    ({REQ: "12", RESET_REQ: "2", TOK: "9000", RESET_TOK: "50"}, None),  # quotas with room: not what refused
    ({RESET_REQ: "0"}, None),  # 0 and -1 mean "unknown"
    ({RESET_REQ: "-1"}, None),
    ({RESET_REQ: "soon"}, None),
    ({RESET_REQ: "inf"}, None),
]


@pytest.mark.parametrize(("values", "expected"), THROTTLE_WAIT, ids=[str(row[0]) for row in THROTTLE_WAIT])
def test_the_wait_a_429_asks_for(values: dict[str, str], expected: float | None) -> None:
    """Retry-After (and kin) first; else the reset of the spent quota, in either form; else nothing."""
    assert expected == throttle_wait(headers(values))
    assert expected == make_status_error(429, headers(values), b"").retry_after  # type: ignore[attr-defined]


SPENT_WAIT = [
    # (headers of an answer, the pause it asks for)
    ({}, None),
    ({REQ: "5", TOK: "9000", RESET_REQ: "1"}, None),
    ({REQ: "-1", TOK: "-1", RESET_REQ: "0"}, None),  # "not applicable" (fleet.md 5.1)
    ({REQ: "0", RESET_REQ: "300ms"}, 0.3),
    ({TOK: "0", RESET_TOK: "55"}, 55.0),
    ({REQ: "0", RESET_REQ: "1", TOK: "10", RESET_TOK: "40"}, 1.0),
    ({TOK: "0"}, _defaults.SPENT_QUOTA_PAUSE),  # spent, reset unknown (Azure OpenAI sends no reset headers)
    ({REQ: "0", RESET_REQ: "0"}, _defaults.SPENT_QUOTA_PAUSE),
]


@pytest.mark.parametrize(("values", "expected"), SPENT_WAIT, ids=[str(row[0]) for row in SPENT_WAIT])
def test_the_pause_an_answer_with_a_spent_quota_asks_for(
    values: dict[str, str], expected: float | None
) -> None:
    """Only a remaining count of 0 pauses, until that quota's reset (else a second)."""
    assert expected == spent_wait(headers(values))


def test_reset_after_reads_plain_mappings() -> None:
    """The rules also read a plain dict of lower-case names (what MockTransport callers may pass)."""
    assert 55.0 == reset_after({REQ: "0", RESET_REQ: "55"})


@pytest.mark.parametrize(("reset", "expected"), [("55", 55.0), ("1200ms", 1.2), ("1s", 1.0)])
def test_the_retry_after_a_429_without_retry_after_waits_for_the_reset(reset: str, expected: float) -> None:
    """The retry waits the reset (either form), not the exponential backoff (at most 8 s, drawn at random)."""
    error = make_status_error(429, headers({RESET_TOK: reset}), b"")
    assert expected == RetryPolicy().wait_for(error, 0)


def test_a_reset_beyond_max_retry_after_is_raised_at_once() -> None:
    """A quota that resets in 6 minutes is not slept through: not retried, the error carries the wait."""
    error = make_status_error(429, headers({RESET_TOK: "6m0s"}), b"")
    decision = retry_decision(error, max_retry_after=60.0)
    assert (False, 360.0) == (decision.retry, decision.retry_after)


def test_a_503_does_not_wait_for_a_quota_reset() -> None:
    """Only a 429 reads the reset headers: a 503 with them but without Retry-After backs off."""
    error = make_status_error(503, headers({RESET_REQ: "30"}), b"")
    assert retry_decision(error, max_retry_after=60.0).retry_after is None


# --- through a client -------------------------------------------------------------------------------------------


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[str, list[tuple[int, dict[str, str]]], list[float]]]:
    """A server that answers each request with the next scripted (status, headers), then plain 200s; it records
    when each request arrived."""
    script: list[tuple[int, dict[str, str]]] = []
    arrived: list[float] = []

    async def handler(request: web.Request) -> web.Response:
        arrived.append(time.monotonic())
        await request.read()
        status, extra = script.pop(0) if script else (200, {})
        if status == 429:
            return web.json_response(
                {"error": {"code": "429", "message": "quota"}}, status=429, headers=extra
            )
        return web.json_response(completion(), headers=extra)

    async for url in serve({"/v1/chat/completions": handler}):
        yield url + "/v1/chat/completions", script, arrived


Scripted = tuple[str, list[tuple[int, dict[str, str]]], list[float]]


@pytest.mark.parametrize(("reset", "seconds"), [("300ms", 0.3), ("1", 1.0)], ids=["duration", "seconds"])
async def test_a_429_without_retry_after_is_retried_after_its_reset(
    scripted: Scripted, reset: str, seconds: float
) -> None:
    """The retry of a 429 that gives only x-ratelimit-reset-tokens comes after the reset (both forms), although
    the client's backoff is at most 10 ms."""
    url, script, arrived = scripted
    script.append((429, {RESET_TOK: reset}))
    async with AsyncChatClient(url, KEY, retry=fast_retry(2)) as client:
        assert (await client.chat(HI)).content
    assert 2 == len(arrived)
    assert arrived[1] - arrived[0] >= seconds - 0.05


async def test_a_429_without_retry_after_starts_the_shared_cooldown_for_its_reset(scripted: Scripted) -> None:
    """A 429 that gives only the reset (30 s) holds every call of the client that long, not just its own."""
    url, script, _ = scripted
    script.append((429, {RESET_REQ: "30"}))
    async with AsyncChatClient(url, KEY, max_retries=0) as client:
        with pytest.raises(RateLimitError) as caught:
            await client.chat(HI)
        limiter = client._pipeline.router.first.limiter
        assert (30.0, False) == (caught.value.retry_after, limiter.open)
        generation, wait = await limiter._store.acquire()
        assert (None, True) == (generation, wait > 20)


async def test_a_429_for_pending_requests_backs_off(scripted: Scripted) -> None:
    """A 429 whose remaining counts have room (the platform's "too many pending requests") starts no cooldown:
    its reset headers describe a quota that is not spent."""
    url, script, _ = scripted
    script.append((429, {REQ: "40", RESET_REQ: "30", TOK: "9000", RESET_TOK: "30"}))
    async with AsyncChatClient(url, KEY, retry=fast_retry(2)) as client:
        started = time.monotonic()
        assert (await client.chat(HI)).content
        assert client._pipeline.router.first.limiter.open
    assert time.monotonic() - started < 10


async def test_remaining_zero_pauses_the_next_calls_until_the_reset(scripted: Scripted) -> None:
    """After an answer saying remaining-requests 0 (reset 300 ms) the next calls wait for the reset, then go, in
    the stages of a release after a cooldown (none meets a 429: the server answers all)."""
    url, script, arrived = scripted
    script.append((200, {REQ: "0", RESET_REQ: "300ms"}))
    async with AsyncChatClient(url, KEY) as client:
        await client.chat(HI)
        limiter = client._pipeline.router.first.limiter
        opened = [limiter.open]
        answers = await asyncio.gather(*(client.chat(HI) for _ in range(3)))
        opened.append(limiter.open)  # the probe, then a full stage of 2: the next (4) is not known unfilled
        answers.append(await client.chat(HI))
        opened.append(limiter.open)  # that stage admitted 1 of 4: the release is over
    assert [False, False, True] == opened
    assert 4 == sum(1 for answer in answers if answer.content)
    assert 5 == len(arrived)
    # The pause runs from the answer, which came after the first request arrived.
    assert min(arrived[1:]) >= arrived[0] + 0.29


async def test_remaining_above_zero_does_not_pause(scripted: Scripted) -> None:
    """An answer with room left (remaining 5) leaves the client on its fast path."""
    url, script, _ = scripted
    script.append((200, {REQ: "5", RESET_REQ: "30", TOK: "100", RESET_TOK: "30"}))
    async with AsyncChatClient(url, KEY) as client:
        await client.chat(HI)
        assert client._pipeline.router.first.limiter.open


async def test_a_spent_quota_resetting_beyond_max_retry_after_does_not_pause(scripted: Scripted) -> None:
    """A reset beyond max_retry_after (2 s here) starts no pause, as a Retry-After that long starts no cooldown:
    the next call goes at once, and the endpoint's own answer decides (a long 429 is raised, not slept)."""
    url, script, arrived = scripted
    script.append((200, {TOK: "0", RESET_TOK: "30"}))
    async with AsyncChatClient(url, KEY, retry=fast_retry(2)) as client:
        await client.chat(HI)
        assert client._pipeline.router.first.limiter.open
        await client.chat(HI)
    assert 2 == len(arrived)


def test_the_limiter_caps_a_pause_like_a_retry_after() -> None:
    """A pause over max_wait starts nothing; one within it closes the limiter."""
    limiter = RateLimiter(RateLimit(), max_wait=60.0)
    limiter.throttled(61.0)
    assert limiter.open
    limiter.throttled(59.0)
    assert not limiter.open


def test_shared_cooldown_false_ignores_a_spent_quota() -> None:
    """With shared_cooldown=False a spent quota does not pause the client either."""
    limiter = RateLimiter(RateLimit(shared_cooldown=False), max_wait=60.0)
    limiter.throttled(1.0)
    assert limiter.open


async def test_an_open_stream_does_not_hold_up_the_release() -> None:
    """A stream that is the probe after a cooldown lets the next call go once it opened, not once it ends."""
    done = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        if not (await request.json()).get("stream"):
            return web.json_response(completion())
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'data: {"choices": [{"index": 0, "delta": {"content": "hi"}}]}\n\n')
        await done.wait()
        await response.write(b"data: [DONE]\n\n")
        return response

    async for base in serve({"/v1/chat/completions": handler}):
        async with AsyncChatClient(base + "/v1/chat/completions", KEY) as client:
            client._pipeline.router.first.limiter.throttled(0.0)
            async with client.stream(HI) as stream:
                await stream.__anext__()
                answer = await asyncio.wait_for(client.chat(HI), 5)
                done.set()
                async for _ in stream:
                    pass
    assert answer.content


async def test_a_spent_pool_member_is_routed_around_not_paused(scripted: Scripted) -> None:
    """In a pool, an answer with remaining 0 sets the member's spent_until from the same rule, but does not pause
    its limiter: a call routed there anyway (its priority wins) is not held for the reset."""
    url, script, _ = scripted
    script.append((200, {REQ: "0", RESET_REQ: "30"}))
    endpoints = [Endpoint(url, KEY, name="main"), Endpoint(url, KEY, name="backup", priority=1)]
    async with AsyncChatClient(endpoints=endpoints) as client:
        assert "main" == (await client.chat(HI)).endpoint
        main = client._pipeline.router.first
        assert main.spent_until > time.monotonic() + 20
        assert main.limiter.open
