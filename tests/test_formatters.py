"""Formatters: request bodies per family and route, response parsing, /score limits, the registry (``formatters/``).

Expected bodies are written from the protocol notes: azure_protocol.md 1.8 and 2.4-2.7, langchain_azureml.md 3.2-3.4.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import pytest

from azureml_chat import (
    AssistantMessage,
    ChatResponse,
    ConfigurationError,
    ContentFormatter,
    ImagePart,
    InvalidRequestError,
    ResponseFormatError,
    Route,
    SystemMessage,
    TextPart,
    ToolCall,
    ToolMessage,
    Usage,
    UserMessage,
    available_formatters,
    get_formatter,
    register_formatter,
)
from azureml_chat import formatters as registry
from azureml_chat._messages import Message


def wire(body: Mapping[str, Any]) -> Any:
    """The body as the server parses it (encode, then decode)."""
    return json.loads(json.dumps(body))


# --- request bodies: every family x route ----------------------------------------------------------------

SYSTEM = 'Be "brief"\nplease'
USER = "What is 2+2?"
CONVERSATION = [SystemMessage(SYSTEM), UserMessage(USER)]
PARAMS = {"temperature": 0.5, "max_tokens": 10, "stop": ["END"]}

OPENAI_MESSAGES = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
FOLDED_MESSAGES = [{"role": "user", "content": SYSTEM + "\n\n" + USER}]
CHAT_PARAMS = {"temperature": 0.5, "max_tokens": 10, "stop": ["END"]}
SCORE_PARAMS = {"temperature": 0.5, "max_new_tokens": 10, "stop": ["END"]}
# The routes chat families speak (/v1/completions is text completion, tested in test_completions.py).
CHAT_ROUTES = [Route.SCORE, Route.CHAT_COMPLETIONS]

BODY_TABLE = [
    ("openai", Route.SCORE, {"messages": OPENAI_MESSAGES, **CHAT_PARAMS}),
    ("openai", Route.CHAT_COMPLETIONS, {"messages": OPENAI_MESSAGES, **CHAT_PARAMS}),
    ("llama", Route.SCORE, {"input_data": {"input_string": OPENAI_MESSAGES, "parameters": SCORE_PARAMS}}),
    ("llama", Route.CHAT_COMPLETIONS, {"messages": OPENAI_MESSAGES, **CHAT_PARAMS}),
    (
        "custom-openai",
        Route.SCORE,
        {"input_data": {"input_string": OPENAI_MESSAGES, "parameters": SCORE_PARAMS}},
    ),
    ("custom-openai", Route.CHAT_COMPLETIONS, {"messages": OPENAI_MESSAGES, **CHAT_PARAMS}),
    ("mistral", Route.SCORE, {"input_data": {"input_string": FOLDED_MESSAGES, "parameters": SCORE_PARAMS}}),
    ("mistral", Route.CHAT_COMPLETIONS, {"messages": FOLDED_MESSAGES, **CHAT_PARAMS}),
]


@pytest.mark.parametrize(
    ("family", "route", "expected"),
    BODY_TABLE,
    ids=[f"{family}-{route.name.lower()}" for family, route, _ in BODY_TABLE],
)
def test_request_body_per_family_and_route(family: str, route: Route, expected: dict[str, Any]) -> None:
    """Each family builds exactly its documented body on each route (parsed JSON compared for equality)."""
    body = get_formatter(family).build_request(route, CONVERSATION, PARAMS, stream=False)
    assert expected == wire(body)


@pytest.mark.parametrize("family", ["openai", "llama", "custom-openai", "mistral"])
def test_streaming_chat_completions_body_asks_for_a_stream(family: str) -> None:
    """On chat completions a streaming call adds ``"stream": true`` to the body."""
    body = get_formatter(family).build_request(Route.CHAT_COMPLETIONS, [UserMessage("hi")], {}, stream=True)
    sent = wire(body)
    assert True is sent["stream"]
    assert [{"role": "user", "content": "hi"}] == sent["messages"]


@pytest.mark.parametrize("family", ["llama", "custom-openai", "mistral"])
def test_score_body_always_has_parameters(family: str) -> None:
    """The /score body carries ``parameters`` inside ``input_data`` even when there are none."""
    body = get_formatter(family).build_request(Route.SCORE, [UserMessage("hi")], {}, stream=False)
    assert {"input_data": {"input_string": [{"role": "user", "content": "hi"}], "parameters": {}}} == wire(
        body
    )


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"max_tokens": 5}, 5),
        ({"max_new_tokens": 7}, 7),
        ({"max_new_tokens": 256, "max_tokens": 5}, 5),
        ({"max_tokens": 5, "max_new_tokens": 256}, 256),
    ],
    ids=["max_tokens", "max_new_tokens", "max_tokens-set-last", "max_new_tokens-set-last"],
)
def test_score_token_limit_is_the_one_set_last(params: dict[str, int], expected: int) -> None:
    """On /score ``max_tokens`` is sent as ``max_new_tokens``; given both, the one set last (the later layer) wins."""
    body = wire(get_formatter("llama").build_request(Route.SCORE, [UserMessage("hi")], params, stream=False))
    assert {"max_new_tokens": expected} == body["input_data"]["parameters"]


@pytest.mark.parametrize("family", ["openai", "llama", "mistral"])
@pytest.mark.parametrize("route", CHAT_ROUTES, ids=lambda route: route.name.lower())
def test_text_arrives_exactly_as_written(family: str, route: Route) -> None:
    """Quotes, backslashes, newlines and non-ASCII text are encoded once, never hand-escaped."""
    text = 'say "hi"\\n then\nnew line\ttab — ünïcødé 🎉'
    body = wire(get_formatter(family).build_request(route, [UserMessage(text)], {}, stream=False))
    messages = body["input_data"]["input_string"] if "input_data" in body else body["messages"]
    assert [{"role": "user", "content": text}] == messages


# --- mistral's system folding (langchain_azureml.md 3.4) ---------------------------------------------------


@pytest.mark.parametrize("route", CHAT_ROUTES, ids=lambda route: route.name.lower())
def test_mistral_system_only_becomes_the_user_turn(route: Route) -> None:
    """A conversation of only a system message sends it as the user turn instead of losing it (or crashing)."""
    body = wire(get_formatter("mistral").build_request(route, [SystemMessage("S")], {}, stream=False))
    messages = body["input_data"]["input_string"] if route is Route.SCORE else body["messages"]
    assert [{"role": "user", "content": "S"}] == messages


def test_mistral_folds_into_the_first_turn_only() -> None:
    """Only the leading system message is folded, into the first user turn; later turns are untouched."""
    conversation = [SystemMessage("S"), UserMessage("U1"), AssistantMessage("A"), UserMessage("U2")]
    body = wire(
        get_formatter("mistral").build_request(Route.CHAT_COMPLETIONS, conversation, {}, stream=False)
    )
    assert [
        {"role": "user", "content": "S\n\nU1"},
        {"role": "assistant", "content": "A"},
        {"role": "user", "content": "U2"},
    ] == body["messages"]


def test_mistral_without_system_message_is_unchanged() -> None:
    """Without a leading system message the conversation is sent as is."""
    conversation = [UserMessage("U"), AssistantMessage("A"), UserMessage("U2")]
    mistral = get_formatter("mistral").build_request(Route.CHAT_COMPLETIONS, conversation, {}, stream=False)
    openai = get_formatter("openai").build_request(Route.CHAT_COMPLETIONS, conversation, {}, stream=False)
    assert wire(openai) == wire(mistral)


def test_mistral_folds_into_a_multimodal_user_turn() -> None:
    """System + multimodal user on chat completions: the system text leads the user's parts, the image is kept."""
    image = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    conversation = [
        SystemMessage("S"),
        UserMessage([TextPart("What is it?"), ImagePart("https://example.com/cat.png")]),
    ]
    body = wire(
        get_formatter("mistral").build_request(Route.CHAT_COMPLETIONS, conversation, {}, stream=False)
    )
    (message,) = body["messages"]
    assert "user" == message["role"]
    texts = [part["text"] for part in message["content"] if part["type"] == "text"]
    assert "S\n\nWhat is it?" == "".join(texts)
    assert image == message["content"][-1]


