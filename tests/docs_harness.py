"""Run the documentation: every fenced Python and shell block of README.md and docs/*.md (tests/test_docs.py).

A block runs as a reader would run it, against the emulator on 127.0.0.1 instead of Azure:

- ``python``: the block, in a fresh interpreter (``-W error``), with the placeholder URLs
  (``https://<endpoint>.<region>.inference.ml.azure.com/score``, ``https://<serverless-endpoint>...``, any
  ``https://<...>.<...>.inference.ml.azure.com`` or ``.models.ai.azure.com`` host) and the key ``"<key>"``
  replaced by the emulator's; ``AZUREML_ENDPOINT_URL`` / ``AZUREML_ENDPOINT_API_KEY`` point at it too; the
  placeholder store ``redis://<redis-host>:6379/0`` by a ``redis-server`` started for the block. It
  passes when it exits 0 with nothing on stderr (no traceback, warning or unclosed session), and every
  formatter class it defines answers an unexpected body with ``ResponseFormatError`` (:func:`check_formatters`).
- ``bash`` / ``sh`` / ``shell`` / ``console``: each command (``$ `` prompts stripped; in a ``console``
  block, lines without one are output) in a shell, in a scratch directory holding the JSONL files the docs
  name (:data:`INPUT_FILES`), with the venv's ``bin`` first on ``PATH`` and the ``AZUREML_*`` variables
  pointing at an emulator. ``azureml-chat emulator ...`` serves in the foreground, so it is started in the
  background on a free port and the commands after it run against it. ``pip install`` is never run: it must
  install from a checkout as written (:func:`pip_install_problem`).

A marker, an HTML comment on the line(s) just before the fence, changes how a block runs::

    <!-- docs: session -->        python run as in ``python -m asyncio`` (top-level ``await``) with ``url``,
                                  ``key`` and an open ``client = AsyncChatClient(url, key)``, as the README says
    <!-- docs: pytest -->         a test suite: ``# name.py`` lines start files; pytest runs them (strict mode)
    <!-- docs: family=gpt2 -->    the emulator's deployment speaks this ``/score`` family
    <!-- docs: long: why -->      pytest commands that run for minutes: checked with ``--collect-only``
    <!-- docs: not-run: why -->   never executed (would recurse, or needs Azure): checked for syntax only
    <!-- docs: fragment: why -->  a deliberate fragment: checked for syntax only

Blocks in other languages (``text``, diagrams) are prose and not collected.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import os
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

ROOT = Path(__file__).resolve().parent.parent
DOCS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
PYTHON_LANGS = frozenset({"python", "py"})
SHELL_LANGS = frozenset({"bash", "sh", "shell", "console"})
MARKER_KINDS = frozenset({"session", "pytest", "family", "long", "not-run", "fragment"})

KEY = "docs-key"
# Seconds: a block that runs longer than this is stuck (the slowest, the emulator/429 pair, takes about 2 s).
BLOCK_TIMEOUT = 60.0
# The input files the docs' batch commands name, each with two questions (one of them with its own params).
INPUT_FILES = ("questions.jsonl", "in.jsonl", "demo.jsonl")
INPUT_LINES = (
    '{"id": "q1", "messages": [{"role": "user", "content": "What is Azure ML?"}]}\n'
    '{"id": "q2", "messages": [{"role": "user", "content": "What does 429 mean?"}], "params": {"max_tokens": 8}}\n'
)

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,})(?P<lang>[\w+-]*)\s*$")
_MARKER = re.compile(r"^\s*<!--\s*docs:\s*(?P<body>.*?)\s*-->\s*$")
# A documentation placeholder host (angle brackets) on Azure ML's two domains, with its path.
_PLACEHOLDER_URL = re.compile(
    r"https://<[^>\s]+>\.<[^>\s]+>\.(?:inference\.ml\.azure\.com|models\.ai\.azure\.com)(?P<path>/[^\s\"')]*)?"
)
_PLACEHOLDER_KEY = re.compile(r"([\"'])<(?:key|your-api-key|api-key)>\1")
_ENV_ELLIPSIS = re.compile(r"\b(AZUREML_ENDPOINT_URL|AZUREML_ENDPOINT_API_KEY)=\.\.\.")
_AMBIENT = re.compile(r"^(AZUREML_|PYTEST_|COV_|(?:HTTPS?|ALL|NO)_PROXY$|(?:https?|all|no)_proxy$)")


@attrs.frozen
class Marker:
    """One ``<!-- docs: kind[: reason | =value] -->`` comment."""

    kind: str
    value: str = ""

    @classmethod
    def parse(cls, body: str) -> Marker:
        """Parse a marker's body (``session``, ``long: why``, ``family=gpt2``).

        Raises:
            ValueError: an unknown kind, or a reason missing where one is required.
        """
        found = re.fullmatch(r"(?P<kind>[\w-]+)\s*(?:(?P<sep>[:=])\s*(?P<value>.*))?", body.strip())
        kind = found["kind"] if found else body
        sep, value = (found["sep"] or "", (found["value"] or "").strip()) if found else ("", "")
        if kind not in MARKER_KINDS:
            raise ValueError(f"unknown docs marker {body!r}; known: {', '.join(sorted(MARKER_KINDS))}")
        if kind in ("long", "not-run", "fragment") and not value:
            raise ValueError(f"the docs marker {kind!r} needs a reason: <!-- docs: {kind}: why -->")
        if kind == "family" and sep != "=":
            raise ValueError("write the family marker as <!-- docs: family=NAME -->")
        return cls(kind, value)


@attrs.frozen
class Block:
    """A fenced block: where it is, its language, its text and its markers."""

    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    markers: tuple[Marker, ...] = ()

    @property
    def id(self) -> str:
        """``README.md:16`` or ``docs/reliability.md:11``."""
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    def marker(self, kind: str) -> Marker | None:
        """The block's marker of ``kind``, if it has one."""
        return next((m for m in self.markers if m.kind == kind), None)

    @property
    def runs(self) -> bool:
        """Whether the block is executed (not only checked for syntax)."""
        return self.marker("not-run") is None and self.marker("fragment") is None


