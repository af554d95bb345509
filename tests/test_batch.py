"""Batch runs: ``chat_many`` / ``chat_as_completed`` against the emulator, and ``azureml-chat batch``.

Everything talks to the emulator on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from azureml_chat import (
    AsyncChatClient,
    BadRequestError,
    ChatResponse,
    InvalidRequestError,
    NotFoundError,
    UserMessage,
)
from azureml_chat._batch import chat_as_completed, chat_many
from azureml_chat.cli import main as cli_main
from azureml_chat.cli._jsonl import ResultsFile, parse_line
from azureml_chat.cli._progress import Progress
from azureml_chat.emulator import Emulator, RecordedRequest
from azureml_chat.testing import fast_retry

KEY = "batch-key"


def conversation(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def acquired(client: AsyncChatClient) -> int:
    session = client._pipeline.transport._session
    return 0 if session is None else len(session.connector._acquired)  # type: ignore[union-attr]


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator(key=KEY) as emu:
        yield emu


@pytest.fixture
async def client(emulator: Emulator) -> AsyncIterator[AsyncChatClient]:
    async with AsyncChatClient(emulator.chat_url, KEY, retry=fast_retry()) as chat_client:
        yield chat_client


# Longer than any machine takes to send a few requests: a call this slow is one that was never waited for.
SLOW = 60


@pytest.fixture
def threaded_emulator() -> Iterator[Emulator]:
    """An emulator on its own loop, so the test's loop holds only the client's tasks."""
    with Emulator(key=KEY).start_in_thread() as emu:
        yield emu


# --- chat_many / chat_as_completed ---------------------------------------------------------------------


async def test_results_come_back_in_input_order_under_random_latencies(
    emulator: Emulator, client: AsyncChatClient
) -> None:
    """With calls finishing out of order, chat_many still returns result i for conversation i."""
    rng = random.Random(8)
    conversations = [
        conversation(f"[[fault:latency={rng.uniform(0, 0.08):.3f}]] conversation {i}") for i in range(40)
    ]
    results = await chat_many(client, conversations, concurrency=8)
    assert [f"You said: conversation {i}" for i in range(40)] == [
        r.content for r in results if isinstance(r, ChatResponse)
    ]
    finished = [r.body["messages"][0]["content"].split()[-1] for r in emulator.requests]
    assert sorted(finished, key=int) != finished  # the endpoint really answered out of order


async def test_failed_items_are_returned_in_place(client: AsyncChatClient) -> None:
    """An endpoint error or an invalid conversation takes its item's place; the other items still answer."""
    conversations: list[Any] = [conversation(f"item {i}") for i in range(8)]
    conversations[2] = conversation("[[fault:status=400]] rejected")
    conversations[4] = [{"role": "robot", "content": "who?"}]
    conversations[5] = UserMessage("one message instead of a conversation")
    conversations[6] = conversation("[[fault:status=404]] gone")
    results = await chat_many(client, conversations, concurrency=3)
    assert [
        ChatResponse,
        ChatResponse,
        BadRequestError,
        ChatResponse,
        InvalidRequestError,
        InvalidRequestError,
        NotFoundError,
        ChatResponse,
    ] == [type(r) for r in results]
    assert "You said: item 7" == getattr(results[7], "content", None)
    assert "list of messages, got UserMessage" in str(results[5])


async def test_params_apply_to_every_conversation(emulator: Emulator, client: AsyncChatClient) -> None:
    """The keyword arguments of chat_many are sent with each conversation."""
    await chat_many(client, [conversation(f"q{i}") for i in range(5)], temperature=0.25, max_tokens=3)
    assert [(0.25, 3)] * 5 == [(r.body["temperature"], r.body["max_tokens"]) for r in emulator.requests]


