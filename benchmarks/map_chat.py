"""``map_chat`` over many rows on a local Ray instance against the emulator: rows per second with 1, 2 and 4
actors, every row present exactly once with its answer or its error, and an actor killed mid-run.

The emulator runs in a process of its own on 127.0.0.1 and counts every request it receives by prompt, so
the check does not trust the output alone: each row must be in the output once (counted by its ``id``), and
the emulator says how many calls each row cost (more than one: its call was repeated, by a retry or by a
replayed batch). The killed run kills one actor's process (``os._exit``) once, when it asks for the token of
its ``--kill-after``-th call; Ray restarts the actor and replays the batches it had in flight.

Run from the repository root, in the project's venv (the ``ray`` extra)::

    python benchmarks/map_chat.py                      # 10,000 rows; 1, 2 and 4 actors; then the kill run
    python benchmarks/map_chat.py --rows 2000 --actors 2 --kill-after 300

Nothing talks to any address but 127.0.0.1; Ray's usage statistics are off.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import json
import multiprocessing
import os
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

KEY = "bench-key"


# --- the emulator, in its own process ---------------------------------------------------------------------


def _serve(conn: Connection) -> None:
    """Serve the emulator; answer "counts" (requests by prompt and by status since the last ask) and "stop"."""
    from azureml_chat.emulator import Emulator, RecordedRequest

    prompts: collections.Counter[str] = collections.Counter()
    statuses: collections.Counter[int | None] = collections.Counter()

    def on_request(record: RecordedRequest) -> None:
        statuses[record.status] += 1
        body = record.body if isinstance(record.body, dict) else {}
        messages = body.get("messages") or [{}]
        prompts[str(messages[-1].get("content"))] += 1

    async def main() -> None:
        async with Emulator(key=KEY, on_request=on_request, max_records=0) as emulator:
            conn.send(emulator.chat_url)
            loop = asyncio.get_running_loop()
            while True:
                command = await loop.run_in_executor(None, conn.recv)
                if command == "stop":
                    return
                conn.send((dict(prompts), dict(statuses)))
                prompts.clear()
                statuses.clear()

    asyncio.run(main())


# --- the kill switch, run in an actor ---------------------------------------------------------------------


class _Token:
    def __init__(self) -> None:
        self.token = KEY
        self.expires_on = int(
            time.time()
        )  # expired at once: the client asks for a token before every attempt


def _token_or_die(marker: str, after: int) -> _Token:
    """Kill this actor's process once (the first actor to claim the marker), at its ``after``-th token."""
    calls = _token_or_die.__dict__.get("calls", 0) + 1
    _token_or_die.__dict__["calls"] = calls
    if calls >= after:
        try:
            os.rename(marker, marker + ".fired")
        except FileNotFoundError:
            return _Token()
        os._exit(1)
    return _Token()


def _dying_credential(marker: str, after: int) -> Any:
    return functools.partial(_token_or_die, marker, after)


# --- one run ----------------------------------------------------------------------------------------------


