"""The gradual release after a shared cooldown (``_release.py``, ``InProcessStore``, ``RateLimiter``): stepped by
answers and a fake clock, never by waiting on the wall clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from loopback import completion, serve

from azureml_chat import AsyncChatClient, RateLimit, UserMessage
from azureml_chat._ratelimit import InProcessStore, RateLimiter, Ticket
from azureml_chat._release import Release, next_stage

KEY = "release-key"
HI = [UserMessage("hi")]


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def claim(store: InProcessStore) -> int | None:
    """The release generation the store's admission step gives the next request, or ``None``: it must wait."""
    generation, _ = await store.acquire()
    return generation


async def stages(store: InProcessStore, answers: int) -> list[int]:
    """Admit as many requests as the store lets go at once, answer them all, repeat until ``answers`` requests
    were answered: the number admitted at each step."""
    admitted: list[int] = []
    left = answers
    while left > 0:
        generations: list[int] = []
        while len(generations) < left and (generation := await claim(store)) is not None:
            generations.append(generation)
        assert generations, "the release stalled"
        admitted.append(len(generations))
        for generation in generations:
            store.answered(generation)
        left -= len(generations)
    return admitted


# --- the stage sizes (pure) -------------------------------------------------------------------------------------

NEXT_STAGE = [
    # (size, answered so far, ceiling, next size)
    (1, 1, 0, 2),  # no ceiling known: doubling
    (8, 15, 0, 16),
    (8, 15, 20, 5),  # doubling stops at the ceiling
    (5, 20, 20, 1),  # the stage that reached it: one request beyond it
    (1, 21, 20, 2),  # and doubling again from there
    (2, 23, 20, 4),
    (4, 7, 20, 8),
]


@pytest.mark.parametrize(("size", "total", "ceiling", "expected"), NEXT_STAGE)
def test_next_stage(size: int, total: int, ceiling: int, expected: int) -> None:
    """A stage doubles the one before, up to the last release's ceiling, then starts again at 1 beyond it."""
    assert expected == next_stage(size, total, ceiling)


def test_an_answer_to_a_call_admitted_before_the_latest_cooldown_is_ignored() -> None:
    """Only answers of the current release move its stages."""
    release = Release()
    release.restart()
    old = release.claim()
    assert old is not None
    release.restart()
    assert (False, False) == release.answered(old)
    assert (1, 0, 0) == (release.size, release.granted, release.done)


# --- the store: a cooldown, then stages ------------------------------------------------------------------------


async def test_after_a_cooldown_the_store_admits_1_then_2_4_8_as_answers_come() -> None:
    """Nothing goes during the cooldown; then one probe, and each stage twice the last once it was answered."""
    clock = Clock()
    store = InProcessStore(RateLimit(), clock=clock)
    assert (True, 0) == (store.quiet(), await claim(store))  # calm: every request goes freely
    store.start_cooldown(1.0)
    assert (False, None) == (store.quiet(), await claim(store))
    clock.advance(0.999)
    assert await claim(store) is None
    clock.advance(0.001)
    assert [1, 2, 4, 8, 16] == await stages(store, 31)
    assert not store.quiet()  # the next stage (32) has not been left unfilled yet


async def test_the_release_is_over_once_a_stage_is_not_filled() -> None:
    """A stage whose admitted requests were all answered with room left means nobody waits: calls go freely."""
    clock = Clock()
    store = InProcessStore(RateLimit(), clock=clock)
    store.start_cooldown(0.5)
    clock.advance(0.5)
    assert [1, 2, 3] == await stages(store, 6)  # the third stage (4) admitted only the 3 asked for
    assert (True, 0) == (store.quiet(), await claim(store))


async def test_a_release_that_met_a_429_doubles_up_to_what_fit_then_probes_beyond_one_at_a_time() -> None:
    """The requests answered before the 429 (20) are the ceiling of the next release: 1, 2, 4, 8, then 5 to
    reach it, then 1 beyond it, then doubling again; so the next window's overshoot is one request, not 11."""
    clock = Clock()
    store = InProcessStore(RateLimit(), clock=clock)
    store.start_cooldown(1.0)
    clock.advance(1.0)
    assert [1, 2, 4, 8] == await stages(store, 15)
    sixteen = []
    while (generation := await claim(store)) is not None:
        sixteen.append(generation)
    assert 16 == len(sixteen)
    for generation in sixteen[:5]:
        store.answered(generation)
    store.start_cooldown(1.0)  # the sixth met a 429: the window held 20
    for generation in sixteen[5:]:
        store.answered(generation)  # the other 429s, handed back: they open nothing
    clock.advance(1.0)
    assert [1, 2, 4, 8, 5, 1, 2, 4] == await stages(store, 27)


