"""Every fenced Python and shell block of README.md and docs/*.md runs as documented (see tests/docs_harness.py).

One test per block, named by file and line (``test_block[README.md:20]``), against an emulator on 127.0.0.1
that each test starts and stops.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from pathlib import Path

import docs_harness
import pytest
from conftest import JAVA
from docs_harness import (
    DOCS,
    KEY,
    REDIS_PLACEHOLDER,
    ROOT,
    Block,
    Endpoint,
    Marker,
    Outcome,
    all_blocks,
    background,
    clean_env,
    extract_blocks,
    pip_install_problem,
    pip_mentions,
    prepare_workdir,
    pytest_files,
    run,
    run_pytest_block,
    run_python,
    shell_commands,
    substitute,
    syntax_problem,
)
from redis_server import RedisServer

from azureml_chat.emulator import Deployment, Emulator

BLOCKS = all_blocks()
_EMULATOR_COMMAND = re.compile(r"^(?:\w+=\S*\s+)*azureml-chat\s+emulator\b")
_PYTEST_COMMAND = re.compile(r"^(?:\w+=\S*\s+)*python3?\s+-m\s+pytest\b")
# A benchmark run: the script is there and its options parse (the run itself takes minutes of load).
_BENCHMARK_COMMAND = re.compile(r"^python3?\s+(?P<script>benchmarks/\w+\.py)(?P<args>[^#]*)")


def _emulator(block: Block) -> Emulator:
    family = block.marker("family")
    return Emulator(KEY, deployments=[Deployment("default", family=family.value if family else "llama")])


def _assert_clean(outcome: Outcome) -> None:
    assert (0, "") == (outcome.returncode, outcome.stderr), outcome.describe()


def _check_static(block: Block) -> None:
    assert None is syntax_problem(block)
    if block.lang != "python":
        for command in shell_commands(block):
            for part in command.split("&&"):
                if "pip install" in part:
                    assert None is pip_install_problem(part), part


def _check_long(block: Block) -> None:
    """A long pytest command: its selection parses and finds tests (``--collect-only``), run from the root. A
    benchmark command: the script's own parser accepts its options (they are parsed, then ``--help`` exits)."""
    commands = shell_commands(block)
    assert commands, "a long block without commands"
    for command in commands:
        benchmark = _BENCHMARK_COMMAND.match(command)
        if benchmark is not None:
            outcome = run(
                f"python {benchmark['script']}{benchmark['args'].rstrip()} --help",
                env=clean_env(),
                cwd=ROOT,
                shell=True,
            )
            assert 0 == outcome.returncode, outcome.describe()
            continue
        assert _PYTEST_COMMAND.match(command), f"only pytest or benchmark commands can be 'long': {command!r}"
        # Right after "pytest": a trailing shell comment must not swallow the options.
        collect = _PYTEST_COMMAND.sub(
            lambda m: f"{m[0]} --collect-only -q -p no:cacheprovider", command, count=1
        )
        outcome = run(collect, env=clean_env(), cwd=ROOT, shell=True)
        found = re.search(r"^(\d+)(?:/\d+)? tests? collected", outcome.stdout, flags=re.M)
        assert 0 == outcome.returncode, outcome.describe()
        assert found is not None, outcome.describe()
        assert int(found[1]) > 0, outcome.describe()