async def test_no_more_calls_than_concurrency_are_in_flight() -> None:
    """With 24 slow conversations and concurrency=3, the endpoint never sees more than 3 at once."""
    spans: list[tuple[float, float]] = []

    def finished(record: RecordedRequest) -> None:
        spans.append((record.time, time.time()))

    async with (
        Emulator(key=KEY, on_request=finished) as emu,
        AsyncChatClient(emu.chat_url, KEY) as chat_client,
    ):
        emu.add_fault("latency=0.03")
        results = await chat_many(chat_client, [conversation(f"q{i}") for i in range(24)], concurrency=3)
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    assert 3 == peak
    assert 24 == sum(isinstance(r, ChatResponse) for r in results)


async def test_a_huge_generator_is_pulled_only_as_calls_start(threaded_emulator: Emulator) -> None:
    """A generator of a million conversations is read one item per started call, never materialised."""
    pulled = 0

    def conversations() -> Iterator[list[dict[str, str]]]:
        nonlocal pulled
        for i in range(1_000_000):
            pulled += 1
            yield conversation(f"q{i}")

    seen: list[int] = []
    async with AsyncChatClient(threaded_emulator.chat_url, KEY) as client:
        async with chat_as_completed(client, conversations(), concurrency=4) as results:
            async for index, result in results:
                assert isinstance(result, ChatResponse)
                seen.append(index)
                if len(seen) == 10:
                    break
        assert 10 + 4 >= pulled
        assert 0 == acquired(client)
        assert {asyncio.current_task()} == asyncio.all_tasks()


async def test_leaving_a_plain_async_for_with_break_cancels_the_calls(threaded_emulator: Emulator) -> None:
    """Without `async with`, results dropped after a `break` cancel their calls: no task, no connection left."""
    threaded_emulator.add_fault("latency=5")
    async with AsyncChatClient(threaded_emulator.chat_url, KEY) as client:
        conversations = [conversation("[[fault:latency=0]] fast"), *[conversation("slow")] * 20]
        async for _ in chat_as_completed(client, conversations, concurrency=4):
            break
        await asyncio.sleep(0.05)  # the cancelled calls unwind on the loop
        assert 0 == acquired(client)
        assert {asyncio.current_task()} == asyncio.all_tasks()


async def test_as_completed_yields_each_index_once_as_calls_finish(client: AsyncChatClient) -> None:
    """chat_as_completed yields (index, result) pairs in finishing order: a slow first item comes last."""
    conversations = [
        conversation("[[fault:latency=0.3]] slow"),
        *(conversation(f"fast {i}") for i in range(3)),
    ]
    order = [index async for index, _ in chat_as_completed(client, conversations, concurrency=4)]
    assert 0 == order[-1]
    assert [0, 1, 2, 3] == sorted(order)


async def test_cancelling_the_caller_cancels_every_call_and_leaks_nothing(
    threaded_emulator: Emulator,
) -> None:
    """Cancelling chat_many mid-run leaves no task and no acquired connection behind."""
    threaded_emulator.add_fault("latency=5")
    async with AsyncChatClient(threaded_emulator.chat_url, KEY) as chat_client:
        task = asyncio.ensure_future(chat_many(chat_client, [conversation("wait")] * 50, concurrency=5))
        deadline = time.monotonic() + 5
        while acquired(chat_client) < 5 and time.monotonic() < deadline:  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.01)
        assert 5 == acquired(chat_client)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert 0 == acquired(chat_client)
        assert {asyncio.current_task()} == asyncio.all_tasks()


async def test_return_exceptions_false_raises_the_first_error_and_stops_the_rest(
    threaded_emulator: Emulator,
) -> None:
    """With return_exceptions=False the first error is raised at once and the slow calls are cancelled."""
    pulled = 0

    def conversations() -> Iterator[list[dict[str, str]]]:
        nonlocal pulled
        for i in range(100):
            pulled += 1
            yield conversation("[[fault:status=400]] bad" if i == 2 else f"[[fault:latency={SLOW}]] slow")

    async with AsyncChatClient(threaded_emulator.chat_url, KEY) as chat_client:
        started = time.monotonic()
        with pytest.raises(BadRequestError):
            await chat_many(chat_client, conversations(), concurrency=4, return_exceptions=False)
        # No slow call was waited for: far less than one slow answer, however busy the machine.
        assert time.monotonic() - started < SLOW
        assert 0 == acquired(chat_client)
        assert {asyncio.current_task()} == asyncio.all_tasks()
    assert 5 >= pulled


