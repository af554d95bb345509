"""Client-wide admission control: a shared cooldown after a 429, and optional concurrency, RPM and TPM limits.

Without it, N concurrent calls that meet a 429 each retry on their own: the endpoint (documented to throttle
above 2 x max_concurrent_requests_per_instance x instances in flight) sees N requests per Retry-After window.
With it, the first 429 starts one cooldown for the whole client; when it ends, one probe request goes first,
and the others follow only once the probe got through (a half-open circuit). A throttled endpoint sees about
one request per window.

Two parts: a :class:`RateLimitStore` keeps the state that is *shared* (the cooldown, whether a probe is due,
the request and token budgets), and the :class:`RateLimiter` does the waiting. The default store lives in this
process; a store shared between processes implements the same protocol. One limiter serves a client and all
its siblings (``with_options``), whatever thread or event loop each runs in, so a ``RateLimit`` is enforced once.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from typing import Any, Protocol

import attrs

from ._errors import ConfigurationError

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
        shared_cooldown: after a 429 that says how long to wait, every call on the client waits, then one
            probe request goes first. ``False`` lets each call retry on its own.
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
    """One admitted request; hand it back through :meth:`RateLimiter.finish`."""

    probe: bool = False
    slot: bool = False


class RateLimitStore(Protocol):
    """Where the shared state of one :class:`RateLimit` lives. Every method is quick and never blocks.

    Times are seconds from now, so a store on another machine needs no shared clock.
    """

    def quiet(self) -> bool:
        """True when there is no cooldown and no probe due: a request may go at once (asked per attempt)."""
        ...

    def cooldown_left(self) -> float:
        """Seconds until the cooldown ends (``<= 0``: none)."""
        ...

    def start_cooldown(self, seconds: float) -> None:
        """Start a cooldown of ``seconds``, or extend the current one (deadlines only grow); a probe is due
        when it ends."""
        ...

    def probe_due(self) -> bool:
        """Whether the next admitted request must be the probe."""
        ...

    def claim_probe(self) -> bool:
        """Take the probe (``True`` for exactly one caller while a probe is due)."""
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

    def __init__(self, per_minute: float, *, burst: float | None = None) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate if burst is None else burst)
        self.level = self.capacity
        self.stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
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
    """The default :class:`RateLimitStore`: plain numbers under a lock, shared by the threads of this process."""

    def __init__(self, limit: RateLimit) -> None:
        self._lock = threading.Lock()
        self._cooldown_until = 0.0
        self._probe_due = False
        # Requests leave evenly spaced (no burst): quota windows on the server side are not published.
        self._requests = _Bucket(limit.requests_per_minute, burst=1) if limit.requests_per_minute else None
        self._tokens = _Bucket(limit.tokens_per_minute) if limit.tokens_per_minute else None

    def quiet(self) -> bool:
        return not self._probe_due and self._cooldown_until <= time.monotonic()

    def cooldown_left(self) -> float:
        return self._cooldown_until - time.monotonic()

    def start_cooldown(self, seconds: float) -> None:
        with self._lock:
            self._cooldown_until = max(self._cooldown_until, time.monotonic() + seconds)
            self._probe_due = True

    def probe_due(self) -> bool:
        return self._probe_due

    def claim_probe(self) -> bool:
        with self._lock:
            due, self._probe_due = self._probe_due, False
            return due

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

    async def wait(self, future: asyncio.Future[None]) -> None:
        try:
            await future
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
        self._probing = False  # a probe of this process is in flight
        self._in_flight = 0
        self._changed = _Waiters()  # woken when a probe ends or a slot frees
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
        return not self._always_gated and not self._probing and self._store.quiet()

    async def admit(self) -> Ticket:
        """Wait for the cooldown, the probe, a concurrency slot and the budgets, then admit one request."""
        ticket = Ticket()
        store = self._store
        while True:
            delay = store.cooldown_left()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            with self._lock:
                parked = self._changed.park() if self._probing else None
                if parked is None and store.probe_due() and store.claim_probe():
                    self._probing = ticket.probe = True
            if parked is None:
                break
            await self._changed.wait(parked)  # someone is probing: wait for its verdict
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

    def throttled(self, retry_after: float | None) -> None:
        """The endpoint answered 429: start (or extend) the shared cooldown.

        A demand longer than ``max_wait`` (the retry policy's ``max_retry_after``) starts none: that call is
        raised at once, and so is every later one when the endpoint repeats the demand, instead of all calls
        stalling silently for minutes.
        """
        if not self.limit.shared_cooldown or retry_after is None or retry_after > self._max_wait:
            return
        self._store.start_cooldown(retry_after)

    def charge(self, tokens: int) -> None:
        """Take the tokens an answer used from the tokens-per-minute budget."""
        if self.counts_tokens and tokens > 0:
            self._store.charge(float(tokens))

    def finish(self, ticket: Ticket) -> None:
        """Hand back a ticket, always, whatever happened to the request. Safe from any thread."""
        if not (ticket.slot or ticket.probe):
            return
        with self._lock:
            if ticket.slot:
                ticket.slot = False
                self._in_flight -= 1
            if ticket.probe:
                ticket.probe = False
                self._probing = False
        # Waiters look again: a free slot; a new cooldown if the probe was throttled, else they go.
        self._changed.wake_all()

    @property
    def in_flight(self) -> int:
        """Requests admitted with a concurrency slot and not yet finished."""
        return self._in_flight

    def has_room(self) -> bool:
        """Whether a request would be admitted without waiting for a cooldown, another call's probe or a
        concurrency slot (a pool prefers endpoints with room). A due probe is room: the next request is it,
        and only a request can end it. Asks the store, takes nothing from the budgets."""
        limit = self.limit.max_concurrency
        return (
            not self._probing
            and self._store.cooldown_left() <= 0
            and (limit is None or self._in_flight < limit)
        )
