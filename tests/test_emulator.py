"""The emulator server, driven over real HTTP by aiohttp clients on 127.0.0.1."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDictProxy

from azureml_chat.emulator import (
    Deployment,
    Emulator,
    EmulatorError,
    EmulatorThread,
    Fault,
    FaultSpecError,
    PortInUseError,
    parse_faults,
)
from azureml_chat.emulator._answers import apply_limits, control_faults, example_for_schema

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
HELLO = [{"role": "user", "content": "hello big world"}]
SCORE_HELLO = {"input_data": {"input_string": HELLO, "parameters": {}}}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "verbose": {"type": "boolean"},
            },
            "required": ["city", "days", "unit"],
        },
    },
}
TIME_TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    """An emulator with key ``KEY``: ``blue`` (llama, the default) and ``green`` (openai, scripted replies)."""
    deployments = [
        Deployment("blue"),
        Deployment("green", family="openai", model="green-model", replies=["first", "second"]),
    ]
    async with Emulator(KEY, deployments=deployments) as emu:
        yield emu


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session, closed at teardown."""
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    http: aiohttp.ClientSession, url: str, body: Any, headers: Mapping[str, str] | None = None
) -> tuple[int, CIMultiDictProxy[str], Any]:
    """POST ``body`` with the key (unless ``headers`` replace it); return status, headers and parsed JSON."""
    async with http.post(url, json=body, headers={**AUTH, **(headers or {})}) as response:
        return response.status, response.headers, await response.json(content_type=None)


async def sse(
    http: aiohttp.ClientSession, url: str, body: Any, headers: Mapping[str, str] | None = None
) -> tuple[CIMultiDictProxy[str], list[str]]:
    """POST a streaming request; return the response headers and the ``data:`` payloads in order."""
    async with http.post(url, json={**body, "stream": True}, headers={**AUTH, **(headers or {})}) as response:
        assert 200 == response.status
        text = await response.text()
    assert text.endswith("\n\n")
    return response.headers, [event.removeprefix("data: ") for event in text.split("\n\n") if event]


def chat(content: str = "hello big world", **params: Any) -> dict[str, Any]:
    """A chat-completions body with one user message."""
    return {"messages": [{"role": "user", "content": content}], **params}


# -- dialects ---------------------------------------------------------------------------------------------


async def test_score_llama_echoes_last_user_message(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """/score on a llama deployment answers {"output": "You said: <last user text>"}."""
    body = {
        "input_data": {
            "input_string": [
                *HELLO,
                {"role": "assistant", "content": "x"},
                {"role": "user", "content": "again"},
            ],
            "parameters": {},
        }
    }
    status, _, answer = await post(http, emulator.score_url, body)
    assert (200, {"output": "You said: again"}) == (status, answer)


async def test_score_mistral_speaks_the_same_shape_without_a_system_role(http: aiohttp.ClientSession) -> None:
    """/score on a mistral deployment answers like llama, and refuses a system message as its template does."""
    async with Emulator(deployments=[Deployment("m", family="mistral")]) as emu:
        status, _, answer = await post(http, emu.score_url, SCORE_HELLO)
        assert (200, {"output": "You said: hello big world"}) == (status, answer)
        system = {"input_data": {"input_string": [{"role": "system", "content": "s"}, *HELLO]}}
        status, _, answer = await post(http, emu.score_url, system)
    assert 400 == status
    assert "system role" in answer["message"]


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"messages": HELLO}, "input_data.input_string"),
        ({"input_data": {"input_string": "hi"}}, "input_data.input_string"),
        ({"input_data": {"input_string": [{"role": "robot", "content": "x"}]}}, "input_data.input_string[0]"),
        ({"input_data": {"input_string": HELLO, "parameters": {"max_new_tokens": "5"}}}, "max_new_tokens"),
        ([1, 2], "input_data.input_string"),
    ],
)
async def test_score_refuses_other_shapes_with_an_inference_server_body(
    emulator: Emulator, http: aiohttp.ClientSession, body: Any, where: str
) -> None:
    """/score answers a body of the wrong shape with 400 and {"message": ...} naming the field."""
    status, _, answer = await post(http, emulator.score_url, body)
    assert 400 == status
    assert ["message"] == list(answer)
    assert where in answer["message"]


async def test_score_refuses_a_body_that_is_not_json(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """/score answers a body that is not JSON with 400."""
    async with http.post(emulator.score_url, data=b"{nope", headers=AUTH) as response:
        assert 400 == response.status
        assert "not valid JSON" in (await response.json())["message"]


async def test_score_openai_family_takes_a_chat_completions_body(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """/score on an openai deployment takes a chat-completions body and answers a chat.completion."""
    status, _, answer = await post(http, emulator.score_url, chat(), {"azureml-model-deployment": "green"})
    assert (200, "chat.completion", "green-model") == (status, answer["object"], answer["model"])
    status, _, answer = await post(
        http, emulator.score_url, SCORE_HELLO, {"azureml-model-deployment": "green"}
    )
    assert (400, "messages") == (status, answer["error"]["param"])


async def test_score_openai_family_streams(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """/score on an openai deployment streams SSE when asked, as vLLM does."""
    _, events = await sse(http, emulator.score_url, chat(), {"azureml-model-deployment": "green"})
    assert "[DONE]" == events[-1]


@pytest.mark.parametrize(
    ("family", "body", "expected"),
    [
        (
            "gpt2",
            {"inputs": {"input_string": ["a b", "c"]}, "parameters": {}},
            [{"0": "You said: a b"}, {"0": "You said: c"}],
        ),
        (
            "hf",
            {"inputs": ["a b"], "parameters": {"max_new_tokens": 2}},
            [{"0": {"generated_text": "You said:"}}],
        ),
        ("dolly", {"input_data": {"input_string": ["a b"]}, "parameters": {}}, ["You said: a b"]),
    ],
)
async def test_score_text_generation_families(
    http: aiohttp.ClientSession, family: str, body: Any, expected: Any
) -> None:
    """/score on gpt2, hf and dolly deployments answers each prompt in that family's shape."""
    async with Emulator(deployments=[Deployment("t", family=family)]) as emu:
        status, _, answer = await post(http, emu.score_url, body)
    assert (200, expected) == (status, answer)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/chat/completions",
        "/chat/completions?api-version=2024-05-01-preview",
        "/models/chat/completions?api-version=2024-05-01-preview",
    ],
)
async def test_chat_routes_answer_a_chat_completion(
    emulator: Emulator, http: aiohttp.ClientSession, path: str
) -> None:
    """Each chat-completions route (the model-inference ones with ?api-version=) answers a chat.completion."""
    status, _, answer = await post(http, emulator.url + path, chat())
    assert 200 == status
    assert {"id", "object", "created", "model", "choices", "usage"} <= set(answer)
    assert ("chat.completion", "Llama-2-7b-chat") == (answer["object"], answer["model"])
    assert answer["id"].startswith("chatcmpl-")
    assert [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "You said: hello big world", "tool_calls": None},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ] == answer["choices"]
    assert {
        "prompt_tokens": 3,
        "completion_tokens": 5,
        "total_tokens": 8,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    } == answer["usage"]


