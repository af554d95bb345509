"""``RateLimit(store="redis://...", name=...)``: one cooldown, release and pair of budgets shared through a real
``redis-server`` on 127.0.0.1 (started and stopped here, tests/redis_server.py).

Two ``RedisStore`` objects with the same name are what two processes have: nothing is shared between them but
Redis. The same scenarios run against the in-process store, so a store changes who shares a limit, not its shape.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
from redis_server import RedisServer

from azureml_chat import (
    AsyncChatClient,
    Client,
    ConfigurationError,
    Endpoint,
    RateLimit,
    RateLimitError,
    UserMessage,
    _defaults,
)
from azureml_chat._ratelimit import InProcessStore, RateLimiter, RateLimitStore
from azureml_chat._ratelimit._lua import keys
from azureml_chat._ratelimit._redis import RedisStore
from azureml_chat.testing import MockResponse, MockTransport, fast_retry

HI = [UserMessage("hi")]
URL = "https://example.invalid/v1/chat/completions"
ANSWER = {
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer() as running:
        yield running


@pytest.fixture
def redis_url(server: RedisServer) -> str:
    server.resume()
    server.start()
    redis.Redis.from_url(server.url).flushall()
    return server.url


_names = iter(range(1_000_000))


def shared(url: str, name: str | None = None, **budgets: Any) -> RateLimit:
    return RateLimit(store=url, name=name or f"limit-{next(_names)}", **budgets)


@pytest.fixture
async def pair(redis_url: str) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    """Two stores of one limit, as two processes would hold them."""
    limit = shared(redis_url)
    stores = [RedisStore(limit, key=limit.name or "", local=InProcessStore(limit)) for _ in range(2)]
    yield stores[0], stores[1]
    for store in stores:
        await store.aclose()


async def settled(*stores: RedisStore) -> None:
    """Wait until the changes the stores sent without waiting have reached Redis."""
    for store in stores:
        pending = list(store._sending)
        if pending:
            await asyncio.wait(pending)


# --- configuration ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"store": "redis://h:6379/0"}, "needs a name"),
        ({"name": "x"}, "pass store="),
        ({"store": "http://h:6379", "name": "x"}, "Redis URL"),
        ({"store": "redis://h:6379/0", "name": "a{b}"}, "without braces"),
        ({"store": "redis://h:6379/0", "name": ""}, "non-empty"),
        ({"store": "redis://h:6379/0", "name": "x", "store_timeout": 0}, "store_timeout"),
    ],
)
def test_a_store_needs_a_redis_url_and_a_name(kwargs: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigurationError, match=says):
        RateLimit(**kwargs)


def test_a_rate_limit_with_a_store_pickles() -> None:
    """A worker process builds its own client from the same RateLimit."""
    limit = RateLimit(requests_per_minute=60, store="redis://127.0.0.1:6379/0", name="llama-eastus")
    assert limit == pickle.loads(pickle.dumps(limit))


def test_without_the_redis_package_the_error_says_which_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ConfigurationError, match=r"azureml-chat\[redis\]"):
        RateLimiter(RateLimit(store="redis://127.0.0.1:6379/0", name="x"))


# --- the shared state ---------------------------------------------------------------------------------------


async def test_a_cooldown_started_by_one_holds_back_the_other(pair: tuple[RedisStore, RedisStore]) -> None:
    """A 429 seen by one process: the other's very next admission waits for the same deadline."""
    first, second = pair
    assert (0, 0.0) == await second.acquire()
    first.start_cooldown(2.0)
    await settled(first)
    generation, wait = await second.acquire()
    assert generation is None
    assert 1.5 < wait <= 2.0


async def stages(store: RateLimitStore, others: RateLimitStore, count: int) -> list[int]:
    """Admit ``count`` requests alternately through two stores, answering each stage once it is full: the sizes
    of the stages. ``others`` may be ``store`` itself (one process)."""
    sizes: list[int] = []
    admitted: list[tuple[RateLimitStore, int]] = []
    turn = [store, others]
    while count:
        who = turn[len(admitted) % 2]
        generation, wait = await who.acquire()
        assert wait == 0.0
        if generation is None:  # the stage is full: answer it
            sizes.append(len(admitted))
            for holder, held in admitted:
                holder.answered(held)
            await settled(*(s for s in (store, others) if isinstance(s, RedisStore)))
            admitted = []
            continue
        assert generation > 0
        admitted.append((who, generation))
        count -= 1
    return sizes


