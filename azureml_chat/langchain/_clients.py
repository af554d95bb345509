"""The clients behind one LangChain model: an :class:`AsyncChatClient` per event loop, one sync ``Client``.

Every client the pool builds is a sibling of one template client (the one given to ``from_client``, or one
the model built from its fields): each has its own connection pool, and all share the template's rate
limiter, so one ``RateLimit`` is enforced once across every loop the model runs in.

An ``AsyncChatClient`` binds its aiohttp session to the loop it first runs in, and LangChain code meets many
loops: ``asyncio.run`` per call, a fresh loop per test, Jupyter's, a web server's. So the pool keeps one
client per loop. Each client it creates is closed when its loop shuts down: a started async generator
is registered with the loop, and ``asyncio.run`` / ``asyncio.Runner`` (``loop.shutdown_asyncgens()``)
close it, which runs its ``finally`` and closes the client. The same happens if the pool is garbage-collected
while the loop still runs (asyncio's async-generator finalizer schedules the close on that loop). A loop
that is closed without ``shutdown_asyncgens()`` cannot close anything, so its client's connections leak;
``aclose()`` in that loop first avoids it.

Clients passed in by the caller (``from_client``) are never closed. A caller's sync ``Client`` is used for sync
calls (it has its loop thread already); a caller's ``AsyncChatClient`` is a template like one the model built, used
for calls only when it runs on a ``session=`` of the caller's, so the pool never makes a caller's client open
connections it would then have to close.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import weakref
from collections.abc import AsyncGenerator, Callable
from typing import Any

from .._client import AsyncChatClient
from .._options import ClientOptions
from .._sync import Client

__all__ = ["ClientPool"]

# Closes scheduled on another loop, kept referenced until they finish (a pending task is only weakly held).
_pending: set[concurrent.futures.Future[None]] = set()


async def _close_at_loop_shutdown(
    client: AsyncChatClient, forget: Callable[[], None]
) -> AsyncGenerator[None, None]:
    """Yields once and waits: closing this generator (loop shutdown, GC, :meth:`ClientPool.aclose`) closes
    ``client``."""
    try:
        yield
    finally:
        forget()
        await client.aclose()


class _LoopClient:
    """An owned client and the generator whose closing closes it."""

    def __init__(self, client: AsyncChatClient, closer: AsyncGenerator[None, None]) -> None:
        self.client = client
        self.closer = closer


class ClientPool:
    """Hands out the right client for the calling context, creating (and later closing) siblings as needed.

    Args:
        client: the template every client of the pool is a sibling of (sharing its rate limiter). With
            ``borrowed``, it is a caller's ``AsyncChatClient`` (also used on the loop it belongs to) or
            ``Client`` (also used for synchronous calls), and the pool never closes it; without, an
            ``AsyncChatClient`` the model built, never used for calls.
        borrowed: whether ``client`` is the caller's.
    """

    def __init__(self, client: AsyncChatClient | Client, *, borrowed: bool) -> None:
        self._client, self._borrowed = client, borrowed
        self.template = client.async_client if isinstance(client, Client) else client
        self.options = _sibling_options(self.template)
        self._lock = threading.Lock()
        self._owned: dict[asyncio.AbstractEventLoop, _LoopClient] = {}
        # A caller's AsyncChatClient is called through only when it runs on the caller's own aiohttp session
        # (which cannot be handed to siblings on other loops). Otherwise the pool calls through siblings it
        # owns and closes: the caller's client never opens a connection pool on the model's behalf, so
        # ``AsyncChatClient(url, key).to_langchain()``, whose client nobody can name and close, leaks nothing.
        self._borrowed_async = (
            client
            if borrowed and isinstance(client, AsyncChatClient) and client._options.get("session") is not None
            else None
        )
        self._borrowed_loop: asyncio.AbstractEventLoop | None = None
        self._sync: Client | None = client if borrowed and isinstance(client, Client) else None
        self._owns_sync = False
        if self._borrowed_async is not None:
            # A client handed over inside a running loop belongs to that loop; otherwise to the first loop
            # the model runs in.
            with contextlib.suppress(RuntimeError):
                self._borrowed_loop = asyncio.get_running_loop()

    async def async_client(self) -> AsyncChatClient:
        """The client for the running loop (created on first use in that loop)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._borrowed_async is not None and self._borrowed_loop in (None, loop):
                self._borrowed_loop = loop
                return self._borrowed_async
            owned = self._owned.get(loop)
            if owned is not None:
                return owned.client
            client = self._sibling()
            closer = _close_at_loop_shutdown(client, _forgetter(weakref.ref(self), loop, client))
            self._owned[loop] = _LoopClient(client, closer)
        # The first step registers the generator with the loop (asyncio's firstiter hook); it then waits at
        # its ``yield`` until the loop shuts down or we close it.
        await closer.__anext__()
        return client

    def sync_client(self) -> Client:
        """The synchronous client (its own loop thread), created on first use."""
        with self._lock:
            if self._sync is None:
                self._sync = Client._driving(self._sibling())
                self._owns_sync = True
            return self._sync

    def close(self) -> None:
        """Close the owned sync client now, and the owned async clients on their loops.

        An async client whose loop is running (in this thread or another) is closed there as soon as that
        loop gets control; one whose loop is idle is closed by running that loop briefly.
        """
        for loop, owned in self._take_owned():
            _close_on(loop, owned.closer)
        sync = self._take_sync()
        if sync is not None:
            sync.close()

    async def aclose(self) -> None:
        """Close what the pool owns: the running loop's client before returning, the others as in
        :meth:`close`."""
        current = asyncio.get_running_loop()
        for loop, owned in self._take_owned():
            if loop is current:
                await owned.closer.aclose()
            else:
                _close_on(loop, owned.closer)
        sync = self._take_sync()
        if sync is not None:
            # Client.close() joins its loop thread; keep that wait off this loop.
            await asyncio.to_thread(sync.close)

    def _sibling(self) -> AsyncChatClient:
        """A new client sharing the template's rate limiter, with its own connection pool (it may run on
        another loop than the template's)."""
        return self.template._sibling(self.options.copy(), own_transport=True)

    def _forget(self, loop: asyncio.AbstractEventLoop, client: AsyncChatClient) -> None:
        with self._lock:
            owned = self._owned.get(loop)
            if owned is not None and owned.client is client:
                del self._owned[loop]

    def _take_owned(self) -> list[tuple[asyncio.AbstractEventLoop, _LoopClient]]:
        with self._lock:
            owned = list(self._owned.items())
            self._owned.clear()
        return owned

    def _take_sync(self) -> Client | None:
        with self._lock:
            sync = self._sync if self._owns_sync else None
            if sync is not None:
                self._sync, self._owns_sync = None, False
        return sync

    def __deepcopy__(self, memo: dict[int, Any]) -> ClientPool:
        # A copied model gets its own connections; the template (so the rate limiter) and a borrowed client
        # stay shared (that client is the caller's).
        pool = ClientPool(self._client, borrowed=self._borrowed)
        pool._borrowed_loop = self._borrowed_loop
        return pool


