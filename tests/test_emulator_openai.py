"""The official openai client talks to the emulator: proof that its OpenAI dialect is the real one."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import openai  # a test-only dependency (the test extras install it)
import pytest

from azureml_chat.emulator import Deployment, Emulator

KEY = "openai-compat-key"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture
async def client() -> AsyncIterator[openai.AsyncOpenAI]:
    async with (
        Emulator(key=KEY, deployments=[Deployment("gpt", family="openai", model="emulated-gpt")]) as emu,
        openai.AsyncOpenAI(base_url=emu.url + "/v1", api_key=KEY, max_retries=0) as client,
    ):
        yield client


async def test_chat_completion(client: openai.AsyncOpenAI) -> None:
    """A plain completion parses into openai's ChatCompletion with content, finish reason and usage."""
    completion = await client.chat.completions.create(
        model="emulated-gpt", messages=[{"role": "user", "content": "hello openai"}]
    )
    assert "hello openai" in (completion.choices[0].message.content or "")
    assert "stop" == completion.choices[0].finish_reason
    assert completion.usage is not None
    assert (
        completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


async def test_streaming_with_usage(client: openai.AsyncOpenAI) -> None:
    """openai's SSE reader consumes the stream: deltas join to the answer, and a usage chunk closes it."""
    stream = await client.chat.completions.create(
        model="emulated-gpt",
        messages=[{"role": "user", "content": "stream this please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = "", None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        usage = chunk.usage or usage
    assert "stream this please" in text
    assert usage is not None
    assert usage.completion_tokens > 0


async def test_tool_call_round_trip(client: openai.AsyncOpenAI) -> None:
    """Offered a tool, the emulator calls it with schema-valid arguments, and answers the tool result."""
    messages: list[dict[str, object]] = [{"role": "user", "content": "Oslo"}]
    first = await client.chat.completions.create(model="emulated-gpt", messages=messages, tools=[WEATHER])
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert ("tool_calls", "get_weather") == (first.choices[0].finish_reason, call.function.name)
    assert isinstance(json.loads(call.function.arguments)["city"], str)
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"},
    ]
    second = await client.chat.completions.create(model="emulated-gpt", messages=messages, tools=[WEATHER])
    assert "sunny, 21 C" in (second.choices[0].message.content or "")


async def test_wrong_key_is_openai_authentication_error(client: openai.AsyncOpenAI) -> None:
    """A wrong key is a 401 that openai maps to its AuthenticationError."""
    with pytest.raises(openai.AuthenticationError):
        await client.with_options(api_key="wrong").chat.completions.create(
            model="emulated-gpt", messages=[{"role": "user", "content": "x"}]
        )
