"""Reliability suites through the public client and the emulator: faults, load, cancellation, secrets, storms.

The default run is short; `python -m pytest -m slow tests/test_reliability.py` runs the long versions
(docs/reliability.md has the figures and commands).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from azureml_chat import (
    APIConnectionError,
    APITimeoutError,
    AsyncChatClient,
    BadRequestError,
    InternalServerError,
    ModelError,
    RateLimit,
    RateLimitError,
    RequestTimeoutError,
    ResponseFormatError,
    StreamError,
    Timeout,
    UserMessage,
)
from azureml_chat.emulator import Deployment, Emulator
from azureml_chat.testing import fast_retry

KEY = "reliability-secret-key-0123456789"
HI = [UserMessage("hello reliability")]


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator(key=KEY, deployments=[Deployment("main", family="openai")]) as emu:
        yield emu


def acquired(client: AsyncChatClient) -> int:
    session = client._pipeline.transport._session
    return 0 if session is None else len(session.connector._acquired)  # type: ignore[union-attr]


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# --- faults: one row per fault, with the outcome and the number of requests the endpoint saw ----------------

FAULTS = [
    ("status=429,retry_after=0.01,times=1", None, 2),
    ("status=429,times=1", None, 2),
    ("status=429,retry_after_ms=10,times=1", None, 2),
    ("status=429,x_ms_retry_after_ms=10,times=1", None, 2),
    ("status=429,retry_after=120", RateLimitError, 1),
    ("status=503,times=2", None, 3),
    ("status=502,times=1", None, 2),
    ("inner=503,times=1", None, 2),
    ("inner=400", ModelError, 1),
    ("status=408", RequestTimeoutError, 1),
    ("status=500", InternalServerError, 3),
    ("status=503,should_retry=false", InternalServerError, 1),
    ("status=400", BadRequestError, 1),
    ("disconnect,times=1", None, 2),
    ("disconnect", APIConnectionError, 3),
    ("malformed", ResponseFormatError, 1),
    ("html", ResponseFormatError, 1),
    ("double_encoded", None, 1),
]


@pytest.mark.parametrize(("fault", "error", "requests"), FAULTS, ids=[row[0] for row in FAULTS])
async def test_fault_outcomes(
    emulator: Emulator, fault: str, error: type[Exception] | None, requests: int
) -> None:
    """Each injected fault ends in the documented outcome after the documented number of requests."""
    emulator.add_fault(fault)
    async with AsyncChatClient(emulator.chat_url, KEY, retry=fast_retry(2)) as client:
        if error is None:
            response = await client.chat(HI)
            assert "hello reliability" in (response.content or "")
        else:
            with pytest.raises(error) as caught:
                await client.chat(HI)
            assert requests == caught.value.attempts
        assert 0 == acquired(client)
    assert requests == len(emulator.requests)


async def test_rate_limit_over_the_cap_carries_retry_after(emulator: Emulator) -> None:
    """A Retry-After above the cap is raised at once, with the demanded wait on the error."""
    emulator.add_fault("status=429,retry_after=120")
    async with AsyncChatClient(emulator.chat_url, KEY) as client:
        started = time.monotonic()
        with pytest.raises(RateLimitError) as caught:
            await client.chat(HI)
    assert 120.0 == caught.value.retry_after
    assert time.monotonic() - started < 5


async def test_model_error_exposes_the_inner_status(emulator: Emulator) -> None:
    """A 424 names the container's own status and reason."""
    emulator.add_fault("inner=400,reason=bad input")
    async with AsyncChatClient(emulator.chat_url, KEY) as client:
        with pytest.raises(ModelError) as caught:
            await client.chat(HI)
    assert (424, 400, "bad input") == (
        caught.value.status_code,
        caught.value.inner_status_code,
        caught.value.inner_reason,
    )


