"""A rate-limit storm against a quota, measured: 429s per quota window and total time (issue 15).

The emulator (``azureml_chat.emulator`` from *this* repository, which has the quota mode) runs in its own process
pinned to core 0 with ``Quota(requests=N, window=W, retry_after=yes|no)``: a fixed window opens at the first
request, admits N requests, and answers 429 beyond them with the ``x-ratelimit-*`` headers (remaining 0, reset =
whole seconds until the window ends) plus ``Retry-After`` / ``retry-after-ms`` when ``retry_after=yes``, neither
when ``no`` (Azure's token-quota 429s). Every run gets a fresh emulator, so every run starts with an unused quota.

The client is ``azureml_chat`` from ``--sdk-path`` (default: this repository), in this process pinned to core 1:
one ``AsyncChatClient`` sends ``--calls`` calls at once (a storm), with ``max_retries`` high enough that every
call finishes, through an aiohttp session whose ``TraceConfig`` records every attempt (start, end, status). The
quota windows are rebuilt from the attempts' start times as the emulator opens them (the first request at or after
the previous window's end opens the next), so the 429s are counted per window.

Two modes per package, each with and without ``Retry-After``:

* ``per-call``: ``RateLimit(shared_cooldown=False)``, each call retries on its own;
* ``shared``: ``RateLimit()``, the default: one cooldown for the client after a 429 (and, since issue 15, a
  gradual release after it, and a pause when an answer says the quota is spent).

``--before DIR`` also runs both modes with the package in ``DIR`` (an export of an older commit:
``git archive HEAD azureml_chat | tar -x -C /tmp/before``), in a subprocess, and prints one table with both.

    python3 benchmarks/storm.py                              # this tree: 4 runs of ~10 s
    python3 benchmarks/storm.py --before /tmp/before         # and the older package: 8 runs
    python3 benchmarks/storm.py --calls 400 --requests 40    # another storm

The quota's own pace, the shortest a storm can take, is ``calls / requests`` windows: the last of them opens
``(calls / requests - 1) x window`` seconds after the first request, and the time is compared with that.
``--remaining hide`` also runs the ``shared`` mode with ``x-ratelimit-remaining-*`` taken out of every answer
(client side): the gradual release alone, as against a server that never says a quota is spent before it refuses. Like the other benchmarks it re-runs itself
in ``benchmarks/.venv`` (aiohttp, orjson).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import machine
import run

HERE = os.path.dirname(os.path.abspath(__file__))
KEY = "storm-key"
MESSAGES = [{"role": "user", "content": "hello"}]
SERVER_CPU, CLIENT_CPU = run.SERVER_CPU, run.CLIENT_CPU
RESULT = "RESULT "
# Serves one emulator with the quota given in argv, without a line per request; prints its banner.
SERVE = (
    "import sys\n"
    "from azureml_chat.emulator import serve\n"
    "serve(key=sys.argv[1], port=0, quota=sys.argv[2], log_requests=False)\n"
)


# --- the emulator -----------------------------------------------------------------------------------------------


def start_emulator(spec: str) -> tuple[subprocess.Popen[str], str]:
    """An emulator with quota ``spec`` in its own process, on core 0; returns it and its base URL."""
    env = dict(os.environ, PYTHONPATH=run.REPO, PYTHONPYCACHEPREFIX=os.path.join(run.VENV, "pycache"))
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE, KEY, spec],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: machine.pin(SERVER_CPU),
    )
    assert process.stdout is not None
    for line in process.stdout:
        if "listening on " in line:
            return process, line.split("listening on ", 1)[1].split()[0].rstrip("/")
    process.kill()
    raise SystemExit(f"the emulator did not start (quota {spec!r}); exit {process.wait()}")


# --- one storm ----------------------------------------------------------------------------------------------------


async def storm(
    url: str, *, mode: str, calls: int, max_retries: int, timeout: float, hide_remaining: bool
) -> dict[str, Any]:
    """``calls`` concurrent calls through one client; every attempt as ``(start, end, status)``."""
    import aiohttp

    from azureml_chat import AsyncChatClient, RateLimit, RetryPolicy

    attempts: list[tuple[float, float, str]] = []
    trace = aiohttp.TraceConfig()

    async def start(session: Any, ctx: Any, params: Any) -> None:
        ctx.start = time.monotonic()

    async def end(session: Any, ctx: Any, params: Any) -> None:
        attempts.append((ctx.start, time.monotonic(), str(params.response.status)))

    async def failed(session: Any, ctx: Any, params: Any) -> None:
        attempts.append((ctx.start, time.monotonic(), type(params.exception).__name__))

    trace.on_request_start.append(start)
    trace.on_request_end.append(end)
    trace.on_request_exception.append(failed)
    # Every call gets its own connection: the storm reaches the endpoint at once, as from many workers.
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=calls), trace_configs=[trace])
    limit = RateLimit(shared_cooldown=mode == "shared")
    where: dict[str, Any] = {"session": session}
    if hide_remaining:
        where = {"transport": without_remaining(session)}
    client = AsyncChatClient(
        url + "/v1/chat/completions",
        KEY,
        rate_limit=limit,
        retry=RetryPolicy(max_retries=max_retries),
        **where,
    )
    lost: collections.Counter[str] = collections.Counter()

    async def one() -> None:
        try:
            await client.chat(MESSAGES, max_tokens=4)
        except Exception as exc:  # a lost call, counted by type
            lost[type(exc).__name__] += 1

    try:
        async with client:
            started = time.monotonic()
            await asyncio.wait_for(asyncio.gather(*(one() for _ in range(calls))), timeout)
            finished = time.monotonic()
    finally:
        await session.close()
    return {"attempts": attempts, "started": started, "finished": finished, "lost": dict(lost)}


def without_remaining(session: Any) -> Any:
    """The default transport over ``session``, with ``x-ratelimit-remaining-*`` taken out of every answer: a
    server that never says a quota is spent before it refuses (only the reset headers, and ``Retry-After``)."""
    from multidict import CIMultiDict, CIMultiDictProxy

    from azureml_chat._transport import AiohttpTransport, Response

    hidden = ("x-ratelimit-remaining-requests", "x-ratelimit-remaining-tokens")

    class Hiding(AiohttpTransport):
        async def send(self, request: Any) -> Any:
            response = await super().send(request)
            headers = CIMultiDict(response.headers)
            for name in hidden:
                headers.popall(name, None)
            return Response(response.status_code, CIMultiDictProxy(headers), response.content)

    return Hiding(session=session)


def per_window(attempts: list[tuple[float, float, str]], window: float) -> list[collections.Counter[str]]:
    """The attempts' statuses per quota window, the windows opened as the emulator opens them."""
    windows: list[collections.Counter[str]] = []
    opened = -math.inf
    for begun, _, status in sorted(attempts):
        if begun >= opened + window:
            opened = begun
            windows.append(collections.Counter())
        windows[-1][status] += 1
    return windows


