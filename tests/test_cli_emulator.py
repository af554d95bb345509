"""`azureml-chat emulator --instances N`, run as a subprocess the way users run it, and the pure logic behind it."""

from __future__ import annotations

import io
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from docs_harness import background, clean_env

from azureml_chat.emulator import Deployment, Emulator, Fault, FaultSpecError, PortInUseError, serve
from azureml_chat.emulator._instances import banner, faults_per_instance, instance_ports, split_instance

KEY = "instances-key"
# Seconds to wait for a line the emulator prints: a ceiling for a stuck process, not a measured time.
LINE_TIMEOUT = 30.0
INSTANCE_LINE = re.compile(
    r"^azureml-chat emulator instance (?P<number>\d+) listening on (?P<url>\S+)  chat: (?P<chat>\S+)"
    r"  score: (?P<score>\S+)  faults: (?P<faults>.*)$"
)
LISTENING = re.compile(r"listening on (http://\S+)")
SCORE_BODY = {"input_data": {"input_string": [{"role": "user", "content": "hi"}], "parameters": {}}}


class Served:
    """A running `azureml-chat emulator --port 0 --key KEY ARGS` process (or ``python -c CODE``) and its banner."""

    def __init__(self, *args: str, code: str | None = None) -> None:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("AZUREML_")}
        command = (
            ["-c", code] if code else ["-m", "azureml_chat", "emulator", "--port", "0", "--key", KEY, *args]
        )
        self.process = subprocess.Popen(
            [sys.executable, *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=clean,
        )
        self._pending = b""
        self.banner = self.lines_until("Press Ctrl-C to stop.")
        self.instances = {
            int(found["number"]): found.groupdict()
            for found in map(INSTANCE_LINE.match, self.banner)
            if found is not None
        }

    def line(self) -> str:
        """The next line it prints (AssertionError if none comes: a stuck or dead process)."""
        assert self.process.stdout is not None
        # os.read, not readline: select() cannot see what a buffered reader has already taken off the pipe.
        fd = self.process.stdout.fileno()
        while b"\n" not in self._pending:
            ready, _, _ = select.select([fd], [], [], LINE_TIMEOUT)
            chunk = os.read(fd, 65536) if ready else b""
            assert chunk, f"the emulator printed nothing more; stderr: {self.stop()[1]}"
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return line.decode()

    def lines_until(self, last: str) -> list[str]:
        """The lines it prints up to and including ``last``."""
        lines = [self.line()]
        while lines[-1] != last:
            lines.append(self.line())
        return lines

    def stop(self, sig: int = signal.SIGINT) -> tuple[int, str]:
        """Send ``sig``, wait for the exit; the exit code and stderr."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=20)
        finally:
            self.process.kill()
            self.process.wait()
        assert self.process.stderr is not None
        err = self.process.stderr.read().decode()
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()
        return code, err


def score(url: str) -> int:
    """POST a one-message conversation to a /score URL; the status."""
    request = urllib.request.Request(
        url,
        data=json.dumps(SCORE_BODY).encode(),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=LINE_TIMEOUT) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m azureml_chat emulator ARGS`` to completion (for arguments it refuses)."""
    return subprocess.run(
        [sys.executable, "-m", "azureml_chat", "emulator", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def three() -> Iterator[Served]:
    """Three instances: every one's first answer a 500, then instance 2 answers 503 and the others 200."""
    served = Served("--instances", "3", "--fault", "status=500,times=1", "--fault", "2:status=503")
    try:
        yield served
    finally:
        served.stop()


def test_banner_has_one_line_per_instance_on_its_own_port(three: Served) -> None:
    """Each instance has a line with its number, base URL and the chat and /score URLs on that base."""
    assert [1, 2, 3] == sorted(three.instances)
    ports = {int(instance["url"].rsplit(":", 1)[1]) for instance in three.instances.values()}
    assert 3 == len(ports)
    for instance in three.instances.values():
        assert instance["url"].startswith("http://127.0.0.1:")
        assert instance["url"] + "/v1/chat/completions" == instance["chat"]
        assert instance["url"] + "/score" == instance["score"]


def test_banner_shows_each_instance_faults(three: Served) -> None:
    """The faults: field lists what each instance has armed, the shared fault first (the order given)."""
    assert {
        1: "status=500,times=1",
        2: "status=500,times=1;status=503",
        3: "status=500,times=1",
    } == {number: instance["faults"] for number, instance in three.instances.items()}


def test_a_fault_for_instance_2_hits_only_instance_2(three: Served) -> None:
    """The shared fault hits each instance once (own schedules); the one for instance 2 hits only instance 2."""
    urls = [three.instances[number]["score"] for number in (1, 2, 3)]
    first = [score(url) for url in urls]
    second = [score(url) for url in urls]
    logged = sorted(three.line() for _ in range(6))
    assert [500, 500, 500] == first
    assert [200, 503, 200] == second
    assert [
        "[instance 1] POST /score -> 200 [default]",
        "[instance 1] POST /score -> 500 [default] fault=status=500,times=1",
        "[instance 2] POST /score -> 500 [default] fault=status=500,times=1",
        "[instance 2] POST /score -> 503 [default] fault=status=503",
        "[instance 3] POST /score -> 200 [default]",
        "[instance 3] POST /score -> 500 [default] fault=status=500,times=1",
    ] == logged


def test_disconnect_takes_one_instance_down_for_its_next_requests() -> None:
    """'2:disconnect,times=2' drops instance 2's next two connections, then it answers; instance 1 never drops."""
    served = Served("--instances", "2", "--fault", "2:disconnect,times=2")
    try:
        one, two = served.instances[1]["score"], served.instances[2]["score"]
        for _ in range(2):
            with pytest.raises(ConnectionError):
                score(two)
            assert 200 == score(one)
        assert 200 == score(two)
    finally:
        served.stop()


@pytest.mark.parametrize("instances", ["1", "3"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_stops_every_instance_cleanly(instances: str, sig: signal.Signals) -> None:
    """Ctrl-C or SIGTERM stops one instance or several the same way: exit 0, nothing on stderr, ports closed."""
    served = Served("--instances", instances)
    urls = [found[1] for found in map(LISTENING.search, served.banner) if found is not None]
    assert int(instances) == len(urls)
    code, err = served.stop(sig)
    assert (0, "") == (code, err)
    for url in urls:
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(url + "/info", timeout=LINE_TIMEOUT)


def test_one_instance_keeps_the_single_banner() -> None:
    """--instances 1 prints the banner it always has: 'listening on URL' first, no instance lines."""
    served = Served("--instances", "1")
    try:
        assert re.fullmatch(r"azureml-chat emulator listening on http://127\.0\.0\.1:\d+", served.banner[0])
        assert {} == served.instances
    finally:
        served.stop()


def test_the_docs_harness_finds_instance_1(tmp_path: Path) -> None:
    """The docs harness's 'listening on URL' reads instance 1's URL from a several-instance banner."""
    with background(
        f"azureml-chat emulator --instances 2 --port 0 --key {KEY}", env=clean_env(), cwd=tmp_path
    ) as url:
        request = urllib.request.Request(url + "/info", headers={"Authorization": f"Bearer {KEY}"})
        with urllib.request.urlopen(request, timeout=LINE_TIMEOUT) as response:
            assert 200 == response.status


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ("--instances", "3", "--fault", "4:status=503"),
            "--fault '4:status=503' is for instance 4, but --instances is 3",
        ),
        (("--fault", "2:status=503"), "--fault '2:status=503' is for instance 2, but --instances is 1"),
        (("--instances", "3", "--fault", "0:status=503"), "argument --fault: instances are numbered from 1"),
        (("--instances", "3", "--fault", "2:"), "argument --fault: no fault after '2:'"),
        (
            ("--instances", "3", "--fault", "2:status=99"),
            "argument --fault: status must be a 4xx or 5xx code",
        ),
        (("--instances", "0"), "argument --instances: must be a whole number >= 1"),
        (("--instances", "3", "--port", "65534"), "--port with --instances: 3 instances from port 65534"),
    ],
    ids=["past-n", "past-one", "zero", "empty", "bad-spec", "no-instances", "ports-past-65535"],
)
def test_bad_instance_arguments_exit_2_naming_the_flag(args: tuple[str, ...], needle: str) -> None:
    """A fault for a missing instance, a bad prefix or too many ports: one line naming the flag, exit 2."""
    done = run(*args)
    assert 2 == done.returncode
    assert needle in done.stderr
    assert 1 == len(done.stderr.strip().splitlines())


def test_serve_arms_instance_faults_on_the_first_of_given_deployments() -> None:
    """serve(deployments=..., instances=2): each instance serves them all, its own faults on the first."""
    code = (
        "from azureml_chat.emulator import Deployment, serve\n"
        "serve(port=0, key='k', instances=2, faults=['2:status=503'],\n"
        "      deployments=[Deployment('blue'), Deployment('green', family='openai')])"
    )
    served = Served(code=code)
    try:
        assert {1: "none", 2: "status=503"} == {n: found["faults"] for n, found in served.instances.items()}
        assert any(
            line.startswith("  deployments: blue (llama, ") and "green (openai, " in line
            for line in served.banner
        )
    finally:
        served.stop()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"instances": 0}, "instances must be at least 1, got 0"),
        ({"instances": 2, "faults": ["3:503"]}, "'3:503' is for instance 3, but there are 2"),
        ({"instances": 2, "port": 65535}, "2 instances from port 65535 need ports up to 65536"),
    ],
)
def test_serve_refuses_bad_instances_before_binding(kwargs: dict[str, Any], message: str) -> None:
    """serve() raises ValueError for a bad count, a fault past it or too many ports, before serving anything."""
    with pytest.raises(ValueError, match=re.escape(message)):
        serve(**kwargs)


