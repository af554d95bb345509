"""Text completion (the ``TEXT_COMPLETION`` operation in ``_operations.py``, ``formatters/_textgen.py``, the openai
family's ``/v1/completions`` hooks): request bodies, response shapes, family/route mismatches, and
``complete()`` / ``stream_complete()`` end to end against the emulator on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any, ClassVar

import attrs
import pytest
from aiohttp import web
from conftest import LoopbackServer, Reply, scripted
from hypothesis import given, settings
from hypothesis import strategies as st

from azureml_chat import (
    AsyncChatClient,
    AsyncCompletionStream,
    Client,
    CompletionStream,
    ConfigurationError,
    ContentFormatter,
    InvalidRequestError,
    RateLimit,
    ResponseFormatError,
    RetryPolicy,
    Route,
    StreamError,
    Usage,
    UserMessage,
    available_formatters,
    get_formatter,
    register_formatter,
)
from azureml_chat import formatters as registry
from azureml_chat._codec import encode_json
from azureml_chat._responses import CompletionChoice, CompletionChunk, CompletionResponse
from azureml_chat.emulator import Deployment, Emulator

StartServer = Callable[..., Awaitable[LoopbackServer]]
KEY = "test-key"
FAST_RETRY = RetryPolicy(initial_delay=0.001, max_delay=0.005)
# LangChain's observed prompt (langchain_azureml.md 4.2): a quote and a newline, which it escapes by hand.
PROMPT = 'Say "hi"\nnow'
PARAMS = {"temperature": 0.1, "max_tokens": 5, "stop": ["\n"]}
TEXT_PARAMETERS = {"temperature": 0.1, "max_new_tokens": 5, "stop": ["\n"]}
TEXT_FAMILIES = ["gpt2", "hf", "dolly"]
DEPLOYMENTS = {"gpt2": "g", "hf": "h", "dolly": "d", "openai": "o", "llama": "l"}


async def complete(client: AsyncChatClient, prompt: str, **params: Any) -> CompletionResponse:
    """``client.complete``, spelled like the module function these tests were written against."""
    return await client.complete(prompt, **params)


def stream_complete(client: AsyncChatClient, prompt: str, **params: Any) -> AsyncCompletionStream:
    """``client.stream_complete``, likewise."""
    return client.stream_complete(prompt, **params)


def wire(body: Mapping[str, Any]) -> Any:
    """A body as the endpoint receives it: encoded once, parsed back."""
    return json.loads(encode_json(body))


# --- request bodies -----------------------------------------------------------------------------------------

REQUEST_TABLE: list[tuple[str, str, Route, Mapping[str, Any], bool, dict[str, Any]]] = [
    # (id, family, route, params, stream, expected body), written from langchain_azureml.md 4.2 without the
    # escaping and quote-wrapping bugs
    (
        "gpt2",
        "gpt2",
        Route.SCORE,
        PARAMS,
        False,
        {"inputs": {"input_string": [PROMPT]}, "parameters": TEXT_PARAMETERS},
    ),
    ("hf", "hf", Route.SCORE, PARAMS, False, {"inputs": [PROMPT], "parameters": TEXT_PARAMETERS}),
    (
        "dolly-parameters-beside-input-data",
        "dolly",
        Route.SCORE,
        PARAMS,
        False,
        {"input_data": {"input_string": [PROMPT]}, "parameters": TEXT_PARAMETERS},
    ),
    (
        "gpt2-no-params",
        "gpt2",
        Route.SCORE,
        {},
        False,
        {"inputs": {"input_string": [PROMPT]}, "parameters": {}},
    ),
    ("hf-stream-ignored", "hf", Route.SCORE, {}, True, {"inputs": [PROMPT], "parameters": {}}),
    ("openai", "openai", Route.COMPLETIONS, PARAMS, False, {"prompt": PROMPT, **PARAMS}),
    (
        "openai-stream",
        "openai",
        Route.COMPLETIONS,
        PARAMS,
        True,
        {"prompt": PROMPT, **PARAMS, "stream": True},
    ),
    (
        "openai-extra-params-top-level",
        "openai",
        Route.COMPLETIONS,
        {"best_of": 2, "logprobs": 1},
        False,
        {"prompt": PROMPT, "best_of": 2, "logprobs": 1},
    ),
]


@pytest.mark.parametrize(
    ("family", "route", "params", "stream", "expected"),
    [row[1:] for row in REQUEST_TABLE],
    ids=[row[0] for row in REQUEST_TABLE],
)
def test_request_bodies(
    family: str, route: Route, params: Mapping[str, Any], stream: bool, expected: dict[str, Any]
) -> None:
    """Each family builds its documented body on its route, renaming max_tokens where the schema says so."""
    assert expected == wire(
        get_formatter(family).build_completion_request(route, PROMPT, params, stream=stream)
    )


@pytest.mark.parametrize(
    ("family", "route"),
    [("gpt2", Route.SCORE), ("hf", Route.SCORE), ("dolly", Route.SCORE), ("openai", Route.COMPLETIONS)],
)
def test_prompt_is_never_escaped_or_quoted(family: str, route: Route) -> None:
    """A quote and a newline in the prompt are JSON-encoded once: no hand escaping, no quote wrapping."""
    encoded = encode_json(get_formatter(family).build_completion_request(route, PROMPT, {}, stream=False))
    assert b'"Say \\"hi\\"\\nnow"' in encoded
    assert b"\\\\" not in encoded
    assert b'"\\"Say' not in encoded


@pytest.mark.parametrize("family", TEXT_FAMILIES)
@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"max_tokens": 5, "max_new_tokens": 256}, 256),
        ({"max_new_tokens": 256, "max_tokens": 5}, 5),
    ],
    ids=["max_new_tokens-set-last", "max_tokens-set-last"],
)
def test_token_limit_is_the_one_set_last(family: str, params: dict[str, int], expected: int) -> None:
    """Given both max_tokens and max_new_tokens, the text-generation body keeps the one set last."""
    body = wire(get_formatter(family).build_completion_request(Route.SCORE, "x", params, stream=False))
    assert {"max_new_tokens": expected} == body["parameters"]


@pytest.mark.parametrize("family", TEXT_FAMILIES)
@pytest.mark.parametrize("name", ["tools", "tool_choice", "response_format"])
def test_text_generation_refuses_chat_only_parameters(family: str, name: str) -> None:
    """Tools and response formats have no place in a text-generation schema: InvalidRequestError naming them."""
    with pytest.raises(InvalidRequestError, match=f"'{name}'"):
        get_formatter(family).build_completion_request(Route.SCORE, "x", {name: "auto"}, stream=False)


# --- response shapes ------------------------------------------------------------------------------------------

# Every documented text-generation output (langchain_azureml.md 4.2 and its family list), newest first.
TEXT_VARIANTS = [
    ("gpt2", [{"0": " generated \n"}]),
    ("hf", [{"0": {"generated_text": " generated \n"}}]),
    ("hf-older", [{"generated_text": " generated \n"}]),
    ("hf-oldest", [[{"generated_text": " generated \n"}]]),
    ("hf-summarisation", [{"summary_text": " generated \n"}]),
    ("dolly", [" generated \n"]),
    ("two-prompts", [{"0": " generated \n"}, {"0": "second"}]),
    ("two-sequences", [[{"generated_text": " generated \n"}, {"generated_text": "second"}]]),
]


@pytest.mark.parametrize("family", TEXT_FAMILIES)
@pytest.mark.parametrize("body", [row[1] for row in TEXT_VARIANTS], ids=[row[0] for row in TEXT_VARIANTS])
def test_text_generation_reads_every_documented_variant(family: str, body: Any) -> None:
    """Each text-generation family reads the first output of every documented shape, text kept unstripped."""
    response = get_formatter(family).parse_completion(Route.SCORE, body)
    assert CompletionResponse(text=" generated \n") == response
    assert body == response.raw


TEXT_COMPLETION = {
    "id": "cmpl-1",
    "object": "text_completion",
    "created": 1700000000,
    "model": "Meta-Llama-3-8B",
    "choices": [{"index": 0, "text": " Paris.", "finish_reason": "stop", "logprobs": {"tokens": [" Paris"]}}],
    "usage": {"prompt_tokens": 6, "completion_tokens": 2, "total_tokens": 8},
}

OPENAI_TABLE: list[tuple[str, Any, CompletionResponse]] = [
    (
        "full",
        TEXT_COMPLETION,
        CompletionResponse(
            choices=[CompletionChoice(text=" Paris.", finish_reason="stop", logprobs={"tokens": [" Paris"]})],
            usage=Usage(6, 2, 8),
            model="Meta-Llama-3-8B",
            id="cmpl-1",
        ),
    ),
    ("minimal", {"choices": [{"text": "x"}]}, CompletionResponse(text="x")),
    (
        "null-text",
        {"choices": [{"text": None, "finish_reason": "content_filter"}]},
        CompletionResponse(text="", finish_reason="content_filter"),
    ),
    (
        "choices-by-index",
        {"choices": [{"index": 1, "text": "second"}, {"index": 0, "text": "first"}]},
        CompletionResponse(
            choices=[CompletionChoice(index=0, text="first"), CompletionChoice(index=1, text="second")]
        ),
    ),
]


@pytest.mark.parametrize(
    ("body", "expected"), [row[1:] for row in OPENAI_TABLE], ids=[row[0] for row in OPENAI_TABLE]
)
def test_openai_text_completion_responses(body: Any, expected: CompletionResponse) -> None:
    """The openai family reads every choice's text (unstripped), finish reason and logprobs, by index, and the
    usage, model and id."""
    response = get_formatter("openai").parse_completion(Route.COMPLETIONS, body)
    assert expected == response
    assert body == response.raw


def test_each_choice_keeps_its_logprobs_as_received() -> None:
    """A choice's logprobs object is kept exactly as the endpoint sent it."""
    response = get_formatter("openai").parse_completion(Route.COMPLETIONS, TEXT_COMPLETION)
    assert {"tokens": [" Paris"]} == response.choices[0].logprobs