async def test_chat_counts_every_prompt_message_and_text_part(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """Prompt tokens are the words of every message's text, text parts included."""
    parts = [{"type": "text", "text": "two words"}, {"type": "image_url", "image_url": {"url": "data:x"}}]
    body = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": parts}]}
    _, _, answer = await post(http, emulator.chat_url, body)
    assert ("You said: two words", 4) == (
        answer["choices"][0]["message"]["content"],
        answer["usage"]["prompt_tokens"],
    )


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0]"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0]"),
        (chat(max_tokens=0), "max_tokens"),
        (chat(stop=5), "stop"),
        (chat(response_format={"type": "yaml"}), "response_format"),
        (chat(tools=[{"type": "function"}]), "tools"),
        (
            chat(tools=[WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": "nope"}}),
            "tool_choice",
        ),
    ],
)
async def test_chat_refuses_bad_requests_with_400(
    emulator: Emulator, http: aiohttp.ClientSession, body: Any, param: str
) -> None:
    """A malformed chat-completions body gets 400 with an error naming the parameter."""
    status, _, answer = await post(http, emulator.chat_url, body)
    assert (400, param, "invalid_request_error") == (
        status,
        answer["error"]["param"],
        answer["error"]["type"],
    )


async def test_extra_parameters_error_refuses_unknown_fields(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """With extra-parameters: error an unknown field is a 400; without the header it passes."""
    status, _, answer = await post(
        http, emulator.chat_url, chat(safe_prompt=True), {"extra-parameters": "error"}
    )
    assert 400 == status
    assert "safe_prompt" in answer["error"]["message"]
    assert 200 == (await post(http, emulator.chat_url, chat(safe_prompt=True)))[0]


async def test_info_describes_the_deployment(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """GET /info answers the model name, type and provider of the routed deployment."""
    async with http.get(emulator.info_url, headers={**AUTH, "azureml-model-deployment": "green"}) as response:
        assert 200 == response.status
        info = await response.json()
    assert {
        "model_name": "green-model",
        "model_type": "chat-completion",
        "model_provider_name": "Meta",
    } == info


async def test_unknown_route_is_an_azure_shaped_404(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """A path the endpoint does not serve is a 404 with an {"error": {...}} body."""
    status, _, answer = await post(http, emulator.url + "/v1/embeddings", chat())
    assert (404, "NotFound") == (status, answer["error"]["code"])


# -- auth and routing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {KEY}"},
        {"Authorization": f"bearer {KEY}"},
        {"api-key": KEY},
        {"Authorization": "Bearer wrong", "api-key": KEY},
    ],
)
async def test_the_key_is_accepted_as_bearer_or_api_key(
    emulator: Emulator, http: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    """The key is accepted in Authorization: Bearer or in api-key."""
    async with http.post(emulator.chat_url, json=chat(), headers=headers) as response:
        assert 200 == response.status


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"api-key": "wrong"}, {"Authorization": KEY}]
)
async def test_a_wrong_or_missing_key_is_401(
    emulator: Emulator, http: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    """A missing or wrong key (or one without the Bearer scheme) is a 401 with an Azure error body."""
    async with http.post(emulator.chat_url, json=chat(), headers=headers) as response:
        assert (401, "Unauthorized") == (response.status, response.headers["x-ms-error-code"])
        assert "Unauthorized" == (await response.json())["error"]["code"]
        assert "azureml-model-deployment" not in response.headers


async def test_without_a_key_any_request_is_accepted(http: aiohttp.ClientSession) -> None:
    """An emulator configured with no key accepts requests with any key or none."""
    async with Emulator() as emu:
        for headers in ({}, {"Authorization": "Bearer anything"}):
            async with http.post(emu.chat_url, json=chat(), headers=headers) as response:
                assert 200 == response.status


async def test_requests_without_a_deployment_header_go_to_the_default(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """Without azureml-model-deployment the default deployment answers and names itself."""
    _, headers, answer = await post(http, emulator.chat_url, chat())
    assert ("blue", "Llama-2-7b-chat") == (headers["azureml-model-deployment"], answer["model"])


async def test_the_deployment_header_routes_to_a_named_deployment(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """azureml-model-deployment routes to that deployment, which names itself in the response."""
    _, headers, answer = await post(http, emulator.chat_url, chat(), {"azureml-model-deployment": "green"})
    assert ("green", "green-model") == (headers["azureml-model-deployment"], answer["model"])


async def test_an_unknown_deployment_is_a_404_naming_the_known_ones(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """An unknown azureml-model-deployment is a 404 whose message lists the known deployments."""
    status, _, answer = await post(http, emulator.chat_url, chat(), {"azureml-model-deployment": "red"})
    assert (404, "DeploymentNotFound") == (status, answer["error"]["code"])
    assert "'red'" in answer["error"]["message"]
    assert "blue, green" in answer["error"]["message"]


async def test_response_headers_carry_request_ids(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """Every response has a uuid x-request-id and echoes x-ms-client-request-id as the platform keeps it."""
    _, headers, _ = await post(http, emulator.chat_url, chat(), {"x-ms-client-request-id": "abc-123"})
    assert "abc-123" == headers["x-ms-client-request-id"]
    assert str(uuid.UUID(headers["x-request-id"])) == headers["x-request-id"]
    _, headers, _ = await post(http, emulator.chat_url, chat(), {"x-ms-client-request-id": "a b!" + "c" * 50})
    assert "ab" + "c" * 38 == headers["x-ms-client-request-id"]
    async with http.post(emulator.chat_url, json=chat()) as response:
        assert "x-request-id" in response.headers


# -- answers ----------------------------------------------------------------------------------------------


async def test_scripted_replies_cycle(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """A deployment with scripted replies answers them in turn, then starts over."""
    contents = []
    for _ in range(3):
        _, _, answer = await post(http, emulator.chat_url, chat(), {"azureml-model-deployment": "green"})
        contents.append(answer["choices"][0]["message"]["content"])
    assert ["first", "second", "first"] == contents


async def test_max_tokens_truncates_to_words_with_finish_reason_length(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """max_tokens keeps that many words of the answer and reports finish_reason "length"."""
    _, _, answer = await post(http, emulator.chat_url, chat(max_tokens=3))
    choice = answer["choices"][0]
    assert ("You said: hello", "length", 3) == (
        choice["message"]["content"],
        choice["finish_reason"],
        answer["usage"]["completion_tokens"],
    )
    _, _, answer = await post(http, emulator.chat_url, chat(max_completion_tokens=1, max_tokens=9))
    assert "You" == answer["choices"][0]["message"]["content"]


async def test_max_new_tokens_truncates_score_answers(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """/score parameters.max_new_tokens keeps that many words; stop cuts at a stop sequence."""
    body = {"input_data": {"input_string": HELLO, "parameters": {"max_new_tokens": 2}}}
    assert {"output": "You said:"} == (await post(http, emulator.score_url, body))[2]
    body = {"input_data": {"input_string": HELLO, "parameters": {"stop": ["big"]}}}
    assert {"output": "You said: hello "} == (await post(http, emulator.score_url, body))[2]


@pytest.mark.parametrize(
    ("text", "stop", "max_tokens", "expected"),
    [
        ("a b c", (), None, ("a b c", "stop")),
        ("a b c", (), 3, ("a b c", "stop")),
        ("a  b\nc d", (), 3, ("a  b\nc", "length")),
        ("a b c", (), 0, ("", "length")),
        ("a b. c", (".", "c"), None, ("a b", "stop")),
        ("a b. c d", ("c",), 1, ("a", "length")),
    ],
)
def test_apply_limits(
    text: str, stop: tuple[str, ...], max_tokens: int | None, expected: tuple[str, str]
) -> None:
    """Stop sequences cut first, then max_tokens keeps words (and their spacing) and reports "length"."""
    assert expected == apply_limits(text, stop=stop, max_tokens=max_tokens)


async def test_stop_sequences_cut_chat_answers(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """stop cuts the answer before the first stop sequence, with finish_reason "stop"."""
    _, _, answer = await post(http, emulator.chat_url, chat(stop=["hello"]))
    assert ("You said: ", "stop") == (
        answer["choices"][0]["message"]["content"],
        answer["choices"][0]["finish_reason"],
    )


# -- streaming --------------------------------------------------------------------------------------------


async def test_stream_framing(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """A stream is a role delta, content deltas equal to the answer, a finish chunk, usage, then [DONE]."""
    headers, events = await sse(http, emulator.chat_url, chat())
    assert "text/event-stream" == headers["Content-Type"]
    assert "[DONE]" == events[-1]
    chunks = [json.loads(event) for event in events[:-1]]
    assert {"chat.completion.chunk"} == {chunk["object"] for chunk in chunks}
    assert 1 == len({chunk["id"] for chunk in chunks})
    assert {"role": "assistant", "content": ""} == chunks[0]["choices"][0]["delta"]
    deltas = [chunk["choices"][0]["delta"]["content"] for chunk in chunks[1:-2]]
    assert len(deltas) > 1
    _, _, whole = await post(http, emulator.chat_url, chat())
    assert whole["choices"][0]["message"]["content"] == "".join(deltas)
    assert [None] * (len(chunks) - 2) == [chunk["choices"][0]["finish_reason"] for chunk in chunks[:-2]]
    assert ({}, "stop") == (chunks[-2]["choices"][0]["delta"], chunks[-2]["choices"][0]["finish_reason"])
    assert ([], whole["usage"]) == (chunks[-1]["choices"], chunks[-1]["usage"])


async def test_stream_respects_max_tokens(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """A stream cut by max_tokens ends with finish_reason "length"."""
    _, events = await sse(http, emulator.chat_url, chat(max_tokens=2))
    chunks = [json.loads(event) for event in events[:-1]]
    assert "You said:" == "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
    assert "length" == chunks[-2]["choices"][0]["finish_reason"]


# -- tools and JSON ---------------------------------------------------------------------------------------


async def test_offered_tools_are_called_with_arguments_from_the_schema(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """With tools offered after a user message the answer calls the first tool, arguments filled by type."""
    _, _, answer = await post(http, emulator.chat_url, chat("Paris", tools=[WEATHER_TOOL, TIME_TOOL]))
    choice = answer["choices"][0]
    assert ("tool_calls", None) == (choice["finish_reason"], choice["message"]["content"])
    [call] = choice["message"]["tool_calls"]
    assert ("function", "get_weather") == (call["type"], call["function"]["name"])
    assert call["id"].startswith("call_")
    assert {"city": "Paris", "days": 1, "unit": "celsius"} == json.loads(call["function"]["arguments"])


async def test_tool_choice_picks_the_tool_or_none(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """tool_choice naming a function calls that one; tool_choice "none" answers in text."""
    named = {"type": "function", "function": {"name": "get_time"}}
    _, _, answer = await post(
        http, emulator.chat_url, chat(tools=[WEATHER_TOOL, TIME_TOOL], tool_choice=named)
    )
    assert "get_time" == answer["choices"][0]["message"]["tool_calls"][0]["function"]["name"]
    assert "{}" == answer["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    _, _, answer = await post(http, emulator.chat_url, chat(tools=[WEATHER_TOOL], tool_choice="none"))
    assert ("stop", None) == (
        answer["choices"][0]["finish_reason"],
        answer["choices"][0]["message"]["tool_calls"],
    )


async def test_a_tool_result_is_answered_in_text(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """After a tool message the answer is text that includes the tool's result."""
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    body = {
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
        ],
        "tools": [WEATHER_TOOL],
    }
    _, _, answer = await post(http, emulator.chat_url, body)
    assert ("The tool returned: sunny, 21 C", "stop") == (
        answer["choices"][0]["message"]["content"],
        answer["choices"][0]["finish_reason"],
    )


async def test_streamed_tool_calls_arrive_as_indexed_deltas(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """A streamed tool call has index 0, id and name only in its first delta, and arguments over several."""
    _, events = await sse(http, emulator.chat_url, chat("Paris", tools=[WEATHER_TOOL]))
    chunks = [json.loads(event) for event in events[:-1]]
    deltas = [d for c in chunks if c["choices"] for d in c["choices"][0]["delta"].get("tool_calls") or ()]
    assert {0} == {delta["index"] for delta in deltas}
    assert ("get_weather", "function") == (deltas[0]["function"]["name"], deltas[0]["type"])
    assert deltas[0]["id"].startswith("call_")
    assert [] == [d for d in deltas[1:] if "id" in d or "name" in d["function"]]
    assert len(deltas) > 3
    arguments = "".join(delta["function"]["arguments"] for delta in deltas)
    assert {"city": "Paris", "days": 1, "unit": "celsius"} == json.loads(arguments)
    assert "tool_calls" == chunks[-2]["choices"][0]["finish_reason"]


async def test_json_object_response_format_answers_json(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """response_format json_object answers a JSON object holding the text."""
    _, _, answer = await post(http, emulator.chat_url, chat(response_format={"type": "json_object"}))
    assert {"answer": "You said: hello big world"} == json.loads(answer["choices"][0]["message"]["content"])


async def test_json_schema_response_format_fills_the_schema(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """response_format json_schema answers an object with the schema's required properties filled by type."""
    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "score": {"type": "number"},
            "tags": {"type": "array"},
            "note": {"type": "string"},
        },
        "required": ["title", "score", "tags"],
    }
    response_format = {"type": "json_schema", "json_schema": {"name": "r", "schema": schema, "strict": True}}
    _, _, answer = await post(http, emulator.chat_url, chat("hi", response_format=response_format))
    expected = {"title": "You said: hi", "score": 1, "tags": ["You said: hi"]}
    assert expected == json.loads(answer["choices"][0]["message"]["content"])


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "string"}, "t"),
        ({"type": "integer", "minimum": 5}, 5),
        ({"type": ["null", "boolean"]}, True),
        ({"type": "null"}, None),
        ({"const": "x"}, "x"),
        ({"type": "string", "default": "d"}, "d"),
        ({"anyOf": [{"type": "null"}, {"type": "number"}]}, 1),
        ({"type": "array", "items": {"type": "integer"}, "minItems": 2}, [1, 1]),
        ({"properties": {"a": {"type": "string"}, "b": {"type": "boolean"}}}, {"a": "t", "b": True}),
        ({"type": "object", "properties": {"a": {"type": "string"}}, "required": []}, {}),
        (
            {
                "$defs": {"P": {"type": "object", "properties": {"n": {"type": "integer"}}}},
                "type": "object",
                "properties": {"p": {"$ref": "#/$defs/P"}},
            },
            {"p": {"n": 1}},
        ),
        ({"$ref": "#/$defs/Missing"}, "t"),
    ],
)
def test_example_for_schema(schema: dict[str, Any], expected: Any) -> None:
    """Schema examples fill each type deterministically and follow local $refs."""
    assert expected == example_for_schema(schema, "t")


def test_example_for_a_recursive_schema_ends() -> None:
    """A schema that refers to itself gives a finite example."""
    schema = {"$defs": {"L": {"type": "array", "items": {"$ref": "#/$defs/L"}}}, "$ref": "#/$defs/L"}
    example = example_for_schema(schema, "t")
    assert '"t"' == json.dumps(example).strip("[]")


# -- faults -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "status", "headers"),
    [
        ("status=429,retry_after=1", 429, {"Retry-After": "1", "x-ms-error-code": "TooManyRequests"}),
        ("429,retry_after=0.5,retry_after_ms=500", 429, {"Retry-After": "0.5", "retry-after-ms": "500"}),
        (
            "status=429,x_ms_retry_after_ms=20,should_retry=false",
            429,
            {"x-ms-retry-after-ms": "20", "x-should-retry": "false"},
        ),
        ("status=503", 503, {"x-ms-error-code": "ServiceUnavailable"}),
        ("status=500", 500, {"x-ms-error-code": "InternalServerError"}),
        ("status=408", 408, {"x-ms-error-code": "RequestTimeout"}),
        (
            "status=424,inner=503",
            424,
            {
                "ms-azureml-model-error-statuscode": "503",
                "ms-azureml-model-error-reason": "Service Unavailable",
            },
        ),
        (
            "inner=400,reason=bad input",
            424,
            {"ms-azureml-model-error-statuscode": "400", "ms-azureml-model-error-reason": "bad input"},
        ),
        ("status=424", 424, {"ms-azureml-model-error-statuscode": "500"}),
    ],
)
async def test_status_faults_send_their_status_and_headers(
    emulator: Emulator, http: aiohttp.ClientSession, spec: str, status: int, headers: dict[str, str]
) -> None:
    """A status fault answers that status, its retry and model-error headers, and an Azure error body."""
    got_status, got_headers, answer = await post(http, emulator.chat_url, chat(), {"x-emulator-fault": spec})
    assert status == got_status
    assert headers == {name: got_headers.get(name) for name in headers}
    assert "injected by the azureml-chat emulator" in answer["error"]["message"]
    assert "blue" == got_headers["azureml-model-deployment"]


async def test_a_fault_with_times_clears_after_that_many_requests(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """status=503,times=2 fails the next two requests, then the endpoint answers again."""
    emulator.add_fault(Fault.parse("status=503,times=2"))
    assert (Fault(status=503, times=2),) == emulator.faults()
    statuses = [(await post(http, emulator.score_url, SCORE_HELLO))[0] for _ in range(3)]
    assert [503, 503, 200] == statuses
    assert () == emulator.faults()


async def test_faults_are_per_deployment(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """A fault armed on one deployment leaves the others alone."""
    emulator.add_fault("status=500", deployment="green")
    assert 200 == (await post(http, emulator.chat_url, chat()))[0]
    assert 500 == (await post(http, emulator.chat_url, chat(), {"azureml-model-deployment": "green"}))[0]
    emulator.clear_faults(deployment="green")
    assert 200 == (await post(http, emulator.chat_url, chat(), {"azureml-model-deployment": "green"}))[0]
    with pytest.raises(ValueError, match="'red'"):
        emulator.add_fault("status=500", deployment="red")


async def test_configured_faults_apply_in_order(http: aiohttp.ClientSession) -> None:
    """Faults configured on a deployment apply from the start, in order; reset() re-arms them."""
    async with Emulator(deployments=[Deployment("d", faults="429,times=1;status=503,times=1")]) as emu:
        statuses = [(await post(http, emu.chat_url, chat()))[0] for _ in range(3)]
        assert [429, 503, 200] == statuses
        emu.reset()
        assert ([], 429) == (emu.requests, (await post(http, emu.chat_url, chat()))[0])


async def test_a_request_fault_wins_and_leaves_armed_faults_alone(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """A fault asked for by the request applies instead of the armed ones, which stay armed."""
    emulator.add_fault("status=503,times=1")
    assert 408 == (await post(http, emulator.chat_url, chat(), {"x-emulator-fault": "status=408"}))[0]
    assert 503 == (await post(http, emulator.chat_url, chat()))[0]


async def test_a_control_word_in_the_last_user_message_injects_a_fault(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """[[fault:SPEC]] in the last user message applies SPEC and is removed from the echo."""
    assert 429 == (await post(http, emulator.chat_url, chat("hi [[fault:429]]")))[0]
    _, _, answer = await post(http, emulator.chat_url, chat("hi [[fault:latency=0.01]] there"))
    assert "You said: hi there" == answer["choices"][0]["message"]["content"]
    body = {"input_data": {"input_string": [{"role": "user", "content": "[[fault:status=503]]"}]}}
    assert 503 == (await post(http, emulator.score_url, body))[0]


async def test_a_bad_fault_spec_is_a_400(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """An x-emulator-fault that does not parse is a 400 naming the problem."""
    status, _, answer = await post(http, emulator.chat_url, chat(), {"x-emulator-fault": "status=teapot"})
    assert (400, "InvalidFaultSpec") == (status, answer["error"]["code"])
    assert "status" in answer["error"]["message"]


async def test_latency_delays_the_answer(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """latency=S waits S seconds before answering."""
    started = time.monotonic()
    status, _, _ = await post(http, emulator.chat_url, chat(), {"x-emulator-fault": "latency=0.1"})
    assert 200 == status
    assert time.monotonic() - started >= 0.1


async def test_slow_stream_spaces_the_events(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """slow_stream=S waits S seconds between SSE events."""
    started = time.monotonic()
    _, events = await sse(http, emulator.chat_url, chat(), {"x-emulator-fault": "slow_stream=0.02"})
    assert time.monotonic() - started >= 0.02 * (len(events) - 1)


async def test_stream_faults_skip_requests_that_do_not_stream(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """A stream-only fault is not used up by a non-streaming request."""
    emulator.add_fault("drop_after=1,times=1")
    assert 200 == (await post(http, emulator.chat_url, chat()))[0]
    assert (Fault(drop_after=1, times=1),) == emulator.faults()


async def test_drop_after_breaks_the_stream_mid_way(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """drop_after=N closes the connection after N events, which the client sees as a payload error."""
    emulator.add_fault("drop_after=3")
    events: list[bytes] = []
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(emulator.chat_url, json=chat(stream=True), headers=AUTH) as response:
            assert 200 == response.status
            async for line in response.content:
                if line.startswith(b"data: "):
                    events.append(line)
    assert 3 == len(events)
    assert Fault(drop_after=3) == emulator.requests[-1].fault


async def test_no_done_ends_the_stream_without_the_sentinel(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """no_done ends the stream cleanly after the usage chunk, without data: [DONE]."""
    _, events = await sse(http, emulator.chat_url, chat(), {"x-emulator-fault": "no_done"})
    assert [] == json.loads(events[-1])["choices"]


async def test_malformed_cuts_the_json_body(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """malformed answers 200 with a JSON body cut in half (and a cut first event in a stream)."""
    async with http.post(
        emulator.chat_url, json=chat(), headers={**AUTH, "x-emulator-fault": "malformed"}
    ) as r:
        assert (200, "application/json") == (r.status, r.content_type)
        text = await r.text()
    assert text.startswith('{"id": "chatcmpl-')
    with pytest.raises(ValueError):
        json.loads(text)
    _, events = await sse(http, emulator.chat_url, chat(), {"x-emulator-fault": "malformed"})
    with pytest.raises(ValueError):
        json.loads(events[0])
    assert "[DONE]" == events[-1]


async def test_html_answers_a_proxy_page(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """html answers 200 with an HTML page instead of JSON, for plain and streaming requests alike."""
    for body in (chat(), chat(stream=True)):
        async with http.post(emulator.chat_url, json=body, headers={**AUTH, "x-emulator-fault": "html"}) as r:
            assert (200, "text/html") == (r.status, r.content_type)
            assert (await r.text()).startswith("<html>")


async def test_double_encoded_wraps_the_answer_in_a_json_string(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """double_encoded answers a JSON string that holds the JSON answer, as a custom score.py does."""
    _, _, answer = await post(http, emulator.score_url, SCORE_HELLO, {"x-emulator-fault": "double_encoded"})
    assert isinstance(answer, str)
    assert {"output": "You said: hello big world"} == json.loads(answer)


async def test_disconnect_closes_without_answering(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """disconnect closes the connection with no response, recorded with status None."""
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await post(http, emulator.chat_url, chat(), {"x-emulator-fault": "disconnect"})
    assert (None, Fault(disconnect=True)) == (emulator.requests[-1].status, emulator.requests[-1].fault)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("status=503,times=2", (Fault(status=503, times=2),)),
        (" 429 , Retry-After=1.5 ", (Fault(status=429, retry_after=1.5),)),
        ("inner=400", (Fault(status=424, inner=400),)),
        (
            "latency=0.2;drop_after=0,slow_stream=0.01",
            (Fault(latency=0.2), Fault(slow_stream=0.01, drop_after=0)),
        ),
        (
            "malformed;html;double_encoded",
            (Fault(body="malformed"), Fault(body="html"), Fault(body="double_encoded")),
        ),
        ("no_done,disconnect=false;", (Fault(no_done=True),)),
        ("", ()),
    ],
)
def test_parse_faults(spec: str, expected: tuple[Fault, ...]) -> None:
    """The spec grammar: items by commas, faults by semicolons, bare status codes and flags."""
    assert expected == parse_faults(spec)


@pytest.mark.parametrize(
    "fault",
    [
        Fault(status=429, retry_after=1, retry_after_ms=500, should_retry=False, times=3),
        Fault(status=424, inner=503, reason="Service Unavailable", latency=0.25),
        Fault(slow_stream=0.05, drop_after=2, no_done=True),
        Fault(body="double_encoded"),
        Fault(disconnect=True, latency=1),
    ],
)
def test_a_fault_renders_as_a_spec_that_parses_back(fault: Fault) -> None:
    """str(fault) is a spec that Fault.parse turns back into the same fault."""
    assert fault == Fault.parse(str(fault))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("status=200", "4xx or 5xx"),
        ("status=503,inner=503", "inner= needs status=424"),
        ("retry_after=1", "retry_after= needs a status"),
        ("times=0", "times must be at least 1"),
        ("latency=-1", "must not be negative"),
        ("status=503,drop_after=1", "cannot combine"),
        ("html,malformed", "body given twice"),
        ("frobnicate", "unknown fault"),
        ("colour=red", "unknown fault key"),
        ("status=503,status=500", "given twice"),
        ("should_retry=maybe,status=429", "true or false"),
        ("status=503;status=500", "exactly one fault"),
    ],
)
def test_bad_fault_specs_are_refused(spec: str, message: str) -> None:
    """A spec that does not parse or makes no sense raises FaultSpecError saying why."""
    with pytest.raises(FaultSpecError, match=message):
        Fault.parse(spec)


def test_control_faults_extracts_and_removes_control_words() -> None:
    """[[fault:...]] control words are returned in order and removed from the text."""
    assert ("a b", ["429", "latency=1"]) == control_faults("a [[fault:429]] b[[FAULT:latency=1]]")
    assert ("plain", []) == control_faults("plain")


# -- the request log --------------------------------------------------------------------------------------


async def test_requests_are_recorded(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """Each request is recorded with method, path, query, headers, body, deployment, status, stream and fault."""
    url = emulator.url + "/models/chat/completions?api-version=2024-05-01-preview"
    await post(http, url, chat(), {"azureml-model-deployment": "green", "x-ms-client-request-id": "r1"})
    await sse(http, emulator.chat_url, chat(), {"x-emulator-fault": "latency=0.01"})
    first, second = emulator.requests
    assert ("POST", "/models/chat/completions", {"api-version": "2024-05-01-preview"}) == (
        first.method,
        first.path,
        first.query,
    )
    assert (chat(), "green", 200, False, None) == (
        first.body,
        first.deployment,
        first.status,
        first.stream,
        first.fault,
    )
    assert json.loads(first.text) == first.body
    assert "r1" == first.headers["X-MS-Client-Request-Id"]
    assert ("blue", True, Fault(latency=0.01)) == (second.deployment, second.stream, second.fault)
    assert first.time <= second.time
    emulator.clear()
    assert [] == emulator.requests


async def test_recorded_headers_redact_credentials(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """Recorded Authorization and api-key values are redacted; the scheme stays visible."""
    await post(http, emulator.chat_url, chat(), {"api-key": KEY})
    await post(http, emulator.chat_url, chat(), {"Authorization": "Bearer wrong-key"})
    ok, refused = emulator.requests
    assert ("Bearer [REDACTED]", "[REDACTED]") == (ok.headers["Authorization"], ok.headers["api-key"])
    assert (401, None, "Bearer [REDACTED]") == (
        refused.status,
        refused.deployment,
        refused.headers["Authorization"],
    )
    assert KEY not in repr(emulator.requests)


async def test_on_request_sees_each_record(http: aiohttp.ClientSession) -> None:
    """The on_request hook is called with each record."""
    seen: list[int | None] = []
    async with Emulator(on_request=lambda record: seen.append(record.status)) as emu:
        await post(http, emu.chat_url, chat())
        await post(http, emu.chat_url, {"messages": "nope"})
    assert [200, 400] == seen


async def test_the_log_keeps_the_latest_max_records(http: aiohttp.ClientSession) -> None:
    """With max_records=N only the latest N requests are kept."""
    async with Emulator(max_records=2) as emu:
        for word in ("one", "two", "three"):
            await post(http, emu.chat_url, chat(word))
        assert [chat("two"), chat("three")] == [record.body for record in emu.requests]


# -- lifecycle --------------------------------------------------------------------------------------------


async def test_a_taken_port_is_a_clear_error() -> None:
    """Starting on a port in use raises PortInUseError naming the port."""
    async with Emulator() as first:
        second = Emulator(port=first.port)
        with pytest.raises(PortInUseError, match=f"port {first.port} on 127.0.0.1 is already in use"):
            await second.start()
        assert not second.running


async def test_lifecycle_errors() -> None:
    """The URL needs a running emulator, starting twice is refused, and stopping twice is harmless."""
    emu = Emulator()
    with pytest.raises(EmulatorError, match="not running"):
        _ = emu.url
    await emu.start()
    try:
        assert emu.url.startswith("http://127.0.0.1:")
        with pytest.raises(EmulatorError, match="already running"):
            await emu.start()
    finally:
        await emu.stop()
    await emu.stop()
    assert not emu.running


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Deployment("d", family="bert"), "unknown emulator family 'bert'"),
        (lambda: Deployment("has space"), "without spaces"),
        (lambda: Deployment("d", replies=[]), "non-empty list"),
        (lambda: Emulator(deployments=[Deployment("a"), Deployment("a")]), "unique"),
        (lambda: Emulator(deployments=[Deployment("a")], default_deployment="b"), "unknown deployment 'b'"),
        (lambda: Emulator(deployments=[]), "at least one"),
        (lambda: Emulator(key=""), "non-empty"),
    ],
)
def test_bad_configuration_is_refused(make: Any, message: str) -> None:
    """A bad family, name, reply list, duplicate or unknown default deployment is a ValueError."""
    with pytest.raises(ValueError, match=message):
        make()


def test_deployment_defaults_follow_the_family() -> None:
    """A deployment's model and provider default to a typical model of its family; aliases resolve."""
    assert ("mistral", "Mistral-7B-Instruct-v0.2", "Mistral AI") == (
        lambda d: (d.family, d.model, d.provider)
    )(Deployment("m", family="Mistral"))
    assert "llama" == Deployment("c", family="custom-openai").family
    assert (Fault(status=503),) == Deployment("f", faults=[Fault(status=503)]).faults


def test_the_thread_runner_serves_synchronous_callers() -> None:
    """EmulatorThread serves from a background loop to blocking callers and stops, leaving no thread behind."""
    emu = Emulator(KEY)
    with emu.start_in_thread() as running:
        assert emu is running
        request = urllib.request.Request(
            running.chat_url,
            data=json.dumps(chat()).encode(),
            headers={**AUTH, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            answer = json.load(response)
        running.add_fault("status=503,times=1")
        assert (Fault(status=503, times=1),) == running.faults()
    assert "You said: hello big world" == answer["choices"][0]["message"]["content"]
    assert 1 == len(emu.requests)
    assert not emu.running
    assert [] == [t for t in threading.enumerate() if t.name == "azureml-chat-emulator"]


def test_the_thread_runner_reports_a_taken_port() -> None:
    """A thread runner that cannot bind raises PortInUseError in the caller, and can be stopped."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        runner = EmulatorThread(Emulator(port=sock.getsockname()[1]))
        with pytest.raises(PortInUseError):
            runner.start()
        runner.stop()


async def test_the_thread_runner_works_inside_a_running_loop(http: aiohttp.ClientSession) -> None:
    """An emulator in a thread answers a client on the test's own loop (as in a Jupyter cell)."""
    with EmulatorThread(Emulator()) as emu:
        status, _, _ = await post(http, emu.chat_url, chat())
    assert 200 == status


async def test_serve_forever_prints_the_banner_and_stops_when_cancelled() -> None:
    """serve_forever() prints URL, key and deployments, serves, and stops when its task is cancelled."""
    out = io.StringIO()
    emu = Emulator(deployments=[Deployment("blue"), Deployment("green", family="openai")])
    task = asyncio.create_task(emu.serve_forever(out=out))
    for _ in range(500):
        if emu.running:
            break
        await asyncio.sleep(0.01)
    banner = out.getvalue()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not emu.running
    assert "azureml-chat emulator listening on http://127.0.0.1:" in banner
    assert "key: none (any key is accepted)" in banner
    assert "deployments: blue (llama, Llama-2-7b-chat) [default], green (openai, " in banner


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT cannot be sent to a child process on Windows")
def test_serve_runs_until_interrupted() -> None:
    """serve() prints the URL and key, logs each request, and exits cleanly on SIGINT."""
    code = "from azureml_chat.emulator import serve; serve(port=0, key='k')"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    root = Path(__file__).resolve().parents[1]
    with subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=root,
    ) as process:
        try:
            assert process.stdout is not None
            banner = [process.stdout.readline()]
            while banner[-1] not in ("", "Press Ctrl-C to stop.\n"):
                banner.append(process.stdout.readline())
            assert banner[0].startswith("azureml-chat emulator listening on http://127.0.0.1:")
            assert "key: k" in banner[1]
            assert "Press Ctrl-C to stop.\n" == banner[-1]
            request = urllib.request.Request(banner[0].split()[-1] + "/info", headers={"api-key": "k"})
            with urllib.request.urlopen(request, timeout=5) as response:
                assert 200 == response.status
            assert "GET /info -> 200 [default]" == process.stdout.readline().strip()
            process.send_signal(signal.SIGINT)
            _, errors = process.communicate(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
    assert (0, "") == (process.returncode, errors)


async def test_stop_ends_an_open_stream(http: aiohttp.ClientSession) -> None:
    """Stopping the emulator while a slow stream is open ends it within the shutdown grace time."""
    emu = Emulator()
    await emu.start()
    async with http.post(
        emu.chat_url, json=chat(stream=True), headers={"x-emulator-fault": "slow_stream=5"}
    ) as r:
        await r.content.readline()
        started = time.monotonic()
        await emu.stop()
        with pytest.raises(aiohttp.ClientPayloadError):
            await r.read()
    assert time.monotonic() - started < 3


@pytest.mark.parametrize(
    ("schema", "text", "expected"),
    [
        ({"type": "integer"}, "what is magic_function(3)?", 3),
        ({"type": "integer"}, "pi is 3.14, not 7", 7),
        ({"type": "number"}, "add 2.5 and 4", 2.5),
        ({"type": "integer", "minimum": 10}, "use 3", 10),
        ({"type": "integer"}, "no digits here", 1),
    ],
    ids=["first-integer", "skips-decimals", "first-number", "raised-to-minimum", "default-1"],
)
def test_numbers_come_from_the_prompt(schema: dict[str, Any], text: str, expected: Any) -> None:
    """Numeric tool arguments take the prompt's first number of the right kind, so tool loops can compute."""
    assert expected == example_for_schema(schema, text)


# -- text completions (/v1/completions, /completions) -----------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/v1/completions",
        "/completions?api-version=2024-05-01-preview",
        "/models/completions?api-version=2024-05-01-preview",
    ],
)
async def test_text_completion_routes_answer_a_text_completion(
    emulator: Emulator, http: aiohttp.ClientSession, path: str
) -> None:
    """Each text-completions route answers {"prompt": ...} with an OpenAI text_completion echoing the prompt."""
    status, _, answer = await post(http, emulator.url + path, {"prompt": 'say "hi"\nnow'})
    assert (200, "text_completion") == (status, answer["object"])
    assert answer["id"].startswith("cmpl-")
    assert [
        {"index": 0, "text": 'You said: say "hi"\nnow', "finish_reason": "stop", "logprobs": None}
    ] == answer["choices"]
    assert {
        "prompt_tokens": 3,
        "completion_tokens": 5,
        "total_tokens": 8,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    } == answer["usage"]
    assert path.partition("?")[0] == emulator.requests[-1].path


async def test_text_completion_answers_each_prompt_of_a_list(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """A list of prompts gets one choice per prompt, in order, and usage summed over them."""
    _, _, answer = await post(http, emulator.completions_url, {"prompt": ["a", "b c"]})
    assert [(0, "You said: a"), (1, "You said: b c")] == [(c["index"], c["text"]) for c in answer["choices"]]
    assert (3, 7, 10) == tuple(
        answer["usage"][k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")
    )


async def test_text_completion_limits_and_scripted_replies(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """max_tokens and stop cut a text completion; a deployment's scripted replies answer it in turn."""
    _, _, cut = await post(http, emulator.completions_url, {"prompt": "a b c", "max_tokens": 2})
    _, _, stopped = await post(http, emulator.completions_url, {"prompt": "a b c", "stop": [" b"]})
    _, _, scripted = await post(
        http, emulator.completions_url, {"prompt": "x"}, {"azureml-model-deployment": "green"}
    )
    assert ("You said:", "length") == (cut["choices"][0]["text"], cut["choices"][0]["finish_reason"])
    assert ("You said: a", "stop") == (stopped["choices"][0]["text"], stopped["choices"][0]["finish_reason"])
    assert ("first", "green-model") == (scripted["choices"][0]["text"], scripted["model"])


async def test_text_completion_stream_framing(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """A text-completion stream is text deltas equal to the answer, a finish chunk, usage, then [DONE]."""
    headers, events = await sse(http, emulator.completions_url, {"prompt": "one two three"})
    assert "text/event-stream" == headers["Content-Type"]
    assert "[DONE]" == events[-1]
    assert emulator.requests[-1].stream
    chunks = [json.loads(event) for event in events[:-1]]
    assert {"text_completion"} == {chunk["object"] for chunk in chunks}
    assert 1 == len({chunk["id"] for chunk in chunks})
    deltas = [chunk["choices"][0]["text"] for chunk in chunks[:-2]]
    _, _, whole = await post(http, emulator.completions_url, {"prompt": "one two three"})
    assert ["You ", "said: ", "one ", "two ", "three"] == deltas
    assert whole["choices"][0]["text"] == "".join(deltas)
    assert [None] * len(deltas) == [chunk["choices"][0]["finish_reason"] for chunk in chunks[:-2]]
    assert ("", "stop") == (chunks[-2]["choices"][0]["text"], chunks[-2]["choices"][0]["finish_reason"])
    assert ([], whole["usage"]) == (chunks[-1]["choices"], chunks[-1]["usage"])


async def test_text_completion_stream_respects_max_tokens(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """A text-completion stream cut by max_tokens ends with finish_reason "length"."""
    _, events = await sse(http, emulator.completions_url, {"prompt": "a b c", "max_tokens": 2})
    chunks = [json.loads(event) for event in events[:-2]]
    assert "You said:" == "".join(chunk["choices"][0]["text"] for chunk in chunks)
    assert "length" == chunks[-1]["choices"][0]["finish_reason"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "prompt"),
        ({"prompt": 3}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"prompt": ["a", 1]}, "prompt"),
        ({"prompt": "a", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "a", "stream": "yes"}, "stream"),
        ({"prompt": "a", "stop": 3}, "stop"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "prompt"),
    ],
    ids=[
        "no-prompt",
        "prompt-number",
        "prompt-empty",
        "prompt-mixed",
        "max-tokens",
        "stream",
        "stop",
        "chat-body",
    ],
)
async def test_text_completion_refuses_bad_requests_with_400(
    emulator: Emulator, http: aiohttp.ClientSession, body: Any, param: str
) -> None:
    """A malformed text-completions body (a chat body among them) gets 400 naming the parameter."""
    status, _, answer = await post(http, emulator.completions_url, body)
    assert (400, param, "invalid_request_error") == (
        status,
        answer["error"]["param"],
        answer["error"]["type"],
    )


async def test_text_completion_extra_parameters_error(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """With extra-parameters: error an unknown text-completion field is a 400; known ones pass."""
    body = {"prompt": "a", "best_of": 2, "safe_prompt": True}
    status, _, answer = await post(http, emulator.completions_url, body, {"extra-parameters": "error"})
    assert 400 == status
    assert "['safe_prompt']" in answer["error"]["message"]
    body.pop("safe_prompt")
    assert 200 == (await post(http, emulator.completions_url, body, {"extra-parameters": "error"}))[0]


async def test_a_control_word_in_a_prompt_injects_a_fault(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """[[fault:SPEC]] in a text-completion or text-generation prompt applies SPEC and is removed from the echo."""
    assert 429 == (await post(http, emulator.completions_url, {"prompt": "hi [[fault:429]]"}))[0]
    _, _, answer = await post(http, emulator.completions_url, {"prompt": "hi [[fault:latency=0.01]] there"})
    assert "You said: hi there" == answer["choices"][0]["text"]
    async with Emulator(deployments=[Deployment("t", family="gpt2")]) as emu:
        body = {"inputs": {"input_string": ["hi [[fault:latency=0.01]] there"]}}
        assert (200, [{"0": "You said: hi there"}]) == (await post(http, emu.score_url, body))[::2]


async def test_text_completion_stream_faults(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """Stream faults apply to text-completion streams: drop_after cuts the connection after N events."""
    async with http.post(
        emulator.completions_url,
        json={"prompt": "a b c", "stream": True},
        headers={**AUTH, "x-emulator-fault": "drop_after=2"},
    ) as response:
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()


async def test_the_banner_lists_the_text_completion_routes(emulator: Emulator) -> None:
    """The banner names /v1/completions, /completions and /models/completions among the routes."""
    assert "/v1/completions, /completions, /models/completions, GET /info" in emulator.banner()