def _run_shell(block: Block, workdir: Path) -> None:
    prepare_workdir(workdir)
    with _emulator(block).start_in_thread() as emulator, contextlib.ExitStack() as stack:
        endpoint = Endpoint(emulator.url, KEY)
        ports: dict[str, str] = {}
        for command in shell_commands(block):
            for documented, real in ports.items():
                command = command.replace(documented, real)
            command = substitute(command, endpoint)
            if "pip install" in command:  # never reinstall: installable from the checkout as written
                assert None is pip_install_problem(command), command
            elif _EMULATOR_COMMAND.match(command):
                port = re.search(r"--port[= ](\d+)", command)
                key = re.search(r"--key[= ](\S+)", command)
                url = stack.enter_context(
                    background(re.sub(r"--port[= ]\d+", "--port 0", command), env=clean_env(), cwd=workdir)
                )
                if port:
                    ports[f"127.0.0.1:{port[1]}"] = url.removeprefix("http://")
                endpoint = Endpoint(url, key[1] if key else "emulator-key")
            else:
                outcome = run(command, env=clean_env(endpoint), cwd=workdir, stdin="Hello\n", shell=True)
                assert 0 == outcome.returncode, outcome.describe()
                assert outcome.stdout or outcome.stderr, outcome.describe()
                if re.search(r"azureml-chat\s+chat\b", command):  # the emulator echoes the prompt (or stdin)
                    assert "Hello" in outcome.stdout, outcome.describe()


@pytest.mark.parametrize("block", BLOCKS, ids=[block.id for block in BLOCKS])
def test_block(block: Block, tmp_path: Path) -> None:
    """The block runs as documented (or, when marked so, parses and finds its tests)."""
    if block.lang == "python" and not block.marker("pytest"):
        # Run as a script, a test file would only define its tests: it passes without testing anything.
        assert [] == re.findall(r"^(?:async )?def test_\w*", block.code, flags=re.M), (
            "mark it <!-- docs: pytest -->"
        )
    if not block.runs:
        _check_static(block)
    elif block.marker("long"):
        _check_long(block)
    elif block.marker("pytest"):
        if "pyspark" in block.code and not JAVA:
            pytest.skip("the Spark example needs Java, which this machine lacks (tests/conftest.py)")
        outcome = run_pytest_block(block, tmp_path)
        tests = sum(
            len(re.findall(r"^(?:async )?def test_", text, flags=re.M))
            for text in pytest_files(block).values()
        )
        assert 0 == outcome.returncode, outcome.describe()
        assert f"{tests} passed" in outcome.stdout.splitlines()[-1], outcome.describe()
    elif block.lang == "python":
        with _emulator(block).start_in_thread() as emulator, contextlib.ExitStack() as stack:
            redis = stack.enter_context(RedisServer()).url if REDIS_PLACEHOLDER in block.code else None
            _assert_clean(run_python(block, Endpoint(emulator.url, KEY, redis), tmp_path))
    else:
        _run_shell(block, tmp_path)


def test_the_docs_have_blocks_to_run() -> None:
    """README.md and every page under docs/ with code are collected, and most blocks really run."""
    files = {block.path.name for block in BLOCKS}
    running = [block for block in BLOCKS if block.runs]
    assert {"README.md", "migrating-from-langchain.md", "reliability.md"} <= files
    assert len(running) >= 0.8 * len(BLOCKS), [block.id for block in BLOCKS if not block.runs]


@pytest.mark.parametrize("path", DOCS, ids=[path.name for path in DOCS])
def test_every_marker_is_attached_to_a_block(path: Path) -> None:
    """A docs marker counts only right above a Python or shell fence: none is left stray (and silently ignored)."""
    written = len(re.findall(r"<!--\s*docs:", path.read_text("utf-8")))
    assert written == sum(len(block.markers) for block in extract_blocks(path))


def test_fragments_are_few() -> None:
    """At most three blocks are syntax-checked only (fragment / not-run); every other block executes."""
    static = [block.id for block in BLOCKS if not block.runs]
    assert len(static) <= 3, static


@pytest.mark.parametrize("path", DOCS, ids=[path.name for path in DOCS])
def test_every_pip_install_works_from_a_checkout(path: Path) -> None:
    """Every `pip install` a doc shows, inline or in a block, installs this checkout with extras that exist."""
    problems = {command: pip_install_problem(command) for command in pip_mentions(path.read_text("utf-8"))}
    assert {} == {command: problem for command, problem in problems.items() if problem}


