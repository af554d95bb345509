"""Instructions per call, counted by valgrind's callgrind: a repeatable measure on a noisy shared machine.

Wall and CPU times on a shared 2-core box move by 5-10% between runs; callgrind counts the user-space
instructions a process executes, which are the same run after run for the same code and inputs (the kernel's
share of a call, sockets and epoll, is not counted: it is the same for every client of one server). Each
client runs ``--small`` and then ``--large`` calls at concurrency ``--conc`` under callgrind, and the
difference divided by the difference in calls is its cost per call, start-up and imports cancelled out.

Like with like: the reference always uses the same JSON codec as the measured package. With orjson (the
``fast`` extra, the default in the benchmark venv) ours is compared with raw aiohttp + orjson; with ``--core``
(orjson blocked, the core install) with raw aiohttp + the stdlib ``json``. The codec is read from the package
itself (``azureml_chat._codec``), not assumed.

Two loops:

* ``network`` (default): the client against the fake endpoint (``server.py``, pinned to core 0), exactly as
  in ``run.py``'s throughput scenario; the chat-completions pair and the ``/score`` pair. With ``--stream``:
  instructions per chunk of a 256-chunk stream read one at a time, ours against raw aiohttp parsing the same
  SSE with the same codec.
* ``in-process``: ``azureml_chat`` with a transport (``transport=``) that returns one prebuilt ``Response``,
  against the same work done by hand (encode the request, decode the answer, with the same codec): what the
  package's own Python costs, nothing else. Chat completions and ``/score``.

``--pool`` counts the cost of routing (issue 16): ``azureml_chat_pool3``, the same client over three endpoints
(``endpoints=[Endpoint(...) x 3]``, weights 1:1:1, one priority, all healthy), beside the single-endpoint
``azureml_chat``, and gives the pool's ratio to the single client. In the in-process loop the three endpoints
are three URLs answered by the same canned transport; in the network loop, three chat-completions paths of
the one fake endpoint (one connection pool, as for the single client).

    python3 benchmarks/instructions.py                        # network: chat completions and /score, orjson
    python3 benchmarks/instructions.py --core                 # the same with the stdlib json on both sides
    python3 benchmarks/instructions.py --stream               # per chunk of a stream
    python3 benchmarks/instructions.py --loop in-process --sdk-path /tmp/copy
    python3 benchmarks/instructions.py --loop in-process --pool   # a pool of three vs one endpoint
    python3 benchmarks/instructions.py --compare /tmp/before  # the before/after table (benchmarks/compare.sh)

Needs valgrind (``apt-get install valgrind``); about 20 s per client and loop.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import re
import subprocess
import sys
from typing import Any

import run

HERE = os.path.dirname(os.path.abspath(__file__))
STREAMS = (16, 48)  # --small / --large for --stream: 8,192 chunks counted
POOL = "azureml_chat_pool3"  # --pool: the client over three endpoints, compared with the single-endpoint one
POOL_PATHS = ("/v1/chat/completions", "/chat/completions", "/models/chat/completions")


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


def per_unit(drive: list[str], env: dict[str, str], small: int, large: int, unit: int = 1) -> float:
    """Instructions per call (per chunk with ``unit`` chunks per stream) of ``drive``."""
    # One run outside callgrind first, so both counted runs find the bytecode already compiled and cached.
    subprocess.run([*drive, "1"], env=env, check=True, capture_output=True)
    low = count([*drive, str(small)], env)
    high = count([*drive, str(large)], env)
    return (high - low) / ((large - small) * unit)


# --- the loops, run inside callgrind ---------------------------------------------------------------------------


def pool_endpoints(base_urls: list[str]) -> list[Any]:
    """The pool of ``--pool``: three endpoints of equal weight and priority, named ``a``, ``b``, ``c``."""
    from azureml_chat import Endpoint

    return [Endpoint(url, "bench-key", name=name) for url, name in zip(base_urls, "abc", strict=True)]


def create_adapter(client: str) -> Any:
    """The benchmark's adapter called ``client``, or for ``--pool`` ours over three endpoints."""
    import clients

    if client != POOL:
        return clients.create(client)

    class OurPool(clients.OurAsync):  # type: ignore[misc]
        name = POOL

        async def open(self, base_url: str) -> None:
            from azureml_chat import AsyncChatClient

            self._client = AsyncChatClient(endpoints=pool_endpoints([base_url + p for p in POOL_PATHS]))

    return OurPool()