async def test_a_release_that_keeps_filling_its_stages_ends_after_a_stage_of_release_open() -> None:
    """Under steady load every stage fills; once a stage of RELEASE_OPEN (128) was answered without a 429, the
    calls go freely again (the fast path), instead of through stages for ever."""
    clock = Clock()
    store = InProcessStore(RateLimit(), clock=clock)
    store.start_cooldown(1.0)
    clock.advance(1.0)
    assert [1, 2, 4, 8, 16, 32, 64] == await stages(store, 127)
    assert not store.quiet()
    assert [128] == await stages(store, 128)
    assert (True, 0) == (store.quiet(), await claim(store))


def test_a_known_ceiling_keeps_the_release_going_to_twice_it() -> None:
    """With a ceiling of 20, a release that may open at a stage of 4 goes on until a stage of 40 was answered;
    what that release got answered is the ceiling after the next cooldown."""
    release = Release(open_at=4)
    release.restart()
    release.ceiling = 20
    sizes = []
    while True:
        sizes.append(release.size)
        generations = [release.claim() for _ in range(release.size)]
        outcomes = [release.answered(generation) for generation in generations if generation is not None]
        if outcomes[-1] == (True, True):
            break
    assert [1, 2, 4, 8, 5, 1, 2, 4, 8, 16, 32, 64] == sizes
    release.restart()
    assert 147 == release.ceiling


async def test_a_throttled_probe_restarts_the_cooldown() -> None:
    """A 429 to the probe starts a new cooldown; nothing goes until it ends, then exactly one probe again, and
    the first probe's late verdict moves nothing."""
    clock = Clock()
    store = InProcessStore(RateLimit(), clock=clock)
    store.start_cooldown(1.0)
    clock.advance(1.0)
    probe = await claim(store)
    assert probe is not None
    assert await claim(store) is None  # the others wait for the probe's answer
    store.start_cooldown(2.0)  # ... which is a 429 asking 2 s
    assert (None, 2.0) == await store.acquire()
    assert not store.answered(probe)  # its ticket is handed back after the 429: it opens no stage
    clock.advance(2.0)
    second = await claim(store)
    assert (probe + 1, None) == (second, await claim(store))


async def test_a_429_during_the_cooldown_only_extends_it() -> None:
    """The 429s of calls already in flight extend the cooldown (deadlines only grow) without restarting it."""
    clock = Clock()
    store = InProcessStore(RateLimit(), clock=clock)
    store.start_cooldown(1.0)
    store.start_cooldown(0.5)
    assert (None, 1.0) == await store.acquire()
    store.start_cooldown(3.0)
    clock.advance(3.0)
    assert [1, 2] == await stages(store, 3)


async def test_a_429_before_anything_of_the_release_was_answered_keeps_the_ceiling() -> None:
    """A probe that meets a 429 learns nothing about the window's room: the ceiling learned before stays."""
    clock = Clock()
    store = InProcessStore(RateLimit(), clock=clock)
    store.start_cooldown(1.0)
    clock.advance(1.0)
    await stages(store, 3)  # 1 + 2 answered
    store.start_cooldown(1.0)
    clock.advance(1.0)
    await claim(store)  # the probe ...
    store.start_cooldown(1.0)  # ... throttled
    clock.advance(1.0)
    assert [1, 2, 1, 2] == await stages(store, 6)


# --- the limiter: calls waiting on an event loop ----------------------------------------------------------------


