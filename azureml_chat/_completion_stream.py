"""``AsyncCompletionStream``: an async iterator of :class:`CompletionChunk` that always releases its
connection, and ``CompletionStream``, its synchronous view for :class:`~azureml_chat.Client`.

The rules are :class:`~azureml_chat.AsyncChatStream`'s: opening the stream is retried like any call; once a
chunk may have reached the caller nothing is retried, and any failure is a :class:`StreamError`. The HTTP
response is released on exhaustion, ``break`` (through ``async with`` or garbage collection), an error,
cancellation and :meth:`AsyncCompletionStream.aclose`. A route that cannot stream (``/score``) yields the
whole completion as one chunk.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

import aiohttp

from ._codec import decode_json
from ._errors import StreamError, error_message
from ._responses import CompletionChunk, CompletionResponse, Usage
from ._sse import SSEDecoder
from .formatters import ContentFormatter, Route

__all__ = ["AsyncCompletionStream", "CompletionStream", "LoopRunner"]

T = TypeVar("T")

Opener = Callable[[], Awaitable["aiohttp.ClientResponse | CompletionResponse"]]


class _Accumulator:
    """Folds chunks into the :class:`CompletionResponse` a non-streaming call would have returned."""

    def __init__(self) -> None:
        self._text: list[str] = []
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.model: str | None = None
        self.id: str | None = None

    def add(self, chunk: CompletionChunk) -> None:
        self._text.append(chunk.text)
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
        if chunk.usage is not None:
            self.usage = chunk.usage
        self.model = self.model or chunk.model
        self.id = self.id or chunk.id

    def response(self, *, request_id: str | None) -> CompletionResponse:
        return CompletionResponse(
            text="".join(self._text),
            finish_reason=self.finish_reason,
            usage=self.usage,
            model=self.model,
            id=self.id,
            request_id=request_id,
        )


def _whole(response: CompletionResponse) -> CompletionChunk:
    """The whole completion as one chunk, for routes that cannot stream."""
    return CompletionChunk(
        text=response.text,
        finish_reason=response.finish_reason,
        usage=response.usage,
        model=response.model,
        id=response.id,
        raw=response.raw,
    )


class AsyncCompletionStream:
    """The chunks of one streamed completion. Use ``async with client.stream_complete(...) as stream:``.

    Each :class:`CompletionChunk` carries a ``text`` delta; after the last one, :meth:`final_response` gives
    the aggregated :class:`CompletionResponse`.
    """

    def __init__(
        self,
        opener: Opener,
        *,
        formatter: ContentFormatter,
        route: Route,
        request_id: str,
        max_event_bytes: int,
        on_release: Callable[[Usage | None], None] | None = None,
    ) -> None:
        self._opener = opener
        self._on_release = on_release
        self._formatter = formatter
        self._route = route
        self._request_id = request_id
        self._decoder = SSEDecoder(max_event_bytes=max_event_bytes)
        self._response: aiohttp.ClientResponse | None = None
        self._ready: deque[CompletionChunk] = deque()
        self._accumulator = _Accumulator()
        self._opened = False
        self._finished = False
        self._closed = False

    @property
    def request_id(self) -> str:
        """The server's ``x-request-id`` once the stream is open, else our client request id."""
        return self._request_id

    def final_response(self) -> CompletionResponse:
        """The whole completion, aggregated from every chunk (text joined, last finish reason, usage).

        Raises:
            RuntimeError: if the stream has not been read to its end.
        """
        if not self._finished or self._ready:
            raise RuntimeError("the stream is not finished: read it to the end before final_response()")
        return self._accumulator.response(request_id=self._request_id)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> CompletionChunk:
        if self._closed:
            raise StopAsyncIteration
        while not self._ready:
            if self._finished or self._closed:
                raise StopAsyncIteration
            try:
                if not self._opened:
                    await self._open()
                else:
                    await self._read_more()
            except BaseException:
                self._release(drop=True)
                raise
        chunk = self._ready.popleft()
        self._accumulator.add(chunk)
        return chunk

    async def aclose(self) -> None:
        """Stop reading and release the connection. Safe to call at any time, and twice."""
        self.release_now()

    def release_now(self) -> None:
        """:meth:`aclose` without the ``await``, for callers that cannot await (it does no I/O)."""
        self._closed = True
        self._release(drop=not self._finished)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        # Synchronous and idempotent: a stream dropped after `break` without `async with` gives its socket back.
        response = self.__dict__.get("_response")
        if response is not None:
            response.close()

    # --- internals ---------------------------------------------------------------------------------------

    async def _open(self) -> None:
        opened = await self._opener()
        self._opened = True
        if isinstance(opened, CompletionResponse):
            # The route cannot stream (/score): the whole completion is one chunk.
            self._request_id = opened.request_id or self._request_id
            self._ready.append(_whole(opened))
            self._finished = True
            return
        self._response = opened
        self._request_id = opened.headers.get("x-request-id") or self._request_id
        if not opened.content_type.startswith("text/event-stream"):
            await self._read_whole_json(opened)

    async def _read_whole_json(self, response: aiohttp.ClientResponse) -> None:
        # Some servers ignore "stream": true and answer with one JSON body; stream it as one chunk.
        try:
            body = await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise StreamError(f"the connection broke while reading the answer: {exc!r}") from exc
        parsed = self._formatter.parse_completion(self._route, decode_json(body, self._formatter.name))
        self._ready.append(_whole(parsed))
        self._finish()

    async def _read_more(self) -> None:
        assert self._response is not None
        try:
            piece = await self._response.content.readany()
        except aiohttp.ServerTimeoutError as exc:
            raise StreamError(f"no stream event within the read timeout: {exc}") from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise StreamError(f"the connection broke mid-stream: {type(exc).__name__}: {exc}") from exc
        if not piece:
            self._decoder.close()
            raise StreamError("the stream ended without [DONE]: the completion may be truncated")
        for event in self._decoder.feed(piece):
            if event.data == "[DONE]":
                self._finish()
                return
            data = _load_event(event.data)
            if event.event == "error":
                raise StreamError(
                    f"the endpoint reported an error mid-stream: {error_message(data) or data!r:.500}"
                )
            chunk = self._formatter.parse_completion_chunk(self._route, data)
            if chunk is not None:
                self._ready.append(chunk)

    def _finish(self) -> None:
        self._finished = True
        self._release(drop=False)

    def _release(self, *, drop: bool) -> None:
        response, self._response = self._response, None
        callback, self._on_release = self._on_release, None
        if callback is not None and self._opened:
            callback(self._accumulator.usage)
        if response is not None:
            # close() drops a connection whose body was not read to the end; release() returns a clean one.
            if drop:
                response.close()
            else:
                response.release()


