"""Several emulators in one process (``azureml-chat emulator --instances N``): each one's faults, ports and banner.

No I/O; :mod:`._runner` serves them. Instances are numbered from 1. A fault spec may start with ``N:`` to arm
its faults on instance N only (``2:status=503``, ``3:429,retry_after=1;latency=0.2``); a spec without one is
armed on every instance. Each instance gets its faults in the order they were given, so the first-match rule
of :mod:`._faults` reads the same as with one instance. The prefix cannot be mistaken for a fault: no fault
spec starts with digits and a colon.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from ._errors import FaultSpecError
from ._faults import Fault, parse_faults
from ._server import Emulator

__all__ = ["banner", "faults_per_instance", "instance_ports", "split_instance"]

# The highest TCP port number.
_MAX_PORT = 65535
_PREFIX = re.compile(r"\s*(\d+)\s*:(.*)", re.DOTALL)


def split_instance(spec: str) -> tuple[int | None, tuple[Fault, ...]]:
    """Parse ``[N:]faults`` into the instance it is for (``None``: every instance) and its faults.

    Raises:
        FaultSpecError: the faults do not parse, the prefix is 0, or nothing follows it.
    """
    found = _PREFIX.fullmatch(spec)
    if found is None:
        return None, parse_faults(spec)
    instance, faults = int(found[1]), parse_faults(found[2])
    if instance < 1:
        raise FaultSpecError(f"instances are numbered from 1, got {instance} in {spec!r}")
    if not faults:
        raise FaultSpecError(f"no fault after '{instance}:' in {spec!r}")
    return instance, faults


def faults_per_instance(specs: Iterable[Fault | str], count: int) -> tuple[tuple[Fault, ...], ...]:
    """Each of ``count`` instances' faults, in the order given: those without a prefix and those for it.

    Raises:
        FaultSpecError: a spec does not parse.
        ValueError: a spec is for an instance past ``count``.
    """
    armed: list[list[Fault]] = [[] for _ in range(count)]
    for spec in specs:
        instance, faults = (None, (spec,)) if isinstance(spec, Fault) else split_instance(spec)
        if instance is not None and instance > count:
            raise ValueError(f"fault {spec!r} is for instance {instance}, but there are {count} instance(s)")
        for number, own in enumerate(armed, 1):
            if instance in (None, number):
                own.extend(faults)
    return tuple(tuple(own) for own in armed)


def instance_ports(port: int, count: int) -> tuple[int, ...]:
    """The ports to bind: ``port``, ``port + 1``, ... (all 0 when ``port`` is 0: each picks a free one).

    Raises:
        ValueError: the last port would be past 65535.
    """
    if port == 0:
        return (0,) * count
    if port + count - 1 > _MAX_PORT:
        raise ValueError(
            f"{count} instances from port {port} need ports up to {port + count - 1}, past {_MAX_PORT}"
        )
    return tuple(range(port, port + count))


def banner(emulators: Sequence[Emulator]) -> str:
    """What the command prints once every instance is serving.

    One instance prints its own :meth:`Emulator.banner`. Several print one line per instance, for people and
    scripts alike (``azureml-chat emulator instance N listening on URL  chat: URL  score: URL  faults: SPEC``;
    the faults last, as a spec may hold spaces), then the lines they share (key, deployments, routes). Like
    the single banner, the first line holds ``listening on URL`` (instance 1's).
    """
    first = emulators[0].banner().splitlines()
    if len(emulators) == 1:
        return "\n".join(first)
    lines: list[str] = []
    for number, emulator in enumerate(emulators, 1):
        faults = ";".join(str(fault) for fault in emulator.faults()) or "none"
        lines.append(
            f"azureml-chat emulator instance {number} listening on {emulator.url}  chat: {emulator.chat_url}"
            f"  score: {emulator.score_url}  faults: {faults}"
        )
    # The lines after the first banner's URL (key, deployments, routes, how to stop) hold for every instance.
    return "\n".join([*lines, *first[1:]])