async def test_return_exceptions_false_returns_the_answers_when_all_succeed(client: AsyncChatClient) -> None:
    """With return_exceptions=False and no failure, the result is the plain list of answers."""
    results = await chat_many(client, [conversation("a"), conversation("b")], return_exceptions=False)
    assert ["You said: a", "You said: b"] == [r.content for r in results]


async def test_an_error_in_the_callers_generator_stops_the_batch(client: AsyncChatClient) -> None:
    """An exception that is not an azureml-chat error (here from the input generator) is raised, not returned."""

    def conversations() -> Iterator[list[dict[str, str]]]:
        yield conversation("fine")
        raise RuntimeError("the input broke")

    with pytest.raises(RuntimeError, match="the input broke"):
        await chat_many(client, conversations())
    assert 0 == acquired(client)


@pytest.mark.parametrize("concurrency", [0, -1, True, 2.5, "4"])
async def test_a_bad_concurrency_is_refused_before_anything_is_sent(
    emulator: Emulator, client: AsyncChatClient, concurrency: Any
) -> None:
    """concurrency must be a whole number >= 1; anything else is an InvalidRequestError and nothing is sent."""
    with pytest.raises(InvalidRequestError, match="concurrency"):
        await chat_many(client, [conversation("hi")], concurrency=concurrency)
    assert [] == emulator.requests


async def test_a_single_conversation_instead_of_many_is_refused(client: AsyncChatClient) -> None:
    """Passing a string or a dict as the conversations is an InvalidRequestError at once."""
    with pytest.raises(InvalidRequestError, match="iterable of conversations"):
        await chat_many(client, {"role": "user", "content": "hi"})  # type: ignore[arg-type]


async def test_no_conversations_give_an_empty_list(client: AsyncChatClient) -> None:
    """An empty input is an empty result, without a request."""
    assert [] == await chat_many(client, [])


# --- the batch command: pure parts -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"id": "a", "messages": [{"role": "user", "content": "hi"}]}', ("a", None)),
        (b'{"id": 7, "messages": []}', (7, None)),
        (b'{"messages": []}', (3, None)),
        (b'{"id": null, "messages": []}', (3, None)),
        (b"not json", (3, "line 3 is not valid JSON (Expecting value at column 1)")),
        (b"[1, 2]", (3, "line 3 must be a JSON object, got list")),
        (b'{"id": true, "messages": []}', (3, "line 3: id must be a string or a number, got True")),
        (b'{"id": "b"}', ("b", "line 3: messages must be a list of messages, got nothing")),
        (b'{"id": "c", "messages": "hi"}', ("c", "line 3: messages must be a list of messages, got str")),
        (b'{"id": "d", "messages": [], "params": 1}', ("d", "line 3: params must be a JSON object")),
        (
            b'{"id": "e", "messages": [], "params": {"messages": []}}',
            ("e", "line 3: params must not hold messages"),
        ),
        (b"\xff\xfe", (3, "line 3 is not UTF-8 (invalid start byte at byte 0)")),
    ],
)
def test_an_input_line_parses_to_a_job_or_its_problem(
    raw: bytes, expected: tuple[object, str | None]
) -> None:
    """Each input line gives its id (default: the line number) and, when unusable, a problem naming the line."""
    job = parse_line(raw, 3)
    assert job is not None
    assert expected == (job.id, job.problem)


def test_blank_lines_are_no_jobs() -> None:
    """A blank or whitespace-only line is ignored."""
    assert (None, None) == (parse_line(b"\n", 1), parse_line(b"  \r\n", 2))


