"""Serving the emulator in the foreground until Ctrl-C or SIGTERM: the ``azureml-chat emulator`` command.

For a background thread, see :mod:`._thread` (:meth:`Emulator.start_in_thread`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from ._deployments import Deployment
from ._faults import Fault
from ._records import RecordedRequest
from ._server import Emulator

__all__ = ["serve"]


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
