"""Client-wide admission control: a shared cooldown after a 429, and optional concurrency, RPM and TPM limits.

Without it, N concurrent calls that meet a 429 each retry on their own: the endpoint (documented to throttle
above 2 x max_concurrent_requests_per_instance x instances in flight) sees N requests per Retry-After window.
With it, the first 429 starts one cooldown for the whole client (for as long as the 429 asks: ``Retry-After``,
else its quota's reset, ``_retry_after.py``). An answer whose ``x-ratelimit-remaining-*`` reached 0 starts one
too, until its reset, so the next calls wait instead of collecting 429s. When the cooldown ends the calls are
released gradually (``_release.py``): one probe first, then 2, 4, 8 ... as answers come back, so a quota
window with room for a few is not met by everyone at once. A throttled endpoint sees about one 429 per window.

Two parts: a store (``_store.py``) keeps the state that is *shared* (the cooldown, the release after it, the
request and token budgets), and the :class:`RateLimiter` does the waiting. The default store lives in this
process; ``RateLimit(store="redis://...")`` shares it between processes (``_redis.py``). One limiter serves a
client and all its siblings (``with_options``), whatever thread or event loop each runs in, so a ``RateLimit``
is enforced once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping

import attrs

from .. import _defaults
from .._retry_after import REMAINING_REQUESTS, REMAINING_TOKENS, spent_wait
from ._config import RateLimit
from ._store import InProcessStore, RateLimitStore

__all__ = ["RateLimiter", "Ticket"]


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


class _Waiters:
    """Callers parked until :meth:`wake_all`, each on its own event loop (a limiter serves several loops).

    A wake-up must not fall between a caller's test of its condition and its parking: read :attr:`version`
    before the test, park, and wait only if the version is unchanged (else test again).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parked: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.version = 0  # wake-ups so far

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
            self.version += 1
            parked, self._parked = self._parked, []
        for loop, future in parked:
            if not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class RateLimiter:
    """The live state of a :class:`RateLimit`: one per client and its siblings, on any thread or loop.

    Args:
        limit: the limit to enforce.
        max_wait: the longest cooldown a 429 may start (the retry policy's ``max_retry_after``).
        key: the shared store's name for this limit (default ``limit.name``; a pool gives each endpoint its own).
        store: the store to keep the state in (default: the one ``limit.store`` says).
    """

    def __init__(
        self,
        limit: RateLimit,
        *,
        max_wait: float = float("inf"),
        key: str | None = None,
        store: RateLimitStore | None = None,
    ) -> None:
        self.limit = limit
        self._max_wait = max_wait
        # Woken when a stage of the release opens, a cooldown starts or a slot frees.
        self._changed = _Waiters()
        if store is None:
            store = InProcessStore(limit)
            if limit.store is not None:
                from ._redis import RedisStore  # the redis package is an extra

                store = RedisStore(
                    limit, key=key or limit.name or "", local=store, wake=self._changed.wake_all
                )
        self._store: RateLimitStore = store
        self._lock = threading.Lock()
        self._in_flight = 0
        self._poll = None if store.local else _defaults.PROBE_POLL
        self._looking = False  # a call waiting for a full stage asks a shared store again for everyone
        self._always_gated = (
            limit.max_concurrency is not None
            or limit.requests_per_minute is not None
            or limit.tokens_per_minute is not None
            or not store.local
        )
        self.gated = self._always_gated  # admission may always wait (budgets, a cap, a store to ask)
        self.counts_tokens = limit.tokens_per_minute is not None

    @property
    def open(self) -> bool:
        """True when a request may go without waiting for anything (the fast path: one check per attempt)."""
        return not self._always_gated and self._store.quiet()

    async def admit(self) -> Ticket:
        """Wait for the cooldown, a place in the release after it and the budgets (one step of the store), then
        a concurrency slot and the request budget's reserved time, then admit one request.

        A request admitted before a 429 keeps its turn: the cooldown holds back what is admitted after it (so a
        spent-quota pause, whose reset is rounded up to whole seconds, does not also empty the next window)."""
        generation, wait = await self._acquire()
        ticket = Ticket(release=generation)
        try:
            await self._take_slot(ticket)
            if wait > 0:
                await asyncio.sleep(wait)  # the request budget reserved for this request frees then
        except BaseException:
            # Cancelled before sending: its reserved request goes back, or a queue of callers that gave up
            # (timeouts) would leave the budget spent on nothing.
            self._store.unreserve()
            self.finish(ticket)
            raise
        return ticket

    async def _acquire(self) -> tuple[int, float]:
        """Wait until the store admits a request: its release generation, and how long its reserved request
        budget is ahead (``Grant``)."""
        store, changed = self._store, self._changed
        looking = False  # this call is the one that looks again at a shared store for everyone
        try:
            while True:
                seen = changed.version
                generation, wait = await store.acquire()
                if generation is not None:
                    return generation, wait
                if wait > 0:
                    await asyncio.sleep(wait)  # a cooldown, or a token budget: each ends at a known time
                    continue
                # The stage is full: wait for its answers. On a shared store they may come from another process,
                # which wakes nobody here, so one waiting call per limiter asks again every PROBE_POLL seconds
                # and the others wait for it (a store round trip per look, not per waiting call).
                if self._poll is not None and not looking:
                    with self._lock:
                        looking, self._looking = not self._looking, True
                parked = changed.park()
                if changed.version != seen:
                    await changed.wait(parked, 0)  # woken meanwhile: ask again at once
                else:
                    await changed.wait(parked, self._poll if looking else None)
        finally:
            if looking:
                with self._lock:
                    self._looking = False
                changed.wake_all()  # admitted (or gone): the others ask again, and one of them looks on

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

    async def aclose(self) -> None:
        """Let go of the store's connections on the running event loop (the client that built the limiter
        closes it)."""
        await self._store.aclose()
