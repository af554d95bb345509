"""A pytest plugin for testing code that uses azureml-chat, against the emulator instead of Azure.

Enable it in a ``conftest.py``::

    pytest_plugins = ["azureml_chat.testing"]

Fixtures:

``azureml_emulator``
    (async; needs pytest-asyncio, in its default strict mode or ``asyncio_mode = "auto"``) a running
    :class:`~azureml_chat.emulator.Emulator` on 127.0.0.1 and a ready :class:`~azureml_chat.AsyncChatClient`
    for its chat-completions route. In strict mode the test is marked ``@pytest.mark.asyncio``::

        @pytest.mark.asyncio
        async def test_answer(azureml_emulator):
            response = await azureml_emulator.client.chat([UserMessage("hi")])
            assert "hi" in response.content
            assert azureml_emulator.requests[-1].status == 200

``azureml_emulator_sync``
    the same for synchronous code: the emulator runs in a background thread and ``client`` is a
    :class:`~azureml_chat.Client`.

Both clients retry quickly (milliseconds) so fault-injection tests stay fast; faults are added with
``harness.emulator.add_fault("status=503,times=2")``.

Without a server at all, :class:`MockTransport` answers each request from a function you write (it gets a
request with ``.method``, ``.url``, ``.headers``, ``.content`` and ``.json()``, and returns a
:class:`MockResponse`)::

    client = AsyncChatClient(URL, "key", transport=MockTransport(lambda request: MockResponse(200, json=...)))
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Generic, TypeVar

import attrs
import pytest

from ._client import AsyncChatClient
from ._mock import MockResponse, MockTransport
from ._retry import RetryPolicy
from ._sync import Client
from .emulator import Emulator

__all__ = [
    "EmulatorHarness",
    "MockResponse",
    "MockTransport",
    "azureml_emulator",
    "azureml_emulator_sync",
    "fast_retry",
]

KEY = "test-key"
ClientT = TypeVar("ClientT", AsyncChatClient, Client)


def fast_retry(max_retries: int = 2) -> RetryPolicy:
    """A retry policy with millisecond backoff, for tests of retry behaviour."""
    return RetryPolicy(max_retries=max_retries, initial_delay=0.001, max_delay=0.01, max_retry_after=2.0)


@attrs.frozen
class EmulatorHarness(Generic[ClientT]):
    """A running emulator and a client pointed at it.

    Attributes:
        emulator: the server (faults, deployments, request log).
        client: an :class:`AsyncChatClient` or :class:`Client` on the emulator's chat-completions route.
    """

    emulator: Emulator
    client: ClientT

    @property
    def url(self) -> str:
        """The chat-completions URL."""
        return self.emulator.chat_url

    @property
    def score_url(self) -> str:
        """The ``/score`` URL."""
        return self.emulator.score_url

    @property
    def key(self) -> str:
        """The key the emulator expects."""
        return KEY

    @property
    def requests(self) -> list[Any]:
        """What the emulator received, oldest first."""
        return self.emulator.requests


try:  # in pytest-asyncio's strict mode an async fixture must be declared through it
    from pytest_asyncio import fixture as _async_fixture
except ImportError:  # pragma: no cover - documented requirement
    _async_fixture = pytest.fixture  # type: ignore[assignment]


@_async_fixture
async def azureml_emulator() -> AsyncIterator[EmulatorHarness[AsyncChatClient]]:
    """A running emulator and an :class:`AsyncChatClient` for it; both are closed afterwards."""
    async with (
        Emulator(key=KEY) as emulator,
        AsyncChatClient(emulator.chat_url, KEY, retry=fast_retry()) as client,
    ):
        yield EmulatorHarness(emulator, client)


@pytest.fixture
def azureml_emulator_sync() -> Iterator[EmulatorHarness[Client]]:
    """A running emulator (in a background thread) and a sync :class:`Client` for it."""
    emulator = Emulator(key=KEY)
    with emulator.start_in_thread(), Client(emulator.chat_url, KEY, retry=fast_retry()) as client:
        yield EmulatorHarness(emulator, client)
