"""Import time: each ``import`` timed inside a fresh interpreter, and what ``import azureml_chat`` pulls in.

For every target, a fresh ``python -c`` (pinned to the client core, bytecode cache warm) times the import
statement itself with ``perf_counter`` and lists which forbidden modules ended up in ``sys.modules``.
Targets are interleaved run by run, so drift hits them alike. One ``python -X importtime`` run per rep
splits what ``import azureml_chat`` costs on top of ``import aiohttp`` by top-level package.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from typing import Any

TARGETS: dict[str, str] = {
    "(bare interpreter)": "pass",
    "aiohttp": "import aiohttp",
    "azureml_chat": "import azureml_chat",
    "openai": "import openai",
    "azure_inference": "import azure.ai.inference.aio",
    "langchain": "import langchain_community.chat_models.azureml_endpoint",
}
# What `import azureml_chat` must never load: the optional leaves and their heavy dependencies.
FORBIDDEN = (
    "langchain_core",
    "langchain_community",
    "azureml_chat.cli",
    "azureml_chat.emulator",
    "azureml_chat.langchain",
    "azureml_chat.testing",
    "azure.identity",
    "aiohttp.web",
)

_PROBE = """
import sys, time, json, warnings
warnings.simplefilter("ignore")
before = set(sys.modules)
t = time.perf_counter()
{statement}
ms = (time.perf_counter() - t) * 1000
print(json.dumps({{"ms": ms, "new_modules": sorted(set(sys.modules) - before), "forbidden": [m for m in {forbidden!r} if m in sys.modules]}}))
"""


def _probe(python: str, statement: str, env: dict[str, str], cpu: int | None) -> dict[str, Any]:
    code = _PROBE.format(statement=statement, forbidden=FORBIDDEN)
    started = time.perf_counter()
    done = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, env=env, timeout=60, preexec_fn=_pinner(cpu)
    )
    wall = (time.perf_counter() - started) * 1000
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_ms"] = wall
    return result


def _pinner(cpu: int | None) -> Any:
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def importtime_breakdown(python: str, env: dict[str, str], cpu: int | None) -> dict[str, float]:
    """Milliseconds of self time per module of ours, and per other top-level package, that ``import azureml_chat`` adds to ``import aiohttp``."""
    done = subprocess.run(
        [python, "-X", "importtime", "-c", "import aiohttp; import azureml_chat"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        preexec_fn=_pinner(cpu),
    )
    totals: dict[str, float] = defaultdict(float)
    after_aiohttp = False
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        _, self_us, _cumulative, name = (
            part.strip() for part in line.replace("import time:", "|").split("|")
        )
        if not after_aiohttp:
            after_aiohttp = name == "aiohttp"
            continue
        # Our own modules one by one (where the time goes); everything else by top-level package.
        key = name if name.startswith("azureml_chat") else name.split(".")[0]
        totals[key] += int(self_us) / 1000
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def run(python: str, env: dict[str, str], *, cpu: int | None, reps: int, runs: int) -> dict[str, Any]:
    """``runs`` timed imports per target per rep (after one warm-up each), plus one breakdown per rep."""
    for statement in TARGETS.values():
        _probe(python, statement, env, cpu)  # fills the bytecode cache
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in TARGETS}
    breakdowns = []
    for _ in range(reps):
        for _ in range(runs):
            for name, statement in TARGETS.items():
                samples[name].append(_probe(python, statement, env, cpu))
        breakdowns.append(importtime_breakdown(python, env, cpu))
    return {"runs_per_rep": runs, "reps": reps, "samples": samples, "breakdowns": breakdowns}


if __name__ == "__main__":
    print(json.dumps(run(sys.executable, dict(os.environ), cpu=None, reps=1, runs=3), indent=1)[:3000])
