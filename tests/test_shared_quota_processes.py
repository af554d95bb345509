"""A ``RateLimit(store="redis://...")`` shared by separate *processes*, end to end: three worker interpreters, each
with its own ``AsyncChatClient``, against one emulator and a real ``redis-server`` on 127.0.0.1.

What is asserted is counts, with wide margins, never timings: how many requests the emulator received while the
workers were calling (one shared budget, not one per process), and that taking Redis away in the middle of a run
fails no call, logs one WARNING per process, and that the processes come back to Redis afterwards.
``benchmarks/shared_quota.py`` measures the same against a quota, with the figures in docs/performance.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis_server import RedisServer

from azureml_chat import AsyncChatClient, RateLimit, RetryPolicy, _defaults
from azureml_chat.emulator import Emulator, EmulatorThread, Quota

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = "shared-quota-test-key"
PROCESSES = 3
RESULT = "RESULT "

# One worker: a client with the shared limit; says READY, reads the start (epoch seconds) from stdin, then makes
# `concurrency` calls at a time, back to back, until `start + duration`; prints how its calls ended and the
# WARNINGs the library logged.
WORKER = r"""
import asyncio, json, logging, sys, time

from azureml_chat import AsyncChatClient, RateLimit, RetryPolicy, _defaults

config = json.loads(sys.argv[1])
_defaults.STORE_RETRY = config["store_retry"]  # try the store again soon after an outage (default 5 s)
warnings = []


class Keep(logging.Handler):
    def emit(self, record):
        warnings.append(record.getMessage())


logging.getLogger("azureml_chat").addHandler(Keep(logging.WARNING))


async def main():
    limit = RateLimit(requests_per_minute=config["rpm"], store=config["store"], name=config["name"])
    outcomes = {}
    async with AsyncChatClient(config["url"], config["key"], rate_limit=limit,
                               retry=RetryPolicy(max_retries=50), timeout=10) as client:
        print("READY", flush=True)
        start = float(await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline))
        await asyncio.sleep(max(0.0, start - time.time()))
        deadline = start + config["duration"]

        async def calls():
            while time.time() < deadline:
                try:
                    await client.chat([{"role": "user", "content": "hi"}], max_tokens=2)
                    outcome = "ok"
                except Exception as exc:
                    outcome = type(exc).__name__
                outcomes[outcome] = outcomes.get(outcome, 0) + 1

        await asyncio.gather(*(calls() for _ in range(config["concurrency"])))
    print("RESULT " + json.dumps({"outcomes": outcomes, "warnings": warnings}), flush=True)


