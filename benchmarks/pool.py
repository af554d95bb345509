"""One client over three endpoints, measured: failover, a throttled endpoint, weighted shares (issue 16).

Three emulators (``azureml_chat.emulator.Emulator`` on 127.0.0.1, in this process and on this event loop, so
client and servers share one core) behind one ``AsyncChatClient(endpoints=[...])`` with the library's
defaults (3 attempts per call, a ``RateLimit()`` per endpoint). Every call is timed by the driver; every HTTP
attempt is seen through an aiohttp ``TraceConfig`` on the session passed as ``session=`` (the request id, the
endpoint and the outcome), so a call's route is known exactly, connection refusals included.

Scenarios:

* ``failover``: 2,000 calls at concurrency 64, weights 1:1:1. Per rep, three runs: all healthy; endpoint
  ``b`` answering 503 from the moment a quarter of the calls are done; ``b`` stopped at that moment
  (connection refused afterwards). Calls lost, calls that failed over, p50/p99 latency against the healthy run.
* ``throttle``: calls at concurrency 64 for 0.5 + 10 + 1.5 s; ``a`` answers 429 with ``Retry-After: 1`` for the
  middle 10 s. The requests ``a`` received in those 10 s (and per second), and whether the calls succeeded.
* ``weights``: 10,000 calls at concurrency 64, all healthy, weights 1:2:3: each endpoint's share.

The cost of routing in instructions per call is ``benchmarks/instructions.py --pool`` (callgrind), not here.

    python3 benchmarks/pool.py                          # all three (~1 min on the 2-core machine)
    python3 benchmarks/pool.py failover --reps 5        # one scenario
    python3 benchmarks/pool.py --out /tmp/pool.json     # also write every figure as JSON

Like the other benchmarks it re-runs itself in ``benchmarks/.venv`` (aiohttp, orjson) and imports
azureml_chat from ``--sdk-path`` (default: this repository).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import statistics
import sys
import time
from typing import Any

import run

HERE = os.path.dirname(os.path.abspath(__file__))
NAMES = ("a", "b", "c")
MESSAGES = [{"role": "user", "content": "hello"}]
KEY = "pool-key"


# --- what the driver sees --------------------------------------------------------------------------------------


class Attempts:
    """Every HTTP attempt the client made, by request id: ``[(endpoint name, status or error class), ...]``.

    Fed by an aiohttp ``TraceConfig`` on the session the client is given, so it sees what reached the wire
    (or failed to), independently of the client's own bookkeeping.
    """

    def __init__(self, ports: dict[int, str]) -> None:
        self.ports = ports
        self.by_call: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)

    def trace_config(self) -> Any:
        import aiohttp

        config = aiohttp.TraceConfig()

        async def start(session: Any, ctx: Any, params: Any) -> None:
            ctx.call = params.headers.get("x-ms-client-request-id", "?")
            ctx.name = self.ports.get(params.url.port, "?")

        async def end(session: Any, ctx: Any, params: Any) -> None:
            self.by_call[ctx.call].append((ctx.name, str(params.response.status)))

        async def failed(session: Any, ctx: Any, params: Any) -> None:
            self.by_call[ctx.call].append((ctx.name, type(params.exception).__name__))

        config.on_request_start.append(start)
        config.on_request_end.append(end)
        config.on_request_exception.append(failed)
        return config


class Received:
    """What each emulator answered, as it answered it: ``(time.monotonic(), status)`` per request."""

    def __init__(self) -> None:
        self.by_name: dict[str, list[tuple[float, int | None]]] = {name: [] for name in NAMES}

    def hook(self, name: str) -> Any:
        log = self.by_name[name]
        return lambda record: log.append((time.monotonic(), record.status))


async def start_emulators(received: Received) -> dict[str, Any]:
    from azureml_chat.emulator import Emulator

    emulators = {}
    for name in NAMES:
        # The request log is kept short: the hook above counts; a long log would only grow the process.
        emulator = Emulator(key=KEY, on_request=received.hook(name), max_records=16)
        await emulator.start()
        emulators[name] = emulator
    return emulators


def open_client(emulators: dict[str, Any], weights: dict[str, float], attempts: Attempts) -> Any:
    import aiohttp

    from azureml_chat import AsyncChatClient, Endpoint

    # The library's own pool settings (100 connections, 60 s DNS cache), plus the tracer.
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=100, ttl_dns_cache=60), trace_configs=[attempts.trace_config()]
    )
    endpoints = [Endpoint(emulators[name].chat_url, KEY, name=name, weight=weights[name]) for name in NAMES]
    return AsyncChatClient(endpoints=endpoints, session=session), session


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) by nearest rank, in the unit of ``values``."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


async def drive(
    client: Any,
    *,
    calls: int | None,
    conc: int,
    duration: float | None = None,
    at: int | None = None,
    trigger: Any = None,
) -> dict[str, Any]:
    """``calls`` calls (or calls for ``duration`` seconds) from ``conc`` workers; ``trigger()`` runs once
    when ``at`` calls have completed. Returns per-call latencies, answers' endpoints and errors."""
    latencies: list[tuple[float, float, str | None, str | None]] = []  # (start, seconds, endpoint, error)
    issued = 0
    done = 0
    fired = False
    loop_started = time.monotonic()
    stop_at = loop_started + duration if duration is not None else None

    async def worker() -> None:
        nonlocal issued, done, fired
        while True:
            if calls is not None and issued >= calls:
                return
            if stop_at is not None and time.monotonic() >= stop_at:
                return
            issued += 1
            started = time.monotonic()
            try:
                response = await client.chat(MESSAGES, max_tokens=4)
                latencies.append((started, time.monotonic() - started, response.endpoint, None))
            except Exception as exc:  # a lost call, counted by type
                latencies.append(
                    (started, time.monotonic() - started, getattr(exc, "endpoint", None), type(exc).__name__)
                )
            done += 1
            if at is not None and not fired and done >= at:
                fired = True
                trigger()

    cpu = time.process_time()
    await asyncio.gather(*(worker() for _ in range(conc)))
    return {
        "calls": latencies,
        "wall": time.monotonic() - loop_started,
        "cpu": time.process_time() - cpu,
    }