def test_a_torn_last_line_is_cut_and_a_whole_one_is_kept(tmp_path: Path) -> None:
    """Opening the output cuts a partial last line, but keeps (and ends) a whole record missing its newline."""
    torn, whole = tmp_path / "torn.jsonl", tmp_path / "whole.jsonl"
    torn.write_bytes(b'{"id": 1, "content": "x"}\n{"id": 2, "cont')
    whole.write_bytes(b'{"id": 1, "content": "x"}\n{"id": 2, "content": "y"}')
    for path in (torn, whole):
        results = ResultsFile(str(path))
        results.open()
        results.append({"id": 3, "content": "z"})
        results.close()
    assert [1, 3] == [json.loads(line)["id"] for line in torn.read_text().splitlines()]
    assert [1, 2, 3] == [json.loads(line)["id"] for line in whole.read_text().splitlines()]


def test_retry_failed_removes_the_error_lines(tmp_path: Path) -> None:
    """With retry_failed the error lines leave the file (their ids run again); the answers stay."""
    path = tmp_path / "out.jsonl"
    path.write_text(
        '{"id": "a", "content": "x"}\n{"id": "b", "error": {"type": "E"}}\n{"id": "c", "content": "y"}\n'
    )
    results = ResultsFile(str(path))
    results.open(retry_failed=True)
    results.close()
    assert (1, {'"a"': False, '"c"': False}) == (results.dropped, results.done)
    assert ["a", "c"] == [json.loads(line)["id"] for line in path.read_text().splitlines()]


def test_an_answer_with_a_lone_surrogate_is_still_one_valid_json_line(tmp_path: Path) -> None:
    """Text that UTF-8 cannot encode (a lone surrogate from a JSON escape) is written escaped, not lost."""
    path = tmp_path / "out.jsonl"
    results = ResultsFile(str(path))
    results.open()
    results.append({"id": 1, "content": "half \ud800 pair"})
    results.close()
    assert [{"id": 1, "content": "half \ud800 pair"}] == read_output(path)


def test_the_status_line_shows_progress_rate_eta_and_tokens() -> None:
    """The live line counts done, failed and skipped items, the rate, the ETA and the tokens."""
    now = [100.0]
    progress = Progress(io.StringIO(), live=True, total=100, clock=lambda: now[0])
    for _ in range(10):
        progress.add(error_type=None, tokens=6)
    progress.add(error_type="BadRequestError")
    progress.skip(failed=False)
    now[0] = 105.5
    assert (
        "batch 12/100 | 10 done, 1 failed, 1 skipped | 2.0/s, ETA 44s | 60 tokens" == progress.status_line()
    )


def test_the_status_line_is_redrawn_a_few_times_a_second_at_most() -> None:
    """Redraws closer together than the refresh interval are dropped; the line is redrawn in place."""
    now = [0.0]
    out = io.StringIO()
    progress = Progress(out, live=True, clock=lambda: now[0])
    for step in (0.0, 0.1, 0.2, 0.3, 0.4, 0.6):
        now[0] = step
        progress.draw()
    assert 3 == out.getvalue().count("\r")


# --- the batch command, as users run it ---------------------------------------------------------------


def write_input(path: Path, lines: list[object]) -> None:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))


def batch_args(emu: Emulator, source: Path, target: Path, *extra: str) -> list[str]:
    return ["batch", str(source), "-o", str(target), "--url", emu.chat_url, "--key", KEY, *extra]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the machine's AZUREML_* variables, plus ``extra``."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("AZUREML_")}, **extra}


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "azureml_chat", *args]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(*args), capture_output=True, text=True, timeout=60, env=env or clean_env(), check=False
    )


