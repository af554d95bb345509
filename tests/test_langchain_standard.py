"""LangChain's standard chat-model suites (``langchain-tests``) for ``AzureMLChatModel``.

The unit suite builds models without I/O; the integration suite runs against the emulator's OpenAI route
(``/v1/chat/completions``) on 127.0.0.1, served from a background thread so that sync and async tests share
it. Capability flags say what the adapter really does; the one standard test the emulator cannot satisfy
(json mode asks for keys only a model reading the prompt would produce) is marked ``xfail`` with the reason.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("langchain_tests", reason="the standard suites need langchain-tests")

import httpx
from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from azureml_chat.emulator import Deployment, Emulator, EmulatorThread
from azureml_chat.langchain import AzureMLChatModel

# Nothing here may reach past this machine (pytest-socket, installed with langchain-tests, enforces it).
pytestmark = [pytest.mark.allow_hosts(["127.0.0.1"]), pytest.mark.usefixtures("hermetic_env")]

KEY = "standard-suite-key"
# A placeholder URL in the form Azure documents: the unit suite only constructs models.
PLACEHOLDER_URL = "https://my-endpoint.eastus2.inference.ml.azure.com/v1/chat/completions"
# A 1x1 PNG: what the image tests get instead of downloading their picture from the internet.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
_emulator_url: str | None = None


class _Capabilities:
    """What the adapter supports, shared by both suites."""

    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return AzureMLChatModel

    @property
    def supports_json_mode(self) -> bool:
        return True  # response_format {"type": "json_object"} on OpenAI-compatible routes

    @property
    def supports_image_inputs(self) -> bool:
        return True  # image_url parts, and standard image blocks as data: URLs

    @property
    def supports_image_urls(self) -> bool:
        return True  # standard image blocks with a "url"

    @property
    def supports_anthropic_inputs(self) -> bool:
        # Translated, not passed through: input_schema tools, "source" image blocks, tool_use and thinking
        # blocks in AI content (dropped; tool calls travel in tool_calls); cache_control is ignored.
        return True

    @property
    def supports_model_override(self) -> bool:
        # The deployment (or the endpoint) decides the model; a per-call model= is only forwarded in the body,
        # and Azure ML deployments (and the emulator) serve one model each.
        return False


class TestAzureMLChatModelUnit(_Capabilities, ChatModelUnitTests):
    """The standard unit suite: construction, tool binding, structured output, tracing params."""

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"endpoint_url": PLACEHOLDER_URL, "api_key": KEY}

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        env = {
            "AZUREML_ENDPOINT_URL": PLACEHOLDER_URL,
            "AZUREML_ENDPOINT_API_KEY": "key-from-env",
            "AZUREML_DEPLOYMENT_NAME": "blue",
        }
        expected = {"endpoint_url": PLACEHOLDER_URL, "api_key": "key-from-env", "deployment": "blue"}
        return env, {}, expected


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    """One emulator for the module, on its own loop thread: sync tests have no loop, async ones a new one
    per test."""
    global _emulator_url
    served = Emulator(KEY, deployments=[Deployment("suite", family="openai", model="suite-model")])
    with EmulatorThread(served) as running:
        _emulator_url = running.chat_url
        yield running
    _emulator_url = None


def _local_download(url: str, **_: Any) -> httpx.Response:
    """``httpx.get`` for the suite's image downloads, answered locally; any other download is refused."""
    if url.endswith(".png"):
        return httpx.Response(200, content=PNG, request=httpx.Request("GET", url))
    raise AssertionError(f"the standard suite tried to download {url}")


class TestAzureMLChatModelIntegration(_Capabilities, ChatModelIntegrationTests):
    """The standard integration suite against the emulator's OpenAI-compatible route."""

    @pytest.fixture(autouse=True)
    def _offline(self, emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
        """Every test runs with the emulator up and downloads answered locally."""
        monkeypatch.setattr(httpx, "get", _local_download)

    @property
    def chat_model_params(self) -> dict[str, Any]:
        assert _emulator_url is not None, "the emulator fixture runs first"
        return {"endpoint_url": _emulator_url, "api_key": KEY}

    @pytest.mark.xfail(
        reason="the emulator answers a json_object request with {'answer': <echo>}; it cannot follow the "
        "prompt's 'setup'/'punchline' keys (json mode is checked with scripted replies in test_langchain.py)",
        raises=OutputParserException,
        strict=True,
    )
    def test_json_mode(self, model: BaseChatModel) -> None:
        """The standard test, expected to fail only because the echo does not hold the asked-for keys."""
        super().test_json_mode(model)