# --- the scenarios ------------------------------------------------------------------------------------------------


async def failover_run(kind: str, calls: int, conc: int, at_share: float) -> dict[str, Any]:
    """One run: ``kind`` is ``healthy``, ``503`` (b answers 503 from the trigger on) or ``stop`` (b stopped)."""
    received = Received()
    emulators = await start_emulators(received)
    ports = {emulator.port: name for name, emulator in emulators.items()}
    attempts = Attempts(ports)
    client, session = open_client(emulators, dict.fromkeys(NAMES, 1.0), attempts)
    background: list[asyncio.Task[None]] = []
    fired_at: list[float] = []

    def trigger() -> None:
        fired_at.append(time.monotonic())
        if kind == "503":
            emulators["b"].add_fault("status=503")
        elif kind == "stop":
            background.append(asyncio.ensure_future(emulators["b"].stop()))

    try:
        async with client:
            # A few calls first, so every endpoint has a warm connection, as in a service that has been up.
            await asyncio.gather(*(client.chat(MESSAGES, max_tokens=4) for _ in range(conc)))
            attempts.by_call.clear()
            result = await drive(
                client,
                calls=calls,
                conc=conc,
                at=int(calls * at_share) if kind != "healthy" else None,
                trigger=trigger,
            )
            status = status_now(client)
    finally:
        for task in background:
            await task
        await session.close()
        for emulator in emulators.values():
            await emulator.stop()
    return summarise_failover(kind, result, attempts, status, fired_at[0] if fired_at else None)


def status_now(client: Any) -> dict[str, dict[str, Any]]:
    """``client.endpoint_status()``, with how long each set-aside endpoint has left to cool."""
    import attrs

    now = time.time()
    report = {}
    for name, status in client.endpoint_status().items():
        entry = attrs.asdict(status)
        until = entry["cooling_until"]
        entry["cooling_left_s"] = None if until is None else round(until - now, 1)
        report[name] = entry
    return report


def summarise_failover(
    kind: str, result: dict[str, Any], attempts: Attempts, status: dict[str, Any], fired: float | None
) -> dict[str, Any]:
    rows = result["calls"]
    lost = collections.Counter(error for _, _, _, error in rows if error)
    seconds = [s for _, s, _, _ in rows]
    answered_by = collections.Counter(endpoint for _, _, endpoint, error in rows if not error)
    several = [trail for trail in attempts.by_call.values() if len(trail) > 1]
    # Failed over: the call's first attempt went to one endpoint and it was answered by another.
    moved = [trail for trail in several if trail[0][0] != trail[-1][0]]
    outcomes_b = collections.Counter(
        outcome for trail in attempts.by_call.values() for name, outcome in trail if name == "b"
    )
    after = [s for started, s, _, _ in rows if fired is not None and started >= fired]
    return {
        "kind": kind,
        "calls": len(rows),
        "lost": sum(lost.values()),
        "lost_by_type": dict(lost),
        "answered_by": dict(sorted(answered_by.items())),
        "calls_with_several_attempts": len(several),
        "calls_failed_over": len(moved),
        "attempts": sum(len(trail) for trail in attempts.by_call.values()),
        "b_outcomes": dict(outcomes_b),
        "p50_ms": percentile(seconds, 0.50) * 1000,
        "p99_ms": percentile(seconds, 0.99) * 1000,
        "max_ms": max(seconds) * 1000,
        "after_fault_p50_ms": percentile(after, 0.50) * 1000 if after else None,
        "after_fault_p99_ms": percentile(after, 0.99) * 1000 if after else None,
        "wall_s": result["wall"],
        "cpu_s": result["cpu"],
        "endpoint_status": status,
    }