async def test_connection_refused() -> None:
    """A port with nothing listening is an APIConnectionError after every retry."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with AsyncChatClient(f"http://127.0.0.1:{port}/score", KEY, retry=fast_retry(2)) as client:
        with pytest.raises(APIConnectionError, match="cannot connect") as caught:
            await client.chat(HI)
    assert 3 == caught.value.attempts


async def test_dns_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name that does not resolve is an APIConnectionError (resolution is faked: no DNS server is asked)."""

    def no_such_host(host: Any, *args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    async with AsyncChatClient("https://no-such-endpoint.invalid/score", KEY, retry=fast_retry(1)) as client:
        with pytest.raises(APIConnectionError, match=r"no-such-endpoint\.invalid") as caught:
            await client.chat(HI)
    assert 2 == caught.value.attempts


@pytest.mark.parametrize(
    ("timeout", "fault", "which"),
    [
        (Timeout(total=0.05), "latency=1", "total"),
        (Timeout(read=0.05), "latency=1", "read"),
    ],
    ids=["total", "read"],
)
async def test_slow_server_hits_the_timeout(
    emulator: Emulator, timeout: Timeout, fault: str, which: str
) -> None:
    """A server slower than the timeout gives APITimeoutError naming the timeout, after the retries."""
    emulator.add_fault(fault)
    async with AsyncChatClient(emulator.chat_url, KEY, retry=fast_retry(1), timeout=timeout) as client:
        with pytest.raises(APITimeoutError, match=which) as caught:
            await client.chat(HI)
    assert 2 == caught.value.attempts


async def test_connect_timeout_waiting_for_a_pooled_connection(emulator: Emulator) -> None:
    """With the pool full, a call that cannot get a connection in time is an APITimeoutError (connect)."""
    emulator.add_fault("latency=0.5,times=1")
    async with AsyncChatClient(emulator.chat_url, KEY, max_connections=1, max_retries=0) as client:
        slow = asyncio.create_task(client.chat(HI))
        await asyncio.sleep(0.05)
        with pytest.raises(APITimeoutError, match="connect"):
            await client.chat(HI, timeout=Timeout(connect=0.05))
        assert "hello reliability" in ((await slow).content or "")


STREAM_FAULTS = [
    ("drop_after=3", "mid-stream"),
    ("malformed", "not JSON"),
]


@pytest.mark.parametrize(("fault", "message"), STREAM_FAULTS, ids=[row[0] for row in STREAM_FAULTS])
async def test_stream_faults_raise_stream_error_without_retry(
    emulator: Emulator, fault: str, message: str
) -> None:
    """A stream that breaks after it started raises StreamError; it is not retried."""
    emulator.add_fault(fault)
    async with AsyncChatClient(emulator.chat_url, KEY, retry=fast_retry(2)) as client:
        with pytest.raises(StreamError, match=message):
            async for _ in client.stream(HI):
                pass
        assert 0 == acquired(client)
    assert 1 == len(emulator.requests)


async def test_a_stream_that_ends_without_done_after_its_finish_reason_is_whole(emulator: Emulator) -> None:
    """A server that never sends [DONE] (no_done) still gives the whole answer once it said why it ended."""
    emulator.add_fault("no_done")
    async with AsyncChatClient(emulator.chat_url, KEY, retry=fast_retry(2)) as client:
        async with client.stream(HI) as stream:
            text = "".join([chunk.content or "" async for chunk in stream])
        assert ("stop", 0) == (stream.final_response().finish_reason, acquired(client))
    assert "hello reliability" in text
    assert 1 == len(emulator.requests)


async def test_slow_stream_hits_the_read_timeout(emulator: Emulator) -> None:
    """Events further apart than the read timeout end the stream with StreamError."""
    emulator.add_fault("slow_stream=0.3")
    async with AsyncChatClient(emulator.chat_url, KEY, timeout=Timeout(read=0.1)) as client:
        with pytest.raises(StreamError, match="read timeout"):
            async for _ in client.stream(HI):
                pass


# --- load ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("calls", "concurrency"),
    [(1_000, 64), pytest.param(10_000, 256, marks=pytest.mark.slow)],
    ids=["short", "full"],
)
async def test_load_with_injected_faults(calls: int, concurrency: int) -> None:
    """Under load with 5% failing calls and a burst of retryable 503s, every call succeeds or raises a
    documented error, the successes are exactly the calls without a permanent fault, nothing leaks."""
    async with Emulator(
        key=KEY, deployments=[Deployment("main", family="openai")], max_records=None
    ) as emulator:
        await _load(emulator, calls, concurrency)


