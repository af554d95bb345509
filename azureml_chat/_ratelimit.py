"""Client-wide admission control: a shared cooldown after a 429, and optional concurrency, RPM and TPM limits.

Without it, N concurrent calls that meet a 429 each retry on their own: the endpoint (documented to throttle
above 2 x max_concurrent_requests_per_instance x instances in flight) sees N requests per Retry-After window.
With it, the first 429 starts one cooldown for the whole client; when it ends, one probe request goes first,
and the others follow only once the probe got through (a half-open circuit). A throttled endpoint sees about
one request per window.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import attrs

from ._errors import ConfigurationError

__all__ = ["RateLimit", "RateLimiter", "Ticket"]


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
        return (
            0.0
            if self.level >= min(cost, self.capacity)
            else (min(cost, self.capacity) - self.level) / self.rate
        )

    def take(self, cost: float) -> None:
        self._refill()
        self.level -= cost


class RateLimiter:
    """The live state of a :class:`RateLimit` for one client (one event loop)."""

    def __init__(self, limit: RateLimit, *, max_wait: float = float("inf")) -> None:
        self._limit = limit
        self._max_wait = max_wait
        self._cooldown_until = 0.0
        self._needs_probe = False
        self._probe_done: asyncio.Event | None = None  # set while a probe is in flight
        self._slots = asyncio.Semaphore(limit.max_concurrency) if limit.max_concurrency else None
        # Requests leave evenly spaced (no burst): quota windows on the server side are not published.
        self._requests = _Bucket(limit.requests_per_minute, burst=1) if limit.requests_per_minute else None
        self._tokens = _Bucket(limit.tokens_per_minute) if limit.tokens_per_minute else None
        self._always_gated = self._slots is not None or self._requests is not None or self._tokens is not None

    @property
    def open(self) -> bool:
        """True when a request may go without waiting for anything (the fast path: one check per attempt)."""
        return (
            not self._always_gated
            and not self._needs_probe
            and self._probe_done is None
            and (self._cooldown_until <= time.monotonic())
        )

    async def admit(self) -> Ticket:
        """Wait for the cooldown, the probe, a concurrency slot and the budgets, then admit one request."""
        ticket = Ticket()
        while True:
            delay = self._cooldown_until - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            if self._probe_done is not None:  # someone is probing: wait for its verdict
                await self._probe_done.wait()
                continue
            if self._needs_probe:
                self._needs_probe = False
                self._probe_done = asyncio.Event()
                ticket.probe = True
            break
        try:
            if self._slots is not None:
                await self._slots.acquire()
                ticket.slot = True
            await self._wait_for_budgets()
            if self._requests is not None:
                self._requests.take(1.0)
        except BaseException:
            self.finish(ticket)
            raise
        return ticket

    async def _wait_for_budgets(self) -> None:
        # Each unit of budget frees at a known time, so sleeping until then beats polling or an event.
        while True:
            wait = max(
                (b.wait_time(1.0) for b in (self._requests, self._tokens) if b is not None), default=0.0
            )
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    def throttled(self, retry_after: float | None) -> None:
        """The endpoint answered 429: start (or extend) the shared cooldown.

        A demand longer than ``max_wait`` (the retry policy's ``max_retry_after``) starts none: that call is
        raised at once, and so is every later one when the endpoint repeats the demand, instead of all calls
        stalling silently for minutes.
        """
        if not self._limit.shared_cooldown or retry_after is None or retry_after > self._max_wait:
            return
        self._cooldown_until = max(self._cooldown_until, time.monotonic() + retry_after)
        self._needs_probe = True

    def charge(self, tokens: int) -> None:
        """Take the tokens an answer used from the tokens-per-minute budget."""
        if self._tokens is not None and tokens > 0:
            self._tokens.take(float(tokens))

    def finish(self, ticket: Ticket) -> None:
        """Hand back a ticket, always, whatever happened to the request."""
        if ticket.slot and self._slots is not None:
            ticket.slot = False
            self._slots.release()
        if ticket.probe:
            ticket.probe = False
            done, self._probe_done = self._probe_done, None
            if done is not None:
                done.set()  # waiters look again: a new cooldown if the probe was throttled, else they go