def test_mistral_folds_into_text_parts_on_score() -> None:
    """System + text-only parts on /score become one folded user string (the schema takes strings)."""
    conversation = [SystemMessage("S"), UserMessage([TextPart("part one, "), TextPart("part two")])]
    body = wire(get_formatter("mistral").build_request(Route.SCORE, conversation, {}, stream=False))
    assert [{"role": "user", "content": "S\n\npart one, part two"}] == body["input_data"]["input_string"]


# --- what /score cannot carry ------------------------------------------------------------------------------

TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
UNSUPPORTED_ON_SCORE: list[tuple[str, list[Message], dict[str, Any], str]] = [
    ("tools", [UserMessage("hi")], {"tools": [TOOL]}, "tools"),
    ("tool_choice", [UserMessage("hi")], {"tool_choice": "auto"}, "tool_choice"),
    ("response_format", [UserMessage("hi")], {"response_format": {"type": "json_object"}}, "response_format"),
    ("image-part", [UserMessage([TextPart("what?"), ImagePart("https://example.com/a.png")])], {}, "image"),
    (
        "tool-message",
        [
            UserMessage("weather?"),
            AssistantMessage(tool_calls=[ToolCall("c1", "get_weather")]),
            ToolMessage("18C", tool_call_id="c1"),
        ],
        {},
        "tool",
    ),
    ("assistant-tool-calls", [AssistantMessage(tool_calls=[ToolCall("c1", "get_weather")])], {}, "tool"),
]