async def _load(emulator: Emulator, calls: int, concurrency: int) -> None:
    emulator.add_fault(f"status=503,times={calls // 50}")  # a burst at the start, each call hit at most once
    doomed = set(range(0, calls, 20))  # 5% of calls carry a fault on every attempt
    outcomes: Counter[str] = Counter()
    semaphore = asyncio.Semaphore(concurrency)
    rss_before = rss_bytes()
    async with AsyncChatClient(
        emulator.chat_url, KEY, retry=fast_retry(3), max_connections=concurrency
    ) as client:

        async def one(index: int) -> None:
            headers = {"x-emulator-fault": "status=503"} if index in doomed else None
            async with semaphore:
                try:
                    response = await client.chat([UserMessage(f"call {index}")], extra_headers=headers)
                except InternalServerError:
                    outcomes["InternalServerError"] += 1
                else:
                    assert f"call {index}" in (response.content or "")
                    outcomes["ok"] += 1

        started = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(calls))), timeout=300)
        elapsed = time.monotonic() - started
        open_after = acquired(client)
    rss_delta = rss_bytes() - rss_before
    statuses = Counter(record.status for record in emulator.requests)
    print(  # the figures docs/reliability.md quotes (run with -s)
        f"\nload: {calls} calls at c={concurrency} in {elapsed:.1f} s; requests {dict(statuses)}; "
        f"outcomes {dict(outcomes)}; open connections after: {open_after}; RSS delta {rss_delta / 2**20:.1f} MiB"
    )
    assert 0 == open_after
    assert {"ok": calls - len(doomed), "InternalServerError": len(doomed)} == dict(outcomes)
    # Each transient 503 cost one extra request; each doomed call made all 4 attempts (fast_retry(3)).
    assert {200: calls - len(doomed), 503: calls // 50 + 4 * len(doomed)} == dict(statuses)
    assert rss_delta < 64 * 1024 * 1024


@pytest.mark.slow
async def test_soak_memory_stays_flat() -> None:
    """100,000 calls from 64 workers: resident memory stops growing once warm (checkpoints every 20,000)."""
    checkpoints: list[int] = []
    # A small request log, so the emulator (same process) does not count as the client's memory.
    emulator = Emulator(key=KEY, deployments=[Deployment("main", family="openai")], max_records=100)
    async with emulator as emu, AsyncChatClient(emu.chat_url, KEY) as client:
        remaining = 100_000

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                if remaining % 20_000 == 0:
                    checkpoints.append(rss_bytes())
                await client.chat(HI)

        await asyncio.gather(*(worker() for _ in range(64)))
    growth = checkpoints[-1] - checkpoints[1]
    print(f"\nsoak: 100000 calls; RSS at each 20000: {[round(c / 2**20, 1) for c in checkpoints]} MiB")
    assert growth < 8 * 1024 * 1024


# --- cancellation ----------------------------------------------------------------------------------------


@pytest.fixture
async def loop_errors() -> list[dict[str, Any]]:
    """Everything the loop's exception handler sees ("Task was destroyed", unretrieved exceptions)."""
    seen: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: seen.append(context))
    return seen


async def _cancel_after(coro: Any, delay: float) -> bool:
    """Cancel ``coro`` after ``delay`` seconds; True when it was still running (really cancelled)."""
    task = asyncio.ensure_future(coro)
    await asyncio.sleep(delay)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return True
    return False


@pytest.mark.parametrize("seed", range(3))
async def test_cancel_at_random_points(
    emulator: Emulator, loop_errors: list[dict[str, Any]], seed: int
) -> None:
    """Calls and streams cancelled at random points (connect, request, mid-stream, backoff) leak nothing."""
    rng = random.Random(seed)
    emulator.add_fault("slow_stream=0.005")
    async with AsyncChatClient(emulator.chat_url, KEY, retry=fast_retry(2)) as client:

        async def read_stream() -> None:
            async for _ in client.stream(HI):
                pass

        for _ in range(10):
            await _cancel_after(
                client.chat(HI, extra_headers={"x-emulator-fault": "latency=0.2"}), rng.uniform(0, 0.05)
            )
            await _cancel_after(read_stream(), rng.uniform(0, 0.05))
            await _cancel_after(client.chat(HI), 0)
        await asyncio.sleep(0.05)
        assert 0 == acquired(client)
    assert [] == loop_errors


async def test_cancel_during_retry_backoff(emulator: Emulator, loop_errors: list[dict[str, Any]]) -> None:
    """A call cancelled while sleeping before a retry stops there: no further request is made."""
    emulator.add_fault("status=503,retry_after=1")
    async with AsyncChatClient(emulator.chat_url, KEY) as client:
        await _cancel_after(client.chat(HI), 0.2)
        await asyncio.sleep(1.2)
        assert 0 == acquired(client)
    assert 1 == len(emulator.requests)
    assert [] == loop_errors


