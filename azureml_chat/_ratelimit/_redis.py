"""``RedisStore``: one limit's state in Redis, shared by every process that names it (``RateLimit(store=...)``).

Each admission is one round trip: the ``ACQUIRE`` script (``_lua.py``) checks the cooldown, claims a place in
the release, checks the token budget and reserves the request budget, atomically. So a 429 recorded by any
process holds back every admission anywhere after it, with no sync period. The other changes (a 429's cooldown,
an answer during a release, an answer's tokens) are sent at once without making the call wait; this process
also keeps the cooldown's deadline itself, so its own next admission does not race that write.

The store must never stall or fail a call. Every operation runs under ``store_timeout`` (a quarter second by
default); on a timeout or a connection error the store is *down*: one WARNING is logged, calls go on under this
process's own limits (the in-process store, ``local``), and the store is tried again every ``STORE_RETRY``
seconds. redis-py's own retries are off and its pool waits for a connection instead of raising, so the timeout
is the whole story.

A redis-py client belongs to the event loop that made it, so there is one per loop (the sync ``Client``'s loop
thread, a Ray actor's loop, an application's loop), made on first use and closed by :meth:`aclose`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .. import _defaults
from .._errors import ConfigurationError
from . import _lua
from ._config import RateLimit
from ._store import Grant, InProcessStore

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

__all__ = ["RedisStore"]

logger = logging.getLogger("azureml_chat")

# The store's release generations are clock milliseconds (_lua.START_COOLDOWN); those of the in-process store
# it falls back on count from 1, so a ticket says which store admitted it.
_FIRST_GENERATION = 1_000_000_000


class _Connection:
    """One event loop's client and its scripts."""

    def __init__(self, url: str, timeout: float) -> None:
        from redis.asyncio import BlockingConnectionPool, Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=_defaults.STORE_CONNECTIONS,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self.client: Redis = Redis(connection_pool=pool)
        self.acquire: AsyncScript = self.client.register_script(_lua.ACQUIRE)
        self.start_cooldown: AsyncScript = self.client.register_script(_lua.START_COOLDOWN)
        self.answered: AsyncScript = self.client.register_script(_lua.ANSWERED)
        self.charge: AsyncScript = self.client.register_script(_lua.CHARGE)
        self.unreserve: AsyncScript = self.client.register_script(_lua.UNRESERVE)

    async def aclose(self) -> None:
        await self.client.aclose(close_connection_pool=True)