@pytest.mark.parametrize("family", ["llama", "custom-openai", "mistral"])
@pytest.mark.parametrize(
    ("messages", "params", "feature"),
    [row[1:] for row in UNSUPPORTED_ON_SCORE],
    ids=[row[0] for row in UNSUPPORTED_ON_SCORE],
)
def test_score_rejects_what_its_schema_cannot_carry(
    family: str, messages: list[Message], params: dict[str, Any], feature: str
) -> None:
    """Tools, tool_choice, response_format, images and tool turns on /score are an error, never a silent drop."""
    with pytest.raises(InvalidRequestError) as caught:
        get_formatter(family).build_request(Route.SCORE, messages, params, stream=False)
    assert feature in str(caught.value)
    assert "chat/completions" in str(caught.value)


@pytest.mark.parametrize("family", ["llama", "mistral"])
def test_chat_completions_carries_tools_images_and_response_format(family: str) -> None:
    """On chat completions the same families pass tools, tool_choice, response_format and image parts through."""
    params = {"tools": [TOOL], "tool_choice": "auto", "response_format": {"type": "json_object"}}
    messages = [UserMessage([ImagePart("https://example.com/a.png")])]
    body = wire(get_formatter(family).build_request(Route.CHAT_COMPLETIONS, messages, params, stream=False))
    assert {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}],
            }
        ],
        **params,
    } == body


def test_openai_on_score_is_a_chat_completions_body_with_tools() -> None:
    """The openai family speaks chat completions on /score too (vLLM-style deployments), tools included."""
    body = wire(
        get_formatter("openai").build_request(
            Route.SCORE, [UserMessage("hi")], {"tools": [TOOL]}, stream=False
        )
    )
    assert {"messages": [{"role": "user", "content": "hi"}], "tools": [TOOL]} == body


# --- response parsing ----------------------------------------------------------------------------------------

