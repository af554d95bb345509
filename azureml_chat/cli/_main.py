"""The command line's parser and its ``demo``, ``emulator`` and ``chat`` commands (``batch`` is in ``_batch``).

Exit codes and the one-line error rule are in the package's docstring (:mod:`azureml_chat.cli`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO

from .. import __version__
from .._client import AsyncChatClient
from .._errors import AzureMLChatError
from .._messages import AssistantMessage, Message, SystemMessage, UserMessage
from ..formatters import available_formatters
from ._batch import add_parser as add_batch_parser
from ._batch import main as run_batch
from ._jsonl import summary
from ._options import (
    UsageError,
    add_endpoint_options,
    add_sampling_options,
    add_timeout_option,
    make_client,
    sampling_params,
)
from ._tracing import add_trace_option, trace_to
from ._types import family, port, whole

__all__ = ["main"]

DEMO_SYSTEM = "You are the azureml-chat demo assistant. Be brief."
DEMO_TURNS = ("Hi! What is this?", "How do I point it at my own endpoint?")
DEMO_REPLIES = [
    "Hi! You are talking to the azureml-chat emulator: a real local server that speaks the Azure ML "
    "/score and OpenAI-compatible dialects, so this demo needs no Azure account.",
    "Pass your scoring URL and key: AsyncChatClient(endpoint_url, api_key), or set AZUREML_ENDPOINT_URL "
    "and AZUREML_ENDPOINT_API_KEY and run `azureml-chat chat`.",
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: the mistake and where to look.
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="azureml-chat", description="Chat with Azure ML online endpoints, or with a local emulator."
    )
    parser.add_argument("--version", action="version", version=f"azureml-chat {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("demo", help="run a streamed conversation against an embedded emulator")

    emulator = commands.add_parser(
        "emulator",
        help="serve the emulator until Ctrl-C",
        description="Serve a local Azure ML online endpoint until Ctrl-C: /score, the chat and text "
        "completions routes, GET /info. Like Azure, the model-inference routes (/chat/completions, "
        "/models/chat/completions, /completions, /models/completions) answer 400 without "
        "?api-version=YYYY-MM-DD[-preview] and to body fields outside Azure's schema (n, stream_options, "
        "logprobs, ...) unless the request sends 'extra-parameters: pass-through' (or 'drop'); the /v1/... "
        "routes take vLLM-style extras. Every answer of the chat, text and /score routes carries "
        "x-ratelimit-{limit,remaining,reset}-{requests,tokens} (resets in whole seconds); without --quota "
        "they count against a limit no load reaches (a billion requests a minute), so they never make a "
        "client wait. Usage objects carry prompt_tokens_details.cached_tokens (the leading messages an "
        "earlier request began with) and completion_tokens_details.reasoning_tokens; n > 1 answers n "
        "distinct choices.",
    )
    emulator.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    emulator.add_argument(
        "--port",
        type=port,
        default=8000,
        help="port (default: 8000; 0 picks a free one); several instances use PORT, PORT+1, ...",
    )
    emulator.add_argument(
        "--instances",
        type=whole(1),
        default=1,
        metavar="N",
        help="serve N independent emulators, each with its own port, faults, quota and request log (default: 1)",
    )
    emulator.add_argument(
        "--key", default="emulator-key", help="the key clients must send (default: emulator-key)"
    )
    emulator.add_argument(
        "--family",
        type=family,
        default="llama",
        help=f"the /score family: {', '.join(available_formatters())} (default: llama)",
    )
    emulator.add_argument(
        "--fault",
        action="append",
        type=_fault,
        default=[],
        metavar="SPEC",
        help="inject a fault, e.g. 'status=503,times=2' or 'latency=0.5'; repeatable. With --instances, "
        "'2:status=503' is for instance 2 only (numbered from 1); a fault without 'N:' is for every instance",
    )

    emulator.add_argument(
        "--quota",
        type=_quota,
        metavar="SPEC",
        help="a rate quota per instance, e.g. 'requests=60,tokens=20000,window=60,retry_after=no': at most "
        "N requests and N tokens (usage totals) per fixed window of SECONDS (fractions allowed) that opens at "
        "the first request; past it, 429s with Retry-After and retry-after-ms (retry_after=no: only the "
        "x-ratelimit reset headers, as Azure's token-quota 429s). Default: no quota",
    )
    emulator.add_argument(
        "--reasoning",
        choices=("think", "field"),
        help="answer chat as a reasoning model: 'think' starts content with <think>...</think> (as DeepSeek-R1 "
        "on Azure; the tags split across stream chunks), 'field' sends reasoning_content (as vLLM); usage "
        "reports reasoning_tokens",
    )

    chat = commands.add_parser("chat", help="one prompt (streamed), or an interactive session with no prompt")
    chat.add_argument("prompt", nargs="?", help="the prompt; omit for an interactive session")
    add_endpoint_options(chat)
    chat.add_argument("--system", help="a system message to start with")
    add_sampling_options(chat)
    add_timeout_option(chat)
    add_trace_option(chat)
    chat.add_argument("--no-stream", action="store_true", help="wait for the whole answer")
    chat.add_argument("--json", action="store_true", help="print one JSON object per answer")

    add_batch_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if getattr(args, "trace", False):
            trace_to(sys.stderr)
        if args.command == "demo":
            return asyncio.run(_demo(sys.stdout))
        if args.command == "emulator":
            return _serve(args)
        if args.command == "batch":
            return run_batch(args)
        return asyncio.run(_chat(args, sys.stdin, sys.stdout))
    except UsageError as exc:
        print(f"azureml-chat: error: {exc} (see azureml-chat {args.command} --help)", file=sys.stderr)
        return 2
    except AzureMLChatError as exc:
        print(f"azureml-chat: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


async def _stream_turn(
    client: AsyncChatClient,
    history: list[Message],
    out: TextIO,
    *,
    stream: bool,
    as_json: bool,
    details: bool = False,
    **params: Any,
) -> None:
    """Ask for the next answer, print it (a reasoning model's reasoning first, marked as such), and append it to
    ``history``."""
    if stream:
        shown = _Shown(out)
        async with client.stream(history, **params) as answer:
            async for chunk in answer:
                if not as_json:
                    shown.write(chunk.reasoning, chunk.content)
        response = answer.final_response()
    else:
        response = await client.chat(history, **params)
        if not as_json:
            _Shown(out).write(response.reasoning, response.content)
    if as_json:
        out.write(json.dumps(summary(response)))
    out.write("\n")
    if details:
        usage = response.usage
        tokens = (
            f", {usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens" if usage else ""
        )
        out.write(f"  [finish: {response.finish_reason}{tokens}, request id {response.request_id}]\n")
    history.append(AssistantMessage(response.content or "", tool_calls=response.tool_calls))


class _Shown:
    """Writes an answer as it arrives: ``[reasoning] ...`` while the model reasons, then ``[answer] ...`` (only
    the answer, unmarked, when there was no reasoning)."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._reasoned = self._answering = False

    def write(self, reasoning: str | None, content: str | None) -> None:
        out = self._out
        if reasoning:
            if not self._reasoned:
                out.write("[reasoning] ")
                self._reasoned = True
            out.write(reasoning)
        if content:
            if self._reasoned and not self._answering:
                out.write("\n[answer] ")
            self._answering = True
            out.write(content)
        out.flush()


async def _demo(out: TextIO) -> int:
    from ..emulator import Deployment, Emulator

    deployment = Deployment("demo", family="openai", model="emulated-chat", replies=DEMO_REPLIES)
    async with Emulator(key="demo-key", deployments=[deployment]) as emulator:
        out.write(
            f"azureml-chat {__version__} demo: emulator on {emulator.url} (no Azure account needed)\n\n"
        )
        async with AsyncChatClient(emulator.chat_url, emulator.key) as client:
            history: list[Message] = [SystemMessage(DEMO_SYSTEM)]
            out.write(f"system: {DEMO_SYSTEM}\n")
            for turn in DEMO_TURNS:
                history.append(UserMessage(turn))
                out.write(f"user: {turn}\nassistant: ")
                await _stream_turn(client, history, out, stream=True, as_json=False, details=True)
        out.write(f"\n{len(emulator.requests)} streamed requests served; try `azureml-chat emulator` next.\n")
    return 0


def _fault(spec: str) -> str:
    """An argparse type: a fault spec, with an optional ``N:`` instance prefix, the emulator accepts (checked
    here, so a typo exits 2; the instance's range once ``--instances`` is known, in :func:`_serve`)."""
    from ..emulator import FaultSpecError
    from ..emulator._instances import split_instance

    try:
        split_instance(spec)
    except FaultSpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return spec


def _quota(spec: str) -> str:
    """An argparse type: a quota spec the emulator accepts (checked here, so a typo exits 2)."""
    from ..emulator import Quota

    try:
        Quota.parse(spec)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return spec


def _serve(args: argparse.Namespace) -> int:
    from ..emulator import EmulatorError, serve
    from ..emulator._instances import instance_ports, split_instance

    count = args.instances
    for spec in args.fault:
        instance, _ = split_instance(spec)
        if instance is not None and instance > count:
            raise UsageError(f"--fault {spec!r} is for instance {instance}, but --instances is {count}")
    try:
        instance_ports(args.port, count)
    except ValueError as exc:
        raise UsageError(f"--port with --instances: {exc}") from None
    try:
        serve(
            host=args.host,
            port=args.port,
            key=args.key,
            family=args.family,
            faults=args.fault,
            instances=count,
            quota=args.quota,
            reasoning=args.reasoning,
        )
    except EmulatorError as exc:  # a taken port, an unknown host
        print(f"azureml-chat: error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # a registered family the emulator does not speak
        raise UsageError(str(exc)) from None
    return 0


async def _chat(args: argparse.Namespace, stdin: TextIO, out: TextIO) -> int:
    params = sampling_params(args)
    async with make_client(args) as client:
        history: list[Message] = [SystemMessage(args.system)] if args.system else []
        stream = not args.no_stream
        if args.prompt is not None:
            history.append(UserMessage(args.prompt))
            await _stream_turn(client, history, out, stream=stream, as_json=args.json, **params)
            return 0
        interactive = stdin.isatty()
        while True:
            if interactive:
                out.write("you> ")
                out.flush()
            line = stdin.readline()
            if not line:
                return 0
            if not line.strip():
                continue
            history.append(UserMessage(line.rstrip("\n")))
            try:
                await _stream_turn(client, history, out, stream=stream, as_json=args.json, **params)
            except AzureMLChatError as exc:
                history.pop()
                print(f"azureml-chat: error: {exc}", file=sys.stderr)
                if not interactive:
                    return 1
