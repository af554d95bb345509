"""The azureml-chat command, run as a subprocess the way users run it."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from azureml_chat.cli import main
from azureml_chat.emulator import Deployment, Emulator
from azureml_chat.formatters import OpenAIFormatter

KEY = "cli-key"
# A Python keyword (endpoint_url, api_key, credential=...): a command-line user has no such thing to pass.
PYTHON_KEYWORD = re.compile(r"\b[a-z]+(?:_[a-z]+)+\b|\b[a-z_]+=")


def run(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None, cwd: Path | None = None
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
        cwd=cwd,
        check=False,
    )


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    emu = Emulator(
        key=KEY,
        deployments=[
            Deployment("blue", family="llama"),
            Deployment("green", family="openai"),
            Deployment("thinker", family="openai", reasoning="think", replies=["Paris."]),
        ],
    )
    with emu.start_in_thread():
        yield emu


@pytest.mark.parametrize("flags", [(), ("--no-stream",)], ids=["streamed", "whole"])
def test_chat_shows_a_reasoning_models_reasoning_apart(emulator: Emulator, flags: tuple[str, ...]) -> None:
    """A reasoning model's <think> block is printed as [reasoning], then the answer as [answer], tags gone."""
    done = run(
        "chat", "Capital?", "--url", emulator.chat_url, "--key", KEY, "--deployment", "thinker", *flags
    )
    assert 0 == done.returncode, done.stderr
    reasoning, _, answer = done.stdout.partition("\n[answer] ")
    assert reasoning.startswith("[reasoning] ")
    assert "Paris.\n" == answer
    assert "<think>" not in done.stdout


