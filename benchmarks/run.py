"""The whole benchmark in one command: ``python3 benchmarks/run.py``.

1. Creates ``benchmarks/.venv`` from ``requirements.txt`` on first use (or when it changed) and re-runs itself
   there, so the peers never touch the project's own venv.
2. Starts the fake endpoint (``server.py``) pinned to core 0; everything measured runs pinned to core 1.
3. Measures the endpoint's ceiling with ``wrk`` (``ceiling.py``).
4. Runs every client ``--reps`` times, each run in a fresh worker process (``worker.py``), the client order
   rotated each rep, after waiting (briefly) for other tenants' load to settle.
5. Times the imports (``imports.py``) and profiles our client and raw aiohttp with the same codec at c=64
   (``profiling.py``).
6. Writes ``results/raw.json`` and ``results/tables.md`` and prints the tables (``report.py``).

azureml_chat is imported from the source tree (``--sdk-path``, default: this repository), so a scratch copy
with a candidate fix can be measured with ``--sdk-path /tmp/copy``.

Like with like: our clients are compared with raw aiohttp using the same JSON codec as the measured package
(``aiohttp_orjson`` when it uses orjson, ``aiohttp`` with the stdlib for the core install), on the same route;
the references a run needs are added to ``--clients`` when missing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
VENV = os.path.join(HERE, ".venv")
VENV_PYTHON = os.path.join(VENV, "bin", "python")
REQUIREMENTS = os.path.join(HERE, "requirements.txt")
SERVER_CPU, CLIENT_CPU = 0, 1
CANDIDATE = "@candidate"
CORE = "core"
# Set for a worker that must not import orjson (worker.py reads it first thing): the core install's codec.
BLOCK_ORJSON = "AZUREML_CHAT_BENCH_BLOCK_ORJSON"
_VERSIONS = (
    "aiohttp",
    "yarl",
    "multidict",
    "attrs",
    "cattrs",
    "tenacity",
    "openai",
    "httpx",
    "httpx2",
    "azure-ai-inference",
    "azure-core",
    "langchain-community",
    "langchain-core",
    "langsmith",
    "pydantic",
    "orjson",
    "uvloop",
    "py-spy",
)


def ensure_venv() -> None:
    """Re-exec inside ``benchmarks/.venv``, creating or updating it first when needed."""
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        return
    if sys.version_info < (3, 11):  # noqa: UP036 (runs under whatever `python3` the reader has)
        raise SystemExit("the benchmark needs Python 3.11+, like azureml_chat")
    with open(REQUIREMENTS, "rb") as f:
        wanted = hashlib.sha256(f.read()).hexdigest()
    stamp = os.path.join(VENV, "requirements.sha256")
    current = ""
    if os.path.exists(stamp):
        with open(stamp) as f:
            current = f.read().strip()
    if not os.path.exists(VENV_PYTHON) or current != wanted:
        print(f"creating {VENV} from requirements.txt ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run(
            [
                VENV_PYTHON,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
                REQUIREMENTS,
            ],
            check=True,
        )
        with open(stamp, "w") as f:
            f.write(wanted)
    os.execv(VENV_PYTHON, [VENV_PYTHON, os.path.abspath(sys.argv[0]), *sys.argv[1:]])


def parse_args() -> argparse.Namespace:
    import clients

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--clients", default=",".join(clients.ADAPTERS), help="comma-separated; default: all")
    parser.add_argument(
        "--sdk-path", default=REPO, help="directory holding the azureml_chat package to measure"
    )
    parser.add_argument(
        "--candidate",
        default=CORE,
        metavar="DIR",
        help="also measure the azureml_chat package in DIR (a scratch copy with a fix) as extra clients "
        "azureml_chat@candidate and azureml_chat_sync@candidate, in the same reps; 'core' (the default): "
        "the same package with orjson blocked, i.e. the core install's stdlib json; 'none': no candidate",
    )
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--window", type=float, default=1.5, help="measured seconds per throughput level")
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--import-runs", type=int, default=5, help="timed imports per target per rep")
    parser.add_argument("--patience", type=float, default=8.0, help="max seconds to wait for a quiet machine")
    parser.add_argument("--skip", default="", help="comma-separated: ceiling, imports, profile")
    parser.add_argument(
        "--quick", action="store_true", help="1 rep, short windows: a smoke test, not a result"
    )
    return parser.parse_args()


def candidate_env(args: argparse.Namespace) -> dict[str, str]:
    """The environment of a candidate worker: another package path, or this one without orjson."""
    if args.candidate == CORE:
        return {**worker_env(args.sdk_path), BLOCK_ORJSON: "1"}
    return worker_env(args.candidate)


def worker_env(sdk_path: str) -> dict[str, str]:
    env = dict(os.environ)
    # Bytecode on, but cached inside the venv: nothing is written into the source tree.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = os.path.join(VENV, "pycache")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.path.abspath(sdk_path), env.get("PYTHONPATH")) if p)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def start_server() -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen(
        [VENV_PYTHON, os.path.join(HERE, "server.py"), "--cpu", str(SERVER_CPU)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    line = server.stdout.readline()
    if not line.startswith("READY"):
        server.kill()
        raise SystemExit(f"the fake endpoint did not start: {line!r}")
    return server, f"http://127.0.0.1:{int(line.split()[1])}"


def stop(process: subprocess.Popen[Any]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_worker(
    client: str, base_url: str, server_pid: int, env: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    if client.endswith(CANDIDATE):
        client, env = client.removesuffix(CANDIDATE), candidate_env(args)
    command = [
        VENV_PYTHON,
        os.path.join(HERE, "worker.py"),
        f"--client={client}",
        f"--base-url={base_url}",
        f"--server-pid={server_pid}",
        f"--cpu={CLIENT_CPU}",
        f"--window={args.window}",
        f"--warmup={args.warmup}",
    ]
    if args.quick:
        command += ["--seq-seconds=0.5", "--stream-seconds=0.5", "--seq-warmup=20"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    except subprocess.TimeoutExpired:
        return {"error": "timed out after 300 s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("RESULT "):
            return {"result": json.loads(line[len("RESULT ") :])}
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    return {"error": f"exit {done.returncode}: {' | '.join(tail)}"}


def versions() -> dict[str, str]:
    from importlib import metadata

    found = {}
    for name in _VERSIONS:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def sdk_info(env: dict[str, str]) -> dict[str, str]:
    code = (
        "import os, sys\n"
        f"if os.environ.get({BLOCK_ORJSON!r}): sys.modules['orjson'] = None\n"
        "import azureml_chat, azureml_chat._codec as codec\n"
        "print(azureml_chat.__version__, os.path.dirname(azureml_chat.__file__), codec.orjson and 'orjson' or 'stdlib')"
    )
    out = subprocess.run([VENV_PYTHON, "-c", code], capture_output=True, text=True, env=env, check=True)
    version, path, codec = out.stdout.split()
    return {"version": version, "path": path, "codec": codec}


def with_references(names: list[str], codec: str, candidate_codec: str | None) -> list[str]:
    """``names`` plus the raw-aiohttp references its own clients are compared with (same route, same codec)."""
    import clients

    needed = []
    for name in names:
        base, _, tag = name.partition("@")
        if base in clients.OURS:
            needed.append(clients.reference(base, candidate_codec if tag and candidate_codec else codec))
        elif base in clients.ADAPTERS:
            needed.append(clients.reference(base))
    return names + [n for n in dict.fromkeys(needed) if n not in names]


def main() -> None:
    ensure_venv()
    sys.path.insert(0, HERE)
    import ceiling
    import clients
    import imports
    import machine
    import profiling
    import report

    args = parse_args()
    if args.quick:
        args.reps, args.window, args.warmup, args.import_runs = 1, 0.5, 0.2, 1
    skip = set(filter(None, args.skip.split(",")))
    names = [c.strip() for c in args.clients.split(",") if c.strip()]
    if args.candidate == "none":
        args.candidate = None
    if args.candidate:
        names += [c + CANDIDATE for c in ("azureml_chat", "azureml_chat_sync") if c in names]
    os.makedirs(args.out, exist_ok=True)
    env = worker_env(args.sdk_path)
    sdk, candidate = sdk_info(env), sdk_info(candidate_env(args)) if args.candidate else None
    names = with_references(names, sdk["codec"], candidate["codec"] if candidate else None)
    started = time.monotonic()
    raw: dict[str, Any] = {
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(["python3", "benchmarks/run.py", *sys.argv[1:]]),
        "reps": args.reps,
        "machine": machine.describe(),
        "versions": versions(),
        "sdk": sdk,
        "candidate": candidate,
        "settings": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "runs": [],
    }
    machine.pin(SERVER_CPU)  # this process only waits; keep it off the client core
    server, base_url = start_server()
    try:
        if "ceiling" not in skip:
            print("server ceiling (wrk) ...", flush=True)
            raw["ceiling"] = ceiling.run(base_url, cpu=CLIENT_CPU, seconds=1.0 if args.quick else 3.0)
        for rep in range(args.reps):
            order = names[rep % len(names) :] + names[: rep % len(names)]
            for client in order:
                quiet = machine.wait_until_quiet([server.pid], patience=args.patience)
                outcome = run_worker(client, base_url, server.pid, env, args)
                raw["runs"].append({"rep": rep, "client": client, "foreign_load_before": quiet, **outcome})
                status = "ok" if "result" in outcome else outcome["error"]
                print(
                    f"rep {rep + 1}/{args.reps} {client:<20} {status}  [{time.monotonic() - started:.0f} s]",
                    flush=True,
                )
        if "imports" not in skip:
            print("import times ...", flush=True)
            raw["imports"] = imports.run(
                VENV_PYTHON, env, cpu=CLIENT_CPU, reps=args.reps, runs=args.import_runs
            )
        if "profile" not in skip:
            raw["profiles"] = {}
            os.makedirs(os.path.join(args.out, "profiles"), exist_ok=True)
            for client in ("azureml_chat", clients.reference("azureml_chat", sdk["codec"])):
                print(f"profiling {client} at c=64 ...", flush=True)
                worker_args = [
                    f"--client={client}",
                    f"--base-url={base_url}",
                    f"--server-pid={server.pid}",
                    f"--cpu={CLIENT_CPU}",
                ]
                out_path = os.path.join(args.out, "profiles", f"{client}-c64.txt")
                raw["profiles"][client] = profiling.run(
                    VENV_PYTHON,
                    worker_args,
                    env,
                    out_path=out_path,
                    spy_cpu=SERVER_CPU,
                    seconds=2.0 if args.quick else 4.0,
                )
    finally:
        stop(server)
    raw["wall_s"] = time.monotonic() - started
    with open(os.path.join(args.out, "raw.json"), "w") as f:
        json.dump(raw, f, indent=1)
    tables = report.render(raw)
    with open(os.path.join(args.out, "tables.md"), "w") as f:
        f.write(tables)
    print(tables)
    print(f"wall time {raw['wall_s']:.0f} s; results in {args.out}/raw.json and tables.md")


if __name__ == "__main__":
    main()
