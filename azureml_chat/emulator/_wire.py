"""Putting answers on the wire: JSON bodies, SSE streams, broken bodies, dropped connections, binding.

The byte-level side of faults lives here so the application module reads as routing.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import sys
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from ._errors import EmulatorError, PortInUseError
from ._faults import Fault, broken_body

__all__ = ["bind", "close_connection", "json_body", "json_error", "sse"]


async def sse(request: web.Request, events: list[str], fault: Fault | None) -> web.StreamResponse:
    """Send ``events`` (JSON texts) as ``data:`` events then ``[DONE]``, bent by the fault's stream options.

    ``drop_after=N`` closes the connection before event N (so after N events; a larger N changes nothing).
    """
    if fault is not None and fault.body == "html":
        return web.Response(text=broken_body("html", None)[0], content_type="text/html")
    if fault is not None and fault.body == "malformed":
        events[0] = events[0][: len(events[0]) // 2]
    if fault is None or not fault.no_done:
        events.append("[DONE]")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    delay = fault.slow_stream if fault is not None else 0.0
    drop_after = fault.drop_after if fault is not None else None
    try:
        for index, event in enumerate(events):
            if index == drop_after:
                close_connection(request)
                return response
            if index and delay:
                await asyncio.sleep(delay)
            await response.write(f"data: {event}\n\n".encode())
        await response.write_eof()
    except ConnectionError:
        pass  # The client hung up mid-stream: nothing left to tell it.
    return response


def json_body(answer: Any, fault: Fault | None) -> web.Response:
    """A 200 with ``answer`` as JSON, or the broken body the fault asks for."""
    if fault is not None and fault.body is not None:
        text, content_type = broken_body(fault.body, answer)
        return web.Response(text=text, content_type=content_type)
    return web.json_response(answer)


def json_error(status: int, body: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    """An error response with a JSON body."""
    return web.json_response(body, status=status, headers=headers)


def close_connection(request: web.Request) -> None:
    """End the connection under ``request`` without finishing the response."""
    # close(), not abort(): what was written so far still reaches the client, then the connection ends
    # without the chunked terminator, which the client reads as a payload error.
    if request.transport is not None:
        request.transport.close()


def bind(host: str, port: int) -> socket.socket:
    """A non-blocking socket bound to ``host:port``.

    Raises:
        PortInUseError: the port is taken.
        EmulatorError: the host does not resolve or the address cannot be bound.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise EmulatorError(
            f"cannot start the emulator: cannot resolve host {host!r} ({exc.strerror})"
        ) from exc
    sock = socket.socket(family, kind, proto)
    try:
        if sys.platform != "win32":
            # Lets a restarted emulator reuse its port while old connections sit in TIME_WAIT; on Windows the
            # same option would let two servers share a port.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", None)):
            raise PortInUseError(
                f"cannot start the emulator: port {port} on {host} is already in use "
                "(choose another port, or 0 for a free one)"
            ) from exc
        raise EmulatorError(f"cannot start the emulator on {host}:{port}: {exc.strerror or exc}") from exc
    return sock