def test_chat_json_has_the_reasoning(emulator: Emulator) -> None:
    """`--json` carries the reasoning beside the content (null for a model that gives none)."""
    done = run(
        "chat", "Capital?", "--url", emulator.chat_url, "--key", KEY, "--deployment", "thinker", "--json"
    )
    assert 0 == done.returncode, done.stderr
    record = json.loads(done.stdout)
    assert ("Paris.", True) == (record["content"], bool(record["reasoning"]))


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
    assert answer["usage"]["completion_tokens"] > 0
    assert answer["request_id"]


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
def test_chat_json_usage_has_the_python_api_names(emulator: Emulator, stream: bool) -> None:
    """`--json` usage has Usage's keys: prompt_tokens, completion_tokens and their total_tokens, plus the token
    details the endpoint gave (none of Usage's other names, and no null)."""
    flags = () if stream else ("--no-stream",)
    done = run("chat", "count me", "--url", emulator.chat_url, "--key", KEY, "--json", *flags)
    assert 0 == done.returncode, done.stderr
    usage = json.loads(done.stdout)["usage"]
    assert {"prompt_tokens", "completion_tokens", "total_tokens"} <= set(usage)
    assert set(usage) <= {
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "cached_tokens",
        "reasoning_tokens",
    }
    assert None not in usage.values()
    assert usage["prompt_tokens"] + usage["completion_tokens"] == usage["total_tokens"]


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
    ("args", "env", "needles"),
    [
        (("chat", "hi"), {}, ("no endpoint URL: pass --url or set AZUREML_ENDPOINT_URL",)),
        (
            ("chat", "hi", "--url", "ftp://example.invalid/score", "--key", "k"),
            {},
            ("--url must start with https://",),
        ),
        (
            ("chat", "hi"),
            {"AZUREML_ENDPOINT_URL": "ftp://example.invalid/score", "AZUREML_ENDPOINT_API_KEY": "k"},
            ("AZUREML_ENDPOINT_URL must start with https://",),
        ),
        (
            ("chat", "hi", "--url", "http://127.0.0.1:9/score"),
            {},
            ("no key: pass --key or set AZUREML_ENDPOINT_API_KEY",),
        ),
        (
            ("chat", "hi", "--url", "http://127.0.0.1:9/v1/completions", "--key", "k"),
            {},
            ("--url is a text completion URL", "/v1/chat/completions"),
        ),
        (
            ("chat", "hi", "--url", "http://example.invalid/score", "--key", "k"),
            {},
            ("refusing to send a key over plain http://", "use https://"),
        ),
        (("chat", "hi", "--url", "https://example.invalid", "--key", "k"), {}, ("--endpoint-type",)),
        (
            ("chat", "hi", "--url", "https://me:hunter2@example.invalid/score", "--key", "k"),
            {},
            ("--url holds credentials", "pass --key"),
        ),
        (
            ("chat", "hi", "--url", "http://127.0.0.1:9/score", "--key", "k", "--deployment", "a b"),
            {},
            ("--deployment must be",),
        ),
        (
            ("batch", "in.jsonl", "-o", "out.jsonl"),
            {
                "AZUREML_ENDPOINT_URL": "http://127.0.0.1:9/score",
                "AZUREML_ENDPOINT_API_KEY": "k",
                "AZUREML_ENDPOINT_API_TYPE": "cloud",
            },
            ("AZUREML_ENDPOINT_API_TYPE must be",),
        ),
        (
            ("chat", "hi"),
            {
                "AZUREML_ENDPOINT_URL": "http://127.0.0.1:9/score",
                "AZUREML_ENDPOINT_API_KEY": "k",
                "AZUREML_DEPLOYMENT_NAME": "a b",
            },
            ("AZUREML_DEPLOYMENT_NAME must be",),
        ),
    ],
    ids=[
        "no-url",
        "bad-scheme",
        "bad-scheme-from-env",
        "no-key",
        "completions-route",
        "plain-http",
        "no-route",
        "credentials-in-url",
        "bad-deployment",
        "bad-endpoint-type-from-env",
        "bad-deployment-from-env",
    ],
)
def test_configuration_mistakes_name_the_flags_and_exit_two(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], needles: tuple[str, ...]
) -> None:
    """A configuration mistake is one line naming the flag or AZUREML_* variable to fix, never a Python
    keyword; exit 2, no traceback."""
    (tmp_path / "in.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    done = run(*args, env=env, cwd=tmp_path)
    assert 2 == done.returncode, done.stderr
    assert 1 == len(done.stderr.strip().splitlines()), done.stderr
    assert [] == [needle for needle in needles if needle not in done.stderr], done.stderr
    assert [] == PYTHON_KEYWORD.findall(done.stderr), done.stderr
    assert "Traceback" not in done.stderr
    assert "hunter2" not in done.stderr
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("chat", "hi", "--timeout", "-1"), "argument --timeout: must be a positive number of seconds"),
        (("chat", "hi", "--timeout", "inf"), "argument --timeout: must be a positive number of seconds"),
        (("chat", "hi", "--temperature", "nan"), "argument --temperature: must be a number"),
        (("chat", "hi", "--max-tokens", "0"), "argument --max-tokens: must be a whole number >= 1"),
        (("chat", "hi", "--formatter", "nope"), "argument --formatter: unknown family 'nope'"),
        (("chat", "hi", "--formatter", "gpt2"), "'gpt2' is a text-generation family and cannot chat"),
        (("emulator", "--family", "nope"), "argument --family: unknown family 'nope'"),
        (("emulator", "--fault", "nope"), "argument --fault: unknown fault 'nope'"),
        (("emulator", "--port", "-1"), "argument --port: must be a port number from 0 to 65535"),
    ],
    ids=[
        "negative-timeout",
        "infinite-timeout",
        "nan-temperature",
        "zero-max-tokens",
        "unknown-formatter",
        "text-generation-formatter",
        "unknown-family",
        "bad-fault",
        "bad-port",
    ],
)
def test_bad_flag_values_name_the_flag_and_exit_two(args: tuple[str, ...], needle: str) -> None:
    """A bad flag value is refused before anything starts: one line naming the flag, exit 2."""
    env = {"AZUREML_ENDPOINT_URL": "http://127.0.0.1:9/score", "AZUREML_ENDPOINT_API_KEY": "k"}
    done = run(*args, env=env)
    assert 2 == done.returncode, done.stderr
    assert 1 == len(done.stderr.strip().splitlines()), done.stderr
    assert needle in done.stderr
    assert [] == PYTHON_KEYWORD.findall(done.stderr), done.stderr