class RedisStore:
    """A :class:`RateLimitStore` in Redis, for the limit named ``key``.

    Args:
        limit: the limit (its ``store`` URL, budgets and ``store_timeout``).
        key: the limit's name in the store (a pool gives each endpoint its own).
        local: the store to fall back to while Redis cannot be reached (this process's own limits).
        wake: called when an answer this process sent opened the release's next stage (its waiting calls need
            not wait for their next look at the store).
    """

    local = False

    def __init__(
        self, limit: RateLimit, *, key: str, local: InProcessStore, wake: Callable[[], None] = lambda: None
    ) -> None:
        try:
            import redis  # noqa: F401  # only to say what is missing, here rather than on the first call
        except ImportError:
            raise ConfigurationError(
                'RateLimit(store="redis://...") needs the redis package: pip install "azureml-chat[redis]"'
            ) from None
        assert limit.store is not None
        self._url = limit.store
        self._keys = _lua.keys(key)
        self._timeout = limit.store_timeout
        self._fallback = local
        self._wake = wake
        # The scripts' budget arguments, worked out once (milliseconds).
        rpm, tpm = limit.requests_per_minute, limit.tokens_per_minute
        self._request_ms = 60_000.0 / rpm if rpm else 0.0
        self._token_ms = 60_000.0 / tpm if tpm else 0.0
        # The in-process bucket's burst: one second's worth, at least one token (_store._Bucket).
        self._token_burst_ms = (max(1.0, tpm / 60.0) - 1.0) * self._token_ms if tpm else 0.0
        self._ttl_ms = _defaults.STORE_RELEASE_TTL * 1000.0
        self._lapse_ms = _defaults.STORE_STAGE_LAPSE * 1000.0
        self._connections: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Connection] = (
            weakref.WeakKeyDictionary()
        )
        self._cooldown_until = 0.0  # this process's own copy of the deadline (time.monotonic)
        self._down_until = 0.0  # while the store is down: when to try it again (time.monotonic)
        self._sending: set[asyncio.Task[Any]] = set()

    # --- the protocol ---------------------------------------------------------------------------------------

    def quiet(self) -> bool:
        return False  # every admission asks the store: a 429 elsewhere may have started a cooldown

    async def acquire(self) -> Grant:
        left = self._cooldown_until - time.monotonic()
        if left > 0:
            return None, left  # this process's own 429: no need to ask
        if self._down():
            return await self._fallback.acquire()
        reply = await self._run(
            lambda c: c.acquire(
                keys=self._keys,
                args=[self._request_ms, self._token_ms, self._token_burst_ms, self._ttl_ms, self._lapse_ms],
            )
        )
        if reply is None:
            return await self._fallback.acquire()
        generation, wait_ms = int(reply[0]), float(reply[1]) / 1000.0
        return (None if generation < 0 else generation), wait_ms

    def unreserve(self) -> None:
        if self._down():
            self._fallback.unreserve()  # where it was reserved
        elif self._request_ms:
            self._send(lambda c: c.unreserve(keys=self._keys[1:2], args=[self._request_ms]))

    def start_cooldown(self, seconds: float) -> None:
        self._cooldown_until = max(self._cooldown_until, time.monotonic() + seconds)
        self._fallback.start_cooldown(seconds)  # what this process falls back on knows it too
        self._send(lambda c: c.start_cooldown(keys=self._keys[:1], args=[seconds * 1000.0, self._ttl_ms]))

    def answered(self, generation: int) -> bool:
        if generation < _FIRST_GENERATION:
            return self._fallback.answered(generation)
        self._send(
            lambda c: c.answered(
                keys=self._keys[:1], args=[generation, _defaults.RELEASE_OPEN, self._ttl_ms]
            ),
            then=self._opened,
        )
        return False  # not known yet: _opened wakes this process's waiting calls (the others look every PROBE_POLL)

    def has_room(self) -> bool:
        return self._cooldown_until <= time.monotonic()

    def charge(self, tokens: float) -> None:
        self._fallback.charge(tokens)  # so the local token budget is current should the store go down
        if self._token_ms:
            self._send(lambda c: c.charge(keys=self._keys[2:], args=[tokens * self._token_ms]))

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        sending = [task for task in self._sending if task.get_loop() is loop]
        if sending:
            # Each is bounded by store_timeout already; whatever is left past it is cancelled, not leaked.
            _, late = await asyncio.wait(sending, timeout=self._timeout)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        connection = self._connections.pop(loop, None)
        if connection is not None:
            await connection.aclose()

    # --- talking to Redis -----------------------------------------------------------------------------------

    def _down(self) -> bool:
        return self._down_until > time.monotonic()

    def _connection(self) -> _Connection:
        loop = asyncio.get_running_loop()
        connection = self._connections.get(loop)
        if connection is None:
            connection = self._connections[loop] = _Connection(self._url, self._timeout)
        return connection

    async def _run(self, operation: Callable[[_Connection], Awaitable[Any]]) -> Any:
        """One script within ``store_timeout``; ``None`` (and the store marked down) when it failed."""
        from redis.exceptions import RedisError

        was_down = self._down_until != 0.0
        try:
            async with asyncio.timeout(self._timeout):
                reply = await operation(self._connection())
        except (RedisError, OSError, TimeoutError) as exc:
            self._went_down(exc)
            return None
        if was_down:
            self._down_until = 0.0
            logger.info("Rate-limit store %s answers again: limits are shared again", self._where())
        return reply

    def _opened(self, room: Any) -> None:
        if room == 1:
            self._wake()

    def _send(
        self, operation: Callable[[_Connection], Awaitable[Any]], then: Callable[[Any], None] = lambda _: None
    ) -> None:
        """Run ``operation`` without waiting for it (a change the call need not wait for), then ``then(reply)``."""
        if self._down():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # handed back outside any loop (a stream dropped by the garbage collector): nothing to send on
        task = loop.create_task(self._run(operation))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)
        task.add_done_callback(lambda done: None if done.cancelled() else then(done.result()))

    def _went_down(self, error: BaseException) -> None:
        if self._down_until == 0.0:
            logger.warning(
                "Rate-limit store %s cannot be reached (%s): calls go on under this process's own limits, "
                "and the store is tried again every %.0f s",
                self._where(),
                type(error).__name__ if isinstance(error, TimeoutError) else error,
                _defaults.STORE_RETRY,
            )
        self._down_until = time.monotonic() + _defaults.STORE_RETRY

    def _where(self) -> str:
        # The URL without its password: redis://user:secret@host:6379/0 -> redis://host:6379/0
        scheme, _, rest = self._url.partition("://")
        return f"{scheme}://{rest.rpartition('@')[2]} ({self._keys[0].rsplit(':', 1)[0]})"
