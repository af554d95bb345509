"""Running the emulator outside the caller's event loop: in a background thread, or in the foreground (CLI)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
from collections.abc import Iterable
from typing import Any, TextIO

from ._deployments import Deployment
from ._errors import EmulatorError
from ._faults import Fault
from ._records import RecordedRequest
from ._server import Emulator

__all__ = ["EmulatorThread", "serve"]

# Starting binds a socket and sets up aiohttp: well under a second; the margin is for loaded CI machines.
_START_TIMEOUT = 30.0


class EmulatorThread:
    """An :class:`Emulator` served by its own event loop in a daemon thread, for synchronous code.

    The emulator's state (``requests``, ``add_fault`` ...) is thread-safe, so it can be used from the caller's
    thread while it serves. Example::

        with EmulatorThread(Emulator(key="test-key")) as emu:
            ...  # a synchronous client against emu.url
    """

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._error: BaseException | None = None

    def start(self) -> Emulator:
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

    def __enter__(self) -> Emulator:
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


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    key: str | None = None,
    family: str = "llama",
    model: str | None = None,
    replies: Iterable[str] | None = None,
    faults: Iterable[Fault | str] = (),
    deployments: Iterable[Deployment] | None = None,
    log_requests: bool = True,
    out: TextIO | None = None,
) -> None:
    """Serve an emulator in the foreground until Ctrl-C or SIGTERM (the ``azureml-chat emulator`` command).

    Prints the URL, the key and the deployments first, then (with ``log_requests``) one line per request.

    Args:
        host: the address to bind.
        port: the port to bind; 0 picks a free one.
        key: the key clients must send; ``None`` accepts any.
        family: the family of the single deployment ``default`` (ignored when ``deployments`` is given).
        model: its model name (default: a typical model of the family).
        replies: its scripted replies (default: echo).
        faults: its standing faults, as :class:`Fault` objects or spec strings.
        deployments: the deployments, instead of the single ``default`` one.
        log_requests: print a line per request.
        out: where to print (default stdout).

    Raises:
        PortInUseError: the port is taken.
        ValueError: a bad family or fault spec.
    """
    stream = out or sys.stdout
    if deployments is None:
        extra: dict[str, Any] = {} if model is None else {"model": model}
        deployments = [Deployment("default", family=family, replies=replies, faults=list(faults), **extra)]

    def log(record: RecordedRequest) -> None:
        fault = f" fault={record.fault}" if record.fault else ""
        status = "dropped" if record.status is None else record.status
        print(
            f"{record.method} {record.path} -> {status} [{record.deployment or '-'}]{fault}",
            file=stream,
            flush=True,
        )

    emulator = Emulator(
        key, deployments=deployments, host=host, port=port, on_request=log if log_requests else None
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(emulator, stream))


async def _serve(emulator: Emulator, out: TextIO) -> None:
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        # SIGTERM (a process manager, a test harness) should stop as cleanly as Ctrl-C does.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await emulator.serve_forever(out=out)