def read_output(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_batch_answers_every_line_and_exits_zero(threaded_emulator: Emulator, tmp_path: Path) -> None:
    """A full run writes one answer line per input id, prints only the summary off a terminal, exits 0."""
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    lines: list[object] = [{"id": f"q{i}", "messages": conversation(f"question {i}")} for i in range(10)]
    lines += [
        "",
        {"messages": conversation("no id")},
        {"id": 99, "messages": conversation("x"), "params": {"max_tokens": 1}},
    ]
    write_input(source, lines)
    done = run_cli(*batch_args(threaded_emulator, source, target, "--concurrency", "3", "--temperature", "0"))
    assert 0 == done.returncode, done.stderr
    output = read_output(target)
    records = {record["id"]: record for record in output}
    assert (12, {*(f"q{i}" for i in range(10)), 12, 99}) == (len(output), set(records))
    assert "You said: question 4" == records["q4"]["content"]
    assert {"id", "content", "reasoning", "finish_reason", "usage", "request_id", "endpoint"} == set(
        records["q4"]
    )
    assert records["q4"]["reasoning"] is None
    assert ("You", "length") == (records[99]["content"], records[99]["finish_reason"])
    assert "You said: no id" == records[12]["content"]
    assert [0] * 12 == [r.body["temperature"] for r in threaded_emulator.requests]
    assert "" == done.stdout
    assert "\r" not in done.stderr
    assert done.stderr.startswith("azureml-chat batch: 12 done, 0 failed, 0 skipped as already in")


def test_batch_reports_bad_lines_and_failures_in_place_and_exits_one(
    threaded_emulator: Emulator, tmp_path: Path
) -> None:
    """Malformed lines and failed calls become error lines (with the line number when unparseable); exit 1."""
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(
        source,
        [
            {"id": "ok", "messages": conversation("fine")},
            "{not json",
            {"id": "bad-role", "messages": [{"role": "robot", "content": "?"}]},
            {"id": "rejected", "messages": conversation("[[fault:status=400]] no")},
            {"id": "ok", "messages": conversation("a second line with the same id")},
        ],
    )
    done = run_cli(*batch_args(threaded_emulator, source, target))
    assert 1 == done.returncode, done.stderr
    records = {record["id"]: record for record in read_output(target)}
    assert {"ok", 2, "bad-role", "rejected"} == set(records)
    assert {
        "id": 2,
        "line": 2,
        "error": {
            "type": "InvalidRequestError",
            "message": "line 2 is not valid JSON (Expecting property name enclosed in double quotes at column 2)",
            "status_code": None,
        },
    } == records[2]
    assert ("InvalidRequestError", None) == (
        records["bad-role"]["error"]["type"],
        records["bad-role"]["error"]["status_code"],
    )
    assert ("BadRequestError", 400) == (
        records["rejected"]["error"]["type"],
        records["rejected"]["error"]["status_code"],
    )
    assert "line 5: id 'ok' was already used on line 1" in done.stderr
    assert "1 done, 3 failed, 0 skipped" in done.stderr
    assert "failed: 2 InvalidRequestError, 1 BadRequestError" in done.stderr
    assert "--retry-failed" in done.stderr
    assert "Traceback" not in done.stderr

    retried = run_cli(*batch_args(threaded_emulator, source, target, "--retry-failed"))
    assert 1 == retried.returncode, retried.stderr
    assert "removed 3 error lines" in retried.stderr
    assert "0 done, 3 failed, 1 skipped" in retried.stderr
    ids = [record["id"] for record in read_output(target)]
    assert ("ok", {"ok", 2, "bad-role", "rejected"}, 4) == (ids[0], set(ids), len(ids))


def test_batch_resumes_after_sigkill_without_losing_or_repeating_an_id(
    threaded_emulator: Emulator, tmp_path: Path
) -> None:
    """A run killed with SIGKILL leaves only whole lines; the rerun skips them and completes every id once."""
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(source, [{"id": i, "messages": conversation(f"q{i}")} for i in range(60)])
    threaded_emulator.add_fault("latency=0.05")
    process = subprocess.Popen(
        command(*batch_args(threaded_emulator, source, target, "--concurrency", "3")),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=clean_env(),
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not target.exists() or target.read_bytes().count(b"\n") < 10):
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=10)
    written = target.read_bytes()
    assert written.endswith(b"\n")
    first = [record["id"] for record in read_output(target)]
    assert 10 <= len(first) < 60
    threaded_emulator.clear_faults()
    done = run_cli(*batch_args(threaded_emulator, source, target))
    assert 0 == done.returncode, done.stderr
    ids = [record["id"] for record in read_output(target)]
    assert list(range(60)) == sorted(ids)
    assert first == ids[: len(first)]
    assert f"{60 - len(first)} done, 0 failed, {len(first)} skipped" in done.stderr


