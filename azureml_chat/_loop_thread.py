"""The loop thread behind the sync ``Client``: one event loop in a daemon thread, and the handoff that runs a
blocking caller's coroutine there.

The handoff is what a sync call costs on top of an async one, so it is kept light. A caller queues its
coroutine and waits on a lock of its own; the loop starts every queued coroutine in one pass (one wake-up of
the loop for all the calls queued since its last pass, instead of one per call), and a finished call's task
releases its caller's lock. ``asyncio.run_coroutine_threadsafe`` costs about twice as much per call: a
``concurrent.futures.Future`` with its condition variable, a chained callback, and a write to the loop's
wake-up socket for every call.

Shutting down is the subtle part: a call may be queued while the loop stops. :meth:`LoopThread.stop` runs a
last coroutine on the loop that closes the client, cancels and awaits every task left, and closes every
coroutine still queued (their callers get "closed while this call was running"); a call queued after that
is closed by its own caller. No coroutine is left unawaited and no task pending, so nothing warns.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

from ._errors import AzureMLChatError, ClientClosedError

__all__ = ["Call", "LoopThread"]

T = TypeVar("T")

# How often a waiting caller wakes up; it bounds how late Ctrl-C is noticed on platforms whose lock waits
# cannot be interrupted, and how late a dead loop thread is noticed. A finished call is seen at once.
_POLL_SECONDS = 0.2
# How long stop() gives the client's close, and then the cancelled tasks, before giving up on each.
_JOIN_SECONDS = 5.0

_CLOSED_WHILE_RUNNING = "the client was closed while this call was running"


class Call(Generic[T]):
    """One coroutine handed to the loop, and the lock its caller waits on (released when the call ends)."""

    __slots__ = ("abandoned", "coro", "done", "task")

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self.coro = coro
        self.task: asyncio.Task[T] | None = None
        # Set when the caller stopped waiting (Ctrl-C, or the loop was stopping): the call is not started.
        self.abandoned = False
        self.done = threading.Lock()
        self.done.acquire()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the loop: run the coroutine as a task, unless its caller is gone."""
        if self.abandoned:
            self.coro.close()
            return
        task = self.task = loop.create_task(self.coro)
        task.add_done_callback(self._finished)

    def drop(self) -> None:
        """On the loop, as it stops: close the coroutine unstarted and wake its caller."""
        self.coro.close()
        self.done.release()

    def cancel(self) -> None:
        """On the loop: cancel the task of a caller that stopped waiting."""
        if self.task is not None:
            self.task.cancel()

    def _finished(self, task: asyncio.Task[T]) -> None:
        if not task.cancelled():
            task.exception()  # seen: an abandoned call's error must not be logged as "never retrieved"
        self.done.release()


