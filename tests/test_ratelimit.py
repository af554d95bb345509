"""Client-wide rate limiting: shared cooldown with a probe, concurrency, requests and tokens per minute."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from loopback import completion, serve

from azureml_chat import AsyncChatClient, ConfigurationError, RateLimit, RateLimitError, UserMessage
from azureml_chat._ratelimit import RateLimiter
from azureml_chat.emulator import Deployment, Emulator
from azureml_chat.testing import fast_retry

KEY = "rate-key"
HI = [UserMessage("hi")]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_concurrency": 0},
        {"requests_per_minute": -1},
        {"tokens_per_minute": float("nan")},
        {"max_concurrency": True},
    ],
    ids=["zero-concurrency", "negative-rpm", "nan-tpm", "bool"],
)
def test_bad_limits_are_configuration_errors(kwargs: dict[str, Any]) -> None:
    """Limits must be positive numbers (or None)."""
    with pytest.raises(ConfigurationError):
        RateLimit(**kwargs)


async def test_limiter_is_open_until_throttled() -> None:
    """An unthrottled limiter admits on the fast path; a 429 closes it for the cooldown, then one probe goes; the
    next call goes once the probe was answered, and the limiter is open again once a stage was left unfilled."""
    limiter = RateLimiter(RateLimit())
    assert limiter.open
    limiter.throttled(0.05)
    assert not limiter.open
    started = time.monotonic()
    probe = await limiter.admit()
    release = probe.release
    assert release >= 1
    assert time.monotonic() - started >= 0.04
    follower = asyncio.create_task(limiter.admit())
    await asyncio.sleep(0.02)
    assert not follower.done()  # waits for the probe's verdict
    limiter.finish(probe)
    second = await follower
    assert release == second.release  # the second stage (room for 2) of the same release
    assert not limiter.open
    limiter.finish(second)
    assert limiter.open  # the stage admitted 1 of 2: nobody was waiting, so the release is over


async def test_throttled_probe_starts_a_new_cooldown() -> None:
    """When the probe is throttled too, the waiters sleep through the new cooldown and exactly one probes; the
    other two follow together once it was answered (the next stage has room for 2)."""
    limiter = RateLimiter(RateLimit())
    limiter.throttled(0.01)
    probe = await limiter.admit()
    first = probe.release
    waiters = [asyncio.create_task(limiter.admit()) for _ in range(3)]
    await asyncio.sleep(0.01)
    limiter.throttled(0.05)
    started = time.monotonic()
    limiter.finish(probe)
    done, pending = await asyncio.wait(waiters, timeout=2, return_when=asyncio.FIRST_COMPLETED)
    assert (1, 2) == (len(done), len(pending))
    assert time.monotonic() - started >= 0.04
    second_probe = done.pop().result()
    release = second_probe.release
    assert first + 1 == release  # a new release after the new cooldown
    limiter.finish(second_probe)
    assert [release, release] == [ticket.release for ticket in await asyncio.gather(*pending)]


async def test_per_call_mode_ignores_throttling() -> None:
    """With shared_cooldown=False a 429 does not stop other calls."""
    limiter = RateLimiter(RateLimit(shared_cooldown=False))
    limiter.throttled(10)
    assert limiter.open


@pytest.fixture
async def counting() -> AsyncIterator[tuple[str, dict[str, int]]]:
    """A server that records the peak number of requests in flight (each takes 20 ms)."""
    state = {"now": 0, "peak": 0}

    async def handler(request: web.Request) -> web.Response:
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        await asyncio.sleep(0.02)
        state["now"] -= 1
        return web.json_response(completion())

    async for url in serve({"/v1/chat/completions": handler}):
        yield url + "/v1/chat/completions", state


async def test_max_concurrency_bounds_requests_in_flight(counting: tuple[str, dict[str, int]]) -> None:
    """max_concurrency=3 keeps at most 3 requests in flight, whatever the caller's concurrency."""
    url, state = counting
    async with AsyncChatClient(url, KEY, rate_limit=RateLimit(max_concurrency=3)) as client:
        await asyncio.gather(*(client.chat(HI) for _ in range(20)))
    assert 3 == state["peak"]


async def test_max_concurrency_holds_a_slot_for_a_stream() -> None:
    """An open stream holds its slot until it is closed, then hands it on."""
    async with Emulator(key=KEY, deployments=[Deployment("m", family="openai")]) as emu:
        emu.add_fault("slow_stream=0.05")
        await _one_slot_for_a_stream(emu.chat_url)


async def _one_slot_for_a_stream(url: str) -> None:
    async with AsyncChatClient(url, KEY, rate_limit=RateLimit(max_concurrency=1)) as client:
        stream = client.stream(HI)
        await stream.__anext__()
        waiting = asyncio.create_task(client.chat(HI))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        await stream.aclose()
        assert (await asyncio.wait_for(waiting, 5)).content


async def test_requests_per_minute_spreads_the_calls(counting: tuple[str, dict[str, int]]) -> None:
    """requests_per_minute=1200 (20/s) makes 21 immediate calls take about a second."""
    url, _ = counting
    async with AsyncChatClient(url, KEY, rate_limit=RateLimit(requests_per_minute=1200)) as client:
        started = time.monotonic()
        await asyncio.gather(*(client.chat(HI) for _ in range(21)))
        elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 3