async def failover(args: argparse.Namespace) -> dict[str, Any]:
    reps: list[dict[str, Any]] = []
    for rep in range(args.reps):
        runs = {}
        for kind in ("healthy", "503", "stop"):
            runs[kind] = await failover_run(kind, args.calls, args.conc, args.at)
            r = runs[kind]
            print(
                f"  rep {rep + 1} {kind:7s}: {r['calls']} calls, lost {r['lost']} {r['lost_by_type'] or ''}, "
                f"failed over {r['calls_failed_over']} (several attempts {r['calls_with_several_attempts']}), "
                f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.0f} ms, "
                f"b saw {r['b_outcomes']}, {r['wall_s']:.2f} s",
                flush=True,
            )
        reps.append(runs)
    summary = {}
    for kind in ("503", "stop"):
        summary[kind] = {
            "lost": sum(rep[kind]["lost"] for rep in reps),
            "calls": sum(rep[kind]["calls"] for rep in reps),
            "failed_over_share_median": statistics.median(
                rep[kind]["calls_failed_over"] / rep[kind]["calls"] for rep in reps
            ),
            "failed_over": [rep[kind]["calls_failed_over"] for rep in reps],
            "added_p50_ms_median": statistics.median(
                rep[kind]["p50_ms"] - rep["healthy"]["p50_ms"] for rep in reps
            ),
            "added_p99_ms_median": statistics.median(
                rep[kind]["p99_ms"] - rep["healthy"]["p99_ms"] for rep in reps
            ),
            "added_p50_ms": [round(rep[kind]["p50_ms"] - rep["healthy"]["p50_ms"], 2) for rep in reps],
            "added_p99_ms": [round(rep[kind]["p99_ms"] - rep["healthy"]["p99_ms"], 2) for rep in reps],
        }
    summary["healthy"] = {
        "p50_ms_median": statistics.median(rep["healthy"]["p50_ms"] for rep in reps),
        "p99_ms_median": statistics.median(rep["healthy"]["p99_ms"] for rep in reps),
        "lost": sum(rep["healthy"]["lost"] for rep in reps),
    }
    return {"reps": reps, "summary": summary}


async def throttle(args: argparse.Namespace) -> dict[str, Any]:
    received = Received()
    emulators = await start_emulators(received)
    attempts = Attempts({emulator.port: name for name, emulator in emulators.items()})
    client, session = open_client(emulators, dict.fromkeys(NAMES, 1.0), attempts)
    window: dict[str, float] = {}
    before, length, after = 0.5, args.throttle_seconds, 1.5

    async def schedule() -> None:
        await asyncio.sleep(before)
        window["on"] = time.monotonic()
        emulators["a"].add_fault(f"status=429,retry_after={args.retry_after:g}")
        await asyncio.sleep(length)
        emulators["a"].clear_faults()
        window["off"] = time.monotonic()

    try:
        async with client:
            await asyncio.gather(*(client.chat(MESSAGES, max_tokens=4) for _ in range(args.conc)))
            for log in received.by_name.values():
                log.clear()
            timer = asyncio.ensure_future(schedule())
            result = await drive(client, calls=None, conc=args.conc, duration=before + length + after)
            await timer
            status = status_now(client)
    finally:
        await session.close()
        for emulator in emulators.values():
            await emulator.stop()
    on, off = window["on"], window["off"]
    at_a = [(t, s) for t, s in received.by_name["a"] if on <= t < off]
    per_second = [sum(1 for t, _ in at_a if on + i <= t < on + i + 1) for i in range(round(off - on))]
    statuses = collections.Counter(s for _, s in at_a)
    during = [row for row in result["calls"] if on <= row[0] < off]
    lost = collections.Counter(row[3] for row in result["calls"] if row[3])
    answered = collections.Counter(row[2] for row in during if not row[3])
    seconds_during = [row[1] for row in during]
    first_after = next(((t - off, s) for t, s in received.by_name["a"] if t >= off), None)
    summary = {
        "throttled_seconds": off - on,
        "a_requests_while_throttled": len(at_a),
        "a_statuses_while_throttled": {str(k): v for k, v in statuses.items()},
        "a_requests_per_second": per_second,
        "a_requests_first_100ms": sum(1 for t, _ in at_a if t < on + 0.1),
        "a_request_times_after_100ms_s": [round(t - on, 3) for t, _ in at_a if t >= on + 0.1],
        "calls_total": len(result["calls"]),
        "calls_while_throttled": len(during),
        "answered_by_while_throttled": dict(sorted(answered.items())),
        "lost": sum(lost.values()),
        "lost_by_type": dict(lost),
        "p50_ms_while_throttled": percentile(seconds_during, 0.5) * 1000,
        "p99_ms_while_throttled": percentile(seconds_during, 0.99) * 1000,
        "a_first_answer_after_clear_s": first_after[0] if first_after else None,
        "a_share_last_second": (
            sum(1 for row in result["calls"] if row[0] >= off + 0.5 and row[2] == "a")
            / max(1, sum(1 for row in result["calls"] if row[0] >= off + 0.5))
        ),
        "endpoint_status_at_end": status,
        "wall_s": result["wall"],
    }
    print(
        f"  a received {len(at_a)} requests in {off - on:.1f} s of 429s ({dict(statuses)}), per second "
        f"{per_second}; {len(during)} calls in that time, answered by {dict(answered)}, lost {summary['lost']}",
        flush=True,
    )
    return summary