def test_raw_keeps_unknown_fields() -> None:
    """Fields the SDK does not model (logprobs, created) stay readable in ``raw``."""
    response = get_formatter("openai").parse_completion(Route.COMPLETIONS, TEXT_COMPLETION)
    assert ({"tokens": [" Paris"]}, 1700000000) == (
        response.raw["choices"][0]["logprobs"],
        response.raw["created"],
    )


WRONG_SHAPES: list[tuple[str, str, Route, Any, str | None]] = [
    # (id, family, route, body, what the message must also say)
    ("gpt2-got-llama", "gpt2", Route.SCORE, {"output": "hi"}, "call chat() with formatter='llama'"),
    (
        "hf-got-chat-completion",
        "hf",
        Route.SCORE,
        {"choices": [{"message": {"content": "hi"}}]},
        "call chat() with formatter='openai'",
    ),
    ("dolly-got-text-completion", "dolly", Route.SCORE, TEXT_COMPLETION, "try formatter='openai'"),
    ("gpt2-empty-list", "gpt2", Route.SCORE, [], None),
    ("gpt2-number", "gpt2", Route.SCORE, [42], None),
    ("gpt2-text-not-string", "gpt2", Route.SCORE, [{"0": 5}], None),
    ("hf-generated-text-not-string", "hf", Route.SCORE, [{"0": {"generated_text": 5}}], None),
    ("hf-empty-inner-list", "hf", Route.SCORE, [[]], None),
    ("hf-object-not-list", "hf", Route.SCORE, {"generated_text": "x"}, None),
    ("dolly-plain-string", "dolly", Route.SCORE, "plain text", None),
    ("dolly-null", "dolly", Route.SCORE, None, None),
    ("openai-got-gpt2", "openai", Route.COMPLETIONS, [{"0": "x"}], "try formatter='gpt2'"),
    (
        "openai-got-chat-completion",
        "openai",
        Route.COMPLETIONS,
        {"choices": [{"message": {"content": "hi"}}]},
        "chat response, which complete() cannot read",
    ),
    ("openai-not-object", "openai", Route.COMPLETIONS, ["x"], "try formatter='dolly'"),
    ("openai-empty-choices", "openai", Route.COMPLETIONS, {"choices": []}, None),
    ("openai-text-not-string", "openai", Route.COMPLETIONS, {"choices": [{"text": 5}]}, None),
]


