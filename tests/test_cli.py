"""The azureml-chat command, run as a subprocess the way users run it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest

from azureml_chat.emulator import Deployment, Emulator

KEY = "cli-key"


def run(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m azureml_chat ARGS`` with no AZUREML_* variables leaking in from this machine."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AZUREML_")}
    return subprocess.run(
        [sys.executable, "-m", "azureml_chat", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
        check=False,
    )


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    emu = Emulator(
        key=KEY, deployments=[Deployment("blue", family="llama"), Deployment("green", family="openai")]
    )
    with emu.start_in_thread():
        yield emu


def test_demo_exits_zero_and_prints_the_streamed_reply() -> None:
    """`azureml-chat demo` needs no Azure: it prints both turns of the conversation and exits 0."""
    done = run("demo")
    assert 0 == done.returncode, done.stderr
    assert "user: Hi! What is this?" in done.stdout
    assert "assistant: Hi! You are talking to the azureml-chat emulator" in done.stdout
    assert 2 == done.stdout.count("[finish: stop")
    assert "" == done.stderr


def test_chat_one_shot_prints_the_answer(emulator: Emulator) -> None:
    """`chat PROMPT` streams the emulator's echo of the prompt to stdout."""
    done = run("chat", "ping from the cli", "--url", emulator.chat_url, "--key", KEY)
    assert 0 == done.returncode, done.stderr
    assert "ping from the cli" in done.stdout


def test_chat_json_output_is_machine_readable(emulator: Emulator) -> None:
    """`--json` prints one JSON object with content, finish reason, usage and request id."""
    done = run("chat", "json please", "--url", emulator.chat_url, "--key", KEY, "--json", "--no-stream")
    assert 0 == done.returncode, done.stderr
    answer = json.loads(done.stdout)
    assert "json please" in answer["content"]
    assert "stop" == answer["finish_reason"]
    assert answer["usage"]["completion"] > 0
    assert answer["request_id"]


def test_chat_reads_the_azureml_environment(emulator: Emulator) -> None:
    """The AZUREML_* variables configure the command (URL, key, deployment)."""
    env = {
        "AZUREML_ENDPOINT_URL": emulator.score_url,
        "AZUREML_ENDPOINT_API_KEY": KEY,
        "AZUREML_DEPLOYMENT_NAME": "blue",
    }
    done = run("chat", "from env", env=env)
    assert 0 == done.returncode, done.stderr
    assert "from env" in done.stdout
    assert "blue" == emulator.requests[-1].deployment


def test_interactive_mode_keeps_the_conversation(emulator: Emulator) -> None:
    """With no prompt, each stdin line is a turn, and the history grows with the answers."""
    done = run("chat", "--url", emulator.chat_url, "--key", KEY, stdin="first line\nsecond line\n")
    assert 0 == done.returncode, done.stderr
    assert ["first line", "second line"] == [
        next(word for word in ("first line", "second line") if word in line)
        for line in done.stdout.splitlines()
    ]
    first_answer = done.stdout.splitlines()[0]
    assert [
        {"role": "user", "content": "first line"},
        {"role": "assistant", "content": first_answer},
        {"role": "user", "content": "second line"},
    ] == emulator.requests[-1].body["messages"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("chat", "hi"), "AZUREML_ENDPOINT_URL"),
        (("chat", "hi", "--url", "ftp://example.invalid/score", "--key", "k"), "https://"),
        (("chat", "hi", "--url", "http://127.0.0.1:9/score"), "AZUREML_ENDPOINT_API_KEY"),
        (("chat", "hi", "--url", "http://127.0.0.1:9/v1/completions", "--key", "k"), "text completion"),
    ],
    ids=["no-url", "bad-scheme", "no-key", "completions-route"],
)
def test_configuration_mistakes_print_one_line(args: tuple[str, ...], needle: str) -> None:
    """A configuration mistake is one line on stderr, exit 1, and no traceback."""
    done = run(*args)
    assert 1 == done.returncode
    assert 1 == len(done.stderr.strip().splitlines()), done.stderr
    assert needle in done.stderr
    assert "Traceback" not in done.stderr


def test_wrong_key_prints_one_line(emulator: Emulator) -> None:
    """A 401 is reported in one line naming the status and what to check."""
    done = run("chat", "hi", "--url", emulator.chat_url, "--key", "wrong")
    assert 1 == done.returncode
    assert ["401"] == [word for word in done.stderr.split() if word == "401"]
    assert 1 == len(done.stderr.strip().splitlines())


def test_unknown_deployment_prints_one_line(emulator: Emulator) -> None:
    """An unknown deployment is a one-line 404."""
    done = run("chat", "hi", "--url", emulator.chat_url, "--key", KEY, "--deployment", "purple")
    assert 1 == done.returncode
    assert "404" in done.stderr
    assert 1 == len(done.stderr.strip().splitlines())


def test_bad_flags_print_one_line() -> None:
    """An unknown flag is one line pointing at --help, exit 2."""
    done = run("chat", "--no-such-flag")
    assert 2 == done.returncode
    assert 1 == len(done.stderr.strip().splitlines())
    assert "--help" in done.stderr


def test_emulator_port_taken_prints_one_line() -> None:
    """`emulator --port N` on a taken port says so in one line and exits 1."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = run("emulator", "--port", str(taken.getsockname()[1]))
    assert 1 == done.returncode
    assert "already in use" in done.stderr
    assert 1 == len(done.stderr.strip().splitlines())


def test_emulator_serves_until_interrupted() -> None:
    """`emulator --port 0` prints its URL, answers requests, and stops cleanly on Ctrl-C."""
    process = subprocess.Popen(
        [sys.executable, "-m", "azureml_chat", "emulator", "--port", "0", "--key", KEY],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = ""
        deadline = time.monotonic() + 30
        while not url and time.monotonic() < deadline:
            line = process.stdout.readline()
            url = next((word for word in line.split() if word.startswith("http://127.0.0.1:")), "")
        assert url.startswith("http://127.0.0.1:")
        info = urllib.request.Request(url.rstrip("/") + "/info", headers={"Authorization": f"Bearer {KEY}"})
        with urllib.request.urlopen(info, timeout=10) as response:
            assert 200 == response.status
            assert "model_name" in json.loads(response.read())
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) in (0, 130)
    finally:
        process.kill()
        process.wait()
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
