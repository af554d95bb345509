"""Many conversations at once: :func:`chat_many` (results in input order) and :func:`chat_as_completed`.

Both run a bounded pool over a lazily pulled input: at most ``concurrency`` calls are in flight, and the next
conversation is taken from the iterable only when a slot frees up, so a generator of a million conversations
is never materialised. A documented error (:class:`AzureMLChatError`) belongs to its item and is returned in
its place; anything else (a bug, an exception from the caller's own generator) stops the batch. Stopping,
for any reason, cancels and awaits every call still in flight: no task, socket or warning is left behind.

The pool is driven by its consumer rather than by long-lived workers: each call is a task created when a slot
frees up, and the input is read inside ``__anext__``. So nothing but the calls themselves runs between two
results, backpressure needs no queue, and there is one place to cancel from.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Generic, Literal, Protocol, Self, TypeVar, overload

from . import _defaults
from ._errors import AzureMLChatError, InvalidRequestError
from ._messages import Message
from ._params import check_names
from ._responses import ChatResponse
from ._serialization import CONVERSATION, describe_type, is_conversation

__all__ = ["BatchResults", "Conversation", "chat_as_completed", "chat_many"]

R = TypeVar("R")
# One conversation: a string (one user message) or a list of messages.
Conversation = str | Sequence[Message | Mapping[str, Any]]
# The keywords of a batch itself, beside those of chat(): what a misspelt batch keyword is measured against.
_BATCH_KEYWORDS = ("concurrency", "return_exceptions")


class Chats(Protocol):
    """What a batch sends through: anything with ``AsyncChatClient.chat``'s shape."""

    @property
    def chat(self) -> Callable[..., Awaitable[ChatResponse]]: ...


class BatchResults(Generic[R]):
    """``(index, result)`` pairs in the order the calls finish; ``result`` is the answer or its error.

    ``index`` is the item's position in the input. Use it as ``async with chat_as_completed(...) as results:
    async for index, result in results: ...``; leaving the block (``break``, an exception, cancellation)
    cancels the calls still in flight and waits for them. A plain ``async for`` cleans up too when the input
    is exhausted or the consumer is cancelled; after a ``break`` without ``async with``, the calls are
    cancelled when the object is dropped, or at once by :meth:`aclose`.

    At most ``concurrency`` items are taken from the input and not yet handed out (running, or finished
    and waiting for the consumer), so memory stays bounded whatever the input's length.
    """

    def __init__(self, calls: Iterable[Callable[[], Awaitable[R]]], *, concurrency: int) -> None:
        self._concurrency = check_concurrency(concurrency)
        self._calls: Iterator[tuple[int, Callable[[], Awaitable[R]]]] = enumerate(calls)
        self._running: dict[asyncio.Task[R], int] = {}
        self._ready: deque[tuple[int, R | AzureMLChatError]] = deque()
        self._exhausted = False
        self._closed = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> tuple[int, R | AzureMLChatError]:
        if self._closed:
            raise StopAsyncIteration
        try:
            while not self._ready:
                self._fill()
                if not self._running:
                    self._closed = True
                    raise StopAsyncIteration
                done, _ = await asyncio.wait(self._running, return_when=asyncio.FIRST_COMPLETED)
                for task in sorted(done, key=self._running.__getitem__):
                    index = self._running.pop(task)
                    self._ready.append((index, _outcome(task)))
            item = self._ready.popleft()
            # Refill before handing the result out, so its slot works while the consumer does.
            self._fill()
        except StopAsyncIteration:
            raise
        except BaseException:
            await self.aclose()
            raise
        return item

    async def aclose(self) -> None:
        """Cancel the calls still in flight and wait for them to finish. Safe to call twice."""
        self._closed = True
        self._ready.clear()
        tasks = list(self._running)
        self._running.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        # Dropped after `break` without `async with`: stop the calls nobody will read (cancel() does no I/O).
        for task in self.__dict__.get("_running", {}):
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                task.cancel()

    def _fill(self) -> None:
        # Results not yet handed out hold their slot: pulled - consumed never exceeds the concurrency.
        while not self._exhausted and len(self._running) + len(self._ready) < self._concurrency:
            try:
                index, call = next(self._calls)
            except StopIteration:
                self._exhausted = True
                return
            task = asyncio.ensure_future(_call(call))
            task.add_done_callback(_retrieve)
            self._running[task] = index


async def _call(call: Callable[[], Awaitable[R]]) -> R:
    return await call()


def _retrieve(task: asyncio.Task[Any]) -> None:
    # Marks the exception as seen, so a batch abandoned mid-way never logs "exception was never retrieved".
    if not task.cancelled():
        task.exception()