def summarise(raw: dict[str, Any], *, calls: int, requests: int, window: float) -> dict[str, Any]:
    windows = per_window(raw["attempts"], window)
    throttled = [counts["429"] for counts in windows]
    answered = [counts["200"] for counts in windows]
    elapsed = raw["finished"] - raw["started"]
    pace_windows = math.ceil(calls / requests)
    pace = (pace_windows - 1) * window  # the last window opens then, at the earliest
    return {
        "calls": calls,
        "lost": raw["lost"],
        "requests": len(raw["attempts"]),
        "throttled": sum(throttled),
        "throttled_per_window": throttled,
        "answered_per_window": answered,
        "windows": len(windows),
        "throttled_per_window_after_first": (statistics.mean(throttled[1:]) if len(throttled) > 1 else 0.0),
        "seconds": elapsed,
        "pace_windows": pace_windows,
        "pace_seconds": pace,
        "vs_pace": elapsed / pace if pace else math.nan,
        "other_outcomes": dict(
            collections.Counter(status for _, _, status in raw["attempts"] if status not in ("200", "429"))
        ),
    }


async def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    runs = [(mode, False) for mode in args.modes]
    if args.remaining == "hide" and "shared" in args.modes:
        runs.append(("shared", True))
    for with_retry_after in (True, False):
        spec = f"requests={args.requests},window={args.window:g},retry_after={'yes' if with_retry_after else 'no'}"
        for mode, hide in runs:
            for rep in range(args.reps):
                emulator, url = start_emulator(spec)
                try:
                    raw = await storm(
                        url,
                        mode=mode,
                        calls=args.calls,
                        max_retries=args.max_retries,
                        timeout=args.timeout,
                        hide_remaining=hide,
                    )
                finally:
                    run.stop(emulator)
                row = summarise(raw, calls=args.calls, requests=args.requests, window=args.window)
                row.update(
                    mode=mode + (", remaining hidden" if hide else ""),
                    retry_after=with_retry_after,
                    rep=rep + 1,
                    sdk_path=args.sdk_path,
                )
                rows.append(row)
                print(
                    f"  {row['mode']:8s} Retry-After {'yes' if with_retry_after else 'no ':3s} rep {rep + 1}: "
                    f"{row['throttled']} x 429 in {row['requests']} requests, per window "
                    f"{row['throttled_per_window']}, {row['seconds']:.2f} s ({row['vs_pace']:.2f}x the quota's "
                    f"pace), lost {row['lost'] or 0}",
                    file=sys.stderr,
                    flush=True,
                )
    return rows


