"""The transport: the only code that does network I/O, and the seam where another one plugs in.

A transport takes a :class:`Request` and either returns the whole :class:`Response` (:meth:`AsyncTransport.send`)
or an open :class:`StreamResponse` whose body is read piece by piece (:meth:`AsyncTransport.open`). It returns
every status as it came (the pipeline decides what a status means) and raises only
:class:`~azureml_chat.APIConnectionError` or :class:`~azureml_chat.APITimeoutError` when the endpoint could not
be reached, answered too slowly, or the connection broke, including while a stream is read.

:class:`AiohttpTransport` is the default; ``azureml_chat.testing.MockTransport`` answers from a function.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol, runtime_checkable

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from . import _defaults
from ._codec import loads
from ._config import Timeout
from ._errors import APIConnectionError, APITimeoutError, ClientClosedError

__all__ = [
    "AiohttpTransport",
    "AsyncTransport",
    "Request",
    "Response",
    "StreamResponse",
    "client_timeout",
    "read_only",
]

# Request and Response are named tuples: immutable values built once per attempt, at C speed.


class Request(NamedTuple):
    """One HTTP request, as the pipeline hands it to a transport.

    Attributes:
        method: ``"POST"``.
        url: the full URL.
        headers: what to send (lower-case names); the key or token is among them, so never log them.
        content: the encoded JSON body.
        timeout: the limits of this attempt.
    """

    method: str
    url: str
    headers: Mapping[str, str]
    content: bytes
    timeout: Timeout

    def json(self) -> Any:
        """The body, decoded."""
        return loads(self.content)

    def __repr__(self) -> str:
        # Headers carry the key or token, and bodies can be large: neither is shown.
        return f"Request({self.method!r}, {self.url!r}, {len(self.content)} bytes)"


def read_only(headers: Mapping[str, str]) -> Mapping[str, str]:
    """Response headers as callers get them: read-only, names case-insensitive. aiohttp's (and MockTransport's)
    already are; another transport's mapping is copied once."""
    if type(headers) is CIMultiDictProxy:
        return headers
    return CIMultiDictProxy(CIMultiDict(headers))


class Response(NamedTuple):
    """A whole response: its status, headers and body (for a status >= 300 the body may be cut at
    ``MAX_ERROR_BODY`` bytes, so a huge error page cannot exhaust memory)."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes


@runtime_checkable
class StreamResponse(Protocol):
    """A response whose body is still arriving. Hand it back with :meth:`release` (read to the end: the
    connection may be reused) or :meth:`close` (not read to the end: the connection is dropped)."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    async def read_some(self) -> bytes:
        """The next bytes of the body as they arrive; ``b""`` at its end.

        Raises:
            APIConnectionError: the connection broke, or (``APITimeoutError``) no byte came within the
                read timeout.
        """
        ...

    def release(self) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class AsyncTransport(Protocol):
    """What the client needs from a transport. Pass one as ``AsyncChatClient(..., transport=...)``."""

    async def send(self, request: Request) -> Response:
        """Send ``request`` and read the whole response, whatever its status."""
        ...

    async def open(self, request: Request) -> StreamResponse:
        """Send ``request`` and return as soon as the status line and headers arrived."""
        ...

    async def aclose(self) -> None:
        """Release what the transport holds (connections). Safe to call twice."""
        ...


def client_timeout(timeout: Timeout, *, stream: bool) -> aiohttp.ClientTimeout:
    """The aiohttp form of a :class:`Timeout` (a transport keeps one per value).

    A stream gets ``read`` as aiohttp's idle ``sock_read`` (between events). A non-streaming answer arrives
    all at once when the model is done, so there the idle time is the whole wait: ``read`` bounds the
    attempt as ``min(read, total)``, which saves re-arming an idle timer on every read of the body.
    """
    if stream:
        return aiohttp.ClientTimeout(total=timeout.total, connect=timeout.connect, sock_read=timeout.read)
    bounds = [value for value in (timeout.total, timeout.read) if value is not None]
    return aiohttp.ClientTimeout(total=min(bounds) if bounds else None, connect=timeout.connect)