def _outcome(task: asyncio.Task[R]) -> R | AzureMLChatError:
    """The task's result or documented error; any other exception is raised (it stops the batch)."""
    error = task.exception()  # a cancelled call raises CancelledError here, which stops the batch too
    if error is None:
        return task.result()
    if isinstance(error, AzureMLChatError):
        return error
    raise error


def check_concurrency(concurrency: int) -> int:
    """``concurrency`` when it is a whole number >= 1.

    Raises:
        InvalidRequestError: otherwise.
    """
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise InvalidRequestError(f"concurrency must be a whole number >= 1, got {concurrency!r}")
    return concurrency


def _check_conversations(conversations: object) -> None:
    if isinstance(conversations, str):
        raise InvalidRequestError(
            "conversations must be an iterable of conversations, got one str: to send one prompt, call "
            "chat(prompt); to send many, pass a list of them, e.g. chat_many(['q1', 'q2'])"
        )
    if isinstance(conversations, (bytes, Mapping)) or not isinstance(conversations, Iterable):
        raise InvalidRequestError(
            f"conversations must be an iterable of conversations (each {CONVERSATION}), "
            f"got {describe_type(conversations)}"
        )


async def _chat_one(client: Chats, conversation: Any, params: Mapping[str, Any]) -> ChatResponse:
    if not is_conversation(conversation):
        # The usual slip: one conversation passed where a list of conversations is expected.
        raise InvalidRequestError(
            f"each conversation must be {CONVERSATION}, got {describe_type(conversation)} "
            "(to send a single conversation, use chat())"
        )
    return await client.chat(conversation, **params)


def chat_as_completed(
    client: Chats,
    conversations: Iterable[Conversation],
    *,
    concurrency: int = _defaults.BATCH_CONCURRENCY,
    **params: Any,
) -> BatchResults[ChatResponse]:
    """Send many conversations, at most ``concurrency`` at a time, and get the results as they finish.

    Args:
        client: the client that sends every call.
        conversations: an iterable of conversations (each a string, which is one user message, or a list of
            messages or OpenAI-shaped dicts), pulled lazily: a generator is read only as fast as calls start.
        concurrency: how many calls run at once.
        **params: :meth:`AsyncChatClient.chat` arguments, the same for every conversation.

    Returns:
        A :class:`BatchResults` of ``(index, ChatResponse | AzureMLChatError)``, in completion order.

    Raises:
        InvalidRequestError: ``concurrency`` or ``conversations`` is unusable, or a keyword looks misspelt
            (raised at once, nothing sent).
    """
    _check_conversations(conversations)
    check_names(params, _BATCH_KEYWORDS)
    calls = (functools.partial(_chat_one, client, conversation, params) for conversation in conversations)
    return BatchResults(calls, concurrency=concurrency)


@overload
async def chat_many(
    client: Chats,
    conversations: Iterable[Conversation],
    *,
    concurrency: int = ...,
    return_exceptions: Literal[True] = ...,
    **params: Any,
) -> list[ChatResponse | AzureMLChatError]: ...
@overload
async def chat_many(
    client: Chats,
    conversations: Iterable[Conversation],
    *,
    concurrency: int = ...,
    return_exceptions: Literal[False],
    **params: Any,
) -> list[ChatResponse]: ...
@overload
async def chat_many(
    client: Chats,
    conversations: Iterable[Conversation],
    *,
    concurrency: int = ...,
    return_exceptions: bool,
    **params: Any,
) -> list[ChatResponse | AzureMLChatError]: ...
async def chat_many(
    client: Chats,
    conversations: Iterable[Conversation],
    *,
    concurrency: int = _defaults.BATCH_CONCURRENCY,
    return_exceptions: bool = True,
    **params: Any,
) -> list[ChatResponse] | list[ChatResponse | AzureMLChatError]:
    """Send many conversations, at most ``concurrency`` at a time; one result per conversation, in input order.

    Args:
        client: the client that sends every call.
        conversations: an iterable of conversations (each a string, which is one user message, or a list of
            messages or OpenAI-shaped dicts), pulled lazily.
        concurrency: how many calls run at once.
        return_exceptions: ``True``: a failed conversation's :class:`AzureMLChatError` (after its retries)
            takes its place in the list. ``False``: the first error raises, and the calls still in flight
            are cancelled.
        **params: :meth:`AsyncChatClient.chat` arguments, the same for every conversation.

    Raises:
        InvalidRequestError: ``concurrency`` or ``conversations`` is unusable, or a keyword looks misspelt
            (raised at once, nothing sent).
        AzureMLChatError: with ``return_exceptions=False``, the first error of any conversation.
    """
    results: list[Any] = []
    async with chat_as_completed(client, conversations, concurrency=concurrency, **params) as completed:
        async for index, result in completed:
            if not return_exceptions and isinstance(result, AzureMLChatError):
                raise result
            results.extend([None] * (index + 1 - len(results)))
            results[index] = result
    return results
