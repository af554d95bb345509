"""``Client``: the synchronous facade. One private event-loop thread per client owns an
:class:`AsyncChatClient` and its session, so calls work from plain code, from many threads, and from
inside someone else's running loop (Jupyter), where ``asyncio.run`` cannot (sdk_design.md 5).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import weakref
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, Generic, Literal, Self, TypeVar, overload

from . import _defaults
from ._batch import Conversation
from ._client import AsyncChatClient, langchain_module
from ._config import Secret
from ._errors import AzureMLChatError, ConfigurationError
from ._messages import Message
from ._operations import ChunkT
from ._responses import ChatChunk, ChatResponse, CompletionChunk, CompletionResponse
from ._stream import AsyncStream, ResponseT

__all__ = ["ChatStream", "Client", "CompletionStream"]

T = TypeVar("T")

# How often a waiting caller wakes up; it bounds how late Ctrl-C is noticed on platforms whose lock waits
# cannot be interrupted. A finished call is seen at once either way.
_POLL_SECONDS = 0.2
# How many ready chunks a sync stream takes from the loop thread in one trip.
_BATCH = 64
# How long close() waits for the loop thread to finish its shutdown.
_JOIN_SECONDS = 5.0


class _LoopThread:
    """A daemon thread running one event loop until :meth:`stop`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="azureml-chat-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for it; Ctrl-C (or any interruption) cancels it."""
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError(
                "a sync Client method was called from its own event-loop thread; use AsyncChatClient"
            )
        if not self.thread.is_alive() or self.loop.is_closed():
            coro.close()
            raise RuntimeError("this client is closed; create a new one")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            while True:
                try:
                    return future.result(timeout=_POLL_SECONDS)
                except concurrent.futures.TimeoutError:
                    if not self.thread.is_alive():
                        raise RuntimeError("the client was closed while this call was running") from None
        except BaseException:
            future.cancel()
            raise

    def call_soon(self, callback: Callable[[], None]) -> None:
        """Schedule ``callback`` on the loop thread if the loop still runs (never blocks)."""
        if self.thread.is_alive() and not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                self.loop.call_soon_threadsafe(callback)

    def stop(self, closer: Coroutine[Any, Any, None] | None) -> None:
        """Run ``closer`` on the loop, then stop the loop, join the thread and close the loop."""
        if self.loop.is_closed():
            if closer is not None:
                closer.close()
            return
        if closer is not None and self.loop.is_running():
            # Shutting down: there is no caller left to report a failed close to.
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(closer, self.loop).result(timeout=_JOIN_SECONDS)
        elif closer is not None:
            closer.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=_JOIN_SECONDS)
        if not self.thread.is_alive():
            self.loop.close()


def _shutdown(state: dict[str, Any]) -> None:
    # Runs from close(), or from weakref.finalize when a client is garbage-collected or the interpreter exits.
    loop_thread: _LoopThread | None = state.pop("loop", None)
    client: AsyncChatClient = state["client"]
    if loop_thread is not None:
        loop_thread.stop(client.aclose())