def _load_event(data: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        raise StreamError(f"a stream event is not JSON: {data[:200]!r}") from None


class LoopRunner(Protocol):
    """What :class:`CompletionStream` needs of the sync client's event-loop thread (``_sync._LoopThread``)."""

    @property
    def thread(self) -> threading.Thread: ...

    def run(self, coro: Coroutine[Any, Any, T]) -> T: ...

    def call_soon(self, callback: Callable[[], None]) -> None: ...


class CompletionStream:
    """The synchronous view of an :class:`AsyncCompletionStream`: each ``next()`` pulls one chunk from the
    client's loop. Use ``with client.stream_complete(prompt) as stream: for chunk in stream: ...``."""

    def __init__(self, stream: AsyncCompletionStream, loop_thread: LoopRunner) -> None:
        self._stream = stream
        self._loop_thread = loop_thread

    @property
    def request_id(self) -> str:
        """See :attr:`AsyncCompletionStream.request_id`."""
        return self._stream.request_id

    def __iter__(self) -> Iterator[CompletionChunk]:
        return self

    def __next__(self) -> CompletionChunk:
        try:
            return self._loop_thread.run(_next_chunk(self._stream))
        except StopAsyncIteration:
            raise StopIteration from None

    def final_response(self) -> CompletionResponse:
        """The aggregated completion, once the stream was read to its end."""
        return self._stream.final_response()

    def close(self) -> None:
        """Stop reading and release the connection. Safe to call twice, and after the client closed."""
        if self._loop_thread.thread.is_alive():
            self._loop_thread.run(self._stream.aclose())

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # A stream dropped after `break` without `with`: release its socket on the loop's own thread (asyncio
        # transports are not thread-safe). The scheduled callback keeps the async stream alive until it runs.
        stream = self.__dict__.get("_stream")
        loop_thread = self.__dict__.get("_loop_thread")
        if stream is not None and loop_thread is not None:
            loop_thread.call_soon(stream.release_now)


async def _next_chunk(stream: AsyncCompletionStream) -> CompletionChunk:
    return await stream.__anext__()