async def test_tokens_per_minute_waits_for_the_budget(counting: tuple[str, dict[str, int]]) -> None:
    """Calls wait while the token budget is spent: at 420 TPM (7/s) answers of 7 tokens come about 1 s apart."""
    url, _ = counting
    async with AsyncChatClient(url, KEY, rate_limit=RateLimit(tokens_per_minute=420)) as client:
        await client.chat(HI)  # 7 tokens (loopback.USAGE): the whole one-second budget
        await client.chat(HI)  # waits until one token is back, then spends 7 more: the budget is at -6
        started = time.monotonic()
        await client.chat(HI)  # waits for 7 tokens to come back
    assert time.monotonic() - started >= 0.9


@pytest.fixture
async def quota() -> AsyncIterator[tuple[str, list[int]]]:
    """An endpoint with a 40 requests/s quota (burst 10) that answers 429 with Retry-After beyond it."""
    statuses: list[int] = []
    bucket = {"level": 10.0, "stamp": time.monotonic()}

    async def handler(request: web.Request) -> web.Response:
        now = time.monotonic()
        bucket["level"] = min(10.0, bucket["level"] + (now - bucket["stamp"]) * 40)
        bucket["stamp"] = now
        if bucket["level"] < 1:
            statuses.append(429)
            wait = (1 - bucket["level"]) / 40
            return web.json_response(
                {"error": {"code": "429", "message": "quota"}},
                status=429,
                headers={"Retry-After": f"{wait:.3f}"},
            )
        bucket["level"] -= 1
        statuses.append(200)
        return web.json_response(completion())

    async for url in serve({"/v1/chat/completions": handler}):
        yield url + "/v1/chat/completions", statuses


@pytest.mark.parametrize("limited", [False, True], ids=["unlimited", "rpm-2280"])
async def test_client_converges_to_the_allowed_rate(quota: tuple[str, list[int]], limited: bool) -> None:
    """Against a 40 req/s quota, requests_per_minute=2280 (38/s) finishes 120 calls with (almost) no 429s,
    while an unlimited client at concurrency 32 collects many."""
    url, statuses = quota
    limit = RateLimit(requests_per_minute=2280) if limited else RateLimit(shared_cooldown=False)
    async with AsyncChatClient(url, KEY, rate_limit=limit, retry=fast_retry(500)) as client:
        semaphore = asyncio.Semaphore(32)

        async def one() -> None:
            async with semaphore:
                await client.chat(HI)

        started = time.monotonic()
        await asyncio.gather(*(one() for _ in range(120)))
        elapsed = time.monotonic() - started
    throttled = statuses.count(429)
    print(
        f"\nquota 40/s, 120 calls, {'rpm=2280' if limited else 'no limit'}: {throttled} x 429 in {elapsed:.2f} s"
    )
    if limited:
        assert throttled <= 5
    else:
        assert throttled >= 30


async def test_rate_limit_over_the_cap_fails_fast_for_every_call() -> None:
    """A demand longer than max_retry_after is raised at once, and starts no cooldown that would stall the
    next call: the next call asks the endpoint again and gets the answer it gives."""
    async with Emulator(key=KEY, deployments=[Deployment("m", family="openai")]) as emu:
        emu.add_fault("status=429,retry_after=600,times=1")
        async with AsyncChatClient(emu.chat_url, KEY) as client:
            with pytest.raises(RateLimitError) as caught:
                await client.chat(HI)
            assert 600 == caught.value.retry_after
            started = time.monotonic()
            assert (await client.chat(HI)).content
            assert time.monotonic() - started < 2


async def test_a_stream_charges_its_usage_once_read() -> None:
    """A stream's usage event is charged to the token budget when the stream ends, also when the whole stream
    (usage event and [DONE] included) arrives in a single read."""

    async def one_write(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        events = [
            {"choices": [{"index": 0, "delta": {"content": "hi"}}]},
            {"choices": [], "usage": {"prompt_tokens": 300, "completion_tokens": 200, "total_tokens": 500}},
        ]
        await response.write(
            b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events) + b"data: [DONE]\n\n"
        )
        await response.write_eof()
        return response

    async for base in serve({"/v1/chat/completions": one_write}):
        limit = RateLimit(tokens_per_minute=60_000)  # refills 1,000 tokens/s: 500 spent is plainly visible
        async with AsyncChatClient(base + "/v1/chat/completions", KEY, rate_limit=limit) as client:
            bucket = client._pipeline.router.first.limiter._store._tokens  # type: ignore[attr-defined]
            assert bucket is not None
            async with client.stream(HI) as stream:
                async for _ in stream:
                    pass
            spent = bucket.capacity - bucket.level
    assert 400 <= spent <= 500


def test_one_limiter_serves_event_loops_in_several_threads() -> None:
    """A slot freed by a call on one thread's loop wakes a call waiting on another thread's loop (siblings on
    other loops share the limiter)."""
    limiter = RateLimiter(RateLimit(max_concurrency=1))
    held = threading.Event()
    waiting = threading.Event()
    order: list[str] = []

    async def holder() -> None:
        ticket = await limiter.admit()
        order.append("held")
        held.set()
        await asyncio.to_thread(waiting.wait, 5)
        await asyncio.sleep(0.01)  # the other loop is parked by now (it set `waiting` just before)
        order.append("released")
        limiter.finish(ticket)

    async def follower() -> None:
        await asyncio.to_thread(held.wait, 5)
        waiting.set()
        ticket = await asyncio.wait_for(limiter.admit(), 5)
        order.append("admitted")
        limiter.finish(ticket)

    thread = threading.Thread(target=asyncio.run, args=(holder(),))
    thread.start()
    asyncio.run(follower())
    thread.join(5)
    assert ["held", "released", "admitted"] == order
    assert 0 == limiter.in_flight
