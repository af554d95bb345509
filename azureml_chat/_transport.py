"""The only module that does network I/O: one aiohttp session, requests, and aiohttp errors -> ours."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Mapping

import aiohttp
import attrs
from multidict import CIMultiDictProxy
from yarl import URL

from . import _defaults
from ._config import Timeout
from ._errors import APIConnectionError, APITimeoutError, make_status_error

__all__ = ["RawResponse", "Transport", "client_timeout"]

logger = logging.getLogger("azureml_chat")


@attrs.define
class RawResponse:
    """A complete 2xx response (internal; mutable only because slotted plain attributes are cheaper to set)."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


@functools.lru_cache(maxsize=64)
def client_timeout(timeout: Timeout, *, stream: bool) -> aiohttp.ClientTimeout:
    """The aiohttp form of a :class:`Timeout`, built once per value.

    A stream gets ``read`` as aiohttp's idle ``sock_read`` (between events). A non-streaming answer arrives
    all at once when the model is done, so there the idle time is the whole wait: ``read`` bounds the
    attempt as ``min(read, total)``, which saves re-arming an idle timer on every read of the body.
    """
    if stream:
        return aiohttp.ClientTimeout(total=timeout.total, connect=timeout.connect, sock_read=timeout.read)
    bounds = [value for value in (timeout.total, timeout.read) if value is not None]
    return aiohttp.ClientTimeout(total=min(bounds) if bounds else None, connect=timeout.connect)


class Transport:
    """Owns (or borrows) the aiohttp session; turns aiohttp's failures into the package's errors."""

    def __init__(
        self, *, max_connections: int, proxy: str | None, session: aiohttp.ClientSession | None = None
    ) -> None:
        self._session = session
        self._owns_session = session is None
        self._max_connections = max_connections
        self._proxy = proxy
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def session(self) -> aiohttp.ClientSession:
        """The session, created on first use inside the running loop (aiohttp binds it to that loop)."""
        if self._closed:
            raise RuntimeError("this client is closed; create a new one")
        bound = self._loop
        if (
            self._session is not None
            and bound is not None
            and getattr(bound, "_thread_id", None) == threading.get_ident()
        ):
            # The bound asyncio loop is running in this thread, so it is the running loop (a thread runs one
            # loop at a time). asyncio.get_running_loop() would say the same with a getpid() system call on
            # every request (docs/performance.md); loops without _thread_id (uvloop) take the exact check.
            return self._session
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError(
                "this AsyncChatClient is bound to the event loop it first ran in (aiohttp sessions cannot move "
                "between loops); create one client per loop, e.g. inside the coroutine you pass to asyncio.run(), "
                "or use the sync Client"
            )
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, ttl_dns_cache=_defaults.DNS_CACHE_TTL
            )
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def aclose(self) -> None:
        """Close the session if we own it (a caller's session is left alone). Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        session, self._session = self._session, None
        if session is not None and self._owns_session:
            await session.close()
            # Transports finish closing on the next loop iteration; without it aiohttp warns (sdk_design.md 2.4).
            await asyncio.sleep(0)

    async def post(self, url: URL, data: bytes, headers: Mapping[str, str], timeout: Timeout) -> RawResponse:
        """POST ``data`` and read the whole 2xx response.

        Redirects are not followed: a scoring endpoint has no legitimate one, and following it could carry
        the key (aiohttp strips ``Authorization`` across origins, not ``api-key``) to another host.

        Raises:
            APIStatusError: (a subclass of) for a non-2xx status, with the bounded error body.
            APIConnectionError, APITimeoutError: when the endpoint could not be reached or answered too slowly.
        """
        debug = logger.isEnabledFor(logging.DEBUG)
        started = time.perf_counter() if debug else 0.0
        try:
            async with self.session().post(
                url,
                data=data,
                headers=headers,
                timeout=client_timeout(timeout, stream=False),
                proxy=self._proxy,
                allow_redirects=False,
            ) as response:
                if response.status >= 300:
                    raise await _status_error(response)
                body = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _translate(exc, url, timeout, stream=False) from exc
        if debug:
            logger.debug(
                "POST %s -> %d in %.1f ms (%d bytes, request id %s)",
                url,
                response.status,
                (time.perf_counter() - started) * 1000,
                len(body),
                response.headers.get("x-request-id"),
            )
        return RawResponse(response.status, response.headers, body)

    async def open_stream(
        self, url: URL, data: bytes, headers: Mapping[str, str], timeout: Timeout
    ) -> aiohttp.ClientResponse:
        """POST ``data`` and return the open 2xx response; the caller must ``release()``/``close()`` it."""
        try:
            response = await self.session().post(
                url,
                data=data,
                headers=headers,
                timeout=client_timeout(timeout, stream=True),
                proxy=self._proxy,
                allow_redirects=False,
            )
            if response.status >= 300:
                try:
                    raise await _status_error(response)
                finally:
                    response.release()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _translate(exc, url, timeout, stream=True) from exc
        return response


async def _status_error(response: aiohttp.ClientResponse) -> Exception:
    body = bytearray()
    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
        while len(body) < _defaults.MAX_ERROR_BODY:
            piece = await response.content.read(_defaults.MAX_ERROR_BODY - len(body))
            if not piece:
                break
            body += piece
    sent_id = response.request_info.headers.get("x-ms-client-request-id")
    return make_status_error(response.status, response.headers, bytes(body), sent_request_id=sent_id)


def _translate(exc: BaseException, url: URL, timeout: Timeout, *, stream: bool) -> APIConnectionError:
    """aiohttp's and asyncio's failures as :class:`APIConnectionError` / :class:`APITimeoutError`."""
    if isinstance(exc, aiohttp.ServerTimeoutError):
        which = "connect" if isinstance(exc, aiohttp.ConnectionTimeoutError) else "read"
        limit = timeout.connect if which == "connect" else timeout.read
        return APITimeoutError(f"{which} timeout after {limit} s talking to {url.host}", url=str(url))
    if isinstance(exc, TimeoutError):
        # For a non-streaming call the bound is min(read, total) (see client_timeout); name the one that hit.
        which, limit = ("total", timeout.total)
        if (
            not stream
            and timeout.read is not None
            and (timeout.total is None or timeout.read < timeout.total)
        ):
            which, limit = ("read", timeout.read)
        return APITimeoutError(f"{which} timeout after {limit} s talking to {url.host}", url=str(url))
    if isinstance(exc, aiohttp.ClientConnectorError):
        hint = " (is the endpoint URL still a placeholder?)" if "<" in (url.host or "") else ""
        return APIConnectionError(
            f"cannot connect to {url.host}:{url.port}: {exc.os_error}{hint}", url=str(url)
        )
    return APIConnectionError(f"connection to {url.host} failed: {type(exc).__name__}: {exc}", url=str(url))