@pytest.mark.parametrize(
    ("family", "route", "body", "hint"),
    [row[1:] for row in WRONG_SHAPES],
    ids=[row[0] for row in WRONG_SHAPES],
)
def test_wrong_shape_is_a_response_format_error(
    family: str, route: Route, body: Any, hint: str | None
) -> None:
    """A body of the wrong shape raises ResponseFormatError naming the formatter, with a hint when one fits."""
    formatter = get_formatter(family)
    with pytest.raises(ResponseFormatError) as caught:
        formatter.parse_completion(route, body)
    assert family == caught.value.formatter
    assert f"[formatter: {family}]" in str(caught.value)
    if hint is None:
        assert "formatter=" not in str(caught.value)
    else:
        assert hint in str(caught.value)


def test_chat_parse_of_text_generation_output_points_at_complete() -> None:
    """A chat family given text-generation output says to call complete() with that family."""
    with pytest.raises(ResponseFormatError, match=r"call complete\(\) with formatter='hf'"):
        get_formatter("llama").parse_response(Route.SCORE, [{"generated_text": "x"}])


CHUNK_TABLE: list[tuple[str, Any, CompletionChunk]] = [
    (
        "delta",
        {"id": "c", "model": "m", "choices": [{"index": 0, "text": "Par", "finish_reason": None}]},
        CompletionChunk(text="Par", model="m", id="c"),
    ),
    (
        "finish",
        {"choices": [{"index": 0, "text": "", "finish_reason": "length"}]},
        CompletionChunk(finish_reason="length"),
    ),
    (
        "usage-only",
        {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}},
        CompletionChunk(usage=Usage(1, 2, 3)),
    ),
    ("other-choice", {"choices": [{"index": 1, "text": "second"}]}, CompletionChunk(text="second", index=1)),
    ("no-choices", {}, CompletionChunk()),
]


@pytest.mark.parametrize(
    ("data", "expected"), [row[1:] for row in CHUNK_TABLE], ids=[row[0] for row in CHUNK_TABLE]
)
def test_openai_text_completion_chunks(data: Any, expected: CompletionChunk) -> None:
    """A streamed text_completion event gives its choice's text delta and index, finish reason and any usage."""
    chunk = get_formatter("openai").parse_completion_chunk(Route.COMPLETIONS, data)
    assert expected == chunk
    assert chunk is not None
    assert data == chunk.raw


@pytest.mark.parametrize(
    "data", [{"error": {"message": "overloaded"}}, ["x"], "x"], ids=["error-event", "list", "string"]
)
def test_bad_chunks_are_stream_errors(data: Any) -> None:
    """An error event or a non-object event in a completion stream is a StreamError."""
    with pytest.raises(StreamError):
        get_formatter("openai").parse_completion_chunk(Route.COMPLETIONS, data)


FUZZ = settings(max_examples=150, deadline=None)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=15,
)
near_text = st.lists(
    st.fixed_dictionaries({"0": json_values | st.fixed_dictionaries({"generated_text": json_values})}),
    max_size=2,
)
near_completion = st.fixed_dictionaries(
    {"choices": st.lists(st.fixed_dictionaries({"text": json_values, "index": json_values}), max_size=2)}
)


@pytest.mark.parametrize(
    ("family", "route"), [*((f, Route.SCORE) for f in TEXT_FAMILIES), ("openai", Route.COMPLETIONS)]
)
@FUZZ
@given(body=json_values | near_text | near_completion)
def test_any_body_parses_or_raises_response_format_error(family: str, route: Route, body: Any) -> None:
    """Any JSON body becomes a CompletionResponse with str text, or raises ResponseFormatError; nothing else."""
    try:
        response = get_formatter(family).parse_completion(route, body)
    except ResponseFormatError:
        return
    assert isinstance(response.text, str)