async def drive_network(client: str, base_url: str, conc: int, calls: int) -> None:
    import clients

    adapter = create_adapter(client)
    assert isinstance(adapter, clients.AsyncAdapter), "only asyncio clients are counted"
    await adapter.open(base_url)
    each, left = divmod(calls, conc)
    expected = _expected()

    async def caller(n: int) -> None:
        for _ in range(n):
            assert await adapter.chat() == expected

    await asyncio.gather(*(caller(each + (i < left)) for i in range(conc)))
    await adapter.close()


async def drive_stream(client: str, base_url: str, streams: int) -> None:
    import clients
    import payloads

    adapter = clients.create(client)
    assert isinstance(adapter, clients.AsyncAdapter), "only asyncio clients are counted"
    assert adapter.streams, f"{client} does not stream"
    await adapter.open(base_url)
    expected = payloads.expected_content(payloads.STREAM_TOKENS)
    for _ in range(streams):
        chunks, _first, text = await adapter.stream()
        assert chunks == payloads.STREAM_TOKENS, chunks
        assert text == expected, text[:40]
    await adapter.close()


class CannedTransport:
    """A transport (the protocol of ``azureml_chat._transport``) answering every request with one prebuilt
    ``Response``: the client's own work is all that is left to count."""

    def __init__(self, response: Any) -> None:
        self._response = response

    async def send(self, request: Any) -> Any:
        return self._response

    async def open(self, request: Any) -> Any:
        raise NotImplementedError("the in-process loop makes no streaming calls")

    async def aclose(self) -> None:
        pass


async def drive_in_process(which: str, calls: int) -> None:
    import payloads
    from multidict import CIMultiDict, CIMultiDictProxy

    from azureml_chat import AsyncChatClient, _codec, _transport

    score = which.endswith("_score")
    tokens, model = payloads.ANSWER_TOKENS, payloads.MODEL
    body = payloads.score_output(tokens) if score else payloads.chat_completion(tokens)
    url = "http://127.0.0.1:1" + ("/score" if score else "/v1/chat/completions")
    # What aiohttp hands the transport: a read-only case-insensitive multidict.
    headers = CIMultiDictProxy(CIMultiDict({"content-type": "application/json", "x-request-id": "r"}))
    messages = payloads.MESSAGES
    expected = payloads.expected_content(tokens)
    if which == POOL:
        urls = [f"http://127.0.0.1:{port}/v1/chat/completions" for port in (1, 2, 3)]
        client = AsyncChatClient(
            endpoints=pool_endpoints(urls), transport=CannedTransport(_transport.Response(200, headers, body))
        )
    elif hasattr(_transport, "Response"):
        client = AsyncChatClient(
            url, api_key="k", transport=CannedTransport(_transport.Response(200, headers, body))
        )
    else:
        client = _pre_rebuild_client(AsyncChatClient, _transport, url, headers, body)
    # The same codec as the package (orjson unless blocked), written out in place.
    orjson = _codec.orjson

    async def by_hand(data: bytes) -> bytes:
        return body

    for _ in range(calls):
        if which in ("azureml_chat", POOL):
            text = (await client.chat(messages, max_tokens=tokens, model=model)).content
        elif which == "azureml_chat_score":
            text = (await client.chat(messages, max_tokens=tokens)).content
        else:
            if score:
                request: dict[str, Any] = payloads.score_request(tokens)
            else:
                request = {"model": model, "messages": messages, "max_tokens": tokens}
            if orjson is not None:
                parsed = orjson.loads(await by_hand(orjson.dumps(request)))
            else:
                parsed = json.loads(await by_hand(json.dumps(request).encode()))
            text = parsed["output"] if score else parsed["choices"][0]["message"]["content"]
        assert text == expected, text
    await client.aclose()


def _pre_rebuild_client(cls: Any, transport_module: Any, url: str, headers: Any, body: bytes) -> Any:
    """The same canned answer for the code before the rebuild (commit 13a37b0 and earlier), which had no
    ``transport=`` seam: its internal transport's ``post`` is replaced. Only for ``--sdk-path`` to old code,
    so that before/after tables can be regenerated; the current package never takes this path."""
    client = cls(url, api_key="k")
    answer = transport_module.RawResponse(200, headers, body)

    async def canned(url: object, data: bytes, sent: object, timeout: object) -> Any:
        return answer

    client._transport.post = canned
    return client


def _expected() -> str:
    import payloads

    return payloads.expected_content(payloads.ANSWER_TOKENS)


# --- the command ---------------------------------------------------------------------------------------------------


