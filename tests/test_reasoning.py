"""Reasoning kept apart from the answer: ``reasoning_content`` fields, and a ``<think>`` block opening the
content, in whole answers and in streams cut anywhere (``_reasoning.py``)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azureml_chat import AsyncChatClient, ChatChunk
from azureml_chat._reasoning import ThinkSplitter, split_think
from azureml_chat.testing import MockResponse, MockTransport, fast_retry

URL = "https://example.inference.ml.azure.com/v1/chat/completions"

SPLITS = [
    # (content as sent, reasoning, content as read)
    ("<think>\nWeigh it.\n</think>\n\nParis.", "Weigh it.", "Paris."),
    ("  \n<think>a</think>b", "a", "b"),
    ("<think>cut at max_tokens  ", "cut at max_tokens", ""),
    ("<think></think>Answer", None, "Answer"),
    ("<think>a</thinking> b</think> c", "a</thinking> b", "c"),
    ("Answer first <think>not reasoning</think>", None, "Answer first <think>not reasoning</think>"),
    ("<thinking>not our tag</thinking>", None, "<thinking>not our tag</thinking>"),
    ("<thi", None, "<thi"),
    ("", None, ""),
]


@pytest.mark.parametrize(("sent", "reasoning", "content"), SPLITS)
def test_split_think_keeps_only_an_opening_block_apart(
    sent: str, reasoning: str | None, content: str
) -> None:
    """Only a <think> block at the very start is reasoning, stripped of its surrounding whitespace."""
    parts = split_think(sent)
    assert (reasoning, content) == ((None, sent) if parts is None else parts)


def stream_split(pieces: list[str]) -> tuple[str | None, str]:
    splitter = ThinkSplitter()
    reasoning, content = [], []
    for position, piece in enumerate(pieces):
        chunk = splitter.feed(
            ChatChunk(content=piece, finish_reason="stop" if position == len(pieces) - 1 else None)
        )
        reasoning.append(chunk.reasoning or "")
        content.append(chunk.content or "")
    return "".join(reasoning) or None, "".join(content)


@st.composite
def cut(draw: st.DrawFn) -> tuple[str, list[str]]:
    text = draw(
        st.sampled_from([row[0] for row in SPLITS])
        | st.lists(
            st.sampled_from(["<think>", "</think>", "<th", "ink>", "</", " ", "\n", "x", "yz"]), max_size=8
        ).map("".join)
    )
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=6)))
    return text, [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


@settings(max_examples=400, deadline=None)
@given(cut())
def test_a_stream_cut_anywhere_splits_like_the_whole_answer(case: tuple[str, list[str]]) -> None:
    """However the content is cut into deltas (inside the tags too), the joined split equals the whole split."""
    text, pieces = case
    whole = split_think(text)
    assert ((None, text) if whole is None else whole) == stream_split(pieces)


def client(answer: MockResponse, **options: Any) -> AsyncChatClient:
    return AsyncChatClient(
        URL, "key", transport=MockTransport(lambda request: answer), retry=fast_retry(0), **options
    )


def body(message: dict[str, Any], **usage: Any) -> dict[str, Any]:
    return {
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12, **usage},
    }


def sse(*deltas: dict[str, Any]) -> list[bytes]:
    events = [{"choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return [f"data: {json.dumps(e)}\n\n".encode() for e in events] + [b"data: [DONE]\n\n"]


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
async def test_a_reasoning_field_is_the_answers_reasoning(field: str) -> None:
    """vLLM's reasoning_content (and its newer name, reasoning) is response.reasoning; content is the answer."""
    async with client(
        MockResponse(200, json=body({"content": "Paris.", field: "Capital of France."}))
    ) as chat:
        response = await chat.chat("Capital?")
    assert ("Capital of France.", "Paris.") == (response.reasoning, response.content)


async def test_a_think_block_is_split_from_a_whole_answer() -> None:
    """DeepSeek-R1's <think> block becomes response.reasoning and leaves the answer in content."""
    async with client(MockResponse(200, json=body({"content": "<think>\nHmm.\n</think>\n\nParis."}))) as chat:
        response = await chat.chat("Capital?")
    assert ("Hmm.", "Paris.") == (response.reasoning, response.content)
    assert "<think>" in response.raw["choices"][0]["message"]["content"]  # raw stays as received


async def test_a_think_block_is_split_from_a_stream_with_the_tags_cut() -> None:
    """Tags cut across deltas are still found; chunks carry reasoning and content deltas apart."""
    deltas = [
        {"role": "assistant"},
        {"content": "<th"},
        {"content": "ink>Hm"},
        {"content": "m.</thi"},
        {"content": "nk>\n\nPar"},
        {"content": "is."},
    ]
    async with client(MockResponse(200, content=sse(*deltas))) as chat, chat.stream("Capital?") as stream:
        chunks = [chunk async for chunk in stream]
        final = stream.final_response()
    assert "Hmm." == "".join(c.reasoning or "" for c in chunks)
    assert "Paris." == "".join(c.content or "" for c in chunks)
    assert ("Hmm.", "Paris.") == (final.reasoning, final.content)


async def test_a_reasoning_delta_field_streams_as_chunk_reasoning() -> None:
    """reasoning_content deltas are chunk.reasoning, joined in final_response()."""
    deltas = [{"reasoning_content": "Think"}, {"reasoning_content": "ing."}, {"content": "Done."}]
    async with client(MockResponse(200, content=sse(*deltas))) as chat, chat.stream("Go") as stream:
        chunks = [chunk async for chunk in stream]
    assert ["Think", "ing."] == [c.reasoning for c in chunks if c.reasoning]
    assert ("Thinking.", "Done.") == (stream.final_response().reasoning, stream.final_response().content)


async def test_a_stream_ending_at_done_inside_an_unfinished_tag_loses_nothing() -> None:
    """Text held back as a possible tag is handed out when the stream ends at [DONE] without a finish reason."""
    events = [b'data: {"choices": [{"index": 0, "delta": {"content": "<thi"}}]}\n\n', b"data: [DONE]\n\n"]
    async with client(MockResponse(200, content=events)) as chat, chat.stream("Go") as stream:
        text = "".join([chunk.content or "" async for chunk in stream])
    assert "<thi" == text


async def test_usage_details_are_read_from_answers_and_streams() -> None:
    """cached_tokens and reasoning_tokens come from the usage's *_details; None when not said."""
    details = {
        "prompt_tokens_details": {"cached_tokens": 2},
        "completion_tokens_details": {"reasoning_tokens": 7},
    }
    async with client(MockResponse(200, json=body({"content": "x"}, **details))) as chat:
        usage = (await chat.chat("x")).usage
    assert usage is not None
    assert (2, 7) == (usage.cached_tokens, usage.reasoning_tokens)
    async with client(MockResponse(200, json=body({"content": "x"}))) as chat:
        plain = (await chat.chat("x")).usage
    assert plain is not None
    assert (None, None) == (plain.cached_tokens, plain.reasoning_tokens)
    events = [
        b'data: {"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "stop"}]}\n\n',
        f"data: {json.dumps({'choices': [], 'usage': body({}, **details)['usage']})}\n\n".encode(),
        b"data: [DONE]\n\n",
    ]
    async with client(MockResponse(200, content=events)) as chat, chat.stream("x") as stream:
        _ = [chunk async for chunk in stream]
    streamed = stream.final_response().usage
    assert streamed is not None
    assert (2, 7) == (streamed.cached_tokens, streamed.reasoning_tokens)