async def test_after_a_cooldown_one_probe_then_doubling_stages_across_processes(
    pair: tuple[RedisStore, RedisStore],
) -> None:
    """The release after a cooldown is one: a single probe among all processes, then 2, 4, 8 ... as answers
    come back, whichever process was admitted or answered; the same stages as the in-process store."""
    first, second = pair
    first.start_cooldown(0.05)
    await settled(first)
    await asyncio.sleep(0.06)
    first._cooldown_until = 0.0  # this process's own copy of the deadline is past too
    shared_sizes = await stages(first, second, 15)
    local = InProcessStore(RateLimit())
    local.start_cooldown(0.01)
    await asyncio.sleep(0.02)
    assert [1, 2, 4] == shared_sizes == await stages(local, local, 15)


async def test_a_request_budget_is_one_even_pace_across_processes(redis_url: str) -> None:
    """600 RPM shared by two stores: each admission is reserved one interval (0.1 s) after the one before,
    whichever store asks; no burst beyond one request. Checked against the time each call was made, so the
    machine's speed does not matter."""
    limit = shared(redis_url, requests_per_minute=600)
    stores = [RedisStore(limit, key=limit.name or "", local=InProcessStore(limit)) for _ in range(2)]
    try:
        spans = []
        for index in range(8):
            before = time.monotonic()
            generation, wait = await stores[index % 2].acquire()
            spans.append((before, time.monotonic(), wait))
            assert 0 == generation
        first_before, first_after, first_wait = spans[0]
        assert 0.0 == first_wait
        for index, (before, after, wait) in enumerate(spans):
            # This one goes at (its call) + wait, which is index intervals after the first went.
            assert before + wait - first_after <= index * 0.1 + 1e-3
            assert after + wait - first_before >= index * 0.1 - 1e-3
    finally:
        for store in stores:
            await store.aclose()


async def test_tokens_charged_by_one_hold_back_the_other(redis_url: str) -> None:
    """6,000 TPM is 100 tokens a second, one second's worth of burst: 350 tokens charged by one process put
    the budget 2.51 s from having one token left (350 - 100 + 1 tokens at 100 a second), and the other process's next admission waits for it."""
    limit = shared(redis_url, tokens_per_minute=6000)
    first, second = (RedisStore(limit, key=limit.name or "", local=InProcessStore(limit)) for _ in range(2))
    try:
        assert (0, 0.0) == await second.acquire()
        first.charge(350)
        await settled(first)
        generation, wait = await second.acquire()
        assert generation is None
        assert 2.0 < wait <= 2.51
    finally:
        await first.aclose()
        await second.aclose()


async def test_every_key_expires_by_itself(redis_url: str) -> None:
    limit = shared(redis_url, requests_per_minute=60, tokens_per_minute=600)
    store = RedisStore(limit, key=limit.name or "", local=InProcessStore(limit))
    try:
        await store.acquire()
        store.charge(5)
        store.start_cooldown(1.0)
        await settled(store)
        ttls = redis.Redis.from_url(redis_url).pipeline()
        for key in keys(limit.name or ""):
            ttls.pttl(key)
        state, rpm, tpm = ttls.execute()
        assert 0 < rpm <= 1000  # one request's interval
        assert 0 < tpm <= 500  # 5 tokens at 10 a second
        assert 1000 < state <= 1000 + _defaults.STORE_RELEASE_TTL * 1000
    finally:
        await store.aclose()


async def test_names_are_separate_key_spaces(redis_url: str) -> None:
    first, second = shared(redis_url, "eastus"), shared(redis_url, "westus")
    east = RedisStore(first, key="eastus", local=InProcessStore(first))
    west = RedisStore(second, key="westus", local=InProcessStore(second))
    try:
        east.start_cooldown(5.0)
        await settled(east)
        assert (0, 0.0) == await west.acquire()
    finally:
        await east.aclose()
        await west.aclose()


# --- through clients ------------------------------------------------------------------------------------------


def answering(seen: list[float]) -> MockTransport:
    """Answers 200 to every request; records when each arrived."""

    def handle(request: Any) -> MockResponse:
        seen.append(time.monotonic())
        return MockResponse(200, json=ANSWER)

    return MockTransport(handle)


def throttling_once(seen: list[float]) -> MockTransport:
    """Answers 429 (Retry-After: 1) to the first request, then 200s; records when each request arrived."""

    def handle(request: Any) -> MockResponse:
        seen.append(time.monotonic())
        if len(seen) == 1:
            return MockResponse(429, json={"error": {"message": "slow down"}}, headers={"Retry-After": "1"})
        return MockResponse(200, json=ANSWER)

    return MockTransport(handle)