def references(codec: str) -> tuple[str, str]:
    """The raw-aiohttp references (chat completions, ``/score``) for a package using ``codec``."""
    import clients

    return clients.reference("azureml_chat", codec), clients.reference("azureml_chat_score", codec)


def measure(args: argparse.Namespace, sdk_path: str, core: bool, loop: str, stream: bool) -> dict[str, Any]:
    """Count one table: every client of ``loop`` against its same-codec reference."""
    env = run.worker_env(sdk_path)
    if core:
        env[run.BLOCK_ORJSON] = "1"
    info = run.sdk_info(env)
    codec = info["codec"]
    ref_chat, ref_score = references(codec)
    me = [sys.executable, os.path.abspath(__file__), "--sdk-path", sdk_path, "--conc", str(args.conc)]
    results: dict[str, float] = {}
    refs: dict[str, str] = {}
    if loop == "in-process":
        plan: tuple[tuple[str, str | None], ...] = (
            ("by_hand", None),
            ("azureml_chat", "by_hand"),
            ("by_hand_score", None),
            ("azureml_chat_score", "by_hand_score"),
        )
        if args.pool:
            plan = (("by_hand", None), ("azureml_chat", "by_hand"), (POOL, "azureml_chat"))
        for which, ref in plan:
            drive = [*me, "--drive", "in-process", which]
            results[which] = per_unit(drive, env, args.small or 1024, args.large or 3072)
            if ref:
                refs[which] = ref
    else:
        if args.clients:
            names = [c.strip() for c in args.clients.split(",") if c.strip()]
        elif args.pool:
            names = [ref_chat, "azureml_chat", POOL]
        elif stream:
            names = [ref_chat, "azureml_chat"]
        else:
            names = [ref_chat, "azureml_chat", ref_score, "azureml_chat_score"]
        server, base_url = run.start_server()
        try:
            for client in names:
                if stream:
                    import payloads

                    drive = [*me, "--drive", "stream", client, base_url]
                    small, large = args.small or STREAMS[0], args.large or STREAMS[1]
                    results[client] = per_unit(drive, env, small, large, payloads.STREAM_TOKENS)
                else:
                    drive = [*me, "--drive", "network", client, base_url]
                    results[client] = per_unit(drive, env, args.small or 1024, args.large or 3072)
        finally:
            run.stop(server)
        import clients

        for client in names:
            ref = "azureml_chat" if client == POOL else clients.reference(client, codec)
            if ref != client and ref in results:
                refs[client] = ref
    return {
        "loop": loop,
        "unit": "chunk" if stream else "call",
        "sdk_path": sdk_path,
        "version": info["version"],
        "commit": _commit(sdk_path),
        "codec": codec,
        "conc": 1 if stream else args.conc,
        "results": results,
        "references": refs,
    }


def show(table: dict[str, Any]) -> str:
    codec = "orjson" if table["codec"] == "orjson" else "stdlib json (orjson blocked)"
    where = table["sdk_path"] + (f" @ {table['commit']}" if table["commit"] else "")
    lines = [
        f"instructions per {table['unit']} ({table['loop']}, c={table['conc']}; {where}; {codec} on both sides):"
    ]
    results, refs = table["results"], table["references"]
    for name, value in results.items():
        ref = refs.get(name)
        ratio = f"  {value / results[ref]:.3f}x {ref}" if ref else "  (reference)"
        lines.append(f"  {name:22s} {value:12,.0f}{ratio}")
    return "\n".join(lines)


def _commit(path: str) -> str:
    """The commit of the package at ``path``: from ``.bench-commit`` in an export made by ``compare.sh``, else
    from git (read-only; " + uncommitted changes" when the package differs from it)."""
    marker = os.path.join(path, ".bench-commit")
    if os.path.exists(marker):
        with open(marker) as f:
            return f.read().strip()
    git = ["git", "--no-optional-locks", "-C", path]
    done = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return ""
    dirty = subprocess.run([*git, "diff", "--quiet", "HEAD", "--", "azureml_chat"], check=False)
    return done.stdout.strip() + (" + uncommitted changes" if dirty.returncode else "")


