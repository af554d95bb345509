"""Streams: async iterators of chunks that always release their connection.

One class, :class:`AsyncStream`, serves chat (:class:`AsyncChatStream`) and text completion
(:class:`AsyncCompletionStream`); the call's :class:`~azureml_chat._operations.Operation` says how to read.

The retry rule, in one place: opening a stream is an attempt like any other, and so is reading it up to its
first chunk. A connection that fails before the first chunk reached the caller (while connecting, with a
retryable status, or after the status line but before the first event) is retried, since nothing reached the
caller. Once a chunk was handed out, nothing is retried: any failure is a :class:`StreamError`. The HTTP
response is released on exhaustion, ``break`` (through ``async with`` or garbage collection), an error,
cancellation and :meth:`AsyncStream.aclose`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, cast

from ._call import Call
from ._codec import loads
from ._errors import APIConnectionError, APITimeoutError, AzureMLChatError, StreamError, error_message
from ._operations import Accumulator, ChunkT
from ._pipeline import Pipeline
from ._reasoning import ThinkSplitter
from ._responses import ChatChunk, ChatResponse, CompletionChunk, CompletionResponse
from ._sse import ServerSentEvent, SSEDecoder
from ._transport import Response, StreamResponse, read_only

__all__ = ["AsyncChatStream", "AsyncCompletionStream", "AsyncStream"]

ResponseT = TypeVar("ResponseT")


class AsyncStream(Generic[ChunkT, ResponseT]):
    """The chunks of one streamed answer. Use ``async with client.stream(...) as stream: async for ...``.

    After the last chunk, :meth:`final_response` gives the aggregated answer: text joined, tool calls
    reassembled by index, usage from the usage event.
    """

    def __init__(self, pipeline: Pipeline, call: Call[ResponseT, ChunkT], *, max_event_bytes: int) -> None:
        self._pipeline = pipeline
        self._call: Call[ResponseT, ChunkT] | None = call
        self._operation = call.operation
        self._request_id = call.request_id
        self._endpoint = call.member.name
        self._attempts = 0
        self._max_event_bytes = max_event_bytes
        self._decoder = SSEDecoder(max_event_bytes=max_event_bytes)
        self._response: StreamResponse | None = None
        self._ready: deque[ChunkT] = deque()
        # Events decoded but not parsed yet: parsed one per __anext__, so a burst of events neither delays
        # the first chunk nor runs ahead of the caller (and usage is counted only once it was handed out).
        self._events: deque[ServerSentEvent] = deque()
        self._accumulator: Accumulator[ResponseT, Any] = Accumulator(call.operation)
        self._handed_out = 0
        # One <think> splitter per choice index, when the client keeps reasoning apart (chat only).
        self._splitters: dict[int, ThinkSplitter] | None = (
            {} if pipeline.split_reasoning and call.operation.splits_reasoning else None
        )
        self._headers: Mapping[str, str] | None = None
        self._opened = False
        self._finished = False
        self._closed = False

    @property
    def request_id(self) -> str:
        """The server's ``x-request-id`` once the stream is open, else our client request id."""
        return self._request_id

    @property
    def endpoint(self) -> str:
        """The name of the endpoint the stream came from (once open; before, the one it is aimed at)."""
        return self._endpoint

    @property
    def headers(self) -> Mapping[str, str]:
        """The HTTP response headers (read-only, case-insensitive names), once the stream is open.

        Raises:
            RuntimeError: the stream is not open yet (it opens with the first ``async for`` step).
        """
        if self._headers is None:
            raise RuntimeError("the stream is not open yet: its headers arrive with the first chunk")
        return self._headers

    def final_response(self) -> ResponseT:
        """The whole answer, aggregated from every chunk.

        Raises:
            RuntimeError: if the stream has not been read to its end.
        """
        if not self._finished or self._ready or self._events:
            raise RuntimeError("the stream is not finished: read it to the end before final_response()")
        return self._answer()

    def _answer(self) -> ResponseT:
        answer = self._accumulator.response(request_id=self._request_id)
        # As Pipeline.read stamps a whole answer.
        object.__setattr__(answer, "endpoint", self._endpoint)
        object.__setattr__(answer, "attempts", self._attempts)
        if self._headers is not None:
            object.__setattr__(answer, "headers", self._headers)
        return answer

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ChunkT:
        if self._closed:
            raise StopAsyncIteration
        while not self._ready:
            if self._finished:
                self._release(drop=False, error=None)
                raise StopAsyncIteration
            try:
                if not self._opened:
                    await self._open()
                elif self._events:
                    self._parse_next_event()
                else:
                    await self._read_more()
            except BaseException as exc:
                self._release(drop=True, error=exc)
                raise
        chunk = self._ready.popleft()
        self._accumulator.add(chunk)
        self._handed_out += 1
        if self._handed_out == 1 and self._call is not None:
            self._call.observer.first_chunk()
        if self._finished and not self._ready and not self._events:
            self._release(drop=False, error=None)
        return chunk

    def buffered(self) -> bool:
        """Whether the next chunk (or the end) can be had without waiting for the network."""
        return bool(self._ready or self._events) or self._finished or self._closed

    async def aclose(self) -> None:
        """Stop reading and release the connection. Safe to call at any time, and twice."""
        self.release_now()

    def release_now(self) -> None:
        """:meth:`aclose` without the ``await``, for callers that cannot await (it does no I/O)."""
        self._closed = True
        self._release(drop=not self._finished, error=None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        # Synchronous and idempotent: a stream dropped after `break` without `async with` gives back its socket
        # and its rate-limit ticket.
        if self.__dict__.get("_call") is not None:
            self._release(drop=True, error=None)

    # --- opening: an attempt under the retry policy ---------------------------------------------------

    async def _open(self) -> None:
        call = self._call
        assert call is not None
        await self._pipeline.with_retries(call, self._attempt)
        self._endpoint = call.member.name
        self._attempts = call.attempts
        self._opened = True

    async def _attempt(self, call: Call[ResponseT, ChunkT]) -> None:
        """Open the stream and read up to its first chunk; a broken connection before then is retryable.

        Where the attempt's endpoint cannot stream (classic ``/score``; a pool may mix routes), it is a plain
        call whose whole answer is one chunk.
        """
        if not call.stream:
            whole = await self._pipeline.attempt(call)
            self._whole(call, whole, charge=True)
            return
        response = await self._pipeline.open(call)
        self._response = response
        self._decoder = SSEDecoder(max_event_bytes=self._max_event_bytes)
        self._events.clear()
        self._headers = read_only(response.headers)
        self._request_id = response.headers.get("x-request-id") or call.request_id
        try:
            if _is_json(response.headers.get("content-type")):
                await self._read_whole_json(call, response)
            while not self._ready and not self._finished:
                if self._events:
                    self._parse_next_event()
                else:
                    await self._read_more(before_first_chunk=True)
        except APIConnectionError as exc:
            self._response = None
            response.close()
            self._pipeline.release(call, None, broke=exc)
            raise

    async def _read_whole_json(self, call: Call[ResponseT, ChunkT], response: StreamResponse) -> None:
        # Some servers ignore "stream": true and answer with one JSON body; stream it as one chunk per choice.
        pieces = []
        while piece := await response.read_some():
            pieces.append(piece)
        # Its tokens are charged when the stream is released, as a streamed answer's are.
        self._whole(call, Response(response.status_code, response.headers, b"".join(pieces)), charge=False)

    def _whole(self, call: Call[ResponseT, ChunkT], response: Response, *, charge: bool) -> None:
        answer = self._pipeline.read(call, response, charge=charge)
        self._request_id = getattr(answer, "request_id", None) or self._request_id
        self._headers = getattr(answer, "headers", None)
        # Already split (Pipeline.read), so its chunks skip the splitters.
        self._ready.extend(self._operation.whole_chunks(answer))
        self._finished = True

    # --- reading --------------------------------------------------------------------------------------

    async def _read_more(self, *, before_first_chunk: bool = False) -> None:
        assert self._response is not None
        try:
            piece = await self._response.read_some()
        except APIConnectionError as exc:
            if before_first_chunk:
                raise
            if isinstance(exc, APITimeoutError):
                chunks = f"{self._handed_out} chunk" + ("" if self._handed_out == 1 else "s")
                message = f"the stream stopped after {chunks}: {exc}"
            else:
                message = f"the connection broke mid-stream: {exc}"
            # Chained to what the transport's error was (the OSError, aiohttp's error), not to the transport's
            # error itself, whose message this one repeats.
            raise StreamError(message) from exc.__cause__
        if not piece:
            self._decoder.close()
            if self._accumulator.choices and self._accumulator.complete(self._expected_choices()):
                # No [DONE], but every choice said why it ended: a whole answer (servers that never send
                # [DONE], or send it as a bare line).
                self._end()
                return
            if before_first_chunk:
                raise APIConnectionError(f"the stream ended before its first event [{self._operation.what}]")
            raise StreamError(
                f"the stream ended without [DONE] before every choice had its finish_reason: the "
                f"{self._operation.what} may be truncated"
            )
        self._events.extend(self._decoder.feed(piece))

    def _expected_choices(self) -> int:
        call = self._call
        wanted = call.params.get("n") if call is not None else None
        return wanted if type(wanted) is int and wanted > 1 else 1

    def _end(self) -> None:
        """The answer is complete: hand out what the splitters still hold, then finish."""
        if self._splitters:
            for index, splitter in sorted(self._splitters.items()):
                reasoning, content = splitter.flush()
                if reasoning or content:
                    chunk = ChatChunk(content=content or None, reasoning=reasoning or None, index=index)
                    self._ready.append(cast(ChunkT, chunk))
        self._events.clear()  # nothing after the end counts
        self._finished = True

    def _parse_next_event(self) -> None:
        event = self._events.popleft()
        if event.data == "[DONE]":
            self._end()
            return
        data = _load_event(event.data)
        if event.event == "error":
            raise StreamError(
                f"the endpoint reported an error mid-stream: {error_message(data) or data!r:.500}"
            )
        call = self._call
        assert call is not None
        chunk: ChunkT | tuple[ChunkT, ...] | None = getattr(
            call.endpoint.formatter, self._operation.read_chunk
        )(call.endpoint.route, data)
        if chunk is None:
            return
        chunks: tuple[ChunkT, ...] = chunk if isinstance(chunk, tuple) else (chunk,)
        splitters = self._splitters
        if splitters is None:
            self._ready.extend(chunks)
            return
        for one in chunks:
            splitter = splitters.get(one.index)
            if splitter is None:
                splitter = splitters[one.index] = ThinkSplitter()
            self._ready.append(cast(ChunkT, splitter.feed(cast(ChatChunk, one))))

    def _release(self, *, drop: bool, error: BaseException | None) -> None:
        """Give back the connection and the admission, charge the tokens, and end the call (once)."""
        call, self._call = self._call, None
        response, self._response = self._response, None
        if response is not None:
            # close() drops a connection whose body was not read to the end; release() returns a clean one.
            if drop:
                response.close()
            else:
                response.release()
        if call is None:
            return
        if isinstance(error, AzureMLChatError):
            # A failure after the stream opened still counts the attempts it took to open it, and names
            # the endpoint it came from.
            error.attempts = call.attempts
            error.endpoint = call.member.name
        usage = self._accumulator.usage
        self._pipeline.release(call, usage.total_tokens if usage is not None and call.stream else None)
        finished = self._finished and not self._ready and not self._events and error is None
        call.observer.end(self._answer() if finished else None, error)


class AsyncChatStream(AsyncStream[ChatChunk, ChatResponse]):
    """The chunks of one streamed chat answer (:class:`ChatChunk`). Use
    ``async with client.stream(...) as stream: async for chunk in stream: ...``; after the last chunk,
    :meth:`final_response` gives the aggregated :class:`ChatResponse`."""


class AsyncCompletionStream(AsyncStream[CompletionChunk, CompletionResponse]):
    """The chunks of one streamed text completion (:class:`CompletionChunk`, ``.text`` deltas). Use
    ``async with client.stream_complete(prompt) as stream: ...``; after the last chunk,
    :meth:`final_response` gives the aggregated :class:`CompletionResponse`."""


def _is_json(content_type: str | None) -> bool:
    """Whether a 2xx answer to a stream request is one JSON body rather than server-sent events (which is
    what any other content type, or none, is read as: the official ``openai`` client does the same)."""
    if not content_type:
        return False
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _load_event(data: str) -> Any:
    try:
        return loads(data)
    except ValueError:
        raise StreamError(f"a stream event is not JSON: {data[:200]!r}") from None
