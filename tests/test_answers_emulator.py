"""The client against the emulator's reasoning and ``n > 1`` modes: what a user's own tests would see."""

from __future__ import annotations

import pytest

from azureml_chat import AsyncChatClient
from azureml_chat.emulator import Deployment, Emulator
from azureml_chat.testing import fast_retry

KEY = "k"


@pytest.fixture
async def emulator() -> Emulator:  # type: ignore[misc]
    deployments = [
        Deployment("think", family="openai", reasoning="think", replies=["Paris."]),
        Deployment("field", family="openai", reasoning="field", replies=["Paris."]),
        Deployment("plain", family="openai"),
    ]
    async with Emulator(key=KEY, deployments=deployments) as emu:
        yield emu


@pytest.mark.parametrize("mode", ["think", "field"])
@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_reasoning_modes_give_reasoning_apart_from_the_answer(
    emulator: Emulator, mode: str, streamed: bool
) -> None:
    """DeepSeek-style <think> content and vLLM-style reasoning_content both read as .reasoning and a clean answer."""
    async with AsyncChatClient(emulator.chat_url, KEY, deployment=mode, retry=fast_retry(0)) as client:
        if streamed:
            async with client.stream("Capital of France?") as stream:
                chunks = [chunk async for chunk in stream]
            response = stream.final_response()
            assert response.reasoning == "".join(c.reasoning or "" for c in chunks)
        else:
            response = await client.chat("Capital of France?")
    assert "Paris." == response.content
    assert response.reasoning
    assert "<think>" not in response.reasoning
    assert response.usage is not None
    assert response.usage.reasoning_tokens


async def test_split_reasoning_off_keeps_the_text_as_the_model_wrote_it(emulator: Emulator) -> None:
    """With split_reasoning=False the <think> block stays in content, whole and streamed."""
    async with AsyncChatClient(emulator.chat_url, KEY, deployment="think", split_reasoning=False) as client:
        whole = await client.chat("Capital?")
        async with client.stream("Capital?") as stream:
            text = "".join([chunk.content or "" async for chunk in stream])
    assert (None, True, True) == (
        whole.reasoning,
        whole.content is not None and whole.content.startswith("<think>"),
        text.startswith("<think>"),
    )
    assert whole.content == text


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_n_choices_come_back_apart(emulator: Emulator, streamed: bool) -> None:
    """n=3 against the emulator gives three choices with indexes 0-2, each finished, the first being content."""
    async with AsyncChatClient(emulator.chat_url, KEY, deployment="plain", retry=fast_retry(0)) as client:
        if streamed:
            async with client.stream("Colour?", n=3) as stream:
                _ = [chunk async for chunk in stream]
            response = stream.final_response()
        else:
            response = await client.chat("Colour?", n=3)
    assert [0, 1, 2] == [choice.index for choice in response.choices]
    assert all(choice.finish_reason for choice in response.choices)
    assert response.choices[0].message.content == response.content
    assert len({choice.message.content for choice in response.choices}) == 3