class AiohttpTransport:
    """The default transport: one aiohttp session (a connection pool), created lazily in the running loop.

    Args:
        max_connections: the pool size.
        session: a session the caller owns; then :meth:`aclose` leaves it open.

    A proxy named by ``HTTP(S)_PROXY`` (and not bypassed by ``NO_PROXY``) is used; the environment is read
    once per URL, instead of aiohttp's ``trust_env=True``, which costs two thread hops per request
    (performance-anchors.md).
    """

    def __init__(
        self,
        *,
        max_connections: int = _defaults.MAX_CONNECTIONS,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._session = session
        self._owns_session = session is None
        self._max_connections = max_connections
        # Worked out once per URL and per Timeout value, not per request (plain dicts: one hash each).
        self._targets: dict[str, tuple[URL, str | None]] = {}
        self._whole_timeouts: dict[Timeout, aiohttp.ClientTimeout] = {}
        self._stream_timeouts: dict[Timeout, aiohttp.ClientTimeout] = {}
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def session(self) -> aiohttp.ClientSession:
        """The session, created on first use inside the running loop (aiohttp binds it to that loop)."""
        if self._closed:
            raise ClientClosedError(
                "this client's connection pool is closed (the client, or the one it is a sibling of, was "
                "closed); create a new client, and close it only when you are done with it"
            )
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

    def proxy_for(self, url: str) -> str | None:
        """The proxy the environment names for ``url``, if any (read once per URL)."""
        return self._target(url)[1]

    def _target(self, url: str) -> tuple[URL, str | None]:
        target = self._targets.get(url)
        if target is None:
            target = self._targets[url] = (URL(url), _proxy_from_environment(url))
        return target

    def _aiohttp_timeout(self, timeout: Timeout, *, stream: bool) -> aiohttp.ClientTimeout:
        converted = client_timeout(timeout, stream=stream)
        (self._stream_timeouts if stream else self._whole_timeouts)[timeout] = converted
        return converted

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

    async def send(self, request: Request) -> Response:
        """POST and read the whole response.

        Redirects are not followed: a scoring endpoint has no legitimate one, and following it could carry
        the key (aiohttp strips ``Authorization`` across origins, not ``api-key``) to another host.
        """
        timeout = request.timeout
        url, proxy = self._target(request.url)
        try:
            async with self.session().post(
                url,
                data=request.content,
                headers=request.headers,
                timeout=self._whole_timeouts.get(timeout) or self._aiohttp_timeout(timeout, stream=False),
                proxy=proxy,
                allow_redirects=False,
            ) as response:
                status = response.status
                body = await (response.read() if status < 300 else _read_error_body(response))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise translate(exc, request.url, timeout, stream=False) from cause(exc)
        return Response(status, response.headers, body)

    async def open(self, request: Request) -> StreamResponse:
        """POST and return the response as soon as its headers arrived; read it with ``read_some()``."""
        timeout = request.timeout
        url, proxy = self._target(request.url)
        try:
            response = await self.session().post(
                url,
                data=request.content,
                headers=request.headers,
                timeout=self._stream_timeouts.get(timeout) or self._aiohttp_timeout(timeout, stream=True),
                proxy=proxy,
                allow_redirects=False,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise translate(exc, request.url, timeout, stream=True) from cause(exc)
        return _AiohttpStream(response, request.url, timeout)


class _AiohttpStream:
    """An open aiohttp response as a :class:`StreamResponse`."""

    def __init__(self, response: aiohttp.ClientResponse, url: str, timeout: Timeout) -> None:
        self._response = response
        self._url = url
        self._timeout = timeout
        self.status_code = response.status
        self.headers: Mapping[str, str] = response.headers

    async def read_some(self) -> bytes:
        try:
            return await self._response.content.readany()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise translate(exc, self._url, self._timeout, stream=True, reading=True) from cause(exc)

    def release(self) -> None:
        self._response.release()

    def close(self) -> None:
        self._response.close()


async def _read_error_body(response: aiohttp.ClientResponse) -> bytes:
    body = bytearray()
    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
        while len(body) < _defaults.MAX_ERROR_BODY:
            piece = await response.content.read(_defaults.MAX_ERROR_BODY - len(body))
            if not piece:
                break
            body += piece
    return bytes(body)


def translate(
    exc: BaseException, url: str, timeout: Timeout, *, stream: bool, reading: bool = False
) -> APIConnectionError:
    """aiohttp's and asyncio's failures as :class:`APIConnectionError` / :class:`APITimeoutError`, in one
    wording whether they happened while connecting, waiting for the answer or (``reading``) reading a stream.
    A timeout names itself and its value. Raise it ``from cause(exc)``."""
    host = URL(url).host
    doing = "while reading the stream from" if reading else "waiting for an answer from"
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return APITimeoutError(
            f"the connect timeout of {timeout.connect} s ran out connecting to {host}", url=url
        )
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return APITimeoutError(f"the read timeout of {timeout.read} s ran out {doing} {host}", url=url)
    if isinstance(exc, TimeoutError):
        # For a non-streaming call the bound is min(read, total) (see client_timeout): name the one that ran out.
        if (
            not stream
            and timeout.read is not None
            and (timeout.total is None or timeout.read < timeout.total)
        ):
            return APITimeoutError(f"the read timeout of {timeout.read} s ran out {doing} {host}", url=url)
        return APITimeoutError(
            f"the total timeout of {timeout.total} s per attempt ran out {doing} {host}", url=url
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        hint = " (is the endpoint URL still a placeholder?)" if "<" in (host or "") else ""
        return APIConnectionError(f"cannot connect to {host}:{URL(url).port}: {exc.os_error}{hint}", url=url)
    reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return APIConnectionError(f"connection to {host} failed: {reason}", url=url)


def cause(exc: BaseException) -> BaseException | None:
    """What a translated failure is chained to: the ``OSError`` of a refused or unresolvable connection, else
    aiohttp's own error; nothing for a timeout (asyncio's ``TimeoutError`` and ``CancelledError`` say no more
    than the message does)."""
    if isinstance(exc, TimeoutError):  # aiohttp's timeouts are TimeoutErrors too
        return None
    if isinstance(exc, aiohttp.ClientConnectorError):
        return exc.os_error
    return exc


def _proxy_from_environment(url: str) -> str | None:
    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(parts.scheme)
    bypass: Callable[[str, dict[str, str]], bool] = getattr(urllib.request, "proxy_bypass_environment")  # noqa: B009 (missing from typeshed)
    if proxy and not bypass(parts.hostname or "", proxies):
        return proxy
    return None