async def test_a_429_on_one_client_holds_back_a_client_of_another_process(redis_url: str) -> None:
    """Two clients that share nothing but the store's name (two processes): the 429 the first meets holds the
    second's next call until the cooldown is over, although the second never saw a 429."""
    limit = shared(redis_url)
    first_seen: list[float] = []
    second_seen: list[float] = []
    first = AsyncChatClient(
        URL, "k", rate_limit=limit, retry=fast_retry(0), transport=throttling_once(first_seen)
    )
    second = AsyncChatClient(
        URL,
        "k",
        rate_limit=limit,
        transport=answering(second_seen),
    )
    async with first, second:
        with pytest.raises(RateLimitError):
            await first.chat(HI)
        throttled_at = first_seen[0]
        await settled(first._pipeline.router.first.limiter._store)  # type: ignore[arg-type]
        await second.chat(HI)
    assert second_seen[0] - throttled_at >= 0.9


async def test_a_pool_keeps_each_endpoints_quota_under_its_own_name(redis_url: str) -> None:
    limit = shared(redis_url, "llama", requests_per_minute=60)
    pool = AsyncChatClient(
        endpoints=[
            Endpoint(URL, "k", name="eastus"),
            Endpoint(URL.replace("example", "other"), "k", name="westus"),
        ],
        rate_limit=limit,
        transport=MockTransport(lambda r: MockResponse(200, json=ANSWER)),
    )
    assert [keys("llama/eastus"), keys("llama/westus")] == [
        member.limiter._store._keys  # type: ignore[attr-defined]
        for member in pool._pipeline.router.members
    ]
    async with pool:
        await pool.chat(HI)
    written = set(redis.Redis.from_url(redis_url, decode_responses=True).keys("azureml-chat:*"))
    assert written  # the call's admission reserved its endpoint's request budget
    assert written <= {*keys("llama/eastus"), *keys("llama/westus")}


# --- when the store is down -----------------------------------------------------------------------------------


