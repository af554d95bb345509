"""The LangChain adapter carries what issue 15 added: reasoning in ``additional_kwargs["reasoning_content"]``
(and so in ``content_blocks``), streamed too; token details in ``usage_metadata``; one generation per choice."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("langchain_core")

from langchain_core.messages import AIMessageChunk, HumanMessage

from azureml_chat import AsyncChatClient
from azureml_chat.langchain import AzureMLChatModel
from azureml_chat.testing import MockResponse, MockTransport

URL = "https://example.inference.ml.azure.com/v1/chat/completions"
USAGE = {
    "prompt_tokens": 10,
    "completion_tokens": 20,
    "total_tokens": 30,
    "prompt_tokens_details": {"cached_tokens": 4},
    "completion_tokens_details": {"reasoning_tokens": 12},
}


def model(answer: MockResponse) -> AzureMLChatModel:
    client = AsyncChatClient(URL, "key", transport=MockTransport(lambda request: answer))
    return AzureMLChatModel.from_client(client)


def answer(*contents: str) -> dict[str, Any]:
    return {
        "choices": [
            {"index": index, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
            for index, content in enumerate(contents)
        ],
        "usage": USAGE,
    }


def test_reasoning_is_in_additional_kwargs_and_content_blocks() -> None:
    """A <think> block becomes additional_kwargs['reasoning_content'] and a leading reasoning content block."""
    llm = model(MockResponse(200, json=answer("<think>Small prime.</think>Yes.")))
    try:
        message = llm.invoke("Is 17 prime?")
    finally:
        llm.close()
    assert ("Yes.", {"reasoning_content": "Small prime."}) == (message.content, message.additional_kwargs)
    assert {"type": "reasoning", "reasoning": "Small prime."} == {
        key: value for key, value in message.content_blocks[0].items() if key in ("type", "reasoning")
    }


def test_token_details_are_in_usage_metadata() -> None:
    """cached and reasoning counts become input_token_details.cache_read and output_token_details.reasoning."""
    llm = model(MockResponse(200, json=answer("x")))
    try:
        usage = llm.invoke("x").usage_metadata
    finally:
        llm.close()
    assert usage is not None
    assert ({"cache_read": 4}, {"reasoning": 12}) == (
        usage.get("input_token_details"),
        usage.get("output_token_details"),
    )


def test_each_choice_is_a_generation() -> None:
    """n=2 gives two generations, in choice order."""
    llm = model(MockResponse(200, json=answer("first", "second")))
    try:
        result = llm.generate([[HumanMessage("pick")]], n=2)
    finally:
        llm.close()
    assert [["first", "second"]] == [[g.text for g in gens] for gens in result.generations]


def test_streamed_reasoning_joins_in_additional_kwargs() -> None:
    """Streamed reasoning deltas add up to additional_kwargs['reasoning_content'] on the aggregated chunk."""
    deltas = [{"content": "<think>Sm"}, {"content": "all.</think>"}, {"content": "Yes."}]
    events = [f"data: {json.dumps({'choices': [{'index': 0, 'delta': d}]})}\n\n".encode() for d in deltas]
    events += [
        b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\n',
        b"data: [DONE]\n\n",
    ]
    llm = model(MockResponse(200, content=events))
    try:
        chunks = list(llm.stream("Is 17 prime?"))
    finally:
        llm.close()
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    assert isinstance(total, AIMessageChunk)
    assert ("Yes.", "Small.") == (total.content, total.additional_kwargs.get("reasoning_content"))