@FUZZ
@given(data=json_values | near_completion)
def test_any_event_parses_or_raises_stream_error(data: Any) -> None:
    """Any stream event becomes one CompletionChunk with str text per choice it carries, or raises StreamError;
    nothing else."""
    try:
        chunk = get_formatter("openai").parse_completion_chunk(Route.COMPLETIONS, data)
    except StreamError:
        return
    chunks = chunk if isinstance(chunk, tuple) else (chunk,)
    assert chunks
    assert all(isinstance(one, CompletionChunk) and isinstance(one.text, str) for one in chunks)


# --- who can chat, who can complete ---------------------------------------------------------------------------

CAPABILITIES = [
    # (family, route, can chat, can complete)
    ("openai", Route.SCORE, True, False),
    ("openai", Route.CHAT_COMPLETIONS, True, False),
    ("openai", Route.COMPLETIONS, False, True),
    ("llama", Route.SCORE, True, False),
    ("llama", Route.CHAT_COMPLETIONS, True, False),
    ("llama", Route.COMPLETIONS, False, False),
    ("mistral", Route.COMPLETIONS, False, False),
    *((family, Route.SCORE, False, True) for family in TEXT_FAMILIES),
    *((family, Route.CHAT_COMPLETIONS, False, False) for family in TEXT_FAMILIES),
    *((family, Route.COMPLETIONS, False, False) for family in TEXT_FAMILIES),
]


@pytest.mark.parametrize(("family", "route", "chats", "completes"), CAPABILITIES)
def test_the_route_decides_between_chat_and_completion(
    family: str, route: Route, chats: bool, completes: bool
) -> None:
    """can_chat / can_complete follow each family's routes and completion_routes."""
    formatter = get_formatter(family)
    assert (chats, completes) == (formatter.can_chat(route), formatter.can_complete(route))


def test_text_generation_families_are_registered() -> None:
    """gpt2, hf and dolly are available out of the box."""
    assert {"gpt2", "hf", "dolly"} <= set(available_formatters())


@pytest.mark.parametrize("family", TEXT_FAMILIES)
def test_text_generation_family_refuses_to_chat(family: str) -> None:
    """A text-generation family asked to chat raises InvalidRequestError pointing at complete()."""
    formatter = get_formatter(family)
    with pytest.raises(InvalidRequestError, match=r"call complete\(prompt\)"):
        formatter.build_request(Route.SCORE, [UserMessage("hi")], {}, stream=False)
    with pytest.raises(ResponseFormatError, match=r"complete\(prompt\)"):
        formatter.parse_response(Route.SCORE, [{"0": "x"}])
    with pytest.raises(StreamError):
        formatter.parse_chunk(Route.CHAT_COMPLETIONS, {})
    with pytest.raises(StreamError):
        formatter.parse_completion_chunk(Route.SCORE, {})


def test_openai_refuses_to_chat_on_the_text_route() -> None:
    """The openai family asked to chat on /v1/completions says that route is text completion, not chat."""
    with pytest.raises(InvalidRequestError, match="text completion route"):
        get_formatter("openai").build_request(Route.COMPLETIONS, [UserMessage("hi")], {}, stream=False)


@pytest.mark.parametrize(
    ("family", "route", "message"),
    [
        ("llama", Route.SCORE, "'llama' formatter is a chat family"),
        ("mistral", Route.CHAT_COMPLETIONS, "'mistral' formatter is a chat family"),
        ("openai", Route.SCORE, "completes text only on /v1/completions"),
        ("openai", Route.CHAT_COMPLETIONS, "completes text only on /v1/completions"),
        ("gpt2", Route.CHAT_COMPLETIONS, "completes text only on /score"),
    ],
)
def test_completion_where_the_family_cannot_is_an_invalid_request(
    family: str, route: Route, message: str
) -> None:
    """Asking a family to complete where it cannot raises InvalidRequestError saying where it can."""
    with pytest.raises(InvalidRequestError, match=message):
        get_formatter(family).build_completion_request(route, "x", {}, stream=False)


def test_base_formatter_cannot_complete() -> None:
    """The base ContentFormatter's completion hooks raise 'cannot complete' until a subclass provides them."""
    base = ContentFormatter()
    for call in (
        lambda: base.build_completion_request(Route.SCORE, "x", {}, stream=False),
        lambda: base.parse_completion(Route.SCORE, {}),
        lambda: base.parse_completion_chunk(Route.SCORE, {}),
    ):
        with pytest.raises(InvalidRequestError, match="cannot complete text"):
            call()


# --- end to end against the emulator ------------------------------------------------------------------------


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    """An emulator with one deployment per family (gpt2 ``g``, hf ``h``, dolly ``d``, openai ``o``, llama ``l``)."""
    deployments = [Deployment(name, family=family) for family, name in DEPLOYMENTS.items()]
    async with Emulator(KEY, deployments=deployments) as emu:
        yield emu


def connect(emulator: Emulator, family: str, *, url: str | None = None, **options: Any) -> AsyncChatClient:
    """A client for ``family``'s deployment, on /score (text generation) or /v1/completions (openai)."""
    if url is None:
        url = emulator.completions_url if family == "openai" else emulator.score_url
    return AsyncChatClient(
        url, KEY, formatter=family, deployment=DEPLOYMENTS[family], retry=FAST_RETRY, **options
    )


