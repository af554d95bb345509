"""Crossing process boundaries: a client's options pickle (a worker builds its own client from them), and a
client itself refuses with a message that says what to send instead."""

from __future__ import annotations

import pickle
import subprocess
import sys
from typing import Any

import pytest

from azureml_chat import (
    AsyncChatClient,
    Client,
    Endpoint,
    RateLimit,
    RetryPolicy,
    Timeout,
    get_formatter,
)
from azureml_chat.formatters import MistralFormatter

URL = "https://my-endpoint.eastus.inference.ml.azure.com/score"


def options() -> dict[str, Any]:
    return {
        "endpoints": [
            Endpoint(URL, "key-1", name="eastus", weight=2.0, rate_limit=RateLimit(requests_per_minute=600)),
            Endpoint(
                URL.replace("eastus", "westus"), "key-2", name="westus", formatter=get_formatter("llama")
            ),
        ],
        "rate_limit": RateLimit(
            requests_per_minute=1000,
            tokens_per_minute=200_000,
            store="redis://127.0.0.1:6379/0",
            name="llama",
        ),
        "retry": RetryPolicy(max_retries=5),
        "timeout": Timeout(total=30, connect=5),
        "headers": {"x-team": "search"},
    }


def test_a_clients_options_pickle_and_build_the_same_client() -> None:
    """What a worker receives is equal to what was sent, and builds a client configured the same way."""
    sent = options()
    received = pickle.loads(pickle.dumps(sent))
    assert sent == received
    client = AsyncChatClient(**received)
    assert ["eastus", "westus"] == list(client.endpoint_status())
    assert sent["timeout"] == client.timeout


def _build_in_a_fresh_interpreter(payload: bytes) -> str:
    code = (
        "import pickle, sys; from azureml_chat import Client; "
        "options = pickle.loads(sys.stdin.buffer.read()); "
        "client = Client(**options); print(sorted(client.endpoint_status())); client.close()"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        input=payload,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert (0, b"") == (result.returncode, result.stderr), result.stderr.decode()
    return result.stdout.decode().strip()


def test_options_build_a_client_in_another_process() -> None:
    assert "['eastus', 'westus']" == _build_in_a_fresh_interpreter(pickle.dumps(options()))


def test_a_built_in_formatter_crosses_as_its_family() -> None:
    """The registry's instance comes back as the registry's instance; another instance of the class as a copy."""
    assert get_formatter("mistral") is pickle.loads(pickle.dumps(get_formatter("mistral")))
    own = MistralFormatter()
    copy = pickle.loads(pickle.dumps(own))
    assert (MistralFormatter, False) == (type(copy), copy is get_formatter("mistral"))


async def test_an_async_client_refuses_to_pickle_and_says_what_to_send() -> None:
    async with AsyncChatClient(URL, "key") as client:
        with pytest.raises(TypeError, match=r"cannot be pickled.*send its options.*factory"):
            pickle.dumps(client)


def test_a_sync_client_refuses_to_pickle_and_says_what_to_send() -> None:
    with Client(URL, "key") as client, pytest.raises(TypeError, match=r"Client cannot be pickled"):
        pickle.dumps(client)
