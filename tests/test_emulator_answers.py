"""What the emulator's OpenAI-shaped answers hold: ``n`` choices, reasoning models, and usage details."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest
from test_cli_emulator import KEY as CLI_KEY
from test_cli_emulator import Served, run

from azureml_chat.emulator import Deployment, Emulator
from azureml_chat.emulator._cache import PromptCache
from azureml_chat.emulator._reasoning import REASONING, stream_pieces

KEY = "answers-key"
AUTH = {"api-key": KEY}
HELLO = [{"role": "user", "content": "hello big world"}]
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
THINK_BLOCK = f"<think>\n{REASONING}\n</think>\n\n"
REASONING_WORDS = len(REASONING.split())


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    """Deployments ``plain`` (the default), ``think`` and ``field`` (reasoning modes), ``scripted`` (replies)."""
    deployments = [
        Deployment("plain"),
        Deployment("think", reasoning="think"),
        Deployment("field", reasoning="field"),
        Deployment("scripted", family="openai", replies=["first", "second", "third"]),
    ]
    async with Emulator(KEY, deployments=deployments) as emu:
        yield emu


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session, closed at teardown."""
    async with aiohttp.ClientSession() as session:
        yield session


async def post(http: aiohttp.ClientSession, url: str, body: Any, deployment: str = "plain") -> dict[str, Any]:
    """POST ``body`` to a deployment; the JSON answer (which must be a 200)."""
    headers = {**AUTH, "azureml-model-deployment": deployment}
    async with http.post(url, json=body, headers=headers) as response:
        assert 200 == response.status, await response.text()
        answer: dict[str, Any] = await response.json()
        return answer


async def stream(
    http: aiohttp.ClientSession, url: str, body: Any, deployment: str = "plain"
) -> list[dict[str, Any]]:
    """POST ``body`` as a stream; its chunks in order, after checking it ends with ``[DONE]``."""
    headers = {**AUTH, "azureml-model-deployment": deployment}
    async with http.post(url, json={**body, "stream": True}, headers=headers) as response:
        assert 200 == response.status
        events = [event.removeprefix("data: ") for event in (await response.text()).split("\n\n") if event]
    assert "[DONE]" == events[-1]
    return [json.loads(event) for event in events[:-1]]


def joined(chunks: list[dict[str, Any]], index: int, field: str) -> str:
    """The ``field`` deltas of choice ``index`` joined (``text`` for text completions)."""
    pieces = [
        (choice.get("delta", choice).get(field) or "")
        for chunk in chunks
        for choice in chunk["choices"]
        if choice["index"] == index
    ]
    return "".join(pieces)


def words(text: str) -> int:
    """The emulator's token count."""
    return len(text.split())


# -- n choices ------------------------------------------------------------------------------------------------