def acquired(client: AsyncChatClient) -> int:
    """Connections the client's pool has handed out and not got back."""
    session = client._pipeline.transport._session
    assert session is not None
    return len(session.connector._acquired)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("family", "sent"),
    [
        ("gpt2", {"inputs": {"input_string": [PROMPT]}, "parameters": {"max_new_tokens": 9}}),
        ("hf", {"inputs": [PROMPT], "parameters": {"max_new_tokens": 9}}),
        ("dolly", {"input_data": {"input_string": [PROMPT]}, "parameters": {"max_new_tokens": 9}}),
        ("openai", {"prompt": PROMPT, "max_tokens": 9}),
    ],
)
async def test_complete_end_to_end(emulator: Emulator, family: str, sent: dict[str, Any]) -> None:
    """complete() sends the family's body with the prompt exactly as written and returns the generated text."""
    async with connect(emulator, family) as client:
        response = await complete(client, PROMPT, max_tokens=9)
    record = emulator.requests[-1]
    assert sent == record.body
    assert ("You said: " + PROMPT, 200) == (response.text, record.status)


async def test_openai_completion_reports_usage_and_finish_reason(emulator: Emulator) -> None:
    """On /v1/completions the response carries finish_reason, usage, model and id from the endpoint."""
    async with connect(emulator, "openai") as client:
        response = await complete(client, "one two three four", max_tokens=3)
    assert ("You said: one", "length", Usage(4, 3, 7, cached_tokens=0, reasoning_tokens=0)) == (
        response.text,
        response.finish_reason,
        response.usage,
    )
    assert "Meta-Llama-3.1-8B-Instruct" == response.model
    assert response.id is not None
    assert response.id.startswith("cmpl-")


@pytest.mark.parametrize("path", ["/v1/completions", "/completions?api-version=2024-05-01-preview"])
async def test_both_text_completion_paths(emulator: Emulator, path: str) -> None:
    """/v1/completions and /completions (with ?api-version=) both complete text."""
    async with connect(emulator, "openai", url=emulator.url + path) as client:
        assert "You said: hi" == (await complete(client, "hi")).text


async def test_max_tokens_cuts_text_generation(emulator: Emulator) -> None:
    """max_tokens reaches a /score text-generation model as max_new_tokens and limits its answer."""
    async with connect(emulator, "gpt2") as client:
        response = await complete(client, "a b c d", max_tokens=2)
    assert "You said:" == response.text
    assert {"max_new_tokens": 2} == emulator.requests[-1].body["parameters"]


async def test_model_kwargs_merge_under_call_params_and_stay_unchanged(emulator: Emulator) -> None:
    """Client model_kwargs are sent under the call's parameters, and are not changed by the call."""
    defaults = {"temperature": 0.5, "top_k": 10}
    async with connect(emulator, "hf", model_kwargs=defaults) as client:
        await complete(client, "x", temperature=0.9, do_sample=True)
    assert {"temperature": 0.9, "top_k": 10, "do_sample": True} == emulator.requests[-1].body["parameters"]
    assert {"temperature": 0.5, "top_k": 10} == defaults


async def test_complete_retries_like_chat(emulator: Emulator) -> None:
    """A 503 is retried; every attempt carries the same client request id."""
    emulator.add_fault("status=503,times=1", deployment="g")
    async with connect(emulator, "gpt2") as client:
        response = await complete(client, "hi")
    first, second = emulator.requests
    assert ([503, 200], "You said: hi") == ([first.status, second.status], response.text)
    assert first.headers["x-ms-client-request-id"] == second.headers["x-ms-client-request-id"]


async def test_a_call_deployment_routes_the_request(emulator: Emulator) -> None:
    """deployment= on the call targets that deployment for this call only."""
    async with AsyncChatClient(emulator.score_url, KEY, formatter="dolly") as client:
        await complete(client, "hi", deployment="d")
    assert "d" == emulator.requests[-1].deployment


async def test_stream_deltas_join_to_the_non_stream_text(emulator: Emulator) -> None:
    """On /v1/completions the text deltas join to the non-stream text, and the final response matches it."""
    prompt = "the quick brown fox"
    async with connect(emulator, "openai") as client:
        whole = await complete(client, prompt, max_tokens=4)
        async with stream_complete(client, prompt, max_tokens=4) as stream:
            chunks = [chunk async for chunk in stream]
            assert 0 == acquired(client)
        final = stream.final_response()
    assert emulator.requests[-1].stream
    assert True is emulator.requests[-1].body["stream"]
    assert len([c for c in chunks if c.text]) > 1
    assert whole.text == "".join(chunk.text for chunk in chunks)
    assert (whole.text, whole.finish_reason, whole.usage, whole.model) == (
        final.text,
        final.finish_reason,
        final.usage,
        final.model,
    )
    assert stream.request_id == final.request_id


