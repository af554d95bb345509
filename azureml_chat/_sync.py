"""``Client``: the synchronous facade. One private event-loop thread per client (``_loop_thread.py``) owns an
:class:`AsyncChatClient` and its session, so calls work from plain code, from many threads, and from inside
someone else's running loop (Jupyter), where ``asyncio.run`` cannot (sdk_design.md 5).

Every method has its async twin's parameters, spelled out so that type checkers see them;
``tests/test_signatures.py`` holds each pair equal, which is what lets the methods hand their arguments on by
name (:func:`_forward`).
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, NoReturn, Self, Unpack, overload

import aiohttp

from . import _defaults
from ._auth import DEFAULT_SCOPE
from ._base_client import not_picklable
from ._batch import Conversation
from ._client import AsyncChatClient, langchain_module
from ._config import Secret, Timeout
from ._endpoint import Endpoint
from ._errors import AzureMLChatError, ClientClosedError, ConfigurationError
from ._loop_thread import Call, LoopThread
from ._messages import Message
from ._options import ClientOptions
from ._ratelimit import RateLimit
from ._responses import ChatResponse, CompletionResponse
from ._retry import RetryPolicy
from ._router import EndpointStatus
from ._sync_views import ChatStream, Closing, CompletionStream, SyncBatchResults
from ._transport import AsyncTransport
from .formatters import ContentFormatter

__all__ = ["ChatStream", "Client", "CompletionStream", "SyncBatchResults"]

_NO_SESSION = "Client does not take session=: it owns its loop; use AsyncChatClient"


def _forward(arguments: dict[str, Any], extra: str | None = None) -> dict[str, Any]:
    """A sync method's arguments (its ``locals()``, taken first thing) as keywords for its async twin, whose
    parameters have the same names; ``extra`` names the ``**`` parameter, whose items are passed on as is."""
    keywords = {name: value for name, value in arguments.items() if name != "self" and name != extra}
    if extra is not None:
        keywords.update(arguments[extra])
    return keywords


class _Family:
    """What a Client and its ``with_options()`` siblings share: one loop thread, started on first use, and
    the async clients that are still open. Closing the client that made the family closes them all."""

    def __init__(self) -> None:
        # Reentrant: a finalizer run by garbage collection may need it while this thread holds it.
        self.lock = threading.RLock()
        self.loop_thread: LoopThread | None = None
        self.closed = False
        self.clients: set[AsyncChatClient] = set()

    def started(self) -> LoopThread:
        """The loop thread, started on first use."""
        loop_thread = self.loop_thread
        if loop_thread is not None and loop_thread.running:
            return loop_thread
        with self.lock:
            if self.closed:
                raise ClientClosedError()
            if self.loop_thread is None:
                self.loop_thread = LoopThread()
            return self.loop_thread


def _shutdown(family: _Family) -> None:
    # The family's first client closes: from close(), or from weakref.finalize when that client is garbage
    # collected or the interpreter exits.
    with family.lock:
        family.closed = True
        loop_thread, clients = family.loop_thread, list(family.clients)
        family.clients.clear()
    if loop_thread is not None:
        loop_thread.stop(_close_all(clients))


async def _close_all(clients: list[AsyncChatClient]) -> None:
    for client in clients:
        await client.aclose()


def _release(family: _Family, client: AsyncChatClient) -> Call[None] | None:
    # A sibling closes (close(), or garbage collection): close its async client (which closes a pool of its
    # own, if it has one) on the loop, unless the family closed it already. close() waits for the returned
    # call; garbage collection, which may happen on any thread, does not.
    with family.lock:
        if client not in family.clients:
            return None
        family.clients.discard(client)
        loop_thread = family.loop_thread
    if loop_thread is None or not loop_thread.running:
        return None  # never started: nothing was opened; or stopping: the family closes it
    with contextlib.suppress(RuntimeError):
        return loop_thread.submit(client.aclose())
    return None


class Client(Closing):
    """A synchronous client: the same constructor and methods as :class:`AsyncChatClient`, blocking.

    Use it as ``with Client(...) as client:`` or call :meth:`close`. It is safe to share between threads;
    concurrency is bounded by the connection pool. ``session=`` is refused (:class:`ConfigurationError`): a
    session belongs to the event loop it was made on, and the client runs on its own. Ctrl-C during a call
    cancels the call.
    """

    _async: AsyncChatClient
    _family: _Family
    _closed: bool
    _finalizer: weakref.finalize[Any, Client]

    def __init__(
        self,
        endpoint_url: str | None = None,
        api_key: str | Secret | None = None,
        *,
        endpoints: Sequence[Endpoint] | None = None,
        endpoint_type: str | None = None,
        formatter: str | ContentFormatter | None = None,
        deployment: str | None = None,
        timeout: float | Timeout | None = None,
        max_retries: int | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        credential: Any = None,
        headers: Mapping[str, str] | None = None,
        session: aiohttp.ClientSession | None = None,
        retry: RetryPolicy | None = None,
        auth_header: str = "bearer",
        extra_parameters: str | None = None,
        max_connections: int | None = None,
        allow_insecure_http: bool = False,
        max_event_bytes: int = _defaults.MAX_SSE_EVENT_BYTES,
        credential_scope: str = DEFAULT_SCOPE,
        rate_limit: RateLimit | None = None,
        transport: AsyncTransport | None = None,
        split_reasoning: bool = True,
        tracing: bool = True,
    ) -> None:
        if session is not None:
            raise ConfigurationError(_NO_SESSION)
        self._join(AsyncChatClient(**_forward(locals())), _Family(), first=True)

    @classmethod
    def _driving(cls, async_client: AsyncChatClient) -> Self:
        """A client with its own loop thread driving ``async_client``, which must not have been used yet
        (its pool would belong to another loop). The client owns it: :meth:`close` closes it."""
        client = cls.__new__(cls)
        client._join(async_client, _Family(), first=True)
        return client

    def _join(self, async_client: AsyncChatClient, family: _Family, *, first: bool) -> None:
        self._async = async_client
        self._family = family
        self._closed = False
        with family.lock:
            family.clients.add(async_client)
        if first:
            self._finalizer = weakref.finalize(self, _shutdown, family)
        else:
            self._finalizer = weakref.finalize(self, _release, family, async_client)

    def _loop(self) -> LoopThread:
        if self._closed:
            raise ClientClosedError()
        return self._family.started()

    @property
    def async_client(self) -> AsyncChatClient:
        """The :class:`AsyncChatClient` this facade drives (it lives on the facade's own loop)."""
        return self._async

    def endpoint_status(self) -> dict[str, EndpointStatus]:
        """Each endpoint's standing, by name; see :meth:`AsyncChatClient.endpoint_status`."""
        return self._async.endpoint_status()

    def with_options(self, **changes: Unpack[ClientOptions]) -> Self:
        """A sibling client: this one's configuration with ``changes``; see
        :meth:`AsyncChatClient.with_options`.

        The sibling runs on this client's loop thread and shares its connection pool and rate limiter.
        Closing the sibling leaves this client open; closing the client you constructed closes all its
        siblings too.

        Raises:
            ConfigurationError: for ``session=``, an unknown option or an invalid value.
            ClientClosedError: this client is closed.
        """
        if changes.get("session") is not None:
            raise ConfigurationError(_NO_SESSION)
        if self._closed or self._family.closed:
            raise ClientClosedError()
        sibling = type(self).__new__(type(self))
        sibling._join(self._async.with_options(**changes), self._family, first=False)
        return sibling

    def chat(
        self,
        messages: str | Iterable[Message | Mapping[str, Any]],
        *,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        max_completion_tokens: int | None = None,
        stop: str | list[str] | None = None,
        seed: int | None = None,
        tools: list[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        response_format: Mapping[str, Any] | None = None,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        timeout: float | Timeout | None = None,
        deployment: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        **model_params: Any,
    ) -> ChatResponse:
        """Send a conversation and return the whole answer; see :meth:`AsyncChatClient.chat` (same arguments
        and errors). Blocks until the answer is in; Ctrl-C cancels the call."""
        arguments = _forward(locals(), "model_params")
        return self._loop().run(self._async.chat(**arguments))

    def stream(
        self,
        messages: str | Iterable[Message | Mapping[str, Any]],
        *,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        max_completion_tokens: int | None = None,
        stop: str | list[str] | None = None,
        seed: int | None = None,
        tools: list[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        response_format: Mapping[str, Any] | None = None,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        timeout: float | Timeout | None = None,
        deployment: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        **model_params: Any,
    ) -> ChatStream:
        """Stream the answer; see :meth:`AsyncChatClient.stream` (same arguments). Use
        ``with client.stream(...) as stream: for chunk in stream: ...``: a plain iterator of
        :class:`ChatChunk` that fetches the chunks already arrived in one trip to the loop thread."""
        arguments = _forward(locals(), "model_params")
        loop_thread = self._loop()
        return ChatStream(self._async.stream(**arguments), loop_thread)

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
        conversation, in input order. See :meth:`AsyncChatClient.chat_many` (same arguments).

        The conversations are read on the client's loop thread as calls start, so a generator must not
        depend on the calling thread. Ctrl-C cancels every call in flight.
        """
        loop_thread = self._loop()
        return loop_thread.run(
            self._async.chat_many(
                conversations, concurrency=concurrency, return_exceptions=return_exceptions, **params
            )
        )

    def chat_as_completed(
        self,
        conversations: Iterable[Conversation],
        *,
        concurrency: int = _defaults.BATCH_CONCURRENCY,
        **params: Any,
    ) -> SyncBatchResults[ChatResponse]:
        """Send many conversations, ``concurrency`` at a time, and get each result as it finishes; see
        :meth:`AsyncChatClient.chat_as_completed` (same arguments).

        Use it as ``with client.chat_as_completed(conversations) as results: for index, result in results:
        ...``; ``result`` is the :class:`ChatResponse` or the :class:`AzureMLChatError` of conversation
        ``index``. Leaving the block early (``break``, an exception, Ctrl-C) cancels the calls still in
        flight and waits for them. The conversations are read on the client's loop thread as calls start.
        """
        loop_thread = self._loop()
        results = self._async.chat_as_completed(conversations, concurrency=concurrency, **params)
        return SyncBatchResults(results, loop_thread)

    def complete(
        self,
        prompt: str,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: str | list[str] | None = None,
        seed: int | None = None,
        timeout: float | Timeout | None = None,
        deployment: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        **model_params: Any,
    ) -> CompletionResponse:
        """Continue a text prompt and return the whole completion; see :meth:`AsyncChatClient.complete`
        (same arguments and errors). Ctrl-C cancels the call."""
        arguments = _forward(locals(), "model_params")
        return self._loop().run(self._async.complete(**arguments))

    def stream_complete(
        self,
        prompt: str,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: str | list[str] | None = None,
        seed: int | None = None,
        timeout: float | Timeout | None = None,
        deployment: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        **model_params: Any,
    ) -> CompletionStream:
        """Stream a text completion; see :meth:`AsyncChatClient.stream_complete` (same arguments). Use
        ``with client.stream_complete(prompt) as stream: for chunk in stream: ...``."""
        arguments = _forward(locals(), "model_params")
        loop_thread = self._loop()
        return CompletionStream(self._async.stream_complete(**arguments), loop_thread)

    def to_langchain(self, **kwargs: Any) -> Any:
        """A LangChain chat model whose sync calls run on this client; see
        :meth:`AsyncChatClient.to_langchain`."""
        return langchain_module().AzureMLChatModel.from_client(self, **kwargs)

    def __reduce__(self) -> NoReturn:
        raise not_picklable(self)

    def close(self) -> None:
        """Close this client. For the client you constructed: close its connection pool and those of its
        siblings, and stop the loop thread. For a sibling: close only what is its own. Safe to call twice."""
        self._closed = True
        call = self._finalizer()
        loop_thread = self._family.loop_thread
        if call is not None and loop_thread is not None and loop_thread.thread.ident != threading.get_ident():
            loop_thread.wait(call)

    def __repr__(self) -> str:
        return "Client" + repr(self._async).removeprefix("AsyncChatClient")