async def test_n_chat_choices_are_distinct_and_counted(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """n=3 answers choices 0..2 with distinct texts, the first as with n=1; usage counts all, the prompt once."""
    one = await post(http, emulator.chat_url, {"messages": HELLO})
    three = await post(http, emulator.chat_url, {"messages": HELLO, "n": 3})
    texts = [choice["message"]["content"] for choice in three["choices"]]
    assert [0, 1, 2] == [choice["index"] for choice in three["choices"]]
    assert 3 == len(set(texts))
    assert one["choices"][0]["message"]["content"] == texts[0]
    assert (3, sum(map(words, texts))) == (
        three["usage"]["prompt_tokens"],
        three["usage"]["completion_tokens"],
    )


async def test_n_chat_stream_interleaves_one_choice_per_chunk(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """A streamed n=2: each chunk holds one choice, the choices alternate, each ends with its own finish chunk."""
    whole = await post(http, emulator.chat_url, {"messages": HELLO, "n": 2})
    chunks = await stream(http, emulator.chat_url, {"messages": HELLO, "n": 2})
    *choice_chunks, usage_chunk = chunks
    assert {1} == {len(chunk["choices"]) for chunk in choice_chunks}
    indexes = [chunk["choices"][0]["index"] for chunk in choice_chunks]
    assert [0, 1, 0, 1] == indexes[:4]
    for index in (0, 1):
        own = [chunk["choices"][0] for chunk in choice_chunks if chunk["choices"][0]["index"] == index]
        assert [None] * (len(own) - 1) + ["stop"] == [choice["finish_reason"] for choice in own]
        assert whole["choices"][index]["message"]["content"] == joined(chunks, index, "content")
    assert ([], whole["usage"]) == (usage_chunk["choices"], usage_chunk["usage"])


async def test_n_takes_scripted_replies_in_turn(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """With scripted replies each choice takes the next reply, on /score of an openai deployment too."""
    answer = await post(http, emulator.score_url, {"messages": HELLO, "n": 2}, "scripted")
    assert ["first", "second"] == [choice["message"]["content"] for choice in answer["choices"]]


async def test_n_tool_calls_have_their_own_ids(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """n=2 with a tool offered: each choice calls it, with a different call id."""
    answer = await post(http, emulator.chat_url, {"messages": HELLO, "tools": [TOOL], "n": 2})
    calls = [choice["message"]["tool_calls"][0] for choice in answer["choices"]]
    assert (["lookup", "lookup"], 2) == (
        [call["function"]["name"] for call in calls],
        len({c["id"] for c in calls}),
    )


async def test_n_text_completions_number_choices_per_prompt(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """Two prompts with n=2: four choices, prompt p's j-th at index 2p + j; usage counts each prompt once."""
    answer = await post(http, emulator.completions_url, {"prompt": ["a", "b c"], "n": 2})
    assert [
        (0, "You said: a"),
        (1, "You said: a (choice 1)"),
        (2, "You said: b c"),
        (3, "You said: b c (choice 1)"),
    ] == [(choice["index"], choice["text"]) for choice in answer["choices"]]
    assert (3, 3 + 5 + 4 + 6) == (answer["usage"]["prompt_tokens"], answer["usage"]["completion_tokens"])


async def test_n_text_completion_stream_interleaves(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """A streamed n=2 text completion alternates its choices' chunks; each joins to its text."""
    chunks = await stream(http, emulator.completions_url, {"prompt": "a", "n": 2})
    assert [0, 1, 0, 1] == [chunk["choices"][0]["index"] for chunk in chunks[:4]]
    assert ["You said: a", "You said: a (choice 1)"] == [joined(chunks, index, "text") for index in (0, 1)]


@pytest.mark.parametrize("n", [0, 129, "2", True, 1.5])
async def test_a_bad_n_is_a_400(emulator: Emulator, http: aiohttp.ClientSession, n: Any) -> None:
    """n must be a whole number from 1 to 128; anything else is a 400 naming n."""
    async with http.post(emulator.chat_url, json={"messages": HELLO, "n": n}, headers=AUTH) as response:
        assert (400, "n") == (response.status, (await response.json())["error"]["param"])


# -- reasoning ------------------------------------------------------------------------------------------------


async def test_think_mode_starts_content_with_a_think_block(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """reasoning="think": content is <think>reasoning</think> then the answer; usage reports the reasoning."""
    answer = await post(http, emulator.chat_url, {"messages": HELLO}, "think")
    message, usage = answer["choices"][0]["message"], answer["usage"]
    assert THINK_BLOCK + "You said: hello big world" == message["content"]
    assert "reasoning_content" not in message
    reasoning = REASONING_WORDS + 2  # the two tags are words of the reasoning too
    assert (reasoning, 5 + reasoning) == (
        usage["completion_tokens_details"]["reasoning_tokens"],
        usage["completion_tokens"],
    )


async def test_think_stream_splits_the_tags_across_chunks(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """Streamed, the deltas join to the think-mode content, and neither tag arrives whole in one delta."""
    chunks = await stream(http, emulator.chat_url, {"messages": HELLO}, "think")
    deltas = [chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks if chunk["choices"]]
    assert THINK_BLOCK + "You said: hello big world" == "".join(deltas)
    assert not any("<think>" in delta or "</think>" in delta for delta in deltas)
    assert ["<th", "ink>\n"] == [delta for delta in deltas if delta][:2]


def test_stream_pieces_join_back_and_leave_other_text_alone() -> None:
    """stream_pieces rejoins exactly; text without a leading think block is split a word at a time."""
    content = "<think>\na b\n</think>\n\nanswer here"
    assert (content, ["<th", "ink>\n", "a ", "b", "\n</", "think>\n\n", "answer ", "here"]) == (
        "".join(stream_pieces(content)),
        stream_pieces(content),
    )
    assert ["say ", "<think> ", "later"] == stream_pieces("say <think> later")


async def test_field_mode_sends_reasoning_content(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """reasoning="field": the message has reasoning_content, content only the answer; usage counts the reasoning."""
    answer = await post(http, emulator.chat_url, {"messages": HELLO}, "field")
    message, usage = answer["choices"][0]["message"], answer["usage"]
    assert (REASONING, "You said: hello big world") == (message["reasoning_content"], message["content"])
    assert (REASONING_WORDS, 5 + REASONING_WORDS) == (
        usage["completion_tokens_details"]["reasoning_tokens"],
        usage["completion_tokens"],
    )


async def test_field_stream_sends_reasoning_deltas_before_content(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """Streamed in field mode: reasoning_content deltas join to the reasoning and all come before the content."""
    chunks = await stream(http, emulator.chat_url, {"messages": HELLO}, "field")
    assert (REASONING, "You said: hello big world") == (
        joined(chunks, 0, "reasoning_content"),
        joined(chunks, 0, "content"),
    )
    kinds = [next(iter(c["choices"][0]["delta"]), None) for c in chunks if c["choices"]]
    last_reasoning = max(i for i, kind in enumerate(kinds) if kind == "reasoning_content")
    assert last_reasoning < kinds.index("content")


async def test_tool_calls_carry_no_reasoning(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """A reasoning deployment's tool-call answer has no think block, no reasoning_content, 0 reasoning tokens."""
    answer = await post(http, emulator.chat_url, {"messages": HELLO, "tools": [TOOL]}, "think")
    message = answer["choices"][0]["message"]
    assert (None, None, 0) == (
        message["content"],
        message.get("reasoning_content"),
        answer["usage"]["completion_tokens_details"]["reasoning_tokens"],
    )


def test_the_command_line_serves_a_reasoning_model() -> None:
    """azureml-chat emulator --reasoning field: the banner says so and chat answers carry reasoning_content."""
    served = Served("--reasoning", "field")
    try:
        url = (
            next(line for line in served.banner if "listening on" in line).split()[-1]
            + "/v1/chat/completions"
        )
        request = urllib.request.Request(
            url,
            data=json.dumps({"messages": HELLO}).encode(),
            headers={"api-key": CLI_KEY, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            message = json.load(response)["choices"][0]["message"]
    finally:
        served.stop()
    assert any("reasoning=field" in line for line in served.banner)
    assert REASONING == message["reasoning_content"]


def test_an_unknown_reasoning_flag_exits_2() -> None:
    """--reasoning takes think or field; anything else exits 2 naming the flag."""
    done = run("--reasoning", "deep")
    assert (2, True) == (done.returncode, "argument --reasoning: invalid choice: 'deep'" in done.stderr)


def test_an_unknown_reasoning_mode_is_refused() -> None:
    """Deployment(reasoning=...) takes only "think", "field" or None."""
    with pytest.raises(ValueError, match="reasoning must be one of think, field"):
        Deployment("r", reasoning="thinking")  # type: ignore[arg-type]


# -- usage details --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/score"])
async def test_every_usage_object_has_the_details(
    emulator: Emulator, http: aiohttp.ClientSession, path: str
) -> None:
    """Chat, text and openai-family /score answers, streamed or not, carry cached and reasoning token details."""
    body = {"prompt": "hi"} if "/completions" in path and "chat" not in path else {"messages": HELLO}
    whole = await post(http, emulator.url + path, body, "scripted")
    streamed = (await stream(http, emulator.url + path, body, "scripted"))[-1]
    for usage in (whole["usage"], streamed["usage"]):
        assert {"cached_tokens", "audio_tokens"} == set(usage["prompt_tokens_details"])
        assert {"reasoning_tokens": 0, "audio_tokens": 0} == usage["completion_tokens_details"]


async def test_a_repeated_prefix_counts_as_cached(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    """The second turn reports the first turn's messages as cached; another deployment's cache is its own."""
    system = {"role": "system", "content": "be brief please"}
    first = [system, *HELLO]
    second = [*first, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "more"}]

    async def cached(messages: list[dict[str, Any]], deployment: str = "plain") -> int:
        answer = await post(http, emulator.chat_url, {"messages": messages}, deployment)
        return int(answer["usage"]["prompt_tokens_details"]["cached_tokens"])

    assert [0, 6, 3, 0] == [
        await cached(first),
        await cached(second),
        await cached(first),  # all but the last message were seen
        await cached(first, "think"),
    ]
    emulator.reset()
    assert 0 == await cached(second)


def test_the_prompt_cache_is_bounded() -> None:
    """The cache forgets the least recently seen prefixes past its size."""
    cache = PromptCache(max_prefixes=2)
    conversation: list[Mapping[str, Any]] = [
        {"role": "user", "content": "a"},
        {"role": "user", "content": "b c"},
    ]
    cache.cached_tokens("d", conversation)
    cache.cached_tokens("d", [{"role": "user", "content": "x"}])
    assert 0 == cache.cached_tokens("d", [*conversation[:1], {"role": "user", "content": "z"}])