@pytest.mark.parametrize("family", TEXT_FAMILIES)
async def test_stream_on_score_is_one_chunk(emulator: Emulator, family: str) -> None:
    """/score cannot stream: stream_complete() yields the whole completion as one chunk, no stream flag sent."""
    async with connect(emulator, family) as client:
        async with stream_complete(client, PROMPT) as stream:
            chunks = [chunk async for chunk in stream]
        assert 0 == acquired(client)
    assert ["You said: " + PROMPT] == [chunk.text for chunk in chunks]
    assert "stream" not in emulator.requests[-1].text
    assert CompletionResponse(text="You said: " + PROMPT) == attrs_without_request_id(stream.final_response())


def attrs_without_request_id(response: CompletionResponse) -> CompletionResponse:
    """``response`` without its request id, to compare with an expected value."""
    return attrs.evolve(response, request_id=None)


async def test_break_releases_the_connection(emulator: Emulator) -> None:
    """Leaving a completion stream early (break inside async with) gives the connection back."""
    async with connect(emulator, "openai") as client:
        async with stream_complete(
            client, " ".join(["word"] * 50), extra_headers={"x-emulator-fault": "slow_stream=0.01"}
        ) as stream:
            async for _ in stream:
                assert 1 == acquired(client)
                break
        assert 0 == acquired(client)
        with pytest.raises(RuntimeError, match="not finished"):
            stream.final_response()


async def test_a_dropped_stream_releases_the_connection_when_collected(emulator: Emulator) -> None:
    """A stream abandoned after break (no async with) releases its connection when garbage-collected."""
    async with connect(emulator, "openai") as client:
        stream = stream_complete(
            client, " ".join(["word"] * 50), extra_headers={"x-emulator-fault": "slow_stream=0.01"}
        )
        async for _ in stream:
            break
        assert 1 == acquired(client)
        del stream
        gc.collect()
        assert 0 == acquired(client)


async def test_a_broken_stream_is_a_stream_error_and_releases(emulator: Emulator) -> None:
    """A connection dropped mid-stream raises StreamError after the chunks already read, and is released."""
    texts = []
    async with connect(emulator, "openai") as client:
        with pytest.raises(StreamError):
            async with stream_complete(
                client, "a b c d e f", extra_headers={"x-emulator-fault": "drop_after=3"}
            ) as stream:
                async for chunk in stream:
                    texts.append(chunk.text)
        assert 0 == acquired(client)
    assert ["You ", "said: ", "a "] == texts


async def test_a_stream_without_done_is_whole_once_finished_and_a_cut_one_is_a_stream_error(
    emulator: Emulator,
) -> None:
    """A completion stream that ends without [DONE] after its finish reason is whole; one cut before it is a
    StreamError (possibly truncated)."""
    async with connect(emulator, "openai") as client:
        async with stream_complete(client, "a b", extra_headers={"x-emulator-fault": "no_done"}) as stream:
            text = "".join([chunk.text async for chunk in stream])
        assert ("You said: a b", "stop") == (text, stream.final_response().finish_reason)
        with pytest.raises(StreamError, match="mid-stream"):
            async with stream_complete(
                client, "a b c d", extra_headers={"x-emulator-fault": "drop_after=2"}
            ) as cut:
                async for _ in cut:
                    pass


async def test_opening_a_stream_is_retried(emulator: Emulator) -> None:
    """A 503 before the stream opens is retried; the caller sees one clean stream."""
    emulator.add_fault("status=503,times=1", deployment="o")
    async with connect(emulator, "openai") as client, stream_complete(client, "hi") as stream:
        text = "".join([chunk.text async for chunk in stream])
    assert ("You said: hi", [503, 200]) == (text, [r.status for r in emulator.requests])


async def test_an_open_completion_stream_holds_its_rate_limit_slot(emulator: Emulator) -> None:
    """With max_concurrency=1 an open completion stream holds the slot: another call waits until it closes."""
    async with connect(emulator, "openai", rate_limit=RateLimit(max_concurrency=1)) as client:
        stream = stream_complete(client, "a b", extra_headers={"x-emulator-fault": "slow_stream=0.01"})
        async with stream:
            await stream.__anext__()
            waiting = asyncio.ensure_future(complete(client, "c"))
            await asyncio.sleep(0.05)
            assert not waiting.done()
        assert "You said: c" == (await asyncio.wait_for(waiting, 5)).text


async def test_a_json_answer_to_a_stream_request_is_one_chunk(loopback_server: StartServer) -> None:
    """A server that ignores "stream": true and answers JSON gives a one-chunk stream."""
    server: LoopbackServer = await loopback_server(scripted(Reply(json=TEXT_COMPLETION)))
    async with AsyncChatClient(server.url("/v1/completions"), KEY) as client:
        async with stream_complete(client, "x") as stream:
            chunks = [chunk async for chunk in stream]
        assert 0 == acquired(client)
    assert [" Paris."] == [chunk.text for chunk in chunks]
    assert Usage(6, 2, 8) == stream.final_response().usage


async def test_request_id_is_the_servers_else_ours(loopback_server: StartServer) -> None:
    """A completion's request id is the server's x-request-id, else the x-ms-client-request-id that was sent."""
    server: LoopbackServer = await loopback_server(
        scripted(Reply(json=[{"0": "a"}], headers={"x-request-id": "srv-1"}), Reply(json=[{"0": "b"}]))
    )
    async with AsyncChatClient(server.url("/score"), KEY, formatter="gpt2") as client:
        first = await complete(client, "x")
        second = await complete(client, "x")
    assert "srv-1" == first.request_id
    assert server.requests[1].headers["x-ms-client-request-id"] == second.request_id