# --- the table ----------------------------------------------------------------------------------------------------


def table(rows: list[dict[str, Any]], labels: dict[str, str]) -> str:
    lines = [
        "| client | mode | 429 carries | 429s per window | 429s | per window after the first | requests "
        "| calls lost | time | x quota pace |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        windows = row["throttled_per_window"]
        shown = ", ".join(str(n) for n in windows[:12]) + (", ..." if len(windows) > 12 else "")
        carries = "`Retry-After`" if row["retry_after"] else "reset headers only"
        lines.append(
            f"| {labels[row['sdk_path']]} | {row['mode']} | {carries} | {shown} | {row['throttled']} "
            f"| {row['throttled_per_window_after_first']:.1f} | {row['requests']} | {sum(row['lost'].values())} "
            f"| {row['seconds']:.1f} s | {row['vs_pace']:.2f} |"
        )
    return "\n".join(lines)


def run_before(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The same storms with the package in ``--before``, in a subprocess (one package per interpreter)."""
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--sdk-path",
        args.before,
        "--calls",
        str(args.calls),
        "--requests",
        str(args.requests),
        "--window",
        str(args.window),
        "--reps",
        str(args.reps),
        "--max-retries",
        str(args.max_retries),
        "--timeout",
        str(args.timeout),
        "--modes",
        ",".join(args.modes),
        "--rows-only",
    ]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT):
            rows: list[dict[str, Any]] = json.loads(line[len(RESULT) :])
            return rows
    raise SystemExit("the --before run printed no result")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdk-path", default=run.REPO, help="the azureml_chat package to measure")
    parser.add_argument("--before", help="also measure the package in this directory (an older export)")
    parser.add_argument("--calls", type=int, default=200, help="calls sent at once (default 200)")
    parser.add_argument(
        "--requests", type=int, default=20, help="the quota's requests per window (default 20)"
    )
    parser.add_argument("--window", type=float, default=1.0, help="the quota's window in seconds (default 1)")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--modes", default="per-call,shared", help="per-call, shared (default: both)")
    parser.add_argument(
        "--remaining",
        choices=("show", "hide"),
        default="show",
        help="hide: also a shared run without remaining-*",
    )
    parser.add_argument("--max-retries", type=int, default=100, help="enough for every call to finish")
    parser.add_argument("--timeout", type=float, default=300.0, help="per storm, seconds")
    parser.add_argument("--rows-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help="also write every figure here as JSON")
    args = parser.parse_args()
    args.modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    for mode in args.modes:
        if mode not in ("per-call", "shared"):
            raise SystemExit(f"unknown mode {mode!r}: per-call, shared")
    run.ensure_venv()
    sys.path.insert(0, os.path.abspath(args.sdk_path))
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
    print(
        f"storm: {args.calls} calls at once against {args.requests} requests per {args.window:g} s window; "
        f"azureml_chat from {args.sdk_path}",
        file=sys.stderr,
        flush=True,
    )
    before = run_before(args) if args.before else []
    machine.pin(CLIENT_CPU)
    load = os.getloadavg()
    rows = asyncio.run(run_all(args))
    if args.rows_only:
        print(RESULT + json.dumps(rows))
        return
    labels = {args.sdk_path: "this tree" if args.sdk_path == run.REPO else args.sdk_path}
    if args.before:
        labels[args.before] = f"before ({args.before})"
    everything = before + rows
    print(table(everything, labels))
    print(
        f"\nquota pace: {math.ceil(args.calls / args.requests)} windows of {args.window:g} s, the last opening "
        f"{(math.ceil(args.calls / args.requests) - 1) * args.window:g} s after the first request; load average "
        f"before {load[0]:.2f}, after {os.getloadavg()[0]:.2f}"
    )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(everything, f, indent=1)


if __name__ == "__main__":
    main()
