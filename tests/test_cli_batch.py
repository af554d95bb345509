"""The azureml-chat batch command's output and its words to the user, run as a subprocess the way users run it.

The file handling, resuming and signals are in tests/test_batch.py; this module pins what the command says.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator
from pathlib import Path

import pytest

from azureml_chat.emulator import Emulator

KEY = "cli-batch-key"


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the machine's AZUREML_* variables, plus ``extra``."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("AZUREML_")}, **extra}


def batch(emu: Emulator, source: Path, target: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "azureml_chat",
        "batch",
        str(source),
        "-o",
        str(target),
        "--url",
        emu.chat_url,
        "--key",
        KEY,
        *extra,
    ]


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, env=clean_env(), check=False)


def write_input(path: Path, lines: list[object]) -> None:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    emu = Emulator(key=KEY)
    with emu.start_in_thread():
        yield emu


def test_batch_usage_has_the_python_api_names(emulator: Emulator, tmp_path: Path) -> None:
    """An answer line's usage has Usage's keys (prompt_tokens, completion_tokens, total_tokens, and the details
    the endpoint gave), and the summary's token count is their total_tokens."""
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(source, [{"id": "a", "messages": user("one two")}, {"id": "b", "messages": user("three")}])
    done = run(batch(emulator, source, target))
    assert 0 == done.returncode, done.stderr
    usages = [json.loads(line)["usage"] for line in target.read_text().splitlines()]
    keys = {"prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "reasoning_tokens"}
    assert [keys] * 2 == [set(usage) for usage in usages]
    assert f"; {sum(usage['total_tokens'] for usage in usages)} tokens;" in done.stderr


def test_invalid_input_is_to_be_fixed_not_retried(emulator: Emulator, tmp_path: Path) -> None:
    """Lines that failed as invalid input are to be fixed in the input first; a plain --retry-failed is
    offered only for the other failures, on the first run and on a rerun that skips them."""
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(
        source,
        [
            {"id": "ok", "messages": user("fine")},
            "{not json",
            {"id": "robot", "messages": [{"role": "robot", "content": "?"}]},
            {"id": "refused", "messages": user("[[fault:status=503]] no")},
        ],
    )
    first = run(batch(emulator, source, target, "--max-retries", "0"))
    assert 1 == first.returncode, first.stderr
    assert f"2 lines failed as invalid input and would fail the same way again: fix them in {source}" in (
        first.stderr
    )
    assert "to run the other failed ones again: rerun the same command with --retry-failed" in first.stderr
    records = {record["id"]: record for record in map(json.loads, target.read_text().splitlines())}
    assert (2, 3) == (records[2]["line"], records["robot"]["line"])

    write_input(source, [*source.read_text().splitlines()[:3]])
    rerun = run(batch(emulator, source, target))
    assert 1 == rerun.returncode, rerun.stderr
    assert "0 done, 0 failed, 3 skipped" in rerun.stderr
    assert "2 lines failed as invalid input" in rerun.stderr
    assert "failed ones again" not in rerun.stderr


def test_the_status_line_is_whole_on_a_terminal_of_zero_columns(emulator: Emulator, tmp_path: Path) -> None:
    """A terminal that reports 0 columns (an unsized pseudo-terminal, COLUMNS=0) gets the whole status
    line, as on an 80-column one, not its first 20 characters."""
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(source, [{"id": i, "messages": user(f"q{i}")} for i in range(3)])
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 0, 0, 0, 0))
    try:
        process = subprocess.Popen(
            batch(emulator, source, target),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=terminal,
            env=clean_env(COLUMNS="0"),
        )
        os.close(terminal)
        shown = b""
        while select.select([controller], [], [], 60)[0]:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the command closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        assert 0 == process.wait(timeout=60)
    finally:
        os.close(controller)
    drawn = [line for line in shown.decode().split("\r") if line.startswith("batch ")]
    assert drawn, shown
    assert "batch 0/3 | 0 done, 0 failed | 0.0/s | 0 tokens" == drawn[0].rstrip()