async def settle() -> None:
    """Let every task that can run, run (wake-ups go through call_soon_threadsafe)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_waiting_calls_are_admitted_1_then_2_4_8_as_their_answers_come() -> None:
    """After a cooldown, 20 waiting calls go in stages: 1, 2, 4, 8, then the last 5; the limiter is open after."""
    limiter = RateLimiter(RateLimit())
    limiter.throttled(0.0)
    tasks = [asyncio.create_task(limiter.admit()) for _ in range(20)]
    admitted: list[int] = []
    seen: set[asyncio.Task[Ticket]] = set()
    while len(seen) < len(tasks):
        await settle()
        newly = [task for task in tasks if task.done() and task not in seen]
        assert newly, "the release stalled"
        admitted.append(len(newly))
        seen.update(newly)
        for task in newly:
            limiter.finish(task.result())
    assert [1, 2, 4, 8, 5] == admitted
    assert limiter.open


async def test_a_cancelled_waiting_call_leaves_no_stuck_state() -> None:
    """A call cancelled while it waits for the probe's answer takes nothing: the next stage admits two others,
    and nobody is left parked."""
    limiter = RateLimiter(RateLimit())
    limiter.throttled(0.0)
    probe = await limiter.admit()
    cancelled = asyncio.create_task(limiter.admit())
    await settle()
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert [] == limiter._changed._parked
    others = [asyncio.create_task(limiter.admit()) for _ in range(3)]
    await settle()
    assert [False, False, False] == [task.done() for task in others]
    limiter.finish(probe)
    await settle()
    assert [True, True, False] == [task.done() for task in others]
    for task in others[:2]:
        limiter.finish(task.result())
    await settle()
    assert others[2].done()
    limiter.finish(others[2].result())


async def test_a_cancelled_admitted_call_counts_as_answered() -> None:
    """A call admitted in a stage and then cancelled (before its slot or budget came) still ends its part of the
    stage, so the calls behind it go."""
    limiter = RateLimiter(RateLimit(max_concurrency=1))
    blocker = await limiter.admit()  # holds the only slot
    limiter.throttled(0.0)
    probe = asyncio.create_task(limiter.admit())  # claims the probe, then waits for the slot
    follower = asyncio.create_task(limiter.admit())
    await settle()
    assert (False, False) == (probe.done(), follower.done())
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    limiter.finish(blocker)
    ticket = await asyncio.wait_for(follower, 5)
    assert 1 == limiter.in_flight
    limiter.finish(ticket)
    assert (0, []) == (limiter.in_flight, limiter._changed._parked)


async def test_a_store_shared_between_processes_is_looked_at_again() -> None:
    """A waiter of a store that is not local (a stage may open in another process, which wakes nobody here)
    looks again every PROBE_POLL seconds, so it goes once the stage opened."""

    class Shared(InProcessStore):
        local = False

    store = Shared(RateLimit())
    limiter = RateLimiter(RateLimit(), store=store)
    limiter.throttled(0.0)
    probe = await limiter.admit()
    waiting = asyncio.create_task(limiter.admit())
    await settle()
    assert not waiting.done()
    assert store.answered(probe.release)  # the probe's answer, as another process would report it
    ticket = await asyncio.wait_for(waiting, 5)
    assert probe.release == ticket.release


# --- through a client ---------------------------------------------------------------------------------------------


@pytest.fixture
async def gated() -> AsyncIterator[tuple[str, asyncio.Event, list[str]]]:
    """A server whose first request never gets an answer (it waits until its client goes away); it records
    every request's prompt in arrival order, and sets the event when the first one arrived."""
    arrived = asyncio.Event()
    never = asyncio.Event()
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(body["messages"][-1]["content"])
        if len(seen) == 1:
            arrived.set()
            await never.wait()
        return web.json_response(completion())

    async for url in serve({"/v1/chat/completions": handler}):
        yield url + "/v1/chat/completions", arrived, seen


async def test_a_cancelled_probe_lets_the_next_stage_go(gated: tuple[str, asyncio.Event, list[str]]) -> None:
    """The probe's call is cancelled while its request is under way: the two calls waiting behind it then go."""
    url, arrived, seen = gated
    async with AsyncChatClient(url, KEY) as client:
        client._pipeline.router.first.limiter.throttled(0.0)
        probe = asyncio.create_task(client.chat([UserMessage("probe")]))
        await asyncio.wait_for(arrived.wait(), 5)
        waiting = [asyncio.create_task(client.chat([UserMessage(f"next {i}")])) for i in range(2)]
        await settle()
        assert 1 == len(seen)
        probe.cancel()
        with pytest.raises(asyncio.CancelledError):
            await probe
        answers = await asyncio.wait_for(asyncio.gather(*waiting), 5)
    assert 2 == sum(1 for answer in answers if answer.content)
    assert ("probe", {"next 0", "next 1"}) == (seen[0], set(seen[1:]))