async def weights(args: argparse.Namespace) -> dict[str, Any]:
    received = Received()
    emulators = await start_emulators(received)
    attempts = Attempts({emulator.port: name for name, emulator in emulators.items()})
    wanted = {"a": 1.0, "b": 2.0, "c": 3.0}
    client, session = open_client(emulators, wanted, attempts)
    try:
        async with client:
            result = await drive(client, calls=args.weight_calls, conc=args.conc)
    finally:
        await session.close()
        for emulator in emulators.values():
            await emulator.stop()
    rows = result["calls"]
    answered = collections.Counter(row[2] for row in rows if not row[3])
    total = sum(answered.values())
    shares = {}
    for name in NAMES:
        share = answered[name] / total
        expected = wanted[name] / sum(wanted.values())
        shares[name] = {
            "calls": answered[name],
            "requests_received": len(received.by_name[name]),
            "share_pct": 100 * share,
            "expected_pct": 100 * expected,
            "off_by_points": 100 * (share - expected),
        }
    print(
        "  "
        + ", ".join(
            f"{name}: {s['calls']} ({s['share_pct']:.2f}% vs {s['expected_pct']:.2f}%, {s['off_by_points']:+.2f} pts)"
            for name, s in shares.items()
        )
        + f"; lost {sum(1 for row in rows if row[3])}",
        flush=True,
    )
    return {
        "calls": len(rows),
        "lost": sum(1 for row in rows if row[3]),
        "shares": shares,
        "wall_s": result["wall"],
    }


# --- the command ----------------------------------------------------------------------------------------------


def machine_note() -> dict[str, Any]:
    import platform

    import aiohttp

    import azureml_chat
    from azureml_chat import _codec

    load = os.getloadavg()
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "azureml_chat": azureml_chat.__version__,
        "codec": "orjson" if _codec.orjson is not None else "stdlib",
        "loop": type(asyncio.get_event_loop_policy()).__name__,
        "loadavg": load,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"machine_before": machine_note()}
    print(f"machine: {out['machine_before']}", flush=True)
    for scenario in args.scenarios:
        print(f"{scenario}:", flush=True)
        started = time.monotonic()
        out[scenario] = await {"failover": failover, "throttle": throttle, "weights": weights}[scenario](args)
        out[scenario + "_seconds"] = time.monotonic() - started
    out["loadavg_after"] = os.getloadavg()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "scenarios",
        nargs="*",
        default=["failover", "throttle", "weights"],
        help="failover, throttle, weights",
    )
    parser.add_argument("--sdk-path", default=run.REPO)
    parser.add_argument("--conc", type=int, default=64)
    parser.add_argument("--calls", type=int, default=2000, help="failover: calls per run")
    parser.add_argument(
        "--at", type=float, default=0.25, help="failover: the share of calls done when b fails"
    )
    parser.add_argument(
        "--reps", type=int, default=3, help="failover: healthy / 503 / stop runs, this many times"
    )
    parser.add_argument("--throttle-seconds", type=float, default=10.0)
    parser.add_argument("--retry-after", type=float, default=1.0)
    parser.add_argument("--weight-calls", type=int, default=10_000)
    parser.add_argument("--out", help="also write every figure here as JSON")
    args = parser.parse_args()
    for scenario in args.scenarios:
        if scenario not in ("failover", "throttle", "weights"):
            raise SystemExit(f"unknown scenario {scenario!r}: failover, throttle, weights")
    run.ensure_venv()
    sys.path.insert(0, os.path.abspath(args.sdk_path))
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
    out = asyncio.run(main_async(args))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1, default=str)
    if "failover" in out:
        out = {**out, "failover": out["failover"]["summary"]}  # the reps are in --out
    print(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