COMPLETION = {
    "id": "cmpl-1",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "Meta-Llama-3-8B-Instruct",
    "choices": [
        {
            "index": 0,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": "4", "tool_calls": None},
        }
    ],
    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    "system_fingerprint": "fp_1",
}
COMPLETION_NO_USAGE = {k: v for k, v in COMPLETION.items() if k != "usage"}
TOOL_CALLS = {
    "id": "cmpl-2",
    "model": "m",
    "choices": [
        {
            "index": 0,
            "finish_reason": "tool_calls",
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
                ],
            },
        }
    ],
}

RESPONSE_TABLE: list[tuple[str, str, Route, Any, ChatResponse]] = [
    (
        "openai-with-usage",
        "openai",
        Route.CHAT_COMPLETIONS,
        COMPLETION,
        ChatResponse(
            message=AssistantMessage("4"),
            finish_reason="stop",
            usage=Usage(10, 5, 15),
            model="Meta-Llama-3-8B-Instruct",
            id="cmpl-1",
        ),
    ),
    (
        "openai-without-usage",
        "openai",
        Route.CHAT_COMPLETIONS,
        COMPLETION_NO_USAGE,
        ChatResponse(
            message=AssistantMessage("4"), finish_reason="stop", model="Meta-Llama-3-8B-Instruct", id="cmpl-1"
        ),
    ),
    (
        "openai-tool-calls-null-content",
        "openai",
        Route.CHAT_COMPLETIONS,
        TOOL_CALLS,
        ChatResponse(
            message=AssistantMessage(
                None,
                tool_calls=[
                    ToolCall("call_1", "get_weather", '{"city":"Paris"}'),
                    ToolCall("call_2", "get_time", "{}"),
                ],
            ),
            finish_reason="tool_calls",
            model="m",
            id="cmpl-2",
        ),
    ),
    (
        "openai-on-score",
        "openai",
        Route.SCORE,
        COMPLETION,
        ChatResponse(
            message=AssistantMessage("4"),
            finish_reason="stop",
            usage=Usage(10, 5, 15),
            model="Meta-Llama-3-8B-Instruct",
            id="cmpl-1",
        ),
    ),
    (
        "llama-on-chat-completions",
        "llama",
        Route.CHAT_COMPLETIONS,
        COMPLETION_NO_USAGE,
        ChatResponse(
            message=AssistantMessage("4"), finish_reason="stop", model="Meta-Llama-3-8B-Instruct", id="cmpl-1"
        ),
    ),
    (
        "llama-output",
        "llama",
        Route.SCORE,
        {"output": "Hello there"},
        ChatResponse(message=AssistantMessage("Hello there")),
    ),
    (
        "custom-openai-output",
        "custom-openai",
        Route.SCORE,
        {"output": 'line one\nsays "hi"'},
        ChatResponse(message=AssistantMessage('line one\nsays "hi"')),
    ),
    (
        "mistral-output",
        "mistral",
        Route.SCORE,
        {"output": "Bonjour"},
        ChatResponse(message=AssistantMessage("Bonjour")),
    ),
]


@pytest.mark.parametrize(
    ("family", "route", "body", "expected"),
    [row[1:] for row in RESPONSE_TABLE],
    ids=[row[0] for row in RESPONSE_TABLE],
)
def test_response_shapes_parse(family: str, route: Route, body: Any, expected: ChatResponse) -> None:
    """Every documented response shape parses into content, finish reason, usage, tool calls, model and id."""
    response = get_formatter(family).parse_response(route, body)
    assert expected == response
    assert body == response.raw


def test_raw_keeps_unknown_fields() -> None:
    """Fields the SDK does not model (``system_fingerprint``, provider extras) stay readable in ``raw``."""
    response = get_formatter("openai").parse_response(Route.CHAT_COMPLETIONS, COMPLETION)
    assert "fp_1" == response.raw["system_fingerprint"]
    assert 1700000000 == response.raw["created"]