asyncio.run(main())
"""


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer() as running:
        yield running


@pytest.fixture
def store(server: RedisServer) -> Iterator[RedisServer]:
    server.resume()
    server.start()
    redis.Redis.from_url(server.url).flushall()
    yield server
    server.resume()
    server.start()


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    thread = EmulatorThread(Emulator(KEY))  # no quota: every request is answered, the budget alone paces them
    emulator = thread.start()
    yield emulator
    thread.stop()


def run_workers(
    emulator: Emulator, store: RedisServer, *, rpm: float, duration: float, name: str, during: Any = None
) -> tuple[list[dict[str, Any]], float]:
    """Start the workers, release them together once all are ready, call ``during(start)`` meanwhile; their
    reports and the start (epoch seconds)."""
    config = {
        "url": emulator.chat_url,
        "key": KEY,
        "store": store.url,
        "name": name,
        "rpm": rpm,
        "duration": duration,
        "concurrency": 4,
        "store_retry": 0.5,
    }
    env = dict(os.environ, PYTHONPATH=REPO, NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(PROCESSES)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "READY"
        start = time.time() + 0.3
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write(f"{start!r}\n")
            worker.stdin.flush()
        if during is not None:
            during(start)
        outputs = [worker.communicate(timeout=duration + 60)[0] for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    reports = []
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output
        line = next(line for line in output.splitlines() if line.startswith(RESULT))
        reports.append(json.loads(line[len(RESULT) :]))
    return reports, start


def test_one_budget_across_processes(emulator: Emulator, store: RedisServer) -> None:
    # 600 RPM shared by three processes: 10 requests a second in all, not 10 each (30).
    rate, duration = 10.0, 3.0
    reports, start = run_workers(emulator, store, rpm=rate * 60, duration=duration, name="one-budget")
    assert all(set(r["outcomes"]) == {"ok"} for r in reports), reports
    sent = [r for r in emulator.requests if start <= r.time < start + duration]
    # Spread evenly with a burst of one: at most rate x duration + 1 (30 + 1) while they call. Without the
    # store each process would send its own 30 (90). The lower bound only says the workers did call.
    assert len(sent) <= rate * duration * 1.2 + 2, len(sent)
    assert len(sent) >= rate * duration * 0.5, len(sent)
    assert {r.status for r in emulator.requests} == {200}
    assert all(not r["warnings"] for r in reports), reports


@pytest.mark.parametrize("how", ["stop", "pause"])
def test_redis_taken_away_mid_run(emulator: Emulator, store: RedisServer, how: str) -> None:
    client = redis.Redis.from_url(store.url, socket_timeout=2)
    marks: dict[str, int] = {}

    def outage(start: float) -> None:
        time.sleep(max(0.0, start + 1.0 - time.time()))
        if how == "stop":
            store.stop()
        else:
            store.pause()
        time.sleep(1.0)
        if how == "stop":
            store.start()  # a fresh server: its command counts start from 0
            marks["scripts_at_up"] = 0
        else:
            store.resume()
            marks["scripts_at_up"] = scripts(client)

    reports, _ = run_workers(emulator, store, rpm=1200, duration=4.0, name=f"outage-{how}", during=outage)
    # No call lost: every call of every process answered.
    assert all(set(r["outcomes"]) == {"ok"} for r in reports), reports
    assert all(r["outcomes"]["ok"] > 0 for r in reports), reports
    # One WARNING per process, about the store.
    for report in reports:
        assert len(report["warnings"]) == 1, report["warnings"]
        assert "store" in report["warnings"][0].lower()
    # Back on the shared store afterwards: admissions ran the store's script again.
    assert scripts(client) - marks["scripts_at_up"] > 0
    client.close()


def scripts(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval"))


async def test_a_freeze_during_a_release_does_not_stall_calls_after_the_resume(
    store: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ACQUIRE that timed out while Redis was frozen still runs when Redis resumes, and takes a place in the
    release for a request that never reports its answer to Redis: the place lapses after STORE_STAGE_LAPSE (here
    1 s) instead of holding every call until the state expires (found with benchmarks/shared_quota.py)."""
    monkeypatch.setattr(_defaults, "STORE_RETRY", 0.5)  # back on the store soon after the resume
    monkeypatch.setattr(_defaults, "STORE_STAGE_LAPSE", 1.0)
    emulator = Emulator(KEY, quota=Quota(requests=5, window=1))
    await emulator.start()
    answered: list[float] = []
    done = asyncio.Event()
    limit = RateLimit(store=store.url, name="freeze-in-release")
    try:
        async with AsyncChatClient(
            emulator.chat_url, KEY, rate_limit=limit, retry=RetryPolicy(max_retries=1000), timeout=10
        ) as client:

            async def calls() -> None:
                while not done.is_set():
                    await client.chat("hi", max_tokens=2)
                    answered.append(time.monotonic())

            tasks = [asyncio.create_task(calls()) for _ in range(20)]
            # 20 calls against 5 a second: from the first window's 429s on, a cooldown or the release after it
            # is always under way in Redis.
            await asyncio.sleep(1.3)
            store.pause()
            await asyncio.sleep(1.0)
            store.resume()
            await asyncio.sleep(1.0)  # the store is tried again after STORE_RETRY
            before = len(answered)
            await asyncio.sleep(4.0)
            after = len(answered)
            done.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await emulator.stop()
    # 4 s of a quota of 5 a second: about 20 answers; stalled: none.
    assert after - before >= 5, (before, after)
