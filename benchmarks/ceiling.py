"""The fake endpoint's own ceiling, measured with ``wrk`` (Debian: ``apt-get install wrk``).

``wrk`` (C, one thread, pinned to the client core) sends the same request body as the clients. If the server
answers many times faster than the fastest Python client, the clients are the bottleneck, not the server.
Without ``wrk`` this step is skipped and the report says so; the server's CPU share during every client
window (recorded by the workers) still shows how far from saturated it was.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from typing import Any

import payloads

# (label, path, body, connections)
CASES: list[tuple[str, str, dict[str, Any], int]] = [
    ("chat completion (16 tokens)", "/v1/chat/completions", {"max_tokens": payloads.ANSWER_TOKENS}, 1),
    ("chat completion (16 tokens)", "/v1/chat/completions", {"max_tokens": payloads.ANSWER_TOKENS}, 64),
    ("chat completion (16 tokens)", "/v1/chat/completions", {"max_tokens": payloads.ANSWER_TOKENS}, 256),
    ("/score (16 tokens)", "/score", {}, 64),
    (
        f"SSE stream, {payloads.STREAM_TOKENS} chunks",
        "/v1/chat/completions",
        {"max_tokens": payloads.STREAM_TOKENS, "stream": True},
        64,
    ),
]

_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6}


def _body(path: str, extra: dict[str, Any]) -> str:
    if path == "/score":
        return json.dumps(payloads.score_request(payloads.ANSWER_TOKENS))
    return json.dumps({"model": payloads.MODEL, "messages": payloads.MESSAGES, **extra})


def _script(body: str) -> str:
    return (
        'wrk.method = "POST"\n'
        f"wrk.body = [[{body}]]\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        'wrk.headers["Authorization"] = "Bearer bench-key"\n'
    )


def parse(output: str) -> dict[str, Any]:
    """Requests/s, p50 latency (µs) and errors from ``wrk --latency`` output."""
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket = re.search(r"Socket errors:(.*)", output)
    return {
        "req_per_s": float(rate.group(1)) if rate else 0.0,
        "p50_us": float(p50.group(1)) * _UNITS[p50.group(2)] if p50 else 0.0,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": socket.group(1).strip() if socket else "",
    }


def run(base_url: str, *, cpu: int | None, seconds: float = 3.0) -> dict[str, Any]:
    """Run every case once; ``{"available": False}`` when wrk is missing."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return {"available": False, "cases": []}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, path, extra, connections in CASES:
            script = os.path.join(tmp, "post.lua")
            with open(script, "w") as f:
                f.write(_script(_body(path, extra)))
            command = [
                wrk,
                "-t1",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "--latency",
                "-s",
                script,
                base_url + path,
            ]
            if cpu is not None and shutil.which("taskset"):
                command = ["taskset", "-c", str(cpu), *command]
            done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30)
            results.append({"label": label, "connections": connections, **parse(done.stdout)})
    return {"available": True, "seconds": seconds, "cases": results}