WRONG_SHAPES: list[tuple[str, str, Route, Any, str | None]] = [
    # (id, family, route, body, the family the error should suggest)
    ("openai-got-output", "openai", Route.CHAT_COMPLETIONS, {"output": "hi"}, "llama"),
    ("llama-got-choices", "llama", Route.SCORE, {"choices": [{"message": {"content": "hi"}}]}, "openai"),
    ("mistral-got-choices", "mistral", Route.SCORE, {"choices": [{"message": {"content": "hi"}}]}, "openai"),
    ("llama-got-gpt2", "llama", Route.SCORE, [{"0": "generated"}], "gpt2"),
    ("llama-got-hf", "llama", Route.SCORE, [{"0": {"generated_text": "generated"}}], "hf"),
    ("llama-got-dolly", "llama", Route.SCORE, ["generated"], "dolly"),
    ("openai-got-dolly", "openai", Route.CHAT_COMPLETIONS, ["generated"], "dolly"),
    ("llama-output-not-string", "llama", Route.SCORE, {"output": ["a"]}, None),
    ("llama-got-string", "llama", Route.SCORE, "plain text", None),
    ("llama-got-null", "llama", Route.SCORE, None, None),
    ("openai-empty-choices", "openai", Route.CHAT_COMPLETIONS, {"choices": []}, None),
    ("openai-choice-not-object", "openai", Route.CHAT_COMPLETIONS, {"choices": ["hi"]}, None),
    ("openai-message-not-object", "openai", Route.CHAT_COMPLETIONS, {"choices": [{"message": "hi"}]}, None),
    (
        "openai-content-list",
        "openai",
        Route.CHAT_COMPLETIONS,
        {"choices": [{"message": {"content": ["x"]}}]},
        None,
    ),
    (
        "openai-tool-calls-not-list",
        "openai",
        Route.CHAT_COMPLETIONS,
        {"choices": [{"message": {"content": None, "tool_calls": {"id": "c"}}}]},
        None,
    ),
    (
        "openai-tool-call-malformed",
        "openai",
        Route.CHAT_COMPLETIONS,
        {"choices": [{"message": {"content": None, "tool_calls": [{"id": "c"}]}}]},
        None,
    ),
]


@pytest.mark.parametrize(
    ("family", "route", "body", "hint"),
    [row[1:] for row in WRONG_SHAPES],
    ids=[row[0] for row in WRONG_SHAPES],
)
def test_wrong_shape_is_a_response_format_error(
    family: str, route: Route, body: Any, hint: str | None
) -> None:
    """A 2xx body of the wrong shape raises ResponseFormatError naming the formatter and suggesting the right family."""
    formatter = get_formatter(family)
    with pytest.raises(ResponseFormatError) as caught:
        formatter.parse_response(route, body)
    error = caught.value
    assert formatter.name == error.formatter
    assert formatter.name in str(error)
    if hint in available_formatters():
        assert f"formatter={hint!r}" in str(error)
    elif hint is not None:
        # Text-generation families are not chat formatters: the hint names the shape, not a family to try.
        assert f"{hint!r} text-generation output" in str(error)
        assert "try formatter=" not in str(error)
    else:
        assert "try formatter=" not in str(error)


def test_wrong_shape_excerpt_is_bounded() -> None:
    """The body excerpt in a shape error stays short even for a huge body."""
    with pytest.raises(ResponseFormatError) as caught:
        get_formatter("llama").parse_response(Route.SCORE, {"unexpected": "x" * 100_000})
    assert '{"unexpected": "xxx' in str(caught.value)
    assert len(str(caught.value)) < 1_000


# --- the registry ----------------------------------------------------------------------------------------------