def _run(
    conn: Connection,
    url: str,
    *,
    rows: int,
    actors: int,
    batch_size: int,
    per_worker: int,
    kill_after: int | None = None,
) -> dict[str, Any]:
    import pyarrow as pa
    import ray

    from azureml_chat.ray import map_chat

    dataset = ray.data.from_items(
        [{"id": i, "messages": [{"role": "user", "content": f"q{i}"}]} for i in range(rows)]
    )
    dataset = dataset.materialize()  # the input exists before the clock starts
    options: dict[str, Any] = {"api_key": KEY}
    marker = None
    if kill_after is not None:
        marker = tempfile.mktemp(prefix="map-chat-kill-")
        Path(marker).touch()
        options = {"credential": functools.partial(_dying_credential, marker, kill_after)}
    started = time.perf_counter()
    answered = map_chat(
        dataset,
        endpoint_url=url,
        concurrency=actors,
        batch_size=batch_size,
        per_worker_concurrency=per_worker,
        **options,
    )
    table = pa.concat_tables(ray.get(answered.to_arrow_refs()))
    seconds = time.perf_counter() - started
    conn.send("counts")
    prompts, statuses = conn.recv()

    ids = collections.Counter(table.column("id").to_pylist())
    contents = table.column("content").to_pylist()
    errors = table.column("error_type").to_pylist()
    wrong = sum(
        1
        for i, content, error in zip(table.column("id").to_pylist(), contents, errors, strict=True)
        if error is None and content != f"You said: q{i}"
    )
    calls = [prompts.get(f"q{i}", 0) for i in range(rows)]
    killed = marker is not None and Path(marker + ".fired").exists()
    if marker is not None:
        for path in (marker, marker + ".fired"):
            Path(path).unlink(missing_ok=True)
    return {
        "actors": actors,
        "rows": rows,
        "seconds": round(seconds, 2),
        "rows_per_s": round(rows / seconds, 1),
        "output_rows": table.num_rows,
        "missing": sum(1 for i in range(rows) if ids[i] == 0),
        "duplicated": sum(1 for count in ids.values() if count > 1),
        "answered": sum(1 for error in errors if error is None),
        "errors": sum(1 for error in errors if error is not None),
        "wrong_answers": wrong,
        "requests": sum(statuses.values()),
        "statuses": {str(status): count for status, count in sorted(statuses.items(), key=str)},
        "rows_never_sent": sum(1 for count in calls if count == 0),
        "rows_sent_more_than_once": sum(1 for count in calls if count > 1),
        "repeated_calls": sum(count - 1 for count in calls if count > 1),
        "killed": killed if kill_after is not None else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000, help="rows per run (default 10000)")
    parser.add_argument("--actors", default="1,2,4", help="actor counts to measure (default 1,2,4)")
    parser.add_argument("--batch-size", type=int, default=32, help="rows per batch (default: map_chat's, 32)")
    parser.add_argument("--per-worker", type=int, default=16, help="calls in flight per actor (default 16)")
    parser.add_argument(
        "--kill-after",
        type=int,
        default=1000,
        help="the kill run: an actor dies at its Nth call (default 1000; 0 skips the run)",
    )
    parser.add_argument("--kill-actors", type=int, default=2, help="actors in the kill run (default 2)")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray instance (default 2)")
    parser.add_argument("--out", help="also write the results here as JSON")
    args = parser.parse_args()

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    # Keeps Ray's own processes on 127.0.0.1 (Ray 2.60 otherwise binds every interface whatever
    # _node_ip_address says); the switch Ray uses on macOS and Windows.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray

    parent, child = multiprocessing.get_context("spawn").Pipe()
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(child,), daemon=True)
    server.start()
    url = parent.recv()
    ray.init(
        num_cpus=args.num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    results = []
    try:
        for actors in (int(count) for count in args.actors.split(",")):
            result = _run(
                parent,
                url,
                rows=args.rows,
                actors=actors,
                batch_size=args.batch_size,
                per_worker=args.per_worker,
            )
            results.append(result)
            print(json.dumps(result), flush=True)
        if args.kill_after:
            result = _run(
                parent,
                url,
                rows=args.rows,
                actors=args.kill_actors,
                batch_size=args.batch_size,
                per_worker=args.per_worker,
                kill_after=args.kill_after,
            )
            results.append(result)
            print(json.dumps(result), flush=True)
    finally:
        ray.shutdown()
        parent.send("stop")
        server.join(10)

    print()
    print(
        f"map_chat, {args.rows} rows, batch_size {args.batch_size}, per_worker_concurrency {args.per_worker}"
    )
    print(
        f"{'actors':>8} {'rows/s':>8} {'s':>7} {'out':>6} {'missing':>7} {'dup':>4} {'errors':>6} "
        f"{'requests':>8} {'repeated':>8} {'killed':>6}"
    )
    for r in results:
        print(
            f"{r['actors']:>8} {r['rows_per_s']:>8} {r['seconds']:>7} {r['output_rows']:>6} {r['missing']:>7} "
            f"{r['duplicated']:>4} {r['errors']:>6} {r['requests']:>8} {r['repeated_calls']:>8} "
            f"{'' if r['killed'] is None else r['killed']!s:>6}"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    ok = all(r["missing"] == 0 and r["duplicated"] == 0 and r["wrong_answers"] == 0 for r in results)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
