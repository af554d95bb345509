"""Blocking views of the async iterators, for the sync ``Client``: streams (:class:`ChatStream`,
:class:`CompletionStream`) and batch results (:class:`SyncBatchResults`).

Each view pulls from its async iterator on the client's loop thread, and takes everything that is already
there in the same trip (a thread hop costs more than a chunk or a result): the next item, plus those that
need no waiting, up to :data:`_BATCH`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from ._batch import BatchResults
from ._errors import AzureMLChatError
from ._loop_thread import LoopThread
from ._operations import ChunkT
from ._responses import ChatChunk, ChatResponse, CompletionChunk, CompletionResponse
from ._stream import AsyncStream, ResponseT

__all__ = ["ChatStream", "Closing", "CompletionStream", "SyncBatchResults"]

R = TypeVar("R")

# The most items a view takes from the loop thread in one trip.
_BATCH = 64


class Closing:
    """``with`` support for the sync objects: leaving the block calls :meth:`close`."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _SyncStream(Closing, Generic[ChunkT, ResponseT]):
    """The synchronous view of an async stream: each ``next()`` pulls one chunk from the client's loop."""

    def __init__(self, stream: AsyncStream[ChunkT, ResponseT], loop_thread: LoopThread) -> None:
        self._stream = stream
        self._loop_thread = loop_thread
        self._batch: deque[ChunkT] = deque()
        self._error: BaseException | None = None

    @property
    def request_id(self) -> str:
        """The server's ``x-request-id`` once the stream is open, else our client request id."""
        return self._stream.request_id

    @property
    def endpoint(self) -> str:
        """The name of the endpoint the stream came from (once open; before, the one it is aimed at)."""
        return self._stream.endpoint

    @property
    def headers(self) -> Mapping[str, str]:
        """The HTTP response headers (read-only, case-insensitive names), once the stream is open.

        Raises:
            RuntimeError: the stream is not open yet (it opens with the first step of the loop).
        """
        return self._stream.headers

    def __iter__(self) -> Iterator[ChunkT]:
        return self

    def __next__(self) -> ChunkT:
        if not self._batch:
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            self._batch.extend(self._loop_thread.run(self._next_chunks()))
            if not self._batch:
                raise StopIteration
        return self._batch.popleft()

    async def _next_chunks(self) -> list[ChunkT]:
        """The next chunk plus those that need no network wait (at most ``_BATCH``); empty at the end. An
        error after some chunks is kept for the next call, so no chunk that arrived is lost."""
        chunks: list[ChunkT] = []
        try:
            chunks.append(await self._stream.__anext__())
            while len(chunks) < _BATCH and self._stream.buffered():
                chunks.append(await self._stream.__anext__())
        except StopAsyncIteration:
            pass
        except Exception as exc:
            if not chunks:
                raise
            self._error = exc
        return chunks

    def final_response(self) -> ResponseT:
        """The aggregated answer, once the stream was read to its end."""
        return self._stream.final_response()

    def close(self) -> None:
        """Stop reading and release the connection. Safe to call twice, and after the client closed."""
        if self._loop_thread.running:
            self._loop_thread.run(self._stream.aclose())

    def __del__(self) -> None:
        # A stream dropped after `break` without `with`: release its socket on the loop's own thread (asyncio
        # transports are not thread-safe). The scheduled callback keeps the async stream alive until it runs.
        stream = self.__dict__.get("_stream")
        loop_thread = self.__dict__.get("_loop_thread")
        if stream is not None and loop_thread is not None:
            loop_thread.call_soon(stream.release_now)


class ChatStream(_SyncStream[ChatChunk, ChatResponse]):
    """The synchronous view of an :class:`AsyncChatStream`. Use ``with client.stream(...) as stream:``."""


class CompletionStream(_SyncStream[CompletionChunk, CompletionResponse]):
    """The synchronous view of an :class:`AsyncCompletionStream`. Use
    ``with client.stream_complete(prompt) as stream: for chunk in stream: ...``."""


class SyncBatchResults(Closing, Generic[R]):
    """The synchronous view of a :class:`BatchResults`: ``(index, result)`` pairs in the order the calls
    finish, ``result`` being the answer or its :class:`AzureMLChatError`.

    Use it as ``with client.chat_as_completed(conversations) as results: for index, result in results:
    ...``. Leaving the block (``break``, an exception, Ctrl-C) cancels the calls still in flight and waits
    for them; so does :meth:`close`. Read to its end, it closes itself.
    """

    def __init__(self, results: BatchResults[R], loop_thread: LoopThread) -> None:
        self._results = results
        self._loop_thread = loop_thread
        self._batch: deque[tuple[int, R | AzureMLChatError]] = deque()
        # The results' __anext__ running on the loop, kept from one trip to the next until it has a result,
        # so that a result is never lost between trips.
        self._next: asyncio.Task[tuple[int, R | AzureMLChatError]] | None = None
        self._closed = False

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> tuple[int, R | AzureMLChatError]:
        if not self._batch:
            if self._closed:
                raise StopIteration
            self._batch.extend(self._loop_thread.run(self._take()))
            if not self._batch:
                self._closed = True  # the results ended, and closed themselves
                raise StopIteration
        return self._batch.popleft()

    async def _take(self) -> list[tuple[int, R | AzureMLChatError]]:
        """The next result plus those already finished (at most ``_BATCH``); empty at the end. What would
        need waiting for (or raise) after the first result is left running for the next trip."""
        taken: list[tuple[int, R | AzureMLChatError]] = []
        while len(taken) < _BATCH:
            if self._next is None:
                self._next = asyncio.ensure_future(self._results.__anext__())
                if taken:
                    await asyncio.sleep(0)  # one step, in which a result that is ready comes back
            pending = self._next
            if taken and not _has_result(pending):
                break
            try:
                taken.append(await pending)
            except StopAsyncIteration:
                break
            finally:
                if pending.done():
                    self._next = None
        return taken

    def close(self) -> None:
        """Cancel the calls still in flight and wait for them. Safe to call twice, and after the client
        closed (which cancelled them)."""
        if self._closed:
            return
        self._closed = True
        self._batch.clear()
        if self._loop_thread.running:
            self._loop_thread.run(self._aclose())

    async def _aclose(self) -> None:
        # On the loop, which is the only thread that sets _next.
        pending, self._next = self._next, None
        await _close_results(pending, self._results)

    def __del__(self) -> None:
        # Dropped after `break` without `with`: stop the calls nobody will read, on the loop's own thread.
        if not self.__dict__.get("_closed", True):
            self._loop_thread.spawn(_close_results(self._next, self._results))


def _has_result(task: asyncio.Task[Any]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None


async def _close_results(pending: asyncio.Task[Any] | None, results: BatchResults[Any]) -> None:
    """Cancel ``results`` (and its ``__anext__`` in progress, if any) and wait until its calls finished."""
    if pending is not None:
        if not pending.done() and not pending.cancelling():
            # Cancelled, it closes the results (a second cancel would cut short that close's wait).
            pending.cancel()
        await asyncio.wait([pending])
        if not pending.cancelled():
            pending.exception()  # seen: nobody will read it now
    await results.aclose()