def _sibling_options(template: AsyncChatClient) -> ClientOptions:
    """``template``'s options for its siblings on other loops: without its ``session`` (a session belongs to
    one loop), and with what it read from the ``AZUREML_*`` variables pinned, so later changes to the
    environment cannot set the siblings apart from it."""
    endpoint = template._endpoint
    options: ClientOptions = {**template._options, "timeout": template._config.timeout}
    if options.get("endpoints") is None:
        options["endpoint_url"] = endpoint.url
        options["endpoint_type"] = endpoint.endpoint_type
        options["formatter"] = endpoint.formatter
        options["deployment"] = endpoint.deployment
        options["api_key"] = endpoint.api_key
    # else every endpoint is spelled out (nothing came from the environment), and the siblings share the
    # template's router: one health and one set of limiters across the model's loops.
    options.pop("session", None)
    return options


def _close_on(loop: asyncio.AbstractEventLoop, closer: AsyncGenerator[None, None]) -> None:
    """Close ``closer`` (and so its client) on its own loop, without waiting when that loop is busy."""
    if loop.is_closed():
        return  # shut down already: shutdown_asyncgens() closed it
    if loop.is_running():
        future = asyncio.run_coroutine_threadsafe(_aclose(closer), loop)
        _pending.add(future)
        future.add_done_callback(_pending.discard)
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        loop.run_until_complete(_aclose(closer))
    # else: another loop runs in this thread, so this idle one cannot be run here; the generator's finalizer
    # closes the client when that loop next runs.


def _forgetter(
    pool: weakref.ref[ClientPool], loop: asyncio.AbstractEventLoop, client: AsyncChatClient
) -> Callable[[], None]:
    # A weak reference, so the generator does not keep the pool alive (the pool holds the generator).
    def forget() -> None:
        alive = pool()
        if alive is not None:
            alive._forget(loop, client)

    return forget


async def _aclose(closer: AsyncGenerator[None, None]) -> None:
    await closer.aclose()
