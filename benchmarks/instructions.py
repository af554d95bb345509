"""Instructions per call, counted by valgrind's callgrind: a repeatable measure on a noisy shared machine.

Wall and CPU times on a shared 2-core box move by 5-10% between runs; callgrind counts the user-space
instructions a process executes, which are the same run after run for the same code and inputs (the kernel's
share of a call, sockets and epoll, is not counted: it is the same for every client of one server). Each
client runs ``--small`` and then ``--large`` calls at concurrency ``--conc`` under callgrind, and the
difference divided by the difference in calls is its cost per call, start-up and imports cancelled out.

Two loops:

* ``network`` (default): the client against the fake endpoint (``server.py``, pinned to core 0), exactly as
  in ``run.py``'s throughput scenario.
* ``in-process``: ``azureml_chat`` with its transport replaced by one that returns a canned answer, against
  the same work done by hand (``json.dumps`` of the request, ``json.loads`` of the answer): what the
  package's own Python costs, nothing else.

    python3 benchmarks/instructions.py                       # aiohttp, azureml_chat, their /score pair
    python3 benchmarks/instructions.py --loop in-process --sdk-path /tmp/copy
    python3 benchmarks/instructions.py --loop in-process --core  # the core install's stdlib json

Needs valgrind (``apt-get install valgrind``); about 20 s per client and loop.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys

import run

HERE = os.path.dirname(os.path.abspath(__file__))


def count(argv: list[str], env: dict[str, str]) -> int:
    """User-space instructions ``argv`` executed, as callgrind reports them."""
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
        capture_output=True,
        text=True,
        env={**env, "PYTHONHASHSEED": "0"},
        check=False,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return int(found.group(1))


def per_call(drive: list[str], env: dict[str, str], small: int, large: int) -> float:
    # One run outside callgrind first, so both counted runs find the bytecode already compiled and cached.
    subprocess.run([*drive, "1"], env=env, check=True, capture_output=True)
    low = count([*drive, str(small)], env)
    high = count([*drive, str(large)], env)
    return (high - low) / (large - small)


# --- the loops, run inside callgrind ---------------------------------------------------------------------------


async def drive_network(client: str, base_url: str, conc: int, calls: int) -> None:
    import clients

    adapter = clients.create(client)
    assert isinstance(adapter, clients.AsyncAdapter), "only asyncio clients are counted"
    await adapter.open(base_url)
    each, left = divmod(calls, conc)

    async def caller(n: int) -> None:
        for _ in range(n):
            await adapter.chat()

    await asyncio.gather(*(caller(each + (i < left)) for i in range(conc)))
    await adapter.close()


async def drive_in_process(which: str, calls: int) -> None:
    import json

    import payloads
    from multidict import CIMultiDict, CIMultiDictProxy

    from azureml_chat import AsyncChatClient, _transport

    answer = payloads.chat_completion(payloads.ANSWER_TOKENS)
    body = answer.encode() if isinstance(answer, str) else answer
    headers = CIMultiDictProxy(CIMultiDict({"content-type": "application/json", "x-request-id": "r"}))
    messages, tokens, model = payloads.MESSAGES, payloads.ANSWER_TOKENS, payloads.MODEL
    client = AsyncChatClient("http://127.0.0.1:1/v1/chat/completions", api_key="k")

    async def canned(url: object, data: bytes, sent: object, timeout: object) -> _transport.RawResponse:
        return _transport.RawResponse(200, headers, body)

    async def by_hand(data: bytes) -> bytes:
        return body

    client._transport.post = canned  # type: ignore[method-assign]
    expected = payloads.expected_content(tokens)
    for _ in range(calls):
        if which == "azureml_chat":
            response = await client.chat(messages, max_tokens=tokens, model=model)
            text = response.content
        else:
            request = {"model": model, "messages": messages, "max_tokens": tokens}
            parsed = json.loads(await by_hand(json.dumps(request).encode()))
            text = parsed["choices"][0]["message"]["content"]
        assert text == expected
    await client.aclose()


# --- the command ---------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=("network", "in-process"), default="network")
    parser.add_argument("--clients", default="aiohttp,azureml_chat,aiohttp_score,azureml_chat_score")
    parser.add_argument("--sdk-path", default=run.REPO)
    parser.add_argument("--conc", type=int, default=64)
    parser.add_argument("--small", type=int, default=1024)
    parser.add_argument("--large", type=int, default=3072)
    parser.add_argument(
        "--core", action="store_true", help="block orjson, as on the core install (stdlib json only)"
    )
    parser.add_argument("--drive", nargs="+", help=argparse.SUPPRESS)  # internal: one loop, under callgrind
    args = parser.parse_args()
    if args.drive:
        if os.environ.get(run.BLOCK_ORJSON):
            sys.modules["orjson"] = None  # type: ignore[assignment]
        sys.path.insert(0, args.sdk_path)
        kind, *rest = args.drive
        if kind == "network":
            client, base_url, calls = rest
            asyncio.run(drive_network(client, base_url, args.conc, int(calls)))
        else:
            which, calls = rest
            asyncio.run(drive_in_process(which, int(calls)))
        return
    run.ensure_venv()
    env = run.worker_env(args.sdk_path)
    if args.core:
        env[run.BLOCK_ORJSON] = "1"
    me = [sys.executable, os.path.abspath(__file__), "--sdk-path", args.sdk_path, "--conc", str(args.conc)]
    results: dict[str, float] = {}
    if args.loop == "in-process":
        for which in ("by_hand", "azureml_chat"):
            results[which] = per_call([*me, "--drive", "in-process", which], env, args.small, args.large)
        reference = "by_hand"
    else:
        server, base_url = run.start_server()
        try:
            for client in args.clients.split(","):
                drive = [*me, "--drive", "network", client, base_url]
                results[client] = per_call(drive, env, args.small, args.large)
        finally:
            server.terminate()
            server.wait()
        reference = "aiohttp"
    codec = "stdlib json (orjson blocked)" if args.core else "orjson if installed"
    print(f"instructions per call ({args.loop}, c={args.conc}; {args.sdk_path}; {codec}):")
    for name, value in results.items():
        base = results.get("aiohttp_score" if name.endswith("_score") else reference)
        ratio = f"  {value / base:.3f}x" if base else ""
        print(f"  {name:22s} {value:12,.0f}{ratio}")


if __name__ == "__main__":
    main()