class LoopThread:
    """A daemon thread running one event loop until :meth:`stop`; :meth:`run` runs a coroutine there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._queue: deque[Call[Any]] = deque()
        self._wake_pending = False
        self._stopped = False
        # Taken by stop()'s last pass over the queue, and by a call queued too late to know who closes it.
        self._sweep_lock = threading.Lock()
        self._swept = False
        self.thread = threading.Thread(target=self._main, name="azureml-chat-loop", daemon=True)
        self.thread.start()
        self._ident = self.thread.ident

    @property
    def running(self) -> bool:
        """Whether calls can still be run (:meth:`stop` was not called)."""
        return not self._stopped

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for it; Ctrl-C (or any interruption) cancels it.

        Raises:
            RuntimeError: called from the loop thread itself.
            ClientClosedError: the loop thread is stopped or stops meanwhile (the client was closed).
        """
        if threading.get_ident() == self._ident:
            coro.close()
            raise RuntimeError(
                "a sync Client method was called from its own event-loop thread; use AsyncChatClient"
            )
        return self.wait(self.submit(coro))

    def submit(self, coro: Coroutine[Any, Any, T]) -> Call[T]:
        """Queue ``coro`` to start on the loop, without waiting (never blocks).

        Raises:
            ClientClosedError: the loop thread is stopped or stopping (``coro`` is then closed, never started).
        """
        call = Call(coro)
        self._queue.append(call)
        if self._stopped:
            self._refuse(call)
        if not self._wake_pending:
            self._wake_pending = True
            # Cleared by the loop before it takes the queue, so a call queued meanwhile is never left behind.
            try:
                self.loop.call_soon_threadsafe(self._start_queued)
            except RuntimeError:  # the loop closed in between; its last pass closed this call
                raise ClientClosedError() from None
        return call

    def wait(self, call: Call[T]) -> T:
        """Wait for ``call`` and return its result (or raise its error); an interruption cancels it."""
        try:
            while not call.done.acquire(timeout=_POLL_SECONDS):
                if not self.thread.is_alive():
                    raise ClientClosedError(_CLOSED_WHILE_RUNNING)
        except BaseException:
            call.abandoned = True
            with contextlib.suppress(RuntimeError):  # the loop is closed: stop() cancelled or dropped it
                self.loop.call_soon_threadsafe(call.cancel)
            raise
        task = call.task
        if task is None or (task.cancelled() and self._stopped):
            raise ClientClosedError(_CLOSED_WHILE_RUNNING)
        try:
            return task.result()
        except AzureMLChatError as exc:
            error = exc
        # The caller's traceback starts at its own call: the async client's frames on the loop thread say
        # nothing it can act on. Any other exception (a bug) keeps every frame.
        raise error.with_traceback(None)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Start ``coro`` on the loop and return at once; nothing happens if the loop is stopping."""
        with contextlib.suppress(RuntimeError):
            self.submit(coro)

    def call_soon(self, callback: Callable[[], None]) -> None:
        """Schedule ``callback`` on the loop thread if the loop still runs (never blocks)."""
        if not self._stopped:
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                self.loop.call_soon_threadsafe(callback)

    def stop(self, closer: Coroutine[Any, Any, None] | None) -> None:
        """Run ``closer`` on the loop, cancel what still runs there, stop the loop and close it. Safe to call
        twice; called from the loop thread itself (a finalizer), it does not wait for the thread to end."""
        if self._stopped:
            if closer is not None:
                closer.close()
            return
        self._stopped = True
        last = Call(self._wind_down(closer))
        self._queue.append(last)
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            self.loop.call_soon_threadsafe(self._start_queued)
        if threading.get_ident() != self._ident:
            self.thread.join(timeout=3 * _JOIN_SECONDS)

    # --- on the loop thread ------------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def _start_queued(self) -> None:
        self._wake_pending = False
        queue, loop = self._queue, self.loop
        while queue:
            queue.popleft().start(loop)

    async def _wind_down(self, closer: Coroutine[Any, Any, None] | None) -> None:
        try:
            if closer is not None:
                # Shutting down: there is no caller left to report a failed close to.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(closer, _JOIN_SECONDS)
        finally:
            try:
                with self._sweep_lock:
                    self._swept = True
                    while self._queue:
                        self._queue.popleft().drop()
                # Nothing can start any more: cancel what is left and let it finish.
                this = asyncio.current_task()
                tasks = [task for task in asyncio.all_tasks() if task is not this]
                for task in tasks:
                    task.cancel()
                if tasks:
                    await asyncio.wait(tasks, timeout=_JOIN_SECONDS)
                await self.loop.shutdown_asyncgens()
            finally:
                self.loop.stop()

    # --- on a caller's thread ------------------------------------------------------------------------------

    def _refuse(self, call: Call[Any]) -> None:
        """Take back a call queued after stop(): it must be closed exactly once and never started."""
        with self._sweep_lock:
            if self._swept:
                # The loop took its last calls before this one: no one else will touch it.
                with contextlib.suppress(ValueError):
                    self._queue.remove(call)
                call.coro.close()
            else:
                # The loop's last pass closes it, or its start() does, seeing it abandoned.
                call.abandoned = True
        raise ClientClosedError()