def extract_blocks(path: Path, text: str | None = None) -> list[Block]:
    """Every fenced Python and shell block of a Markdown file, with the markers just before it.

    Raises:
        ValueError: a fence that never closes, or a bad marker.
    """
    lines = (path.read_text(encoding="utf-8") if text is None else text).splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        start, fence, indent = index, opening["fence"], len(opening["indent"])
        index += 1
        body: list[str] = []
        while index < len(lines) and lines[index].strip() != fence:
            body.append(lines[index][indent:] if lines[index][:indent].isspace() else lines[index])
            index += 1
        if index == len(lines):
            raise ValueError(f"{path.name}:{start + 1}: the fence {fence}{opening['lang']} never closes")
        index += 1
        lang = opening["lang"].lower()
        if lang not in PYTHON_LANGS | SHELL_LANGS:
            continue
        markers: list[Marker] = []
        above = start - 1
        while above >= 0 and (found := _MARKER.match(lines[above])):
            markers.insert(0, Marker.parse(found["body"]))
            above -= 1
        blocks.append(Block(path, start + 1, lang, "\n".join(body) + "\n", tuple(markers)))
    return blocks


def all_blocks() -> list[Block]:
    """The blocks of README.md and docs/*.md, in reading order."""
    return [block for path in DOCS for block in extract_blocks(path)]


# -- substitution --------------------------------------------------------------------------------------------


# The Redis URL the docs write for a shared rate-limit store.
REDIS_PLACEHOLDER = "redis://<redis-host>:6379/0"


@attrs.frozen
class Endpoint:
    """Where a block's placeholders point: the emulator's base URL (``http://127.0.0.1:port``) and key, and a
    Redis server's URL when the block names one."""

    base: str
    key: str = KEY
    redis: str | None = None

    @property
    def chat_url(self) -> str:
        return f"{self.base}/v1/chat/completions"


def substitute(text: str, endpoint: Endpoint) -> str:
    """The text with placeholder URLs (keeping their path) and placeholder keys replaced by the emulator's."""
    text = _PLACEHOLDER_URL.sub(lambda m: endpoint.base + (m["path"] or ""), text)
    text = _PLACEHOLDER_KEY.sub(lambda m: f"{m[1]}{endpoint.key}{m[1]}", text)
    if endpoint.redis is not None:
        text = text.replace(REDIS_PLACEHOLDER, endpoint.redis)
    values = {"AZUREML_ENDPOINT_URL": endpoint.chat_url, "AZUREML_ENDPOINT_API_KEY": endpoint.key}
    return _ENV_ELLIPSIS.sub(lambda m: f"{m[1]}={shlex.quote(values[m[1]])}", text)


def clean_env(endpoint: Endpoint | None = None) -> dict[str, str]:
    """This process's environment without ``AZUREML_*``, proxies and pytest options; the venv's bin first on
    ``PATH``; with ``endpoint``, the ``AZUREML_*`` variables the docs' commands read set to it."""
    env = {name: value for name, value in os.environ.items() if not _AMBIENT.match(name)}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if endpoint is not None:
        env["AZUREML_ENDPOINT_URL"] = endpoint.chat_url
        env["AZUREML_ENDPOINT_API_KEY"] = endpoint.key
    return env