async def test_asyncio_timeout_around_a_call(emulator: Emulator) -> None:
    """asyncio.timeout() around a call raises TimeoutError and releases the connection."""
    emulator.add_fault("latency=1")
    async with AsyncChatClient(emulator.chat_url, KEY) as client:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await client.chat(HI)
        assert 0 == acquired(client)


# --- secrets ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", [row[0] for row in FAULTS] + ["drop_after=2"])
async def test_no_secret_in_logs_errors_or_reprs(
    emulator: Emulator, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    """With DEBUG logging on, the key appears in no log record, exception text or repr."""
    emulator.add_fault(fault)
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    async with AsyncChatClient(emulator.chat_url, KEY, retry=fast_retry(2), auth_header="both") as client:
        texts.append(repr(client))
        for call in (lambda: client.chat(HI), lambda: _drain(client)):
            try:
                await call()
            except Exception as exc:  # every error type is inspected here, none is expected in particular
                texts += [
                    str(exc),
                    repr(exc),
                    repr(getattr(exc, "headers", "")),
                    repr(getattr(exc, "body", "")),
                ]
                texts += [repr(exc.__cause__), str(exc.__context__)]
    texts += [record.getMessage() for record in caplog.records]
    texts.append(caplog.text)
    assert [] == [text for text in texts if KEY in text]


async def _drain(client: AsyncChatClient) -> None:
    async for _ in client.stream(HI):
        pass


# --- rate-limit storm ------------------------------------------------------------------------------------


def _retries_throttled(requests: list[Any]) -> int:
    """How many requests that repeat an earlier call (same prompt) were answered 429."""
    seen: set[str] = set()
    throttled = 0
    for record in requests:
        prompt = record.body["messages"][-1]["content"]
        if prompt in seen and record.status == 429:
            throttled += 1
        seen.add(prompt)
    return throttled


@pytest.mark.parametrize(
    ("calls", "retry_after", "limited_for"),
    [(256, 0.2, 0.7), pytest.param(256, 1.0, 3.5, marks=pytest.mark.slow)],
    ids=["short", "full"],
)
async def test_rate_limit_storm_with_the_shared_cooldown(
    emulator: Emulator, calls: int, retry_after: float, limited_for: float
) -> None:
    """256 concurrent calls against an endpoint that throttles (429 + Retry-After) for a while: every call
    finishes once it clears, and while it throttles the endpoint sees about one probe per Retry-After window
    instead of one request per call per window.

    The bound holds however busy the machine is: the windows are wall-clock time, and a slow machine only
    fits fewer of them into the throttled period."""
    emulator.add_fault(f"status=429,retry_after={retry_after}")
    asyncio.get_running_loop().call_later(limited_for, emulator.clear_faults)
    max_retries = int(limited_for / retry_after) + 2  # enough for the call that probes every window
    async with AsyncChatClient(
        emulator.chat_url, KEY, max_retries=max_retries, max_connections=calls, rate_limit=RateLimit()
    ) as client:
        results = await asyncio.gather(*(client.chat([UserMessage(f"storm {i}")]) for i in range(calls)))
    assert calls == sum(1 for r in results if r.content)
    probes = _retries_throttled(emulator.requests)
    print(
        f"\nstorm (shared cooldown): {calls} calls; {probes} throttled probes; {len(emulator.requests)} requests"
    )
    assert probes <= int(limited_for / retry_after) + 1  # at most one probe per window


@pytest.mark.parametrize(("calls", "retry_after"), [(256, 0.2)])
async def test_rate_limit_storm_with_per_call_retries(
    emulator: Emulator, calls: int, retry_after: float
) -> None:
    """Without the shared cooldown, each throttled call comes back on its own: an endpoint that throttles
    twice as many requests as there are calls sees at least one throttled retry per call.

    The throttling ends after a number of requests, not after a time, so a busy machine that sends the
    first burst slowly cannot end it before the retries arrive."""
    emulator.add_fault(f"status=429,retry_after={retry_after},times={2 * calls}")
    # A call is throttled about twice; the margin covers an unlucky call whose retries keep losing the race.
    async with AsyncChatClient(
        emulator.chat_url,
        KEY,
        max_retries=8,
        max_connections=calls,
        rate_limit=RateLimit(shared_cooldown=False),
    ) as client:
        results = await asyncio.gather(*(client.chat([UserMessage(f"storm {i}")]) for i in range(calls)))
    assert calls == sum(1 for r in results if r.content)
    assert 2 * calls == sum(1 for record in emulator.requests if record.status == 429)
    assert _retries_throttled(emulator.requests) >= calls  # the throttled burst came back, call by call