@pytest.fixture
def registered_family(monkeypatch: pytest.MonkeyPatch) -> str:
    """A family registered for this test only (the registry is restored afterwards)."""
    from azureml_chat import formatters

    monkeypatch.setitem(formatters._formatters, "cli-test-family", OpenAIFormatter())
    # Wide help, so that argparse does not wrap a family name at its hyphen.
    monkeypatch.setenv("COLUMNS", "1000")
    return "cli-test-family"


# The built-in families (DESIGN.md): the chat families, then those that only generate text on /score.
CHAT_FAMILIES = {"openai", "llama", "custom-openai", "mistral"}
TEXT_GENERATION_FAMILIES = {"gpt2", "hf", "dolly"}


@pytest.mark.parametrize(
    ("command", "flag", "expected"),
    [
        ("emulator", "--family", CHAT_FAMILIES | TEXT_GENERATION_FAMILIES),
        ("chat", "--formatter", CHAT_FAMILIES),
        ("batch", "--formatter", CHAT_FAMILIES),
    ],
)
def test_family_help_lists_every_registered_family(
    registered_family: str,
    capsys: pytest.CaptureFixture[str],
    command: str,
    flag: str,
    expected: set[str],
) -> None:
    """The family flag's help lists the registry's families, a newly registered one included (for chat and
    batch, the ones that can chat)."""
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert 0 == exited.value.code
    text = " ".join(capsys.readouterr().out.split())
    listed = text.split(f"{flag} FAMILY ", 1)[1].split(":", 1)[1].split("(", 1)[0]
    assert {*expected, registered_family} == {name.strip() for name in listed.split(",")}


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


def test_emulator_refuses_a_registered_family_it_cannot_speak(
    registered_family: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A family registered in the process but unknown to the emulator is a bad --family: one line, exit 2."""
    assert 2 == main(["emulator", "--family", registered_family, "--port", "0"])
    err = capsys.readouterr().err
    assert f"unknown emulator family {registered_family!r}" in err
    assert 1 == len(err.strip().splitlines())


@pytest.mark.parametrize("flags", [(), ("--json",)], ids=["text", "json"])
def test_chat_trace_prints_the_calls_span_to_stderr(emulator: Emulator, flags: tuple[str, ...]) -> None:
    """`--trace` prints the call's GenAI span as JSON on stderr; stdout keeps only the answer (--json parses)."""
    done = run("chat", "hello", "--url", emulator.chat_url, "--key", KEY, "--no-stream", "--trace", *flags)
    assert 0 == done.returncode, done.stderr
    span = json.loads(done.stderr)
    assert ("chat 127.0.0.1", "SpanKind.CLIENT") == (span["name"], span["kind"])
    assert ("chat", 1) == (
        span["attributes"]["gen_ai.operation.name"],
        span["attributes"]["azureml_chat.attempts"],
    )
    assert KEY not in done.stderr
    answer = json.loads(done.stdout)["content"] if flags else done.stdout.strip()
    assert "You said: hello" == answer


def test_chat_trace_without_the_sdk_says_how_to_get_it(emulator: Emulator) -> None:
    """Without opentelemetry-sdk, `--trace` exits 2 with the pip command, before any call."""
    code = (
        "import sys; sys.modules['opentelemetry.sdk'] = None; from azureml_chat.cli import main; "
        f"sys.exit(main(['chat', 'hello', '--url', {emulator.chat_url!r}, '--key', {KEY!r}, '--trace']))"
    )
    before = len(emulator.requests)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert 2 == done.returncode
    assert "pip install opentelemetry-sdk" in done.stderr
    assert before == len(emulator.requests)