# -- checks that do not execute ------------------------------------------------------------------------------


def extras() -> frozenset[str]:
    """The optional-dependency groups pyproject.toml declares."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return frozenset(project["optional-dependencies"])


def pip_install_problem(command: str) -> str | None:
    """Why a ``pip install ...`` command would not install this package from a checkout, or ``None``.

    It must be editable from the checkout's root (``-e .`` or ``-e ".[extra,...]"``), and every extra it
    names must exist in pyproject.toml.
    """
    words = shlex.split(command)
    start = next((i for i in range(len(words) - 1) if words[i : i + 2] == ["pip", "install"]), None)
    if start is None:
        return f"not a pip install command: {command!r}"
    targets = [w for w in words[start + 2 :] if not w.startswith("-") or w == "-e"]
    if not targets:
        return "installs nothing"
    problems = []
    for i, target in enumerate(targets):
        if target == "-e":
            continue
        if i == 0 or targets[i - 1] != "-e":
            problems.append(f'{target!r} is not an editable install of the checkout (write -e ".[extra]")')
            continue
        found = re.fullmatch(r"\.(?:\[(?P<extras>[\w,\s-]*)\])?", target)
        if found is None:
            problems.append(f'{target!r} is not the checkout\'s root (write -e . or -e ".[extra]")')
            continue
        named = {e.strip() for e in (found["extras"] or "").split(",") if e.strip()}
        unknown = sorted(named - extras())
        if unknown:
            problems.append(f"unknown extra(s) {unknown}; pyproject.toml has {sorted(extras())}")
    return "; ".join(problems) or None


def pip_mentions(text: str) -> list[str]:
    """Every ``pip install ...`` in a document's inline code spans and command lines."""
    found = re.findall(r"`(pip install [^`]+)`", text)
    found += [m.strip() for m in re.findall(r"(?:^|&&|\$ )\s*(pip install [^&\n#]+)", text, flags=re.M)]
    return found


def shell_commands(block: Block) -> list[str]:
    """The commands of a shell block: continuation lines joined, blank and comment lines dropped, ``$ ``
    prompts stripped (in a ``console`` block, only prompted lines are commands)."""
    commands: list[str] = []
    pending = ""
    for raw in block.code.splitlines():
        line = raw.rstrip()
        if block.lang == "console" or line.startswith("$ "):
            if not line.startswith("$ ") and not pending:
                continue  # output
            line = line.removeprefix("$ ")
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        commands.append(pending + line.strip() if pending else line)
        pending = ""
    return commands