class Client:
    """A synchronous client: the same constructor and methods as :class:`AsyncChatClient`, blocking.

    Use it as ``with Client(...) as client:`` or call :meth:`close`. It is safe to share between threads;
    concurrency is bounded by the connection pool. ``session=`` is not accepted: the session lives on the
    client's own event loop.
    """

    def __init__(
        self, endpoint_url: str | None = None, api_key: str | Secret | None = None, **options: Any
    ) -> None:
        if options.get("session") is not None:
            raise ConfigurationError("Client does not take session=: it owns its loop; use AsyncChatClient")
        self._async = AsyncChatClient(endpoint_url, api_key, **options)
        self._state: dict[str, Any] = {"client": self._async}
        self._lock = threading.Lock()
        self._closed = False
        self._finalizer = weakref.finalize(self, _shutdown, self._state)

    def _loop(self) -> _LoopThread:
        with self._lock:
            if self._closed:
                raise RuntimeError("this client is closed; create a new one")
            loop_thread: _LoopThread | None = self._state.get("loop")
            if loop_thread is None:
                loop_thread = self._state["loop"] = _LoopThread()
            return loop_thread

    @property
    def async_client(self) -> AsyncChatClient:
        """The :class:`AsyncChatClient` this facade drives (it lives on the facade's own loop)."""
        return self._async

    def chat(self, messages: Iterable[Message | Mapping[str, Any]], **params: Any) -> ChatResponse:
        """Send a conversation and return the whole answer; see :meth:`AsyncChatClient.chat`."""
        loop_thread = self._loop()
        return loop_thread.run(self._async.chat(messages, **params))

    @overload
    def chat_many(
        self,
        conversations: Iterable[Conversation],
        *,
        concurrency: int = ...,
        return_exceptions: Literal[True] = ...,
        **params: Any,
    ) -> list[ChatResponse | AzureMLChatError]: ...
    @overload
    def chat_many(
        self,
        conversations: Iterable[Conversation],
        *,
        concurrency: int = ...,
        return_exceptions: Literal[False],
        **params: Any,
    ) -> list[ChatResponse]: ...
    @overload
    def chat_many(
        self,
        conversations: Iterable[Conversation],
        *,
        concurrency: int = ...,
        return_exceptions: bool,
        **params: Any,
    ) -> list[ChatResponse | AzureMLChatError]: ...
    def chat_many(
        self,
        conversations: Iterable[Conversation],
        *,
        concurrency: int = _defaults.BATCH_CONCURRENCY,
        return_exceptions: bool = True,
        **params: Any,
    ) -> list[ChatResponse] | list[ChatResponse | AzureMLChatError]:
        """Send many conversations, ``concurrency`` at a time, and wait for all of them; one result per
        conversation, in input order. See :meth:`AsyncChatClient.chat_many`.

        The conversations are read on the client's loop thread as calls start, so a generator must not
        depend on the calling thread. Ctrl-C cancels every call in flight.
        """
        loop_thread = self._loop()
        return loop_thread.run(
            self._async.chat_many(
                conversations, concurrency=concurrency, return_exceptions=return_exceptions, **params
            )
        )

    def stream(self, messages: Iterable[Message | Mapping[str, Any]], **params: Any) -> ChatStream:
        """Stream the answer; see :meth:`AsyncChatClient.stream`. Use ``with client.stream(...) as s:``."""
        loop_thread = self._loop()
        return ChatStream(self._async.stream(messages, **params), loop_thread)

    def complete(self, prompt: str, **params: Any) -> CompletionResponse:
        """Continue a text prompt and return the whole completion; see :meth:`AsyncChatClient.complete`."""
        loop_thread = self._loop()
        return loop_thread.run(self._async.complete(prompt, **params))

    def stream_complete(self, prompt: str, **params: Any) -> CompletionStream:
        """Stream a text completion; see :meth:`AsyncChatClient.stream_complete`. Use
        ``with client.stream_complete(prompt) as s:``."""
        loop_thread = self._loop()
        return CompletionStream(self._async.stream_complete(prompt, **params), loop_thread)

    def to_langchain(self, **kwargs: Any) -> Any:
        """A LangChain chat model backed by a client with this one's settings; see
        :meth:`AsyncChatClient.to_langchain`."""
        return langchain_module().AzureMLChatModel.from_client(self, **kwargs)

    def close(self) -> None:
        """Close the connection pool and stop the loop thread. Safe to call twice."""
        with self._lock:
            self._closed = True
        self._finalizer()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return "Client" + repr(self._async).removeprefix("AsyncChatClient")


class _SyncStream(Generic[ChunkT, ResponseT]):
    """The synchronous view of an async stream: each ``next()`` pulls one chunk from the client's loop."""

    def __init__(self, stream: AsyncStream[ChunkT, ResponseT], loop_thread: _LoopThread) -> None:
        self._stream = stream
        self._loop_thread = loop_thread
        # Chunks fetched in one trip to the loop thread (a hop costs more than parsing a chunk).
        self._batch: deque[ChunkT] = deque()
        self._error: BaseException | None = None

    @property
    def request_id(self) -> str:
        """The server's ``x-request-id`` once the stream is open, else our client request id."""
        return self._stream.request_id

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


class ChatStream(_SyncStream[ChatChunk, ChatResponse]):
    """The synchronous view of an :class:`AsyncChatStream`. Use ``with client.stream(...) as stream:``."""


class CompletionStream(_SyncStream[CompletionChunk, CompletionResponse]):
    """The synchronous view of an :class:`AsyncCompletionStream`. Use
    ``with client.stream_complete(prompt) as stream: for chunk in stream: ...``."""
