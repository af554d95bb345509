"""Serving emulators in the foreground until Ctrl-C or SIGTERM: the ``azureml-chat emulator`` command.

One emulator, or several independent ones (``--instances N``: each its own port, faults, quota and request
log) for trying failover locally; which faults and ports each gets is in :mod:`._instances`. For a background thread,
see :mod:`._thread` (:meth:`Emulator.start_in_thread`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TextIO

import attrs

from ._deployments import Deployment
from ._faults import Fault
from ._instances import banner, faults_per_instance, instance_ports
from ._quota import Quota
from ._reasoning import ReasoningMode
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
    instances: int = 1,
    quota: Quota | str | None = None,
    reasoning: ReasoningMode | None = None,
    log_requests: bool = True,
    out: TextIO | None = None,
) -> None:
    """Serve emulators in the foreground until Ctrl-C or SIGTERM (the ``azureml-chat emulator`` command).

    Prints the URL, the key and the deployments first, then (with ``log_requests``) one line per request.
    Several ``instances`` print one ``instance N listening on URL ...`` line each, and each request line starts
    with ``[instance N]``.

    Args:
        host: the address to bind.
        port: the port to bind; 0 picks a free one. Several instances bind ``port``, ``port + 1``, ...
            (with 0, each picks a free one).
        key: the key clients must send; ``None`` accepts any.
        family: the family of the single deployment ``default`` (ignored when ``deployments`` is given).
        model: its model name (default: a typical model of the family).
        replies: its scripted replies (default: echo).
        faults: the default deployment's standing faults, as :class:`Fault` objects or spec strings; a spec
            starting with ``N:`` (``"2:status=503"``) is armed on instance N only, the others on every one.
        deployments: the deployments, instead of the single ``default`` one (the first is the default).
        instances: how many independent emulators to serve.
        quota: each instance's rate quota, a :class:`Quota` or its spec (``"requests=60,tokens=20000"``); each
            instance counts its own. ``None``: the default one no load spends.
        reasoning: the single deployment's reasoning mode, ``"think"`` or ``"field"`` (ignored when
            ``deployments`` is given; set it on those).
        log_requests: print a line per request.
        out: where to print (default stdout).

    Raises:
        PortInUseError: a port is taken (the instances already started are stopped).
        ValueError: a bad family, fault or quota spec, or reasoning mode, fewer than one instance, a fault for
            an instance past ``instances``, or ports past 65535.
    """
    if instances < 1:
        raise ValueError(f"instances must be at least 1, got {instances}")
    stream = out or sys.stdout
    ports = instance_ports(port, instances)
    armed = faults_per_instance(faults, instances)
    # Materialized once: every instance builds its deployments from them.
    replies = None if replies is None else tuple(replies)
    given = None if deployments is None else tuple(deployments)
    extra: dict[str, Any] = {} if model is None else {"model": model}
    limits = Quota.parse(quota) if isinstance(quota, str) else quota

    def deployed(own: tuple[Fault, ...]) -> list[Deployment]:
        if given is None:
            return [
                Deployment(
                    "default", family=family, replies=replies, faults=own, reasoning=reasoning, **extra
                )
            ]
        first, *rest = given
        return [attrs.evolve(first, faults=(*first.faults, *own)), *rest]

    emulators: list[Emulator] = []
    for number, (bound, own) in enumerate(zip(ports, armed, strict=True), 1):
        log = _logger(stream, f"[instance {number}] " if instances > 1 else "") if log_requests else None
        emulators.append(
            Emulator(key, deployments=deployed(own), host=host, port=bound, on_request=log, quota=limits)
        )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(emulators, stream))


def _logger(out: TextIO, prefix: str) -> Callable[[RecordedRequest], None]:
    def log(record: RecordedRequest) -> None:
        fault = f" fault={record.fault}" if record.fault else ""
        status = "dropped" if record.status is None else record.status
        print(
            f"{prefix}{record.method} {record.path} -> {status} [{record.deployment or '-'}]{fault}",
            file=out,
            flush=True,
        )

    return log


async def _serve(emulators: Sequence[Emulator], out: TextIO) -> None:
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        # SIGTERM (a process manager, a test harness) should stop as cleanly as Ctrl-C does.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        for emulator in emulators:
            await emulator.start()
        print(banner(emulators), file=out, flush=True)
        await loop.create_future()
    except asyncio.CancelledError:
        pass
    finally:
        # Together: each stop gives open streams a second to finish.
        await asyncio.gather(*(emulator.stop() for emulator in emulators))