class ScoreOnly(ContentFormatter):
    """A custom score.py family: ``{"prompt": ...}`` in, ``{"text": ...}`` out, /score only."""

    name: ClassVar[str] = "score-only"
    routes: ClassVar[frozenset[Route]] = frozenset({Route.SCORE})

    def build_request(
        self, route: Route, messages: Sequence[Message], params: Mapping[str, Any], *, stream: bool
    ) -> dict[str, Any]:
        return {"prompt": messages[-1].content, **params}

    def parse_response(self, route: Route, body: Any) -> ChatResponse:
        return ChatResponse(message=AssistantMessage(body["text"]), raw=body)


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let a test register formatters without leaking them into other tests."""
    monkeypatch.setattr(registry, "_formatters", dict(registry._formatters))
    monkeypatch.setattr(registry, "_aliases", dict(registry._aliases))


def test_builtin_families_are_registered() -> None:
    """``openai``, ``llama``, its alias ``custom-openai`` and ``mistral`` are available out of the box."""
    assert {"openai", "llama", "custom-openai", "mistral"} <= set(available_formatters())
    assert sorted(available_formatters()) == list(available_formatters())


def test_custom_openai_is_an_alias_of_llama() -> None:
    """``custom-openai`` (LangChain's name) resolves to the very same formatter as ``llama``."""
    assert get_formatter("llama") is get_formatter("custom-openai")


def test_family_names_are_case_insensitive() -> None:
    """``LLAMA`` and `` Mistral `` find the registered families."""
    assert get_formatter("llama") is get_formatter("LLAMA")
    assert get_formatter("mistral") is get_formatter(" Mistral ")


@pytest.mark.usefixtures("isolated_registry")
def test_register_a_custom_family_with_aliases() -> None:
    """A registered formatter is found by its name and each alias, and listed."""
    formatter = ScoreOnly()
    register_formatter("score-only", formatter, aliases=("my-score", "Legacy"))
    assert formatter is get_formatter("score-only")
    assert formatter is get_formatter("my-score")
    assert formatter is get_formatter("legacy")
    assert {"score-only", "my-score", "legacy"} <= set(available_formatters())


@pytest.mark.usefixtures("isolated_registry")
def test_register_a_class_instantiates_it() -> None:
    """Registering a ContentFormatter subclass registers an instance of it."""
    register_formatter("score-only", ScoreOnly)
    assert isinstance(get_formatter("score-only"), ScoreOnly)


@pytest.mark.usefixtures("isolated_registry")
@pytest.mark.parametrize("name", ["llama", "custom-openai", "OPENAI"])
def test_taken_names_need_replace(name: str) -> None:
    """Re-registering a taken family or alias is refused unless ``replace=True``."""
    with pytest.raises(ConfigurationError, match="replace=True"):
        register_formatter(name, ScoreOnly())
    formatter = ScoreOnly()
    register_formatter(name, formatter, replace=True)
    assert formatter is get_formatter(name)


@pytest.mark.usefixtures("isolated_registry")
@pytest.mark.parametrize("formatter", [object(), "llama", None], ids=["object", "str", "none"])
def test_register_rejects_non_formatters(formatter: Any) -> None:
    """Only ContentFormatter instances (or subclasses) can be registered."""
    with pytest.raises(ConfigurationError):
        register_formatter("bogus", formatter)
    assert "bogus" not in available_formatters()


def test_unknown_family_lists_the_known_ones() -> None:
    """Asking for an unknown family names it and lists every known family."""
    with pytest.raises(ConfigurationError) as caught:
        get_formatter("gpt-17")
    text = str(caught.value)
    assert "gpt-17" in text
    for known in ("openai", "llama", "custom-openai", "mistral"):
        assert known in text


@pytest.mark.parametrize("family", ["", "   ", None, 3], ids=repr)
def test_family_name_must_be_a_non_empty_string(family: Any) -> None:
    """An empty or non-string family name is a ConfigurationError, not a KeyError or AttributeError."""
    with pytest.raises(ConfigurationError):
        get_formatter(family)


def test_base_formatter_must_be_subclassed() -> None:
    """The base ContentFormatter builds and parses nothing; a subclass that forgets a method fails loudly."""
    base = ContentFormatter()
    with pytest.raises(NotImplementedError):
        base.build_request(Route.SCORE, [UserMessage("hi")], {}, stream=False)
    with pytest.raises(NotImplementedError):
        base.parse_response(Route.SCORE, {})
    with pytest.raises(NotImplementedError):
        base.parse_chunk(Route.SCORE, {})


# --- the wire-level hooks (build_chat, read_chat) and the classic ones -----------------------------------------------


class _OwnBody(registry.OpenAIFormatter):
    """A subclass that changes how bodies are built: it must keep getting message objects."""

    def build_request(
        self, route: Route, messages: Sequence[Message], params: Mapping[str, Any], *, stream: bool
    ) -> dict[str, Any]:
        return {"custom": [type(message).__name__ for message in messages]}


class _OwnParser(registry.OpenAIFormatter):
    """A subclass that changes how answers are read, and hands out one shared answer."""

    shared = ChatResponse(message=AssistantMessage("shared"))

    def parse_response(self, route: Route, body: Any) -> ChatResponse:
        return self.shared


@pytest.mark.parametrize(
    ("family", "route"),
    [
        ("openai", Route.CHAT_COMPLETIONS),
        ("openai", Route.SCORE),
        ("llama", Route.CHAT_COMPLETIONS),
        ("llama", Route.SCORE),
        ("mistral", Route.SCORE),
        ("mistral", Route.CHAT_COMPLETIONS),
    ],
)
def test_the_body_from_wire_dicts_equals_the_body_from_message_objects(family: str, route: Route) -> None:
    """``build_chat`` (wire dicts, what the client calls) builds exactly the body ``build_request`` builds from
    message objects, for every built-in chat family and route."""
    formatter = get_formatter(family)
    wire = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    params = {"max_tokens": 5, "temperature": 0.0}
    objects = [SystemMessage("s"), UserMessage("u")]
    assert formatter.build_request(route, objects, params, stream=False) == formatter.build_chat(
        route, wire, params, stream=False
    )


@pytest.mark.parametrize("family", ["mistral", "llama"])
def test_build_chat_never_changes_the_callers_messages(family: str) -> None:
    """Folding and flattening build new dicts: the caller's list and dicts are left as they were."""
    wire: list[dict[str, Any]] = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
    ]
    before = copy.deepcopy(wire)
    body = get_formatter(family).build_chat(Route.SCORE, wire, {}, stream=False)
    assert before == wire
    assert body["input_data"]["input_string"][-1]["content"].endswith("ab")