async def test_a_stopped_store_never_fails_a_call_and_warns_once(
    server: RedisServer, redis_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With Redis stopped, calls go on under the local limits with one WARNING; once it is back (the store is
    tried again every STORE_RETRY seconds), the limit is shared again."""
    monkeypatch.setattr(_defaults, "STORE_RETRY", 0.2)
    limit = shared(redis_url)
    answered: list[float] = []
    client = AsyncChatClient(
        URL, "k", rate_limit=limit,
        transport=answering(answered),
    )  # fmt: skip
    async with client:
        await client.chat(HI)
        server.stop()
        with caplog.at_level(logging.INFO, logger="azureml_chat"):
            await asyncio.gather(*(client.chat(HI) for _ in range(20)))
            warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
            assert 1 == len(warnings)
            assert "cannot be reached" in warnings[0].getMessage()
            assert "own limits" in warnings[0].getMessage()
            server.start()
            await asyncio.sleep(0.25)
            await client.chat(HI)
            assert any("answers again" in r.getMessage() for r in caplog.records)
    assert 22 == len(answered)
    assert (
        redis.Redis.from_url(redis_url).info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0) >= 1
    )


async def test_a_frozen_store_delays_a_call_at_most_its_timeout(server: RedisServer, redis_url: str) -> None:
    """A Redis that accepts connections and never answers (SIGSTOP): admissions give up after store_timeout
    and the local limits take over; nothing hangs."""
    limit = RateLimit(store=redis_url, name="frozen", store_timeout=0.1)
    client = AsyncChatClient(
        URL, "k", rate_limit=limit, transport=MockTransport(lambda r: MockResponse(200, json=ANSWER))
    )
    async with client:
        await client.chat(HI)  # connected
        server.pause()
        try:
            answers = await asyncio.wait_for(asyncio.gather(*(client.chat(HI) for _ in range(10))), 5.0)
        finally:
            server.resume()
    assert 10 == len(answers)


@pytest.mark.parametrize("kind", ["in-process", "redis"])
async def test_a_call_cancelled_while_it_waits_gives_its_reserved_request_back(
    kind: str, redis_url: str
) -> None:
    """60 RPM: the second admission is reserved a second ahead; cancelled while it waits (a caller's timeout),
    its place goes back, so the next one is reserved one second ahead, not two."""
    limit = (
        shared(redis_url, requests_per_minute=60) if kind == "redis" else RateLimit(requests_per_minute=60)
    )
    limiter = RateLimiter(limit, key=limit.name)
    try:
        limiter.finish(await limiter.admit())
        waiting = asyncio.ensure_future(limiter.admit())
        await asyncio.sleep(0.05)
        assert not waiting.done()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        if isinstance(limiter._store, RedisStore):
            await settled(limiter._store)
        generation, wait = await limiter._store.acquire()
        assert 0 == generation
        assert 0.5 < wait <= 1.0
    finally:
        await limiter.aclose()


def test_the_sync_client_shares_the_store_from_its_loop_thread(redis_url: str) -> None:
    """The sync Client's calls run on its own loop thread, where its store connection is made, and closed with
    it (warnings are errors here: a connection left open would fail the test)."""
    limit = shared(redis_url, requests_per_minute=6000)
    seen: list[float] = []
    with Client(URL, "k", rate_limit=limit, transport=answering(seen)) as client:
        assert "ok" == client.chat(HI).content
        assert "ok" == client.with_options(timeout=5).chat(HI).content
    assert 2 == len(seen)
    assert redis.Redis.from_url(redis_url).exists(keys(limit.name or "")[1])


@pytest.mark.parametrize("kind", ["in-process", "redis", "redis, 429 seen by another process"])
async def test_a_429_holds_back_what_is_admitted_after_it(kind: str, redis_url: str) -> None:
    """A request admitted with its turn 0.1 s ahead keeps it when a 429 comes meanwhile (here, or in another
    process sharing the store); the next request, admitted after the 429, waits for the cooldown and goes as the
    release's probe."""
    limit = RateLimit(requests_per_minute=600)
    if kind != "in-process":
        limit = shared(redis_url, requests_per_minute=600)
    limiter = RateLimiter(limit, key=limit.name)
    other = RedisStore(limit, key=limit.name or "", local=InProcessStore(limit)) if limit.store else None
    try:
        limiter.finish(await limiter.admit())
        waiting = asyncio.ensure_future(limiter.admit())
        await asyncio.sleep(0.02)
        throttled_at = time.monotonic()
        if other is not None and "another process" in kind:
            other.start_cooldown(0.5)
            await settled(other)
        else:
            limiter.throttled(0.5)
        before = await asyncio.wait_for(waiting, 5.0)
        assert 0 == before.release  # admitted freely, before the 429
        limiter.finish(before)
        after = await asyncio.wait_for(limiter.admit(), 5.0)
        assert time.monotonic() - throttled_at >= 0.5
        assert after.release > 0  # admitted in the release after the cooldown: the probe
        limiter.finish(after)
    finally:
        await limiter.aclose()
        if other is not None:
            await other.aclose()


def scripts_run(url: str) -> int:
    stats = redis.Redis.from_url(url).info("commandstats")
    return sum(int(stats.get(name, {}).get("calls", 0)) for name in ("cmdstat_evalsha", "cmdstat_eval"))


async def test_calls_waiting_for_a_stage_opened_elsewhere_ask_the_store_once_per_look(redis_url: str) -> None:
    """Twenty calls of one process wait while another process holds the release's probe: one of them asks the
    store every PROBE_POLL for all (about 10 scripts in half a second, not 200); once the probe is answered
    there, they are admitted in the doubling stages."""
    limit = shared(redis_url)
    here = RateLimiter(limit)
    there = RedisStore(limit, key=limit.name or "", local=InProcessStore(limit))
    try:
        there.start_cooldown(0.05)
        await settled(there)
        await asyncio.sleep(0.06)
        probe, _ = await there.acquire()
        assert probe is not None
        assert probe > 0
        waiting = [asyncio.ensure_future(here.admit()) for _ in range(20)]
        await asyncio.sleep(0.05)
        before = scripts_run(redis_url)
        await asyncio.sleep(0.5)
        assert not any(task.done() for task in waiting)
        assert scripts_run(redis_url) - before <= 20
        there.answered(probe)
        await settled(there)
        admitted = 0
        while admitted < 20:
            done, _ = await asyncio.wait(
                [t for t in waiting if not t.done()], timeout=5.0, return_when="FIRST_COMPLETED"
            )
            assert done, f"stuck after {admitted} admitted"
            for task in done:
                here.finish(task.result())
                admitted += 1
    finally:
        await here.aclose()
        await there.aclose()


async def test_a_place_in_the_release_whose_process_died_lapses(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process admitted as the release's probe dies before it answers: the others wait for it only
    STORE_STAGE_LAPSE (here 0.2 s), then the place is given again, instead of until the state expires."""
    monkeypatch.setattr(_defaults, "STORE_STAGE_LAPSE", 0.2)
    limit = shared(redis_url)
    died, alive = (RedisStore(limit, key=limit.name or "", local=InProcessStore(limit)) for _ in range(2))
    try:
        died.start_cooldown(0.05)
        await settled(died)
        await asyncio.sleep(0.06)
        died._cooldown_until = 0.0
        probe, _ = await died.acquire()
        assert probe is not None
        assert probe > 0
        assert (None, 0.0) == await alive.acquire()  # the stage (the probe) is full
        await asyncio.sleep(0.25)
        assert (probe, 0.0) == await alive.acquire()
    finally:
        await died.aclose()
        await alive.aclose()
