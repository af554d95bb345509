"""Serving an emulator on its own event loop in a background thread, for synchronous callers and tests.

The thread knows only that what it serves can be started and stopped (:class:`Servable`), so it does not
depend on the server module: :meth:`Emulator.start_in_thread` builds on this module, never the reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Generic, Protocol, TypeVar

from ._errors import EmulatorError

__all__ = ["EmulatorThread", "Servable"]


class Servable(Protocol):
    """What :class:`EmulatorThread` serves: an :class:`Emulator`, or anything started and stopped like one."""

    async def start(self) -> None:
        """Bind and serve (raises :class:`PortInUseError` for a taken port)."""

    async def stop(self) -> None:
        """Stop serving; safe to call twice."""


ServedT = TypeVar("ServedT", bound=Servable)

# Starting binds a socket and sets up aiohttp: well under a second; the margin is for loaded CI machines.
_START_TIMEOUT = 30.0


class EmulatorThread(Generic[ServedT]):
    """An :class:`Emulator` served by its own event loop in a daemon thread, for synchronous code.

    The emulator's state (``requests``, ``add_fault`` ...) is thread-safe, so it can be used from the caller's
    thread while it serves. Example::

        with EmulatorThread(Emulator(key="test-key")) as emu:
            ...  # a synchronous client against emu.url
    """

    def __init__(self, emulator: ServedT) -> None:
        self.emulator = emulator
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._error: BaseException | None = None

    def start(self) -> ServedT:
        """Start the loop thread and wait until the emulator serves; return it.

        Raises:
            PortInUseError: the port is taken.
            EmulatorError: the thread was already started, or the emulator did not start in time.
        """
        if self._thread is not None:
            raise EmulatorError("this EmulatorThread was already started")
        self._thread = threading.Thread(target=self._run, name="azureml-chat-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT):
            raise EmulatorError(f"the emulator did not start within {_START_TIMEOUT:g} s")
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self.emulator

    def stop(self) -> None:
        """Stop the emulator, end its loop and join the thread. Safe to call twice."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stopping.set)
        thread.join()

    def __enter__(self) -> ServedT:
        return self.emulator if self._thread is not None else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        # asyncio.run cancels leftovers and shuts down async generators and the executor: nothing leaks.
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        try:
            await self.emulator.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await self.emulator.stop()
