"""The sync Client mirrors AsyncChatClient: same constructor, same method parameters, and ClientOptions lists
exactly the constructor's options; mypy checks the sync parameters as it checks the async ones."""

from __future__ import annotations

import inspect
import textwrap
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, ForwardRef

import pytest

from azureml_chat import AsyncChatClient, Client
from azureml_chat._options import ClientOptions

# Each sync method and its async twin; the rest of the public surface is checked by
# test_every_async_method_has_a_sync_twin.
TWINS = {
    "chat": "chat",
    "stream": "stream",
    "chat_many": "chat_many",
    "chat_as_completed": "chat_as_completed",
    "complete": "complete",
    "stream_complete": "stream_complete",
    "with_options": "with_options",
    "to_langchain": "to_langchain",
    "endpoint_status": "endpoint_status",
    "close": "aclose",
}

Parameter = tuple[str, str, Any, str]


def parameters(function: Callable[..., Any]) -> list[Parameter]:
    """(name, kind, default, annotation string) of each parameter: everything but the return annotation."""
    return [
        (p.name, p.kind.name, p.default, str(p.annotation))
        for p in inspect.signature(function).parameters.values()
    ]


def annotation(value: Any) -> str:
    """An annotation as the string written in the source (a TypedDict wraps strings in ForwardRef)."""
    return value.__forward_arg__ if isinstance(value, ForwardRef) else str(value)


def test_constructor_matches_the_async_constructor() -> None:
    """Client.__init__ has AsyncChatClient.__init__'s parameters: names, kinds, defaults, annotations."""
    assert parameters(AsyncChatClient.__init__) == parameters(Client.__init__)


@pytest.mark.parametrize(("sync_name", "async_name"), TWINS.items())
def test_method_matches_its_async_twin(sync_name: str, async_name: str) -> None:
    """Each sync method has its async twin's parameters (only the return type differs)."""
    assert parameters(getattr(AsyncChatClient, async_name)) == parameters(getattr(Client, sync_name))


def test_chat_many_overloads_match() -> None:
    """Client.chat_many has the async chat_many's three overloads, each with the same parameters."""
    async_overloads = [parameters(f) for f in typing.get_overloads(AsyncChatClient.chat_many)]
    sync_overloads = [parameters(f) for f in typing.get_overloads(Client.chat_many)]
    assert (3, async_overloads) == (len(sync_overloads), sync_overloads)


def test_overload_return_types_match_up_to_the_client() -> None:
    """Each chat_many overload returns the same type in both clients (a list, not an awaitable of one)."""
    async_returns = [
        inspect.signature(f).return_annotation for f in typing.get_overloads(AsyncChatClient.chat_many)
    ]
    sync_returns = [inspect.signature(f).return_annotation for f in typing.get_overloads(Client.chat_many)]
    assert async_returns == sync_returns


def test_every_async_method_has_a_sync_twin() -> None:
    """Every public AsyncChatClient method is paired in TWINS, so a new one cannot miss its sync twin."""
    public = {
        name
        for name, member in inspect.getmembers(AsyncChatClient, inspect.isfunction)
        if not name.startswith("_")
    }
    assert public == set(TWINS.values())


def test_client_options_are_exactly_the_constructor_options() -> None:
    """ClientOptions names every constructor option, with the constructor's annotation, and nothing else."""
    constructor = {
        name: str(p.annotation)
        for name, p in inspect.signature(AsyncChatClient.__init__).parameters.items()
        if name != "self"
    }
    options = {name: annotation(value) for name, value in ClientOptions.__annotations__.items()}
    assert constructor == options


def test_mypy_checks_the_sync_parameters(tmp_path: Path) -> None:
    """mypy rejects a wrongly typed argument to Client's constructor, chat() and with_options(), and accepts a
    bare string as a conversation."""
    import mypy.api as mypy_api  # a test dependency (pyproject.toml): never skipped

    snippet = tmp_path / "snippet.py"
    snippet.write_text(
        textwrap.dedent(
            """\
            from azureml_chat import Client, UserMessage
            client = Client("http://127.0.0.1:9/v1/chat/completions", "key", max_retries=2)
            client.chat([UserMessage("hi")], max_tokens=64, temperature=0.2, top_k=40)
            client.chat([UserMessage("hi")], max_tokens="64")
            Client("http://127.0.0.1:9/v1/chat/completions", timeout="5")
            client.with_options(max_retries="2")
            client.chat("Hi!").content
            client.stream("Hi!").close()
            client.chat_many(["q1", "q2"])
            client.chat_as_completed(["q1", [UserMessage("q2")]]).close()
            """
        )
    )
    stdout, _, status = mypy_api.run(
        [str(snippet), "--strict", "--no-error-summary", "--cache-dir", str(tmp_path / "cache")]
    )
    lines = sorted(int(line.split(":")[1]) for line in stdout.splitlines() if ": error:" in line)
    assert (1, [4, 5, 6]) == (status, lines), stdout
    assert 'Argument "max_tokens" to "chat" of "Client" has incompatible type "str"' in stdout
