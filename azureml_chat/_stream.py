"""Streams: async iterators of chunks that always release their connection.

``_BaseStream`` holds the machinery; ``AsyncChatStream`` (chat chunks) and ``AsyncCompletionStream``
(text-completion chunks, in ``_completion_stream.py``) only say how to parse.

Opening the stream (send, check the status) is retried like any call; once a chunk may have reached the
caller nothing is retried, and any failure is a :class:`StreamError`. The HTTP response is released on
exhaustion, ``break`` (through ``async with`` or garbage collection), an error, cancellation and
:meth:`AsyncChatStream.aclose`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

import aiohttp

from ._codec import decode_json, loads
from ._errors import StreamError, error_message
from ._messages import AssistantMessage, ToolCall
from ._responses import ChatChunk, ChatResponse, ToolCallDelta, Usage
from ._sse import ServerSentEvent, SSEDecoder
from .formatters import ContentFormatter, Route

__all__ = ["AsyncChatStream", "StreamAccumulator"]

ChunkT = TypeVar("ChunkT")
ResponseT = TypeVar("ResponseT")
ChunkT_contra = TypeVar("ChunkT_contra", contravariant=True)
ResponseT_co = TypeVar("ResponseT_co", covariant=True)


class StreamAccumulator:
    """Folds chunks into the :class:`ChatResponse` a non-streaming call would have returned."""

    def __init__(self) -> None:
        self._text: list[str] = []
        self._calls: dict[int, list[Any]] = {}  # index -> [id, name, [argument pieces]]
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.model: str | None = None
        self.id: str | None = None

    def add(self, chunk: ChatChunk) -> None:
        if chunk.content:
            self._text.append(chunk.content)
        for delta in chunk.tool_calls:
            self._add_call(delta)
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
        if chunk.usage is not None:
            self.usage = chunk.usage
        self.model = self.model or chunk.model
        self.id = self.id or chunk.id

    def _add_call(self, delta: ToolCallDelta) -> None:
        # id and name arrive only in the first piece of each index; keying by index keeps parallel calls apart.
        call = self._calls.setdefault(delta.index, [None, None, []])
        call[0] = call[0] or delta.id
        call[1] = call[1] or delta.name
        call[2].append(delta.arguments)

    def response(self, *, request_id: str | None, raw: Any = None) -> ChatResponse:
        calls = tuple(
            ToolCall(id=call_id or f"call_{index}", name=name or "", arguments="".join(pieces))
            for index, (call_id, name, pieces) in sorted(self._calls.items())
        )
        content = "".join(self._text) if self._text or not calls else None
        return ChatResponse(
            message=AssistantMessage(content, tool_calls=calls),
            finish_reason=self.finish_reason,
            usage=self.usage,
            model=self.model,
            id=self.id,
            request_id=request_id,
            raw=raw,
        )


def chunk_from_response(response: ChatResponse) -> ChatChunk:
    """The whole answer as one chunk, for routes that cannot stream."""
    deltas = tuple(
        ToolCallDelta(index=index, id=call.id, name=call.name, arguments=call.arguments)
        for index, call in enumerate(response.tool_calls)
    )
    return ChatChunk(
        content=response.content,
        finish_reason=response.finish_reason,
        usage=response.usage,
        tool_calls=deltas,
        role="assistant",
        model=response.model,
        id=response.id,
        raw=response.raw,
    )


class _Accumulator(Protocol[ChunkT_contra, ResponseT_co]):
    usage: Usage | None

    def add(self, chunk: ChunkT_contra) -> None: ...

    def response(self, *, request_id: str | None) -> ResponseT_co: ...


class _BaseStream(Generic[ChunkT, ResponseT]):
    """The machinery of every stream: open (retried by the opener), decode SSE, hand out chunks one by one,
    aggregate them, and release the connection on every way out. Subclasses say how to parse."""

    _what: ClassVar[str] = "answer"  # for messages: "the answer may be truncated"

    def __init__(
        self,
        opener: Callable[[], Awaitable[aiohttp.ClientResponse | ResponseT]],
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
        self._ready: deque[ChunkT] = deque()
        # Events decoded but not parsed yet: parsed one per __anext__, so a burst of events neither delays
        # the first chunk nor runs ahead of the caller (and usage is counted only once it was handed out).
        self._events: deque[ServerSentEvent] = deque()
        self._accumulator = self._new_accumulator()
        self._opened = False
        self._finished = False
        self._closed = False

    # --- what a subclass defines ---------------------------------------------------------------------------

    def _new_accumulator(self) -> _Accumulator[ChunkT, ResponseT]:
        raise NotImplementedError

    def _whole_chunk(self, response: ResponseT) -> ChunkT:
        """The whole answer as one chunk (routes that cannot stream, servers that ignore ``stream``)."""
        raise NotImplementedError

    def _parse_body(self, body: Any) -> ResponseT:
        raise NotImplementedError

    def _parse_event(self, data: Any) -> ChunkT | None:
        raise NotImplementedError

    # --- public ----------------------------------------------------------------------------------------------

    @property
    def request_id(self) -> str:
        """The server's ``x-request-id`` once the stream is open, else our client request id."""
        return self._request_id

    def final_response(self) -> ResponseT:
        """The whole answer, aggregated from every chunk.

        Raises:
            RuntimeError: if the stream has not been read to its end.
        """
        if not self._finished or self._ready or self._events:
            raise RuntimeError("the stream is not finished: read it to the end before final_response()")
        return self._accumulator.response(request_id=self._request_id)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ChunkT:
        if self._closed:
            raise StopAsyncIteration
        while not self._ready:
            if self._finished or self._closed:
                raise StopAsyncIteration
            try:
                if self._events:
                    self._parse_next_event()
                elif not self._opened:
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
        # Synchronous and idempotent: a stream dropped after `break` without `async with` gives back its socket
        # and its rate-limit ticket.
        if self.__dict__.get("_response") is not None or self.__dict__.get("_on_release") is not None:
            self._release(drop=True)

    # --- internals -------------------------------------------------------------------------------------------

    async def _open(self) -> None:
        opened = await self._opener()
        self._opened = True
        if not isinstance(opened, aiohttp.ClientResponse):
            # The route cannot stream (classic /score): the whole answer is one chunk.
            self._request_id = getattr(opened, "request_id", None) or self._request_id
            self._ready.append(self._whole_chunk(opened))
            self._finished = True
            self._release(drop=False)
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
            raise StreamError(f"the connection broke while reading the {self._what}: {exc!r}") from exc
        self._ready.append(self._whole_chunk(self._parse_body(decode_json(body, self._formatter.name))))
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
            raise StreamError(f"the stream ended without [DONE]: the {self._what} may be truncated")
        self._events.extend(self._decoder.feed(piece))

    def _parse_next_event(self) -> None:
        event = self._events.popleft()
        if event.data == "[DONE]":
            self._events.clear()  # nothing after [DONE] counts
            self._finish()
            return
        data = _load_event(event.data)
        if event.event == "error":
            raise StreamError(
                f"the endpoint reported an error mid-stream: {error_message(data) or data!r:.500}"
            )
        chunk = self._parse_event(data)
        if chunk is not None:
            self._ready.append(chunk)

    def buffered(self) -> bool:
        """Whether the next chunk (or the end) can be had without waiting for the network."""
        return bool(self._ready or self._events) or self._finished or self._closed

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


class AsyncChatStream(_BaseStream[ChatChunk, ChatResponse]):
    """The chunks of one streamed answer. Use ``async with client.stream(...) as stream: async for ...``.

    After the last chunk, :meth:`final_response` gives the aggregated :class:`ChatResponse`: content joined,
    tool calls reassembled by index, usage from the usage event.
    """

    def _new_accumulator(self) -> StreamAccumulator:
        return StreamAccumulator()

    def _whole_chunk(self, response: ChatResponse) -> ChatChunk:
        return chunk_from_response(response)

    def _parse_body(self, body: Any) -> ChatResponse:
        return self._formatter.parse_response(self._route, body)

    def _parse_event(self, data: Any) -> ChatChunk | None:
        return self._formatter.parse_chunk(self._route, data)


def _load_event(data: str) -> Any:
    try:
        return loads(data)
    except ValueError:
        raise StreamError(f"a stream event is not JSON: {data[:200]!r}") from None
