"""The emulator keeps the Azure AI Model Inference routes' own rules: ``api-version`` and ``extra-parameters``."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest

from azureml_chat._params import given
from azureml_chat.emulator import Deployment, Emulator

KEY = "azure-key"
AUTH = {"api-key": KEY}
VERSION = "?api-version=2024-05-01-preview"
CHAT_BODY = {"messages": [{"role": "user", "content": "hello big world"}]}
TEXT_BODY = {"prompt": "hello big world"}
# Each model-inference route and a body it takes.
MODEL_INFERENCE = [
    ("/chat/completions", CHAT_BODY),
    ("/models/chat/completions", CHAT_BODY),
    ("/completions", TEXT_BODY),
    ("/models/completions", TEXT_BODY),
]
ROUTE_IDS = [path for path, _ in MODEL_INFERENCE]
PASS_THROUGH = {"extra-parameters": "pass-through"}
# What Azure's Llama docs list as the provider-native route's extras, and two OpenAI fields Azure's schema lacks.
VLLM_EXTRAS = {
    "best_of": 1,
    "use_beam_search": False,
    "ignore_eos": False,
    "skip_special_tokens": True,
    "top_k": 40,
    "n": 1,
    "stream_options": {"include_usage": True},
}


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    """An emulator with key ``KEY``: ``llama`` (the default) and ``vllm`` (an ``openai``-family deployment)."""
    deployments = [Deployment("llama"), Deployment("vllm", family="openai")]
    async with Emulator(KEY, deployments=deployments) as emu:
        yield emu


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session, closed at teardown."""
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    http: aiohttp.ClientSession, url: str, body: Any, headers: Mapping[str, str] | None = None
) -> tuple[int, Mapping[str, str], Any]:
    """POST ``body`` with the key; the status, the headers and the parsed JSON."""
    async with http.post(url, json=body, headers={**AUTH, **(headers or {})}) as response:
        return response.status, response.headers, await response.json(content_type=None)


# -- api-version ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "body"), MODEL_INFERENCE, ids=ROUTE_IDS)
async def test_model_inference_routes_require_api_version(
    emulator: Emulator, http: aiohttp.ClientSession, path: str, body: Any
) -> None:
    """Without ?api-version= a model-inference route answers Azure's 400 MissingApiVersionParameter."""
    status, headers, answer = await post(http, emulator.url + path, body)
    assert (400, "MissingApiVersionParameter", "MissingApiVersionParameter") == (
        status,
        answer["error"]["code"],
        headers["x-ms-error-code"],
    )
    assert "api-version" in answer["error"]["message"]


@pytest.mark.parametrize("version", ["latest", "2024-5-1", "2024-05-01-beta", ""])
async def test_a_malformed_api_version_is_refused(
    emulator: Emulator, http: aiohttp.ClientSession, version: str
) -> None:
    """An api-version that is not YYYY-MM-DD[-preview] is a 400 InvalidApiVersionParameter naming it."""
    status, _, answer = await post(http, f"{emulator.url}/chat/completions?api-version={version}", CHAT_BODY)
    assert (400, "InvalidApiVersionParameter") == (status, answer["error"]["code"])
    assert f"'{version}'" in answer["error"]["message"]


@pytest.mark.parametrize("version", ["2024-05-01-preview", "2024-10-21", "2025-04-01-preview"])
@pytest.mark.parametrize(("path", "body"), MODEL_INFERENCE, ids=ROUTE_IDS)
async def test_any_dated_api_version_is_accepted(
    emulator: Emulator, http: aiohttp.ClientSession, path: str, body: Any, version: str
) -> None:
    """Any YYYY-MM-DD or YYYY-MM-DD-preview api-version is accepted on every model-inference route."""
    assert 200 == (await post(http, f"{emulator.url}{path}?api-version={version}", body))[0]


@pytest.mark.parametrize(
    ("path", "body"),
    [("/v1/chat/completions", CHAT_BODY), ("/v1/completions", TEXT_BODY), ("/score", CHAT_BODY)],
    ids=["v1-chat", "v1-completions", "score"],
)
async def test_provider_native_routes_need_no_api_version(
    emulator: Emulator, http: aiohttp.ClientSession, path: str, body: Any
) -> None:
    """/v1/... and /score (here an openai-family deployment's) answer without ?api-version=."""
    assert 200 == (await post(http, emulator.url + path, body, {"azureml-model-deployment": "vllm"}))[0]


