"""The machine: core pinning, CPU accounting from /proc, waiting for a quiet box, and what to report about it.

CPU time is read from ``/proc`` in clock ticks (usually 10 ms), which is plenty over windows of seconds.
"Foreign" load is busy CPU minus the client's and the server's own: other tenants of a shared box show up
there. Every measurement window records it, for the whole machine and for the client's own core.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Iterable

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def pin(cpu: int | None) -> None:
    """Pin this process (and the threads it starts later) to one core, where the OS allows it."""
    if cpu is not None and hasattr(os, "sched_setaffinity") and cpu < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {cpu})


def busy_seconds(cpu: int | None = None) -> float:
    """CPU seconds spent busy since boot (user, nice, system, irq, softirq), on one core or on all."""
    label = "cpu" if cpu is None else f"cpu{cpu}"
    try:
        with open("/proc/stat") as stat:
            for line in stat:
                fields = line.split()
                if fields and fields[0] == label:
                    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[1:8])
                    return (user + nice + system + irq + softirq) / _TICK
    except OSError:
        pass
    return 0.0


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), 0 when unknown."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            after_name = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(after_name[11]) + int(after_name[12])) / _TICK


def wait_until_quiet(exclude: Iterable[int], *, threshold: float = 0.2, patience: float = 20.0) -> float:
    """Wait (at most ``patience`` s) until others use less than ``threshold`` of a core; return that load."""
    excluded = list(exclude)
    deadline = time.monotonic() + patience
    while True:
        busy0 = busy_seconds()
        own0 = sum(process_cpu_seconds(pid) for pid in excluded)
        time.sleep(0.5)
        load = (busy_seconds() - busy0 - (sum(process_cpu_seconds(pid) for pid in excluded) - own0)) / 0.5
        if load < threshold or time.monotonic() > deadline:
            return max(load, 0.0)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float:
    try:
        with open("/proc/meminfo") as info:
            return int(info.readline().split()[1]) / 1024 / 1024
    except (OSError, ValueError, IndexError):
        return 0.0


def describe() -> dict[str, object]:
    """What the report says about the machine."""
    wrk = "not installed"
    try:
        out = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=5)
        wrk = (out.stdout or out.stderr).split("\n")[0].split(" Copyright")[0].strip() or wrk
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gib": round(memory_gib(), 1),
        "kernel": platform.release(),
        "os": _os_name(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "wrk": wrk,
    }


def _os_name() -> str:
    try:
        with open("/etc/os-release") as release:
            for line in release:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()
