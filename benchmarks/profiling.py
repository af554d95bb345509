"""Where a client spends its time at c=64: py-spy attached to a worker in steady state, then summarised.

``py-spy record --gil --function --format raw`` samples only the thread holding the GIL (Python-level CPU)
and aggregates by function. The summary gives, as shares of all samples: self time by function and by
package, inclusive time by package (each package counted once per sample), and inclusive time by our own
functions. py-spy
runs on the server's core so it does not take CPU from the client it samples.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def package_of(path: str) -> str:
    """A short owner for a frame's file: ``azureml_chat``, a distribution, ``stdlib asyncio``, ``harness``.

    py-spy prints paths relative to their ``sys.path`` entry (``aiohttp/client.py``); attrs and cattrs
    generate code whose "file" is ``<attrs generated ...>``.
    """
    if path.startswith("<attrs generated"):
        return "attrs (generated code)"
    if path.startswith("<cattrs generated"):
        return "cattrs (generated code)"
    if path.startswith("<frozen"):
        return "stdlib"
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    if path.startswith("azureml_chat/") or "/azureml_chat/" in path:
        return "azureml_chat"
    if os.path.basename(path) in _HARNESS:
        return "harness"
    top = path.split("/", 1)[0].removesuffix(".py")
    if top in sys.stdlib_module_names:
        return "stdlib " + top
    return {"attr": "attrs"}.get(top, top)


_HARNESS = frozenset({"worker.py", "clients.py", "machine.py", "payloads.py"})


def _frames(stack: str) -> list[tuple[str, str, str]]:
    frames = []
    for raw in stack.split(";"):
        match = _FRAME.match(raw.strip())
        if match:
            path = match.group("file")
            frames.append((match.group("func"), path, package_of(path)))
        else:
            frames.append((raw.strip(), "", "?"))
    return frames


def summarize(raw_path: str, top: int = 15) -> dict[str, Any]:
    """Shares (% of samples) from a py-spy ``--format raw`` file."""
    self_time: Counter[str] = Counter()
    self_by_package: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    total = 0
    with open(raw_path) as f:
        for line in f:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            total += count
            frames = _frames(stack)
            func, file, package = frames[-1]
            self_time[f"{func} ({file})"] += count
            self_by_package[package] += count
            for name in {p for _, _, p in frames}:
                by_package[name] += count
            for name in {f"{fn} ({fl})" for fn, fl, p in frames if p == "azureml_chat"}:
                ours[name] += count

    def shares(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / total, 1)) for name, n in counter.most_common(top)] if total else []

    return {
        "samples": total,
        "self": shares(self_time),
        "self_by_package": shares(self_by_package),
        "inclusive_by_package": shares(by_package),
        "inclusive_ours": shares(ours),
    }


def run(
    python: str,
    worker_args: list[str],
    env: dict[str, str],
    *,
    out_path: str,
    spy_cpu: int | None,
    seconds: float = 4.0,
    rate: int = 200,
) -> dict[str, Any]:
    """Start a worker holding c=64, attach py-spy for ``seconds`` once it is warm, and summarise."""
    spy = shutil.which("py-spy", path=os.path.dirname(python)) or shutil.which("py-spy")
    if spy is None:
        return {"error": "py-spy is not installed"}
    here = os.path.dirname(os.path.abspath(__file__))
    worker = subprocess.Popen(
        [python, os.path.join(here, "worker.py"), *worker_args, "--hold", str(seconds + 2.0)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert worker.stderr is not None
        deadline = time.monotonic() + 60
        for line in worker.stderr:
            if "HOLDING" in line or time.monotonic() > deadline:
                break
        command = [
            spy,
            "record",
            "--pid",
            str(worker.pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            str(rate),
        ]
        command += ["--gil", "--function", "--format", "raw", "--output", out_path]
        if spy_cpu is not None and shutil.which("taskset"):
            command = ["taskset", "-c", str(spy_cpu), *command]
        spied = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30)
        worker.communicate(timeout=seconds + 60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    if spied.returncode != 0 or not os.path.exists(out_path):
        return {"error": (spied.stderr or spied.stdout).strip()[-500:]}
    return summarize(out_path)


if __name__ == "__main__":
    import json

    print(json.dumps(summarize(sys.argv[1]), indent=1))