def test_serve_stops_the_started_instances_when_a_port_is_taken() -> None:
    """A taken port for any instance is a PortInUseError from serve(), after it stops those it started."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUseError, match="already in use"):
            serve(port=port - 1, instances=2, out=io.StringIO())


async def test_banner_of_several_instances_has_a_line_each() -> None:
    """banner() of two running emulators: a 'listening on' line each with its faults, then the shared lines."""
    async with (
        Emulator(KEY) as one,
        Emulator(KEY, deployments=[Deployment("default", faults="status=503;latency=0.5")]) as two,
    ):
        lines = banner([one, two]).splitlines()
        assert [
            f"azureml-chat emulator instance 1 listening on {one.url}  chat: {one.chat_url}"
            f"  score: {one.score_url}  faults: none",
            f"azureml-chat emulator instance 2 listening on {two.url}  chat: {two.chat_url}"
            f"  score: {two.score_url}  faults: status=503;latency=0.5",
            *one.banner().splitlines()[1:],
        ] == lines


# -- the pure logic (azureml_chat.emulator._instances) ----------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("status=503", (None, (Fault(status=503),))),
        ("2:status=503", (2, (Fault(status=503),))),
        (" 12 : 429,times=1;latency=0.5", (12, (Fault(status=429, times=1), Fault(latency=0.5)))),
        ("", (None, ())),
    ],
)
def test_split_instance(spec: str, expected: tuple[int | None, tuple[Fault, ...]]) -> None:
    """An optional 'N:' prefix names the instance; the rest is the ordinary fault grammar."""
    assert expected == split_instance(spec)


@pytest.mark.parametrize("spec", ["0:503", "3:", "3: ;", "2:status=42", "x:503"])
def test_split_instance_refuses(spec: str) -> None:
    """Instance 0, a prefix with no fault, or a bad fault after it is a FaultSpecError."""
    with pytest.raises(FaultSpecError):
        split_instance(spec)


def test_faults_per_instance_keeps_the_order_given() -> None:
    """Each instance gets the unprefixed faults and its own, in command-line order; Fault objects go to all."""
    assert (
        (Fault(latency=0.5), Fault(disconnect=True)),
        (Fault(latency=0.5), Fault(status=503), Fault(disconnect=True)),
    ) == faults_per_instance(["latency=0.5", "2:status=503", Fault(disconnect=True)], 2)


def test_faults_per_instance_refuses_an_instance_past_the_count() -> None:
    """A fault for instance 3 of 2 is a ValueError naming the spec."""
    with pytest.raises(ValueError, match="'3:503' is for instance 3, but there are 2"):
        faults_per_instance(["3:503"], 2)


@pytest.mark.parametrize(
    ("port", "count", "expected"),
    [(0, 3, (0, 0, 0)), (8000, 1, (8000,)), (8000, 3, (8000, 8001, 8002)), (65533, 3, (65533, 65534, 65535))],
)
def test_instance_ports(port: int, count: int, expected: tuple[int, ...]) -> None:
    """Consecutive ports from --port, or 0 (a free port) for each."""
    assert expected == instance_ports(port, count)


def test_instance_ports_refuses_ports_past_65535() -> None:
    """Three instances from 65534 would need 65536: a ValueError."""
    with pytest.raises(ValueError, match="up to 65536"):
        instance_ports(65534, 3)
