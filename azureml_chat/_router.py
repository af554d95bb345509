"""Which endpoint an attempt goes to, and what the pool looks like: the routing half of ``endpoints=[...]``.

A client always routes through a :class:`Router`; a client over one URL has a router of one member, which
always answers with that member and keeps no health (it behaves exactly as a client without a pool: its
rate limiter's cooldown is the only pause after a 429).

With several members:

1. **Choice.** The lowest ``priority`` value with an available member wins; within it, a weighted random
   choice (``weight``), among the members with headroom when there are any: whose last answer did not say
   their quota is spent (``x-ratelimit-remaining-requests`` or ``-tokens`` at 0), and whose own limiter
   would admit a request at once (no cooldown, a free concurrency slot).
2. **Failover.** After a retryable failure the next attempt goes at once to the best-ranked member the call
   has not tried yet. When every available member was tried, it goes to one of them after the usual backoff;
   when none is available, to the one that comes back first, after waiting for it (up to ``max_retry_after``).
3. **Health** is each member's :class:`~azureml_chat._health.Health`: 429s cool a member down, failures open
   its circuit, 401/403/404 set it aside; after any of them one probe goes first.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import random
import time
from collections.abc import Callable, Collection, Sequence

import attrs

from ._endpoint import ResolvedEndpoint
from ._health import Health
from ._ratelimit import RateLimiter

__all__ = ["EndpointStatus", "Member", "Router"]

logger = logging.getLogger("azureml_chat")


@attrs.frozen
class EndpointStatus:
    """One endpoint's standing, as ``client.endpoint_status()`` reports it.

    Attributes:
        healthy: calls are routed there now (no cooldown, no open circuit, no probe under way).
        cooling_until: when it takes calls again (``time.time()`` seconds), while it is set aside; else ``None``.
        reason: why it is set aside (``"throttled (429)"``, ``"circuit open after 5 failures"``,
            ``"unhealthy (401)"``), else ``None``.
        recent_failures: failures in a row since its last answer.
        in_flight: attempts under way there now.
    """

    healthy: bool
    cooling_until: float | None
    reason: str | None
    recent_failures: int
    in_flight: int


class Member:
    """One endpoint of a pool: where to send, with its own limiter, health and routing weight."""

    __slots__ = ("endpoint", "health", "limiter", "name", "priority", "spent_until", "weight")

    def __init__(
        self, endpoint: ResolvedEndpoint, limiter: RateLimiter, *, weight: float, priority: int
    ) -> None:
        self.endpoint = endpoint
        self.name = endpoint.name
        self.limiter = limiter
        self.weight = weight
        self.priority = priority
        self.health = Health()
        self.spent_until = 0.0  # its rate-limit headers said the quota is spent until then

    def __repr__(self) -> str:
        return f"Member({self.name!r}, weight={self.weight}, priority={self.priority})"


class Router:
    """Chooses a member per attempt and keeps every member's health (see the module docstring).

    Args:
        members: the pool, in the order given (one member: a client over one URL).
        rng: a uniform random number in ``[0, 1)`` (injected by tests).
    """

    def __init__(self, members: Sequence[Member], *, rng: Callable[[], float] = random.random) -> None:
        self.members = tuple(members)
        self.single = len(self.members) == 1
        self.first = self.members[0]
        self._rng = rng
        self._priorities = sorted({member.priority for member in self.members})
        # The calm case, worked out once: the first priority's members and their cumulative weights. A call
        # that has tried nothing, while none of them is set aside, spent or behind a gated limiter, is one
        # weighted draw (bisect), with no lists built (docs/reliability.md, "Several endpoints").
        self._leaders = tuple(m for m in self.members if m.priority == self._priorities[0])
        self._cumulative = list(itertools.accumulate(m.weight for m in self._leaders))
        self._ungated = not any(m.limiter.gated for m in self._leaders)

    def choose(self, tried: Collection[Member], now: float | None = None) -> tuple[Member, float]:
        """The member for the next attempt and how long to wait before it.

        ``(untried member, 0.0)`` when one is available; ``(tried member, -1.0)`` when only tried ones are
        (the caller backs off as for any retry); ``(member, seconds)`` when none is available, the one back
        first (whether tried or not).
        """
        if self.single:
            return self.first, -1.0 if tried else 0.0
        # The calm path (see __init__); a caller that passes ``now`` (the table tests) always takes the full rule
        # below, which gives the same answer whenever the calm path applies.
        if not tried and self._ungated and now is None:
            for member in self._leaders:
                if member.health.probe_due or member.spent_until:
                    break
            else:
                cumulative = self._cumulative
                index = bisect.bisect_right(cumulative, self._rng() * cumulative[-1])
                return self._leaders[min(index, len(cumulative) - 1)], 0.0
        now = time.monotonic() if now is None else now
        fallback: Member | None = None
        for priority in self._priorities:
            ready = [
                member
                for member in self.members
                if member.priority == priority and member.health.available(now)
            ]
            fresh = [member for member in ready if member not in tried]
            if fresh:
                return self._weighted(fresh, now), 0.0
            if ready and fallback is None:
                fallback = self._weighted(ready, now)
        if fallback is not None:
            return fallback, -1.0
        waiting = [member for member in self.members if not member.health.probing]
        if not waiting:
            waiting = list(self.members)
        soonest = min(waiting, key=lambda member: (member.health.until, member.priority))
        return soonest, max(0.0, soonest.health.until - now)

    def _weighted(self, candidates: list[Member], now: float) -> Member:
        for member in candidates:
            if member.spent_until and member.spent_until <= now:
                member.spent_until = 0.0  # its quota reset: back on the calm path
        with_room = [member for member in candidates if not member.spent_until and member.limiter.has_room()]
        pool = with_room or candidates
        if len(pool) == 1:
            return pool[0]
        point = self._rng() * sum(member.weight for member in pool)
        for member in pool:
            point -= member.weight
            if point < 0:
                return member
        return pool[-1]

    def status(self) -> dict[str, EndpointStatus]:
        """Every member's standing, by name."""
        now, wall = time.monotonic(), time.time()
        report = {}
        for member in self.members:
            health = member.health
            aside = health.until > now or health.probing
            report[member.name] = EndpointStatus(
                healthy=not aside,
                cooling_until=wall + (health.until - now) if health.until > now else None,
                reason=health.reason if aside or health.probe_due else None,
                recent_failures=health.failures,
                in_flight=health.in_flight,
            )
        return report
