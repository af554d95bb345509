"""Where a rate limit's shared state lives: the :class:`RateLimitStore` protocol, and the in-process store.

The state is what every call of one limit must agree on: the cooldown (until when), the release after it
(``_release.py``) and the request and token budgets. A store changes each of them in one atomic step, so the
in-process store does each under a lock, and a store shared between processes (``_redis.py``) as one script.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from .._release import Release
from ._config import RateLimit

__all__ = ["Grant", "InProcessStore", "RateLimitStore"]

# What one admission step found: ``(generation, wait)``.
#   (g, w)     admitted in release generation g (0: it went freely); its request budget is reserved w seconds
#              from now (0: at once), so the caller sleeps w and sends;
#   (None, w)  not admitted: a cooldown, or a spent token budget, for w more seconds (w > 0);
#   (None, 0)  not admitted: the release's current stage is full, so wait for its answers.
Grant = tuple[int | None, float]


class RateLimitStore(Protocol):
    """Where the shared state of one :class:`RateLimit` lives. Times are seconds from now, so a store shared
    between processes needs no shared clock.

    Only :meth:`acquire` waits for the store; everything else returns at once (a shared store sends its changes
    without making the call wait for them).

    Attributes:
        local: every change comes through this process's limiter, which then wakes its waiting calls itself. A
            store shared between processes says ``False``: a stage opened by another process is found by asking
            again every ``PROBE_POLL`` seconds (one waiting call per limiter asks), and every admission asks the
            store (there is no fast path that skips it, or a 429 seen elsewhere would not hold this process back).
    """

    local: bool

    def quiet(self) -> bool:
        """True when a request may go without asking the store: no cooldown, no release, nothing shared."""
        ...

    async def acquire(self) -> Grant:
        """One admission step, atomic: the cooldown, a place in the release's current stage, the token budget
        (is anything left?) and the request budget (reserve one request). See :data:`Grant`."""
        ...

    def unreserve(self) -> None:
        """A request :meth:`acquire` admitted was not sent after all (cancelled while it waited): give its
        reserved place in the request budget back."""
        ...

    def start_cooldown(self, seconds: float) -> None:
        """Start a cooldown of ``seconds``, or extend the current one (deadlines only grow). A new one (none was
        under way) restarts the release: it ends, and one begins with the probe when the cooldown is over."""
        ...

    def answered(self, generation: int) -> bool:
        """A request admitted in release ``generation`` was answered with anything but a 429 (or failed, or was
        cancelled). Returns whether that made room for more (the next stage opened, or the release is over)."""
        ...

    def has_room(self) -> bool:
        """Whether a request would be admitted now without waiting for a cooldown or a stage (a hint for a
        pool's routing; takes nothing)."""
        ...

    def charge(self, tokens: float) -> None:
        """Take the tokens an answer used from the token budget."""
        ...

    async def aclose(self) -> None:
        """Let go of what the store holds on the running event loop (its connections)."""
        ...


class _Bucket:
    """A token bucket refilled continuously at ``per_minute / 60`` per second, holding ``burst`` (default one
    second's worth, at least 1), so the budget is spread over the minute instead of spent at its start.

    It may go negative (a reservation ahead of time, or an answer that used more tokens than were left); then
    the budget is spent until it refills. This is GCRA written as a level: ``_lua.py`` keeps the same budget as
    its "theoretical arrival time", the moment the bucket is full again.
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

    def spent_for(self) -> float:
        """Seconds until one unit is left (0 when there is)."""
        self._refill()
        return 0.0 if self.level >= 1.0 else (1.0 - self.level) / self.rate

    def reserve(self, cost: float) -> float:
        """Take ``cost`` now, ahead of time if need be: seconds until the bucket is back at 0 (when the reserved
        units are really there)."""
        self._refill()
        self.level -= cost
        return 0.0 if self.level >= 0 else -self.level / self.rate

    def take(self, cost: float) -> None:
        self._refill()
        self.level -= cost

    def give_back(self, cost: float) -> None:
        self._refill()
        self.level = min(self.capacity, self.level + cost)


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

    async def acquire(self) -> Grant:
        with self._lock:
            generation: int | None = 0
            if not self._calm:
                left = self._cooldown_until - self._clock()
                if left > 0:
                    return None, left
            if self._tokens is not None and (spent := self._tokens.spent_for()) > 0:
                return None, spent
            if not self._calm:
                generation = self._release.claim()
                if generation is None:
                    return None, 0.0
            return generation, 0.0 if self._requests is None else self._requests.reserve(1.0)

    def unreserve(self) -> None:
        if self._requests is not None:
            with self._lock:
                self._requests.give_back(1.0)

    def start_cooldown(self, seconds: float) -> None:
        with self._lock:
            now = self._clock()
            if self._cooldown_until <= now:
                self._release.restart()
                self._calm = False
            self._cooldown_until = max(self._cooldown_until, now + seconds)

    def answered(self, generation: int) -> bool:
        with self._lock:
            room, over = self._release.answered(generation)
            if over:
                self._calm = True
            return room

    def has_room(self) -> bool:
        with self._lock:
            return self._calm or (self._cooldown_until <= self._clock() and self._release.has_room())

    def charge(self, tokens: float) -> None:
        if self._tokens is not None:
            with self._lock:
                self._tokens.take(tokens)

    async def aclose(self) -> None:
        return None