async def test_an_error_event_is_a_stream_error(loopback_server: StartServer) -> None:
    """An `event: error` in a completion stream raises StreamError with the endpoint's message."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'data: {"choices": [{"index": 0, "text": "a"}]}\n\n')
        await response.write(b'event: error\ndata: {"message": "model overloaded"}\n\n')
        await response.write_eof()
        return response

    server: LoopbackServer = await loopback_server(handler)
    async with AsyncChatClient(server.url("/v1/completions"), KEY) as client:
        with pytest.raises(StreamError, match="model overloaded"):
            async with stream_complete(client, "x") as stream:
                async for _ in stream:
                    pass
        assert 0 == acquired(client)


async def test_a_bad_json_answer_names_the_formatter(loopback_server: StartServer) -> None:
    """A 2xx body of the wrong shape from /score is a ResponseFormatError naming the family and the fix."""
    server: LoopbackServer = await loopback_server(scripted(Reply(json={"output": "chat answer"})))
    async with AsyncChatClient(server.url("/score"), KEY, formatter="gpt2") as client:
        with pytest.raises(ResponseFormatError, match="formatter='llama'") as caught:
            await complete(client, "x")
    assert "gpt2" == caught.value.formatter


# --- family / route mismatches end to end -----------------------------------------------------------------------


async def test_chat_family_cannot_complete(emulator: Emulator) -> None:
    """complete() with a chat family on /score raises InvalidRequestError before anything is sent."""
    async with connect(emulator, "llama") as client:
        with pytest.raises(InvalidRequestError, match="chat family"):
            await complete(client, "hi")
        with pytest.raises(InvalidRequestError, match="chat family"):
            stream_complete(client, "hi")
    assert [] == emulator.requests


async def test_openai_on_a_chat_url_cannot_complete(emulator: Emulator) -> None:
    """complete() on a chat-completions URL says text completion needs the /v1/completions URL."""
    async with AsyncChatClient(emulator.chat_url, KEY) as client:
        with pytest.raises(InvalidRequestError, match="/v1/completions"):
            await complete(client, "hi")
    assert [] == emulator.requests


@pytest.mark.parametrize("family", TEXT_FAMILIES)
async def test_text_generation_family_cannot_chat(emulator: Emulator, family: str) -> None:
    """chat() and stream() with a text-generation family raise InvalidRequestError before anything is sent."""
    async with connect(emulator, family) as client:
        with pytest.raises(InvalidRequestError, match=r"complete\(prompt\)"):
            await client.chat([UserMessage("hi")])
        with pytest.raises(InvalidRequestError, match=r"complete\(prompt\)"):
            client.stream([UserMessage("hi")])
    assert [] == emulator.requests


async def test_the_text_completion_url_cannot_chat(emulator: Emulator) -> None:
    """chat() on a /v1/completions URL says it is the text completion route, before anything is sent."""
    async with connect(emulator, "openai") as client:
        with pytest.raises(InvalidRequestError, match="text completion route"):
            await client.chat([UserMessage("hi")])
    assert [] == emulator.requests


@pytest.mark.parametrize(
    ("family", "url"),
    [
        ("gpt2", "http://127.0.0.1:9/v1/chat/completions"),
        ("hf", "http://127.0.0.1:9/v1/completions"),
        ("llama", "http://127.0.0.1:9/v1/completions"),
        ("mistral", "http://127.0.0.1:9/completions"),
    ],
)
def test_family_that_can_only_do_the_other_is_refused_at_construction(family: str, url: str) -> None:
    """A family that cannot speak the URL's route at all is a ConfigurationError when the client is built."""
    with pytest.raises(ConfigurationError, match=f"formatter '{family}' cannot speak"):
        AsyncChatClient(url, KEY, formatter=family)


@pytest.mark.parametrize(
    ("prompt", "params", "message"),
    [
        (["a", "b"], {}, "prompt must be a string"),
        (None, {}, "prompt must be a string"),
        ("x", {"model_kwargs": {"prompt": "y"}}, "first argument"),
        ("x", {"messages": []}, r"call chat\(\)"),
        ("x", {"stream": True}, r"stream_complete"),
        ("x", {"temperature": "hot"}, "temperature"),
        ("x", {"max_tokens": 0}, "max_tokens"),
    ],
    ids=[
        "list",
        "none",
        "prompt-in-model-kwargs",
        "messages-param",
        "stream-param",
        "bad-temperature",
        "zero-max-tokens",
    ],
)
async def test_bad_arguments_fail_before_sending(
    emulator: Emulator, prompt: Any, params: dict[str, Any], message: str
) -> None:
    """A non-string prompt, a reserved name or a bad parameter raises InvalidRequestError; nothing is sent."""
    call_params = {name: value for name, value in params.items() if name != "model_kwargs"}
    async with connect(emulator, "openai", model_kwargs=params.get("model_kwargs")) as client:
        with pytest.raises(InvalidRequestError, match=message):
            await complete(client, prompt, **call_params)
    assert [] == emulator.requests


# --- a custom completion family --------------------------------------------------------------------------------