def compare(args: argparse.Namespace) -> None:
    """Before (``--compare DIR``) and after (``--sdk-path``): every loop, both codecs, one markdown table."""
    sides = {"before": args.compare, "after": args.sdk_path}
    tables: list[dict[str, Any]] = []
    plan = [("network", False), ("in-process", False)] + ([("network", True)] if not args.no_stream else [])
    for loop, stream in plan:
        for core in (False, True):
            for side, path in sides.items():
                print(
                    f"counting {side}: {loop}{' --stream' if stream else ''}{' --core' if core else ''} ..."
                )
                table = measure(args, path, core, loop, stream)
                table["side"] = side
                print(show(table), flush=True)
                tables.append(table)
    text = compare_markdown(tables, args)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
        with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
            json.dump(tables, f, indent=1)


def compare_markdown(tables: list[dict[str, Any]], args: argparse.Namespace) -> str:
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    commits = {t["side"]: f"`{t['commit'] or t['sdk_path']}`" for t in tables}
    out = [
        f"Counted {when} by `python3 benchmarks/instructions.py --compare {args.compare}` "
        f"(before: {commits.get('before')} from `{args.compare}`; after: {commits.get('after')} from "
        f"`{args.sdk_path}`). Network loop at c={args.conc}, {args.small or 1024} and {args.large or 3072} calls; "
        f"streams one at a time, {STREAMS[0]} and {STREAMS[1]} streams of 256 chunks; in-process loop "
        f"{args.small or 1024} and {args.large or 3072} calls.",
        "",
        "| loop | codec (both sides) | ours vs reference | before: ours | before: reference | before ratio "
        "| after: ours | after: reference | after ratio |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    keyed: dict[tuple[str, str, str], dict[str, Any]] = {}
    for t in tables:
        keyed[(t["loop"] + (" per chunk" if t["unit"] == "chunk" else ""), t["codec"], t["side"])] = t
    for (loop, codec, side), table in keyed.items():
        if side != "before":
            continue
        after = keyed.get((loop, codec, "after"), {"results": {}, "references": {}})
        for name, ref in table["references"].items():
            b, br = table["results"][name], table["results"][ref]
            a, ar = after["results"].get(name), after["results"].get(after["references"].get(name, ref))
            label = "stdlib json" if codec == "stdlib" else "orjson"
            after_cells = f"{a:,.0f} | {ar:,.0f} | **{a / ar:.3f}x**" if a and ar else "n/a | n/a | n/a"
            out.append(
                f"| {loop} | {label} | `{name}` vs `{ref}` | {b:,.0f} | {br:,.0f} | {b / br:.3f}x | {after_cells} |"
            )
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=("network", "in-process"), default="network")
    parser.add_argument(
        "--clients",
        default="",
        help="network loop: comma-separated clients (default: the chat-completions and /score pairs, each "
        "with the raw-aiohttp reference of the package's codec)",
    )
    parser.add_argument("--sdk-path", default=run.REPO)
    parser.add_argument("--conc", type=int, default=64)
    parser.add_argument(
        "--small", type=int, default=0, help="calls (streams) in the smaller run; default 1024 (16)"
    )
    parser.add_argument(
        "--large", type=int, default=0, help="calls (streams) in the larger run; default 3072 (48)"
    )
    parser.add_argument(
        "--core", action="store_true", help="block orjson on both sides: the core install's stdlib json"
    )
    parser.add_argument(
        "--stream",
        action="store_true",
        help="network loop: instructions per chunk of a stream instead of per call",
    )
    parser.add_argument(
        "--compare",
        metavar="BEFORE_DIR",
        help="count everything (network, in-process, streams; orjson and --core) for the package in BEFORE_DIR "
        "and for --sdk-path, and print one before/after markdown table",
    )
    parser.add_argument(
        "--no-stream", action="store_true", help="with --compare: leave the stream counts out"
    )
    parser.add_argument(
        "--pool",
        action="store_true",
        help=f"count {POOL} (one client over three endpoints) beside the single-endpoint azureml_chat, and "
        "give its ratio to it (network and in-process loops)",
    )
    parser.add_argument("--out", help="with --compare: also write the table here (and the counts as .json)")
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
        elif kind == "stream":
            client, base_url, streams = rest
            asyncio.run(drive_stream(client, base_url, int(streams)))
        else:
            which, calls = rest
            asyncio.run(drive_in_process(which, int(calls)))
        return
    run.ensure_venv()
    sys.path.insert(0, HERE)
    if args.compare:
        compare(args)
        return
    if args.stream and args.loop != "network":
        raise SystemExit("--stream counts the network loop")
    if args.pool and args.stream:
        raise SystemExit("--pool counts calls, not stream chunks")
    print(show(measure(args, args.sdk_path, args.core, args.loop, args.stream)))


if __name__ == "__main__":
    main()