# -- the harness itself ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("pip install -e .", None),
        ('pip install -e ".[langchain]"', None),
        ('pip install -q -e ".[test,fast]"', None),
        ('pip install "azureml-chat[langchain]"', "is not an editable install"),
        ('pip install -e ".[nope]"', "unknown extra(s) ['nope']"),
        ("pip install -e ../other", "is not the checkout's root"),
    ],
)
def test_pip_install_problem(command: str, expected: str | None) -> None:
    """A pip command passes only as an editable install of the checkout with declared extras."""
    problem = pip_install_problem(command)
    assert (expected is None) == (problem is None), problem
    assert expected is None or expected in (problem or "")


def test_markers_and_lines_are_read() -> None:
    """A block's id names its file and fence line; the comment markers right above the fence are its markers."""
    text = "intro\n<!-- docs: session -->\n<!-- docs: family=gpt2 -->\n```python\nprint(1)\n```\n\n```text\nx\n```\n"
    [block] = extract_blocks(ROOT / "README.md", text)
    assert "README.md:4" == block.id
    assert (Marker("session"), Marker("family", "gpt2")) == block.markers
    assert "print(1)\n" == block.code


@pytest.mark.parametrize("body", ["sesion", "long", "family: gpt2"])
def test_a_bad_marker_is_refused(body: str) -> None:
    """An unknown marker, a 'long' without its reason, or a family without '=' is an error, not ignored."""
    with pytest.raises(ValueError):
        Marker.parse(body)


def test_placeholders_are_substituted() -> None:
    """Placeholder URLs keep their path on the emulator's host; placeholder keys and env '...' become real."""
    endpoint = Endpoint("http://127.0.0.1:1234", "k")
    text = (
        'Client("https://<serverless-endpoint>.<region>.models.ai.azure.com/v1/chat/completions", "<key>")\n'
        "AZUREML_ENDPOINT_URL=... AZUREML_ENDPOINT_API_KEY=... azureml-chat chat"
    )
    assert (
        'Client("http://127.0.0.1:1234/v1/chat/completions", "k")\n'
        "AZUREML_ENDPOINT_URL=http://127.0.0.1:1234/v1/chat/completions AZUREML_ENDPOINT_API_KEY=k azureml-chat chat"
    ) == substitute(text, endpoint)


def test_shell_commands_are_split_like_a_reader_types_them() -> None:
    """Comments and blank lines are dropped, continuations joined, and console output lines are not commands."""
    block = Block(
        ROOT / "README.md", 1, "console", "$ azureml-chat demo \\\n   --x\noutput line\n# note\n$ ls\n"
    )
    assert ["azureml-chat demo --x", "ls"] == shell_commands(block)


def test_a_stuck_block_is_stopped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every run has a timeout, so a block that hangs fails instead of stalling the suite."""
    monkeypatch.setattr(docs_harness, "BLOCK_TIMEOUT", 0.2)
    with pytest.raises(subprocess.TimeoutExpired):
        run("sleep 5", env=clean_env(), cwd=tmp_path, shell=True)


def test_a_background_server_is_found_on_any_banner_line_and_kept_drained(tmp_path: Path) -> None:
    """The URL may be on a later banner line, and output after it (200 KiB) never blocks the server."""
    script = (
        "echo starting; echo 'two deployments'; echo 'listening on http://127.0.0.1:9/v1'; "
        "head -c 204800 /dev/zero | tr '\\0' x; echo; echo done > finished; sleep 30"
    )
    with background(script, env=clean_env(), cwd=tmp_path) as url:
        for _ in range(200):  # the server writes past a pipe's 64 KiB only if someone reads
            if (tmp_path / "finished").exists():
                break
            time.sleep(0.05)
        finished = (tmp_path / "finished").exists()
    assert ("http://127.0.0.1:9/v1", True) == (url, finished)