def test_a_subclass_that_overrides_build_request_gets_message_objects() -> None:
    """A formatter written against message objects is called with them: the wire-level hook converts."""
    body = _OwnBody().build_chat(
        Route.CHAT_COMPLETIONS,
        [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
        {},
        stream=False,
    )
    assert {"custom": ["SystemMessage", "UserMessage"]} == body


def test_a_subclass_that_overrides_parse_response_gets_a_stamped_copy() -> None:
    """``read_chat`` of a formatter with its own ``parse_response`` uses it and stamps the request id on a
    copy, so a shared answer is never changed."""
    formatter = _OwnParser()
    response = formatter.read_chat(Route.CHAT_COMPLETIONS, {}, request_id="rid-1")
    assert ("shared", "rid-1") == (response.content, response.request_id)
    assert formatter.shared.request_id is None


def test_built_in_readers_build_the_answer_with_its_request_id() -> None:
    """The built-in ``read_chat`` puts the request id into the answer it builds (no copy afterwards)."""
    response = get_formatter("openai").read_chat(Route.CHAT_COMPLETIONS, COMPLETION, request_id="rid-2")
    assert "rid-2" == response.request_id
    assert get_formatter("openai").parse_response(Route.CHAT_COMPLETIONS, COMPLETION).request_id is None


def test_the_score_body_from_wire_dicts_refuses_what_the_schema_cannot_carry() -> None:
    """The ``/score`` body rejects the parameters the schema has no place for."""
    with pytest.raises(InvalidRequestError, match="'tools'"):
        get_formatter("llama").build_chat(
            Route.SCORE, [{"role": "user", "content": "u"}], {"tools": []}, stream=False
        )