def syntax_problem(block: Block) -> str | None:
    """A syntax error in the block (Python, top-level ``await`` allowed; shell through ``bash -n``)."""
    if block.lang in PYTHON_LANGS:
        try:
            compile(block.code, block.id, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        except SyntaxError as exc:
            return f"{exc.msg} (line {exc.lineno})"
        return None
    result = subprocess.run(
        ["bash", "-n"], input="\n".join(shell_commands(block)), capture_output=True, text=True, timeout=10
    )
    return result.stderr.strip() or None


# -- running -------------------------------------------------------------------------------------------------


@attrs.frozen
class Outcome:
    """What a command printed and its exit code."""

    command: str
    returncode: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        return (
            f"$ {self.command}\nexit {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"
        )


def run(
    args: list[str] | str, *, env: Mapping[str, str], cwd: Path, stdin: str = "", shell: bool = False
) -> Outcome:
    """Run a command to completion (at most :data:`BLOCK_TIMEOUT` seconds)."""
    result = subprocess.run(
        args,
        env=dict(env),
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
        shell=shell,
        executable="/bin/bash" if shell else None,
    )
    command = args if isinstance(args, str) else shlex.join(args)
    return Outcome(command, result.returncode, result.stdout, result.stderr)


def run_python(block: Block, endpoint: Endpoint, workdir: Path) -> Outcome:
    """Run a Python block in a fresh interpreter against ``endpoint``."""
    source = workdir / "block.py"
    source.write_text(substitute(block.code, endpoint), encoding="utf-8")
    mode = "session" if block.marker("session") else "script"
    return run(
        [sys.executable, "-W", "error", __file__, mode, str(source)],
        env=clean_env(endpoint),
        cwd=workdir,
    )


def pytest_files(block: Block) -> dict[str, str]:
    """A ``pytest`` block split into its files at the ``# name.py`` lines."""
    files: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in block.code.splitlines():
        header = re.fullmatch(r"#\s*([\w/.-]+\.py)\s*", line)
        if header:
            current = files.setdefault(header[1], [])
        elif current is not None:
            current.append(line)
    return {name: "\n".join(lines).strip() + "\n" for name, lines in files.items()}


# pytest-asyncio's own nag about an ini option of its own, which a user's suite sees as one warning.
_LOOP_SCOPE_UNSET = (
    'ignore:The configuration option "asyncio_default_fixture_loop_scope" is unset'
    ":pytest.PytestDeprecationWarning"
)


def run_pytest_block(block: Block, workdir: Path) -> Outcome:
    """Run a ``pytest`` block's files as a user's own suite: no ini, so pytest-asyncio's default strict mode;
    any warning but pytest-asyncio's loop-scope reminder is an error."""
    for name, text in pytest_files(block).items():
        (workdir / name).parent.mkdir(parents=True, exist_ok=True)
        (workdir / name).write_text(text, encoding="utf-8")
    options = ["-q", "-p", "no:cacheprovider", "--rootdir", ".", "-W", "error", "-W", _LOOP_SCOPE_UNSET]
    return run([sys.executable, "-m", "pytest", *options], env=clean_env(), cwd=workdir)


@contextlib.contextmanager
def background(command: str, *, env: Mapping[str, str], cwd: Path) -> Iterator[str]:
    """Start a foreground server command in the background; yield its URL once it prints
    ``listening on URL``; stop it with SIGTERM (as a process manager would) afterwards.

    Raises:
        AssertionError: it exited, or printed no URL within :data:`BLOCK_TIMEOUT` seconds.
    """
    process = subprocess.Popen(
        command,
        shell=True,
        executable="/bin/bash",
        env=dict(env),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    # One thread reads the server's output for as long as it runs: it finds the URL on whichever banner line
    # holds it, and keeps the pipe drained, so a server that logs every request never blocks on a full pipe.
    seen: list[str] = []
    url: list[str] = []
    found = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            seen.append(line)
            match = re.search(r"listening on (http://\S+)", line)
            if match and not url:
                url.append(match[1])
                found.set()
        found.set()  # the output ended: the server exited

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert found.wait(BLOCK_TIMEOUT), (
            f"{command!r} printed no URL within {BLOCK_TIMEOUT:g} s:\n{''.join(seen)}"
        )
        assert url, f"{command!r} exited without printing its URL:\n{''.join(seen)}"
        yield url[0]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 15)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()
        reader.join(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def prepare_workdir(workdir: Path) -> None:
    """Write the input files the docs' commands name."""
    for name in INPUT_FILES:
        (workdir / name).write_text(INPUT_LINES, encoding="utf-8")


# -- inside the block's interpreter (python tests/docs_harness.py MODE FILE) --------------------------------


def check_formatters(namespace: Mapping[str, Any]) -> None:
    """Feed an unexpected body to every formatter class a block defines: the README promises a
    ``ResponseFormatError`` naming the family (``shape_error``), never a ``KeyError`` or ``TypeError``.

    Raises:
        AssertionError: a formatter accepted the unexpected body.
    """
    from azureml_chat import ContentFormatter, ResponseFormatError

    for value in list(namespace.values()):
        if not (isinstance(value, type) and issubclass(value, ContentFormatter)):
            continue
        if value.__module__ != "__main__" or "parse_response" not in vars(value):
            continue
        formatter = value()
        for route in formatter.routes:
            for body in ({"unexpected": "body"}, ["a", "list"], "text"):
                try:
                    formatter.parse_response(route, body)
                except ResponseFormatError:
                    continue
                raise AssertionError(f"{value.__name__}.parse_response accepted {body!r} on {route}")


def _exec_block(mode: str, path: str) -> None:
    source = Path(path).read_text(encoding="utf-8")
    namespace: dict[str, Any] = {"__name__": "__main__", "__file__": path}
    if mode == "script":
        exec(compile(source, path, "exec"), namespace)
        check_formatters(namespace)
        return
    from azureml_chat import AsyncChatClient

    async def session() -> None:
        # What the README's session means: python -m asyncio, with url, key and an open client.
        url, key = os.environ["AZUREML_ENDPOINT_URL"], os.environ["AZUREML_ENDPOINT_API_KEY"]
        async with AsyncChatClient(url, key) as client:
            namespace.update(url=url, key=key, client=client)
            code = compile(source, path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            result = eval(code, namespace)
            if result is not None:
                await result
        check_formatters(namespace)

    asyncio.run(session())


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    _exec_block(sys.argv[1], sys.argv[2])