async def test_an_api_version_refusal_spends_no_quota(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """A request refused for its api-version is not counted by the quota and gets no rate-limit headers."""
    _, headers, _ = await post(http, emulator.url + "/chat/completions", CHAT_BODY)
    assert (0, None) == (emulator.quota_usage.admitted, headers.get("x-ratelimit-remaining-requests"))


# -- extra-parameters -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "body"), MODEL_INFERENCE, ids=ROUTE_IDS)
async def test_unknown_fields_are_refused_without_the_header(
    emulator: Emulator, http: aiohttp.ClientSession, path: str, body: Any
) -> None:
    """Without extra-parameters, fields outside Azure's schema are Azure's 400, naming them and the way out."""
    status, _, answer = await post(http, emulator.url + path + VERSION, {**body, "safe_prompt": True, "n": 2})
    assert 400 == status
    error = answer["error"]
    assert ("BadRequest", "n", "invalid_request_error") == (error["code"], error["param"], error["type"])
    assert "Extra parameters ['n', 'safe_prompt'] are not allowed" in error["message"]
    assert "'extra-parameters: pass-through'" in error["message"]


@pytest.mark.parametrize(
    "field",
    [
        {"n": 2},
        {"stream_options": {"include_usage": True}},
        {"top_logprobs": 2},
        {"max_completion_tokens": 5},
        {"logprobs": True},
        {"user": "u1"},
        {"parallel_tool_calls": False},
    ],
    ids=lambda field: next(iter(field)),
)
async def test_openai_fields_outside_azures_chat_schema_are_extras(
    emulator: Emulator, http: aiohttp.ClientSession, field: dict[str, Any]
) -> None:
    """OpenAI chat fields that Azure's schema lacks (n, stream_options, ...) are refused on /chat/completions."""
    status, _, answer = await post(http, emulator.url + "/chat/completions" + VERSION, {**CHAT_BODY, **field})
    assert (400, next(iter(field))) == (status, answer["error"]["param"])


async def test_every_typed_sdk_parameter_is_in_azures_schema(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """Every SDK-typed parameter but max_completion_tokens (not Azure's) passes with no extra-parameters."""
    values = {
        "temperature": 0.5,
        "top_p": 0.9,
        "max_tokens": 50,
        "stop": ["\n\n"],
        "seed": 7,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": "none",
        "response_format": {"type": "text"},
        "presence_penalty": 0.1,
        "frequency_penalty": 0.1,
    }
    assert set(inspect.signature(given).parameters) - {"max_completion_tokens"} == set(values)
    body = {**CHAT_BODY, **values, "model": "any", "stream": False}
    status, _, answer = await post(http, emulator.url + "/models/chat/completions" + VERSION, body)
    assert (200, "You said: hello big world") == (status, answer["choices"][0]["message"]["content"])


async def test_pass_through_forwards_extras_to_the_model(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """With extra-parameters: pass-through, unknown fields reach the model: n=2 answers two choices."""
    url = emulator.url + "/chat/completions" + VERSION
    status, _, answer = await post(http, url, {**CHAT_BODY, "n": 2, "safe_prompt": True}, PASS_THROUGH)
    assert (200, [0, 1]) == (status, [choice["index"] for choice in answer["choices"]])


async def test_drop_removes_extras_before_the_model(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """With extra-parameters: drop, unknown fields are ignored: n=2 answers one choice, the request is kept whole."""
    url = emulator.url + "/completions" + VERSION
    status, _, answer = await post(
        http, url, {**TEXT_BODY, "n": 2, "best_of": 3}, {"extra-parameters": "drop"}
    )
    assert (200, 1) == (status, len(answer["choices"]))
    assert {**TEXT_BODY, "n": 2, "best_of": 3} == emulator.requests[-1].body


async def test_an_explicit_error_header_refuses_extras(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """extra-parameters: error (the service default, said out loud) refuses unknown fields too."""
    url = emulator.url + "/models/chat/completions" + VERSION
    status, _, answer = await post(http, url, {**CHAT_BODY, "top_k": 5}, {"extra-parameters": "Error"})
    assert (400, "top_k") == (status, answer["error"]["param"])


async def test_an_unknown_header_value_is_refused(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """An extra-parameters value other than error, drop or pass-through is a 400 naming the header."""
    url = emulator.url + "/chat/completions" + VERSION
    status, _, answer = await post(http, url, CHAT_BODY, {"extra-parameters": "allow"})
    assert (400, "extra-parameters") == (status, answer["error"]["param"])
    assert "'allow'" in answer["error"]["message"]


@pytest.mark.parametrize(
    ("path", "body"),
    [("/v1/chat/completions", CHAT_BODY), ("/v1/completions", TEXT_BODY), ("/score", CHAT_BODY)],
    ids=["v1-chat", "v1-completions", "score"],
)
async def test_provider_native_routes_take_vllm_extras(
    emulator: Emulator, http: aiohttp.ClientSession, path: str, body: Any
) -> None:
    """/v1/... and an openai-family /score forward vLLM-style extras without any header, as Azure does."""
    headers = {"azureml-model-deployment": "vllm"}
    assert 200 == (await post(http, emulator.url + path, {**body, **VLLM_EXTRAS}, headers))[0]