def test_batch_stops_cleanly_on_sigterm(threaded_emulator: Emulator, tmp_path: Path) -> None:
    """SIGTERM ends a run like Ctrl-C: whole lines only, a summary that says how to resume, exit 143."""
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(source, [{"id": i, "messages": conversation(f"q{i}")} for i in range(60)])
    threaded_emulator.add_fault("latency=0.05")
    process = subprocess.Popen(
        command(*batch_args(threaded_emulator, source, target)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not target.exists() or target.read_bytes().count(b"\n") < 5):
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=10)
    finally:
        process.kill()
    written = read_output(target)
    assert 143 == process.returncode, err
    assert f"azureml-chat batch: {len(written)} done, 0 failed" in err
    assert "interrupted: rerun the same command to resume" in err


def test_batch_shows_a_live_status_line_on_a_terminal(
    threaded_emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a terminal, stderr gets a carriage-return status line with the ETA, then the summary on a clean line."""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(source, [{"id": i, "messages": conversation(f"q{i}")} for i in range(16)])
    threaded_emulator.add_fault("latency=0.05")
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert 0 == cli_main(batch_args(threaded_emulator, source, target, "--concurrency", "2"))
    shown = terminal.getvalue()
    assert "\rbatch 0/16 | 0 done, 0 failed" in shown
    assert "/s, ETA " in shown
    assert "\razureml-chat batch: 16 done, 0 failed" in shown


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (("--concurrency", "0"), "--concurrency: must be a whole number >= 1"),
        (("-o", "SAME"), "the output file must not be the input file"),
        (("--max-retries", "-1"), "--max-retries: must be a whole number >= 0"),
    ],
    ids=["concurrency", "same-file", "max-retries"],
)
def test_batch_bad_arguments_exit_two(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: tuple[str, ...], needle: str
) -> None:
    """A bad argument is one line on stderr and exit code 2; nothing is written."""
    source = tmp_path / "in.jsonl"
    write_input(source, [{"id": 1, "messages": conversation("hi")}])
    args = [
        "batch",
        str(source),
        "-o",
        str(tmp_path / "out.jsonl"),
        "--url",
        "http://127.0.0.1:9/score",
        "--key",
        "k",
    ]
    args += [str(source) if item == "SAME" else item for item in extra]
    with pytest.raises(SystemExit) as exited:  # argparse exits by itself
        raise SystemExit(cli_main(args))
    assert 2 == exited.value.code
    err = capsys.readouterr().err
    assert needle in err
    assert 1 == len(err.strip().splitlines())
    assert not (tmp_path / "out.jsonl").exists()


def test_batch_missing_input_exits_two(tmp_path: Path) -> None:
    """A missing input file is one line and exit code 2."""
    done = run_cli("batch", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "out.jsonl"), "--key", "k")
    assert 2 == done.returncode
    assert "cannot read" in done.stderr
    assert 1 == len(done.stderr.strip().splitlines())


def test_batch_stops_at_once_when_the_key_is_refused(threaded_emulator: Emulator, tmp_path: Path) -> None:
    """A 401 would fail every line: the run stops with one error line, exit 1, and writes no error records."""
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(source, [{"id": i, "messages": conversation("hi")} for i in range(50)])
    env = clean_env(AZUREML_ENDPOINT_URL=threaded_emulator.chat_url, AZUREML_ENDPOINT_API_KEY="wrong")
    done = run_cli("batch", str(source), "-o", str(target), env=env)
    assert 1 == done.returncode
    assert "" == target.read_text()
    assert "Error code: 401" in done.stderr.splitlines()[-1]
    assert 8 >= len(threaded_emulator.requests)
