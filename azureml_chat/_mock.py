"""``MockTransport``: a transport that answers from a function, for tests without sockets (as httpx's does).

Exported from ``azureml_chat.testing``::

    def handler(request: Request) -> MockResponse:
        assert "hi" == request.json()["messages"][0]["content"]
        return MockResponse(200, json={"choices": [{"message": {"role": "assistant", "content": "hello"}}]})

    async with AsyncChatClient(URL, "key", transport=MockTransport(handler)) as client:
        assert "hello" == (await client.chat([UserMessage("hi")])).content
"""

from __future__ import annotations

import inspect
import json as jsonlib
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy

from . import _defaults
from ._transport import Request, Response, StreamResponse

__all__ = ["MockResponse", "MockTransport"]

Content = bytes | str | Iterable[bytes] | AsyncIterable[bytes]


class MockResponse:
    """What a :class:`MockTransport` handler returns.

    Args:
        status_code: the HTTP status.
        json: a body to send as JSON (``content-type: application/json`` unless ``headers`` say otherwise).
        content: the body as bytes (or text, sent as UTF-8), or an iterable or async iterable of bytes: a
            stream, sent as those pieces (``content-type: text/event-stream`` unless ``headers`` say
            otherwise). An iterator that raises ``APIConnectionError`` breaks the stream at that point.
        headers: response headers (names are case-insensitive).

    Raises:
        TypeError: for both ``json`` and ``content``, or a status that is not a whole number in 100-599.
    """

    def __init__(
        self,
        status_code: int,
        *,
        json: Any = None,
        content: Content | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if isinstance(status_code, bool) or not isinstance(status_code, int) or not 100 <= status_code <= 599:
            raise TypeError(f"status_code must be a whole number from 100 to 599, got {status_code!r}")
        if json is not None and content is not None:
            raise TypeError("pass json= or content=, not both")
        sent = CIMultiDict(headers or {})
        if json is not None:
            content = jsonlib.dumps(json).encode()
            sent.setdefault("content-type", "application/json")
        elif isinstance(content, str):
            content = content.encode()
        elif content is not None and not isinstance(content, bytes):
            sent.setdefault("content-type", "text/event-stream")
        self.status_code = status_code
        self.headers = CIMultiDictProxy(sent)
        self.content: bytes | Iterable[bytes] | AsyncIterable[bytes] = content if content is not None else b""

    def __repr__(self) -> str:
        return f"MockResponse({self.status_code})"


Handler = Callable[[Request], MockResponse | Awaitable[MockResponse]]


class MockTransport:
    """A transport whose answers come from ``handler(request)`` (a function or a coroutine function).

    The handler gets a :class:`~azureml_chat._transport.Request` with ``.method``, ``.url``, ``.headers``,
    ``.content`` (bytes) and ``.json()``, and returns a :class:`MockResponse`. A handler that raises
    ``APIConnectionError`` (or ``APITimeoutError``) simulates a network failure, which the client retries
    like a real one.
    """

    def __init__(self, handler: Handler) -> None:
        if not callable(handler):
            raise TypeError(f"handler must be a function taking a request, got {type(handler).__name__}")
        self._handler = handler
        self.closed = False

    async def send(self, request: Request) -> Response:
        answer = await self._answer(request)
        body = answer.content
        if not isinstance(body, bytes):
            body = b"".join([piece async for piece in _pieces(body)])
        if answer.status_code >= 300:
            body = body[: _defaults.MAX_ERROR_BODY]
        return Response(answer.status_code, answer.headers, body)

    async def open(self, request: Request) -> StreamResponse:
        answer = await self._answer(request)
        body = answer.content
        return _MockStream(answer, _pieces([body] if isinstance(body, bytes) else body))

    async def aclose(self) -> None:
        self.closed = True

    async def _answer(self, request: Request) -> MockResponse:
        answer = self._handler(request)
        if inspect.isawaitable(answer):
            answer = await answer
        if not isinstance(answer, MockResponse):
            raise TypeError(
                f"a MockTransport handler must return a MockResponse, got {type(answer).__name__}"
            )
        return answer


async def _pieces(content: Iterable[bytes] | AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    if isinstance(content, AsyncIterable):
        async for piece in content:
            yield bytes(piece)
    else:
        iterator: Iterator[bytes] = iter(content)
        for piece in iterator:
            yield bytes(piece)


class _MockStream:
    """A :class:`MockResponse` read piece by piece."""

    def __init__(self, answer: MockResponse, pieces: AsyncIterator[bytes]) -> None:
        self.status_code = answer.status_code
        self.headers = answer.headers
        self._pieces: AsyncIterator[bytes] | None = pieces

    async def read_some(self) -> bytes:
        while self._pieces is not None:
            try:
                piece = await anext(self._pieces)
            except StopAsyncIteration:
                self._pieces = None
                break
            if piece:  # an empty piece would read as the end of the body
                return piece
        return b""

    def release(self) -> None:
        self._pieces = None

    def close(self) -> None:
        self._pieces = None