class PromptScore(ContentFormatter):
    """A custom score.py: ``{"prompt": ..., "params": {...}}`` in, ``{"completion": ...}`` out, /score only."""

    name: ClassVar[str] = "prompt-score"
    routes: ClassVar[frozenset[Route]] = frozenset({Route.SCORE})
    completion_routes: ClassVar[frozenset[Route]] = frozenset({Route.SCORE})

    def build_completion_request(
        self, route: Route, prompt: str, params: Mapping[str, Any], *, stream: bool
    ) -> dict[str, Any]:
        return {"prompt": prompt, "params": dict(params)}

    def parse_completion(self, route: Route, body: Any) -> CompletionResponse:
        if not isinstance(body, dict) or not isinstance(body.get("completion"), str):
            raise self.shape_error("expected {'completion': str}", body, completion=True)
        return CompletionResponse(text=body["completion"], raw=body)


class HalfDone(ContentFormatter):
    """A completion family that forgot its hooks."""

    routes: ClassVar[frozenset[Route]] = frozenset({Route.SCORE})
    completion_routes: ClassVar[frozenset[Route]] = frozenset({Route.SCORE})


def test_a_completion_family_without_its_hooks_fails_loudly() -> None:
    """A formatter listing a completion route but lacking a hook raises NotImplementedError naming the hook."""
    formatter = HalfDone()
    for hook, call in (
        (
            "build_completion_request",
            lambda: formatter.build_completion_request(Route.SCORE, "x", {}, stream=False),
        ),
        ("parse_completion", lambda: formatter.parse_completion(Route.SCORE, {})),
        ("parse_completion_chunk", lambda: formatter.parse_completion_chunk(Route.SCORE, {})),
    ):
        with pytest.raises(NotImplementedError, match=hook):
            call()
    with pytest.raises(InvalidRequestError, match=r"call complete\(prompt\)"):
        formatter.build_request(Route.SCORE, [UserMessage("hi")], {}, stream=False)


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let a test register formatters without leaking them into other tests."""
    monkeypatch.setattr(registry, "_formatters", dict(registry._formatters))
    monkeypatch.setattr(registry, "_aliases", dict(registry._aliases))


@pytest.mark.usefixtures("isolated_registry")
async def test_a_registered_custom_family_completes(loopback_server: StartServer) -> None:
    """A ContentFormatter with completion_routes and the completion hooks registers and completes end to end."""
    register_formatter("prompt-score", PromptScore)
    server: LoopbackServer = await loopback_server(scripted(Reply(json={"completion": "done"})))
    async with AsyncChatClient(server.url("/score"), KEY, formatter="prompt-score") as client:
        response = await complete(client, PROMPT, max_tokens=3)
        with pytest.raises(InvalidRequestError, match=r"call complete\(prompt\)"):
            await client.chat([UserMessage("hi")])
    assert "done" == response.text
    assert {"prompt": PROMPT, "params": {"max_tokens": 3}} == server.requests[0].json()


# --- the sync view --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def threaded_emulator() -> Iterator[Emulator]:
    """An openai emulator served from its own thread, for the blocking client."""
    with Emulator(KEY, deployments=[Deployment("o", family="openai")]).start_in_thread() as emu:
        yield emu


def test_sync_stream_and_complete(threaded_emulator: Emulator) -> None:
    """The sync CompletionStream yields the same text as a blocking complete(), and releases on exit."""
    with Client(threaded_emulator.completions_url, KEY) as client:
        loop_thread = client._loop()
        whole = loop_thread.run(complete(client.async_client, "one two three"))
        with CompletionStream(stream_complete(client.async_client, "one two three"), loop_thread) as stream:
            text = "".join(chunk.text for chunk in stream)
        final = stream.final_response()
        session = client.async_client._pipeline.transport._session
        assert session is not None
        assert 0 == len(session.connector._acquired)  # type: ignore[union-attr]
    assert "You said: one two three" == whole.text == text == final.text
    assert isinstance(stream.request_id, str)


def test_sync_stream_break_releases(threaded_emulator: Emulator) -> None:
    """Breaking out of a sync completion stream inside `with` gives the connection back."""
    with Client(threaded_emulator.completions_url, KEY) as client:
        loop_thread = client._loop()
        prompt = " ".join(["word"] * 50)
        async_stream: AsyncCompletionStream = stream_complete(
            client.async_client, prompt, extra_headers={"x-emulator-fault": "slow_stream=0.01"}
        )
        with CompletionStream(async_stream, loop_thread) as stream:
            for _ in stream:
                break
        session = client.async_client._pipeline.transport._session
        assert session is not None
        assert 0 == len(session.connector._acquired)  # type: ignore[union-attr]


@pytest.mark.parametrize("family", ["gpt2", "hf", "dolly", "openai"])
async def test_client_complete_and_stream_complete(emulator: Emulator, family: str) -> None:
    """AsyncChatClient.complete() and .stream_complete() give the same text for every completing family."""
    async with connect(emulator, family) as client:
        whole = await client.complete(PROMPT, max_tokens=9)
        async with client.stream_complete(PROMPT, max_tokens=9) as stream:
            text = "".join([chunk.text async for chunk in stream])
    assert "You said: " + PROMPT == whole.text == text == stream.final_response().text


def test_sync_client_complete_and_stream_complete(threaded_emulator: Emulator) -> None:
    """Client.complete() and Client.stream_complete() work from plain code."""
    with Client(threaded_emulator.completions_url, KEY) as client:
        whole = client.complete("one two", max_tokens=5)
        with client.stream_complete("one two") as stream:
            text = "".join(chunk.text for chunk in stream)
    assert "You said: one two" == whole.text == text
