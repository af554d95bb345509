"""``azureml-chat batch IN -o OUT``: the conversations of a JSONL file, with live progress, resumable.

The file formats are in :mod:`._jsonl`. Answers are appended as they finish (not in input order); on
start, the ids already in OUT are skipped, so rerunning the same command resumes a killed or interrupted
run. ``--retry-failed`` first removes OUT's error lines so their ids run again. ``params`` on an input line
are that line's ``chat()`` arguments, over ``--max-tokens`` / ``--temperature``. A line whose id an earlier
line already has is not run (said on stderr). A 401 or 403 stops the run at once: every line would fail
the same way, and nothing is written for them. A line that fails as invalid input (``InvalidRequestError``)
would fail again as it is, so the summary says to fix it first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import signal
import sys
from collections.abc import Generator, Mapping
from typing import Any, TextIO

import attrs

from .. import _defaults
from .._batch import BatchResults
from .._client import AsyncChatClient
from .._errors import AuthenticationError, AzureMLChatError, InvalidRequestError, PermissionDeniedError
from ._jsonl import Job, Record, ResultsFile, answer_record, error_record, id_key, parse_line
from ._options import (
    UsageError,
    add_endpoint_options,
    add_max_retries_option,
    add_sampling_options,
    add_timeout_option,
    make_client,
    sampling_params,
)
from ._progress import REFRESH_SECONDS, Progress
from ._tracing import add_trace_option
from ._types import whole

__all__ = ["add_parser", "main"]


def _count_lines(path: str) -> int:
    with open(path, "rb") as source:
        return sum(1 for raw in source if raw.strip())


def _jobs(path: str, results: ResultsFile, progress: Progress) -> Generator[Job, None, None]:
    """The jobs still to run, read lazily; ids already in the output are counted as skipped."""
    seen: dict[str, int] = {}
    with open(path, "rb") as source:
        for number, raw in enumerate(source, start=1):
            job = parse_line(raw, number)
            if job is None:
                continue
            key = id_key(job.id)
            first = seen.setdefault(key, number)
            if first != number:
                progress.duplicate(
                    f"azureml-chat batch: line {number}: id {job.id!r} was already used on line {first}; "
                    "line skipped"
                )
            elif key in results.done:
                progress.skip(failed=results.done[key], invalid=key in results.invalid)
            else:
                yield job


async def _run_job(client: AsyncChatClient, job: Job, defaults: Mapping[str, Any]) -> Record:
    if job.problem is not None or job.messages is None:
        return error_record(job.id, InvalidRequestError(job.problem or "no messages"), line=job.line)
    try:
        response = await client.chat(job.messages, **{**defaults, **job.params})
    except (AuthenticationError, PermissionDeniedError):
        raise
    except InvalidRequestError as exc:  # the line's messages or params: to fix in the input
        return error_record(job.id, exc, line=job.line)
    except AzureMLChatError as exc:
        return error_record(job.id, exc)
    except (TypeError, AttributeError) as exc:
        # A per-line params value of the wrong shape: that line's failure, not the whole run's.
        return error_record(job.id, InvalidRequestError(f"line {job.line}: bad params: {exc}"), line=job.line)
    return answer_record(job.id, response)


@attrs.define
class _Run:
    """Everything a run needs, prepared before the event loop starts (file checks and reads are blocking)."""

    client: AsyncChatClient
    results: ResultsFile
    progress: Progress
    source: str
    concurrency: int
    defaults: dict[str, Any]


def _prepare(args: argparse.Namespace, err: TextIO) -> _Run:
    source, target = args.input, args.output
    if not os.path.isfile(source):
        raise UsageError(f"cannot read {source}: no such file")
    if os.path.exists(target) and os.path.samefile(source, target):
        raise UsageError("the output file must not be the input file")
    # Built first: a bad URL or a missing key must not leave an empty output file behind.
    client = make_client(args, max_retries=args.max_retries)
    results = ResultsFile(target)
    try:
        results.open(retry_failed=args.retry_failed)
    except OSError as exc:
        raise UsageError(f"cannot write {target}: {exc.strerror or exc}") from None
    live = err.isatty()
    progress = Progress(err, live=live, total=_count_lines(source) if live else None)
    if results.repaired:
        progress.note(f"azureml-chat batch: cut a torn last line from {target}")
    if results.dropped:
        progress.note(
            f"azureml-chat batch: removed {results.dropped:,} error lines from {target} to retry them"
        )
    return _Run(client, results, progress, source, args.concurrency, sampling_params(args))


async def _redraw(progress: Progress) -> None:
    while True:
        progress.draw()
        await asyncio.sleep(REFRESH_SECONDS)


async def _execute(run: _Run) -> None:
    """Send every job still to do and append each result as it arrives."""
    task = asyncio.current_task()
    if task is not None:
        # SIGTERM (a scheduler, a container stop) ends the run as cleanly as Ctrl-C does.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    progress, results = run.progress, run.results
    jobs = _jobs(run.source, results, progress)
    calls = (functools.partial(_run_job, run.client, job, run.defaults) for job in jobs)
    redraw = asyncio.ensure_future(_redraw(progress)) if progress.live else None
    try:
        async with run.client, BatchResults(calls, concurrency=run.concurrency) as outcomes:
            async for _, record in outcomes:
                if isinstance(record, AzureMLChatError):
                    raise record  # the key or identity is refused: every other item would fail the same way
                # Written at once, before the next await: an answer that arrived is never lost.
                results.append(record)
                error, usage = record.get("error"), record.get("usage")
                tokens = 0 if usage is None else usage["total_tokens"]
                progress.add(error_type=None if error is None else error["type"], tokens=tokens)
    finally:
        jobs.close()
        if redraw is not None:
            redraw.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await redraw


def main(args: argparse.Namespace, err: TextIO | None = None) -> int:
    """Run the ``batch`` command; return the exit code.

    0: every item has an answer. 1: some item failed (this run or an earlier one; the summary says how
    many). 130 / 143: interrupted by Ctrl-C / SIGTERM (rerun to resume).

    Raises:
        UsageError: an unusable input or output path, or the client cannot be built (bad URL, missing
            key); the CLI prints one line and exits 2.
    """
    err = err or sys.stderr
    run = _prepare(args, err)
    code: int | None = None
    try:
        asyncio.run(_execute(run))
    except KeyboardInterrupt:
        code = 130
    except asyncio.CancelledError:
        code = 143
    finally:
        run.results.close()
        run.progress.clear()
        summary = run.progress.summary(run.source, run.results.path, interrupted=code is not None)
        print(summary, file=err, flush=True)
    if code is not None:
        return code
    progress = run.progress
    return 1 if progress.failed or progress.skipped_failed or progress.duplicates else 0


def add_parser(commands: Any) -> None:
    """Add the ``batch`` subcommand to the CLI's subparsers."""
    batch = commands.add_parser(
        "batch",
        help="run the conversations of a JSONL file; resumable",
        description="Send every conversation of IN (JSONL) and append one result line per id to -o OUT. "
        "Rerun the same command to resume: ids already in OUT are skipped.",
    )
    batch.add_argument(
        "input", metavar="IN", help='JSONL input: {"id": ..., "messages": [...], "params": {...}}'
    )
    batch.add_argument("-o", "--output", required=True, metavar="OUT", help="JSONL output (appended to)")
    batch.add_argument(
        "--concurrency",
        type=whole(1),
        default=_defaults.BATCH_CONCURRENCY,
        help=f"calls in flight at once (default: {_defaults.BATCH_CONCURRENCY})",
    )
    add_endpoint_options(batch)
    add_timeout_option(batch)
    add_trace_option(batch)
    add_max_retries_option(batch)
    batch.add_argument(
        "--retry-failed",
        action="store_true",
        help="first remove the error lines from OUT, so they run again (fix invalid input lines in IN first)",
    )
    add_sampling_options(batch)
