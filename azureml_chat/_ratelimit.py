"""Client-wide admission control: a shared cooldown after a 429, and optional concurrency, RPM and TPM limits.

Without it, N concurrent calls that meet a 429 each retry on their own: the endpoint (documented to throttle
above 2 x max_concurrent_requests_per_instance x instances in flight) sees N requests per Retry-After window.
With it, the first 429 starts one cooldown for the whole client (for as long as the 429 asks: ``Retry-After``,
else its quota's reset, ``_retry_after.py``). An answer whose ``x-ratelimit-remaining-*`` reached 0 starts one
too, until its reset, so the next calls wait instead of collecting 429s. When the cooldown ends the calls are
released gradually (``_release.py``): one probe first, then 2, 4, 8 ... as answers come back, so a quota
window with room for a few is not met by everyone at once. A throttled endpoint sees about one 429 per window.

Two parts: a :class:`RateLimitStore` keeps the state that is *shared* (the cooldown, the release after it, the
request and token budgets), and the :class:`RateLimiter` does the waiting. The default store lives in this
process; a store shared between processes implements the same protocol. One limiter serves a client and all
its siblings (``with_options``), whatever thread or event loop each runs in, so a ``RateLimit`` is enforced once.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import attrs

from . import _defaults
from ._errors import ConfigurationError
from ._release import Release
from ._retry_after import REMAINING_REQUESTS, REMAINING_TOKENS, spent_wait

__all__ = ["InProcessStore", "RateLimit", "RateLimitStore", "RateLimiter", "Ticket"]


def _positive_or_none(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigurationError(f"{attribute.name} must be a positive number or None, got {value!r}")


@attrs.frozen(kw_only=True)
class RateLimit:
    """How one client paces itself. Pass as ``rate_limit=`` (the default is ``RateLimit()``).

    Attributes:
        shared_cooldown: after a 429 that says how long to wait (or an answer that says the quota is spent until
            a reset), every call on the client waits; then one probe request goes first, and the others follow
            in doubling stages as answers come back. ``False`` lets each call retry on its own.
        max_concurrency: requests (and open streams) in flight at once; ``None`` is the pool size.
        requests_per_minute: a request budget, spread evenly (serverless deployments allow 1,000 RPM).
        tokens_per_minute: a token budget charged with each answer's usage (serverless: 200,000 TPM); a
            request waits while the budget is spent.
    """

    shared_cooldown: bool = True
    max_concurrency: int | None = attrs.field(default=None, validator=_positive_or_none)
    requests_per_minute: float | None = attrs.field(default=None, validator=_positive_or_none)
    tokens_per_minute: float | None = attrs.field(default=None, validator=_positive_or_none)


@attrs.define
class Ticket:
    """One admitted request; hand it back through :meth:`RateLimiter.finish`.

    Attributes:
        release: the release (generation) it was admitted in after a cooldown; 0 when it went freely. Cleared once
            its answer was counted.
        slot: it holds a concurrency slot.
    """

    release: int = 0
    slot: bool = False


class RateLimitStore(Protocol):
    """Where the shared state of one :class:`RateLimit` lives. Every method is quick and never blocks.

    The state: the cooldown (until when), the release after it (``_release.py``: its stage, what the stage has
    admitted and got answered, what the last release learned) and the budgets. Each method reads and changes it
    as one step, so a store shared between processes does each as one atomic script. Times are seconds from now,
    so such a store needs no shared clock.

    Attributes:
        local: every change comes through this process's limiter, which then wakes its waiting calls itself. A
            store shared between processes says ``False``: a stage opened by another process is found by looking
            again every ``PROBE_POLL`` seconds.
    """

    local: bool

    def quiet(self) -> bool:
        """True when there is no cooldown and no release under way: a request may go at once (asked per attempt)."""
        ...

    def cooldown_left(self) -> float:
        """Seconds until the cooldown ends (``<= 0``: none)."""
        ...

    def start_cooldown(self, seconds: float) -> None:
        """Start a cooldown of ``seconds``, or extend the current one (deadlines only grow). A new one (none was
        under way) restarts the release: it ends, and one begins with the probe when the cooldown is over."""
        ...

    def claim(self) -> int | None:
        """Admit one request: ``0`` when quiet (it goes freely); during a release, its generation (``>= 1``) when
        the current stage has room; ``None`` when it must wait (the cooldown, or a full stage)."""
        ...

    def answered(self, generation: int) -> bool:
        """A request admitted in release ``generation`` was answered with anything but a 429 (or failed, or was
        cancelled). Returns whether that made room for more (the next stage opened, or the release is over)."""
        ...

    def has_room(self) -> bool:
        """Whether :meth:`claim` would admit a request now; takes nothing."""
        ...

    def budget_wait(self, requests: float) -> float:
        """Seconds until ``requests`` requests fit the budgets (0: now); when 0, they are taken."""
        ...

    def charge(self, tokens: float) -> None:
        """Take the tokens an answer used from the token budget."""
        ...


class _Bucket:
    """A token bucket refilled continuously at ``per_minute / 60`` per second, holding ``burst`` (default one
    second's worth, at least 1), so the budget is spread over the minute instead of spent at its start.

    It may go negative (an answer used more tokens than were left); then callers wait until it refills.
    """

    def __init__(
        self, per_minute: float, *, burst: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate if burst is None else burst)
        self.level = self.capacity
        self._clock = clock
        self.stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_time(self, cost: float) -> float:
        """Seconds until ``cost`` can be taken (0 when it can be taken now)."""
        self._refill()
        needed = min(cost, self.capacity)
        return 0.0 if self.level >= needed else (needed - self.level) / self.rate

    def take(self, cost: float) -> None:
        self._refill()
        self.level -= cost


class InProcessStore:
    """The default :class:`RateLimitStore`: plain numbers under a lock, shared by the threads of this process.

    Args:
        limit: the budgets to keep.
        clock: seconds from any fixed origin (``time.monotonic``; tests pass one they step).
    """

    local = True

    def __init__(self, limit: RateLimit, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._calm = True  # no cooldown and no release: what the fast path reads
        self._cooldown_until = 0.0
        self._release = Release()
        # Requests leave evenly spaced (no burst): quota windows on the server side are not published.
        self._requests = (
            _Bucket(limit.requests_per_minute, burst=1, clock=clock) if limit.requests_per_minute else None
        )
        self._tokens = _Bucket(limit.tokens_per_minute, clock=clock) if limit.tokens_per_minute else None

    def quiet(self) -> bool:
        return self._calm

    def cooldown_left(self) -> float:
        return self._cooldown_until - self._clock()

    def start_cooldown(self, seconds: float) -> None:
        with self._lock:
            now = self._clock()
            if self._cooldown_until <= now:
                self._release.restart()
                self._calm = False
            self._cooldown_until = max(self._cooldown_until, now + seconds)

    def claim(self) -> int | None:
        with self._lock:
            if self._calm:
                return 0
            if self._cooldown_until > self._clock():
                return None
            return self._release.claim()

    def answered(self, generation: int) -> bool:
        with self._lock:
            room, over = self._release.answered(generation)
            if over:
                self._calm = True
            return room

    def has_room(self) -> bool:
        with self._lock:
            return self._calm or (self._cooldown_until <= self._clock() and self._release.has_room())

    def budget_wait(self, requests: float) -> float:
        with self._lock:
            # Each unit of budget frees at a known time, so the caller sleeps until then instead of polling.
            wait = max(
                (b.wait_time(1.0) for b in (self._requests, self._tokens) if b is not None), default=0.0
            )
            if wait <= 0 and self._requests is not None:
                self._requests.take(requests)
            return wait

    def charge(self, tokens: float) -> None:
        if self._tokens is not None:
            with self._lock:
                self._tokens.take(tokens)


class _Waiters:
    """Callers parked until :meth:`wake_all`, each on its own event loop (a limiter serves several loops).

    Park while holding the lock that guards the condition you wait for, and change that condition under the
    same lock before waking: then no wake-up can fall between the test and the parking.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parked: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def park(self) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self._parked.append((loop, future))
        return future

    async def wait(self, future: asyncio.Future[None], timeout: float | None = None) -> None:
        """Wait until woken, or ``timeout`` seconds (``None``: no limit), whichever comes first."""
        try:
            if timeout is None:
                await future
            else:
                await asyncio.wait((future,), timeout=timeout)
        finally:
            with self._lock:
                self._parked = [entry for entry in self._parked if entry[1] is not future]

    def wake_all(self) -> None:
        with self._lock:
            parked, self._parked = self._parked, []
        for loop, future in parked:
            if not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class RateLimiter:
    """The live state of a :class:`RateLimit`: one per client and its siblings, on any thread or loop."""

    def __init__(
        self, limit: RateLimit, *, max_wait: float = float("inf"), store: RateLimitStore | None = None
    ) -> None:
        self.limit = limit
        self._max_wait = max_wait
        self._store: RateLimitStore = store if store is not None else InProcessStore(limit)
        self._lock = threading.Lock()
        self._in_flight = 0
        # Woken when a stage of the release opens, a cooldown starts or a slot frees.
        self._changed = _Waiters()
        self._poll = None if self._store.local else _defaults.PROBE_POLL
        self._always_gated = (
            limit.max_concurrency is not None
            or limit.requests_per_minute is not None
            or limit.tokens_per_minute is not None
        )
        self.gated = self._always_gated  # has budgets or a concurrency cap: admission may always wait
        self.counts_tokens = limit.tokens_per_minute is not None

    @property
    def open(self) -> bool:
        """True when a request may go without waiting for anything (the fast path: one check per attempt)."""
        return not self._always_gated and self._store.quiet()

    async def admit(self) -> Ticket:
        """Wait for the cooldown, a place in the release after it, a concurrency slot and the budgets, then admit
        one request."""
        store = self._store
        while True:
            delay = store.cooldown_left()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            with self._lock:
                generation = store.claim()
                # Not admitted: the stage is full, so wait for its answers; unless a cooldown began meanwhile.
                waiting = generation is None and store.cooldown_left() <= 0
                parked = self._changed.park() if waiting else None
            if generation is not None:
                break
            if parked is not None:
                await self._changed.wait(parked, self._poll)
        ticket = Ticket(release=generation)
        try:
            await self._take_slot(ticket)
            # A budget frees at a known time: sleeping until then is exact, there is no event to wait for.
            while (wait := store.budget_wait(1.0)) > 0:  # noqa: ASYNC110
                await asyncio.sleep(wait)
        except BaseException:
            self.finish(ticket)
            raise
        return ticket

    async def _take_slot(self, ticket: Ticket) -> None:
        limit = self.limit.max_concurrency
        if limit is None:
            return
        while True:
            with self._lock:
                if self._in_flight < limit:
                    self._in_flight += 1
                    ticket.slot = True
                    return
                parked = self._changed.park()
            await self._changed.wait(parked)

    def throttled(self, wait: float | None) -> None:
        """The endpoint answered 429, or an answer said its quota is spent: start (or extend) the shared
        cooldown of ``wait`` seconds (``_retry_after.py`` says how long), followed by the gradual release.

        A demand longer than ``max_wait`` (the retry policy's ``max_retry_after``) starts none: that call is
        raised at once, and so is every later one when the endpoint repeats the demand, instead of all calls
        stalling silently for minutes. ``None`` (no wait given) starts none either: each call backs off.
        """
        if not self.limit.shared_cooldown or wait is None or wait > self._max_wait:
            return
        with self._lock:
            self._store.start_cooldown(wait)
        self._changed.wake_all()  # calls waiting for a stage's answers sleep through the cooldown instead

    def note_answer(self, headers: Mapping[str, str]) -> None:
        """Read an answer's rate-limit headers: when its ``x-ratelimit-remaining-*`` reached 0, the calls after it
        wait until that quota resets (``spent_wait``), as after a 429, instead of collecting 429s. Calls already
        in flight go on (a 0 while they are is normal); the pause runs from this answer's reset, capped like a
        429's demand (:meth:`throttled`)."""
        if headers.get(REMAINING_REQUESTS) == "0" or headers.get(REMAINING_TOKENS) == "0":
            self.throttled(spent_wait(headers))

    def answered(self, ticket: Ticket) -> None:
        """The endpoint took ``ticket``'s request (any answer but a 429, or it failed, or was cancelled): the
        release after a cooldown may let more go. :meth:`finish` does this; an open stream does it at once, since
        it keeps its ticket (and slot) until it is released."""
        with self._lock:
            generation, ticket.release = ticket.release, 0  # counted once, whoever hands it back
            room = bool(generation) and self._store.answered(generation)
        if room:
            self._changed.wake_all()

    def charge(self, tokens: int) -> None:
        """Take the tokens an answer used from the tokens-per-minute budget."""
        if self.counts_tokens and tokens > 0:
            self._store.charge(float(tokens))

    def finish(self, ticket: Ticket) -> None:
        """Hand back a ticket, always, whatever happened to the request. Safe from any thread."""
        if ticket.release:
            self.answered(ticket)
        if ticket.slot:
            with self._lock:
                freed, ticket.slot = ticket.slot, False
                if freed:
                    self._in_flight -= 1
            self._changed.wake_all()

    @property
    def in_flight(self) -> int:
        """Requests admitted with a concurrency slot and not yet finished."""
        return self._in_flight

    def has_room(self) -> bool:
        """Whether a request would be admitted without waiting for a cooldown, a full stage of the release or a
        concurrency slot (a pool prefers endpoints with room). A stage with room is room, the probe included:
        only a request can end it. Asks the store, takes nothing from the budgets."""
        limit = self.limit.max_concurrency
        return self._store.has_room() and (limit is None or self._in_flight < limit)
