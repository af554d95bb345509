"""``azureml_chat.langchain``: message conversion, tools, structured output, streaming, resources, the
``AzureMLChatOnlineEndpoint`` migration shim, and keeping langchain-core optional.

Behaviour is checked against the emulator on 127.0.0.1 (one server on a background thread, so sync and async
tests share it); conversions are checked as pure functions.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest

pytest.importorskip("langchain_core", reason="needs the langchain extra")

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.tools import tool
from pydantic import BaseModel, SecretStr, ValidationError

from azureml_chat import (
    APITimeoutError,
    AssistantMessage,
    AsyncChatClient,
    AuthenticationError,
    ChatResponse,
    Client,
    Endpoint,
    ImagePart,
    InvalidRequestError,
    RateLimit,
    TextPart,
    Timeout,
    ToolCall,
    Usage,
    UserMessage,
)
from azureml_chat import SystemMessage as AzureSystemMessage
from azureml_chat import ToolMessage as AzureToolMessage
from azureml_chat._transport import AiohttpTransport
from azureml_chat.emulator import Deployment, Emulator, EmulatorThread
from azureml_chat.langchain import (
    AzureMLChatModel,
    AzureMLChatOnlineEndpoint,
    AzureMLEndpointApiType,
    CustomOpenAIChatContentFormatter,
    MistralChatContentFormatter,
)
from azureml_chat.langchain._convert import ai_message, to_messages, usage_metadata
from azureml_chat.langchain._tools import tool_choice_param
from azureml_chat.testing import MockResponse, MockTransport

pytestmark = pytest.mark.usefixtures("hermetic_env")

KEY = "langchain-test-key"
JOKE = '{"setup": "Why did the cat sit on the laptop?", "punchline": "To keep an eye on the mouse."}'
PLACEHOLDER_SCORE = "https://<your-endpoint>.<your_region>.inference.ml.azure.com/score"
PLACEHOLDER_CHAT = "https://<your-endpoint>.<your_region>.inference.ml.azure.com/v1/chat/completions"


class Joke(BaseModel):
    """A joke."""

    setup: str
    punchline: str


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"It's sunny in {city}."


# --- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served() -> Iterator[Emulator]:
    """The emulator, on its own loop thread, with an echoing OpenAI deployment (the default), one that always
    answers with a joke in JSON, a classic ``/score`` llama deployment and a Mistral one."""
    emulator = Emulator(
        KEY,
        deployments=[
            Deployment("chat", family="openai", model="chat-model"),
            Deployment("jokes", family="openai", model="joke-model", replies=[JOKE]),
            Deployment("score", family="llama"),
            Deployment("mistral", family="mistral"),
        ],
    )
    with EmulatorThread(emulator) as running:
        yield running


@pytest.fixture
def emu(served: Emulator) -> Emulator:
    """The emulator with no requests recorded yet."""
    served.reset()
    return served


@pytest.fixture
def make_model(emu: Emulator) -> Iterator[Callable[..., AzureMLChatModel]]:
    """Builds models against the emulator (chat route unless ``route="score"``); closes them at teardown."""
    built: list[AzureMLChatModel] = []

    def make(route: str = "chat", **fields: Any) -> AzureMLChatModel:
        url = emu.score_url if route == "score" else emu.chat_url
        if route == "score":
            fields.setdefault("deployment", "score")
        model = AzureMLChatModel(endpoint_url=url, api_key=KEY, **fields)
        built.append(model)
        return model

    yield make
    for model in built:
        model.close()


def bodies(emu: Emulator) -> list[Any]:
    """The JSON bodies the emulator received, in order."""
    return [request.body for request in emu.requests]


def aggregate(chunks: list[AIMessageChunk]) -> AIMessageChunk:
    """The chunks added up as LangChain does."""
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    return total


def calls_of(message: AIMessage) -> list[tuple[str, dict[str, Any]]]:
    """Name and arguments of each tool call (ids are random per answer)."""
    return [(call["name"], call["args"]) for call in message.tool_calls]


# --- LangChain -> azureml-chat messages ------------------------------------------------------------------


def test_messages_convert_role_by_role() -> None:
    """Human, system, AI (with tool calls) and tool messages become the matching azureml-chat messages."""
    messages: list[BaseMessage] = [
        SystemMessage("be brief"),
        HumanMessage("weather?", name="ann"),
        AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Oslo"}, "id": "c1"}]),
        ToolMessage("sunny", tool_call_id="c1"),
        AIMessage("It is sunny."),
    ]
    expected = [
        AzureSystemMessage("be brief"),
        UserMessage("weather?", name="ann"),
        AssistantMessage(None, tool_calls=[ToolCall("c1", "get_weather", '{"city": "Oslo"}')]),
        AzureToolMessage("sunny", tool_call_id="c1"),
        AssistantMessage("It is sunny."),
    ]
    assert expected == to_messages(messages)


def test_ai_content_blocks_keep_text_only() -> None:
    """An AI message's text blocks are joined; tool_use, tool_call and thinking blocks are not text."""
    message = AIMessage(
        [
            {"type": "thinking", "thinking": "hmm"},
            {"type": "text", "text": "Let me "},
            {"type": "tool_use", "id": "c1", "name": "f", "input": {}},
            {"type": "text", "text": "check."},
        ],
        tool_calls=[{"name": "f", "args": {}, "id": "c1"}],
    )
    assert [AssistantMessage("Let me check.", tool_calls=[ToolCall("c1", "f", "{}")])] == to_messages(
        [message]
    )


def test_invalid_tool_calls_stay_in_history() -> None:
    """A tool call whose arguments did not parse is still replayed, with its raw arguments."""
    message = AIMessage(
        "", invalid_tool_calls=[{"name": "f", "args": "{oops", "id": "c9", "error": "bad json"}]
    )
    assert [AssistantMessage(None, tool_calls=[ToolCall("c9", "f", "{oops")])] == to_messages([message])


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (
            {"type": "image_url", "image_url": {"url": "https://x.test/a.png", "detail": "low"}},
            ImagePart("https://x.test/a.png", detail="low"),
        ),
        ({"type": "image_url", "image_url": "https://x.test/a.png"}, ImagePart("https://x.test/a.png")),
        ({"type": "image", "url": "https://x.test/a.png"}, ImagePart("https://x.test/a.png")),
        (
            {"type": "image", "base64": "AAAA", "mime_type": "image/png"},
            ImagePart("data:image/png;base64,AAAA"),
        ),
        (
            {"type": "image", "source_type": "base64", "data": "AAAA", "mime_type": "image/jpeg"},
            ImagePart("data:image/jpeg;base64,AAAA"),
        ),
        (
            {"type": "image", "source": {"type": "base64", "media_type": "image/gif", "data": "AAAA"}},
            ImagePart("data:image/gif;base64,AAAA"),
        ),
    ],
    ids=["image_url", "image_url-str", "v1-url", "v1-base64", "v0-base64", "anthropic-source"],
)
def test_image_blocks_become_image_parts(block: dict[str, Any], expected: ImagePart) -> None:
    """OpenAI, LangChain v0/v1 standard and Anthropic image blocks all become an ImagePart."""
    message = HumanMessage([{"type": "text", "text": "what is this?"}, block])
    assert [UserMessage((TextPart("what is this?"), expected))] == to_messages([message])


@pytest.mark.parametrize(
    ("message", "fragment"),
    [
        (
            HumanMessage([{"type": "audio", "base64": "AAAA", "mime_type": "audio/wav"}]),
            "'audio' are not supported",
        ),
        (HumanMessage([{"type": "image", "file_id": "file-1"}]), "file ids are not supported"),
        (HumanMessage([{"type": "image", "base64": "AAAA"}]), "needs a mime_type"),
        (
            ToolMessage([{"type": "image", "url": "https://x.test/a.png"}], tool_call_id="c1"),
            "can only hold text",
        ),
        (SystemMessage([{"type": "image", "url": "https://x.test/a.png"}]), "can only hold text"),
        (FunctionMessage("3", name="f"), "FunctionMessage is not supported"),
        (ChatMessage("hi", role="critic"), "role 'critic' is not supported"),
    ],
    ids=["audio", "file-id", "no-mime", "tool-image", "system-image", "function", "odd-role"],
)
def test_unsupported_content_is_refused_by_index(message: BaseMessage, fragment: str) -> None:
    """Content the endpoints cannot take is an InvalidRequestError naming the message's index."""
    with pytest.raises(InvalidRequestError) as caught:
        to_messages([HumanMessage("first"), message])
    assert "messages[1]" in str(caught.value)
    assert fragment in str(caught.value)


def test_chat_message_roles_map_to_classes() -> None:
    """ChatMessage with role user, assistant or system becomes that message class."""
    messages: list[BaseMessage] = [
        ChatMessage("s", role="system"),
        ChatMessage("u", role="user"),
        ChatMessage("a", role="assistant"),
    ]
    assert [AzureSystemMessage("s"), UserMessage("u"), AssistantMessage("a")] == to_messages(messages)


# --- azureml-chat -> LangChain -----------------------------------------------------------------------------


def test_response_becomes_ai_message_with_metadata() -> None:
    """A ChatResponse becomes an AIMessage with parsed tool calls, usage and response metadata."""
    response = ChatResponse(
        message=AssistantMessage("ok", tool_calls=[ToolCall("c1", "f", '{"a": 1}')]),
        finish_reason="tool_calls",
        usage=Usage(prompt_tokens=3, completion_tokens=2),
        model="m-1",
        id="cmpl-1",
        request_id="req-1",
        raw={"system_fingerprint": "fp-1"},
        endpoint="llama-eastus",
    )
    message = ai_message(response, model_name=None)
    assert [("f", {"a": 1})] == calls_of(message)
    assert {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5} == message.usage_metadata
    expected_metadata = {
        "finish_reason": "tool_calls",
        "request_id": "req-1",
        "model_provider": "azureml",
        "model_name": "m-1",
        "system_fingerprint": "fp-1",
        "endpoint": "llama-eastus",
    }
    assert expected_metadata == message.response_metadata


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]"], ids=["not-json", "not-object"])
def test_unparseable_tool_arguments_become_invalid_tool_calls(arguments: str) -> None:
    """Tool-call arguments that are not a JSON object land in invalid_tool_calls instead of failing."""
    response = ChatResponse(message=AssistantMessage(None, tool_calls=[ToolCall("c1", "f", arguments)]))
    message = ai_message(response, model_name=None)
    assert [] == message.tool_calls
    assert [("c1", arguments)] == [(call["id"], call["args"]) for call in message.invalid_tool_calls]


def test_missing_usage_is_none_not_zeros() -> None:
    """No usage from the endpoint means no usage_metadata, never invented zeros."""
    assert None is usage_metadata(None)


# --- tools -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("any", "required"),
        (True, "required"),
        ("required", "required"),
        ("auto", "auto"),
        ("none", "none"),
        ("get_weather", {"type": "function", "function": {"name": "get_weather"}}),
        ({"type": "function", "function": {"name": "x"}}, {"type": "function", "function": {"name": "x"}}),
    ],
)
def test_tool_choice_maps_to_chat_completions(choice: Any, expected: Any) -> None:
    """LangChain's tool_choice values map to the chat-completions ones ("any" -> "required")."""
    assert expected == tool_choice_param(choice, ["get_weather"])


def test_tool_choice_naming_an_unbound_tool_is_refused() -> None:
    """A tool_choice naming a tool that is not bound is a ValueError listing the bound ones."""
    with pytest.raises(ValueError, match="get_weather"):
        tool_choice_param("get_time", ["get_weather"])


def test_bind_tools_sends_definitions_and_choice(
    make_model: Callable[..., AzureMLChatModel], emu: Emulator
) -> None:
    """bind_tools sends OpenAI tool definitions and tool_choice; the answer's tool calls are parsed."""
    result = make_model().bind_tools([get_weather], tool_choice="any").invoke("weather in Oslo")
    body = bodies(emu)[0]
    assert ["get_weather"] == [definition["function"]["name"] for definition in body["tools"]]
    assert "required" == body["tool_choice"]
    assert [("get_weather", {"city": "weather in Oslo"})] == calls_of(result)


async def test_tool_calling_loop_completes(
    make_model: Callable[..., AzureMLChatModel], emu: Emulator
) -> None:
    """A tool-calling loop (ask, run the tool, answer) completes against the emulator."""
    llm = make_model().bind_tools([get_weather])
    messages: list[BaseMessage] = [HumanMessage("Oslo")]
    for _ in range(3):
        answer = await llm.ainvoke(messages)
        messages.append(answer)
        if not answer.tool_calls:
            break
        for call in answer.tool_calls:
            messages.append(await get_weather.ainvoke(call))
    assert "The tool returned: It's sunny in Oslo." == messages[-1].content
    assert ["user", "assistant", "tool"] == [m["role"] for m in bodies(emu)[-1]["messages"]]


def test_history_with_tool_calls_reaches_the_wire(
    make_model: Callable[..., AzureMLChatModel], emu: Emulator
) -> None:
    """An AI message's tool calls and the tool's answer are sent in the chat-completions shape."""
    history: list[BaseMessage] = [
        HumanMessage("Oslo"),
        AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Oslo"}, "id": "c1"}]),
        ToolMessage("sunny", tool_call_id="c1"),
    ]
    make_model().invoke(history)
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
    }
    expected = [
        {"role": "user", "content": "Oslo"},
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
    ]
    assert expected == bodies(emu)[0]["messages"]


def test_images_reach_the_wire_as_image_url_parts(
    make_model: Callable[..., AzureMLChatModel], emu: Emulator
) -> None:
    """A standard base64 image block is sent as an image_url part with a data: URL."""
    message = HumanMessage(
        [{"type": "text", "text": "what?"}, {"type": "image", "base64": "AAAA", "mime_type": "image/png"}]
    )
    make_model().invoke([message])
    expected = [
        {"type": "text", "text": "what?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]
    assert expected == bodies(emu)[0]["messages"][0]["content"]


# --- structured output -------------------------------------------------------------------------------------


def test_structured_output_json_schema(make_model: Callable[..., AzureMLChatModel], emu: Emulator) -> None:
    """The default method sends response_format json_schema with the schema and parses an instance."""
    result = make_model().with_structured_output(Joke).invoke("cats")
    response_format = bodies(emu)[0]["response_format"]
    assert "json_schema" == response_format["type"]
    assert "Joke" == response_format["json_schema"]["name"]
    assert {"setup", "punchline"} == set(response_format["json_schema"]["schema"]["properties"])
    assert Joke(setup="You said: cats", punchline="You said: cats") == result


def test_structured_output_json_mode(make_model: Callable[..., AzureMLChatModel], emu: Emulator) -> None:
    """json_mode sends response_format json_object and parses the JSON answer, invoked and streamed."""
    llm = make_model(deployment="jokes").with_structured_output(Joke, method="json_mode")
    expected = Joke.model_validate_json(JOKE)
    assert expected == llm.invoke("a joke, as JSON with setup and punchline")
    assert expected == list(llm.stream("a joke, as JSON with setup and punchline"))[-1]
    assert [{"type": "json_object"}] * 2 == [body["response_format"] for body in bodies(emu)]


def test_structured_output_function_calling(
    make_model: Callable[..., AzureMLChatModel], emu: Emulator
) -> None:
    """function_calling forces a call to the schema's tool and parses its arguments."""
    result = make_model().with_structured_output(Joke, method="function_calling").invoke("cats")
    assert {"type": "function", "function": {"name": "Joke"}} == bodies(emu)[0]["tool_choice"]
    assert Joke(setup="cats", punchline="cats") == result


def test_structured_output_include_raw_keeps_parse_errors(
    make_model: Callable[..., AzureMLChatModel],
) -> None:
    """include_raw returns the raw message and the parsing error instead of raising."""
    result = make_model().with_structured_output(Joke, method="json_mode", include_raw=True).invoke("cats")
    assert None is result["parsed"]
    assert result["parsing_error"] is not None
    assert '{"answer": "You said: cats"}' == result["raw"].content


def test_structured_output_unknown_method_is_refused(make_model: Callable[..., AzureMLChatModel]) -> None:
    """An unknown method is a ValueError naming the ones there are."""
    with pytest.raises(ValueError, match="json_schema"):
        make_model().with_structured_output(Joke, method="xml")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bind",
    [
        lambda llm: llm.bind_tools([get_weather]),
        lambda llm: llm.with_structured_output(Joke),
        lambda llm: llm.with_structured_output(Joke, method="json_mode"),
        lambda llm: llm.with_structured_output(Joke, method="function_calling"),
    ],
    ids=["bind_tools", "json_schema", "json_mode", "function_calling"],
)
def test_score_route_refuses_tools_and_formats_at_bind_time(
    bind: Callable[[AzureMLChatModel], Any], make_model: Callable[..., AzureMLChatModel], emu: Emulator
) -> None:
    """On a classic /score deployment, tools and response formats fail when bound, before any request."""
    with pytest.raises(InvalidRequestError, match="cannot be sent to the 'llama' formatter's score schema"):
        bind(make_model("score"))
    assert [] == emu.requests


# --- streaming ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "tools"),
    [("chat", False), ("chat", True), ("score", False)],
    ids=["chat", "chat-tools", "score"],
)
async def test_stream_aggregate_equals_invoke(
    route: str, tools: bool, make_model: Callable[..., AzureMLChatModel]
) -> None:
    """Streamed chunks add up to what ainvoke returns: text, tool calls, usage and metadata."""
    model = make_model(route)
    llm = model.bind_tools([get_weather]) if tools else model
    whole = await llm.ainvoke("hello there")
    streamed = aggregate([chunk async for chunk in llm.astream("hello there")])
    assert whole.content == streamed.content
    assert calls_of(whole) == calls_of(streamed)
    assert whole.usage_metadata == streamed.usage_metadata
    for key in ("finish_reason", "model_name", "model_provider"):
        assert whole.response_metadata.get(key) == streamed.response_metadata.get(key)


def test_sync_stream_aggregate_equals_invoke(make_model: Callable[..., AzureMLChatModel]) -> None:
    """The sync path streams the same answer invoke returns."""
    llm = make_model()
    whole = llm.invoke("hello there")
    streamed = aggregate(list(llm.stream("hello there")))
    assert (whole.content, whole.usage_metadata) == (streamed.content, streamed.usage_metadata)


@pytest.mark.parametrize("route", ["chat", "score"])
async def test_usage_metadata_appears_once_in_a_stream(
    route: str, make_model: Callable[..., AzureMLChatModel]
) -> None:
    """Exactly one chunk, the last, carries usage_metadata (LangChain sums it across chunks)."""
    chunks = [chunk async for chunk in make_model(route).astream("one two three")]
    with_usage = [index for index, chunk in enumerate(chunks) if chunk.usage_metadata]
    expected = [len(chunks) - 1] if route == "chat" else []  # classic /score reports no usage
    assert expected == with_usage
    assert "last" == chunks[-1].chunk_position


def test_sync_stream_usage_metadata_appears_once(make_model: Callable[..., AzureMLChatModel]) -> None:
    """The sync stream also puts usage on exactly one chunk."""
    chunks = list(make_model().stream("one two three"))
    assert 1 == sum(1 for chunk in chunks if chunk.usage_metadata)


async def test_astream_events_work_on_score(
    make_model: Callable[..., AzureMLChatModel], emu: Emulator
) -> None:
    """astream_events streams a classic /score deployment (LangChain's #24659 failed here)."""
    llm = AzureMLChatOnlineEndpoint(endpoint_url=emu.score_url, endpoint_api_key=KEY, deployment_name="score")
    try:
        events = [event async for event in llm.astream_events("hi there", version="v2")]
    finally:
        await llm.aclose()
    streamed = "".join(e["data"]["chunk"].content for e in events if e["event"] == "on_chat_model_stream")
    ended = [e["data"]["output"].content for e in events if e["event"] == "on_chat_model_end"]
    assert "You said: hi there" == streamed
    assert ["You said: hi there"] == ended
    assert ["/score"] == [request.path for request in emu.requests]


def test_stream_asks_openai_routes_for_usage(
    make_model: Callable[..., AzureMLChatModel], emu: Emulator
) -> None:
    """Streaming on a chat-completions route asks for the usage event; stream_usage=False does not."""
    list(make_model().stream("a"))
    list(make_model(stream_usage=False).stream("a"))
    list(make_model("score").stream("a"))
    chat, quiet, score = bodies(emu)
    assert {"include_usage": True} == chat["stream_options"]
    assert "stream_options" not in quiet
    assert "stream_options" not in score["input_data"]["parameters"]


def test_streaming_field_makes_invoke_stream(
    make_model: Callable[..., AzureMLChatModel], emu: Emulator
) -> None:
    """With streaming=True, invoke goes through the stream and still returns the whole answer."""
    result = make_model(streaming=True).invoke("hi")
    assert "You said: hi" == result.content
    assert [True] == [request.stream for request in emu.requests]


# --- parameters --------------------------------------------------------------------------------------------


def test_call_kwargs_never_leak(make_model: Callable[..., AzureMLChatModel], emu: Emulator) -> None:
    """A call's parameters apply to that call only; model_kwargs (and the caller's dict) stay as given."""
    given = {"top_k": 5}
    llm = make_model(model_kwargs=given)
    llm.invoke("a", temperature=0.9, stop=["x"], max_tokens=7)
    llm.invoke("b")
    first, second = bodies(emu)
    assert {"top_k": 5, "temperature": 0.9, "stop": ["x"], "max_tokens": 7} == {
        k: first[k] for k in ("top_k", "temperature", "stop", "max_tokens")
    }
    assert {"messages", "top_k"} == set(second)
    assert {"top_k": 5} == given == llm.model_kwargs


def test_parameter_precedence(make_model: Callable[..., AzureMLChatModel], emu: Emulator) -> None:
    """model_kwargs < model fields < call keywords < the call's stop."""
    llm = make_model(model_kwargs={"temperature": 0.1, "top_k": 3}, temperature=0.5, stop=["s"])
    llm.invoke("a", top_k=4, stop=["t"])
    body = bodies(emu)[0]
    assert (0.5, 4, ["t"]) == (body["temperature"], body["top_k"], body["stop"])


def test_call_timeout_is_a_timeout_not_a_parameter(
    make_model: Callable[..., AzureMLChatModel], emu: Emulator
) -> None:
    """A call's timeout= limits that call and is not sent to the model (LangChain put it in the payload)."""
    llm = make_model(max_retries=0)
    llm.invoke("hi", timeout=5)
    assert "timeout" not in bodies(emu)[0]
    with pytest.raises(APITimeoutError):
        llm.invoke("[[fault:latency=1]] slow", timeout=0.2)


def test_score_route_renames_and_routes(make_model: Callable[..., AzureMLChatModel], emu: Emulator) -> None:
    """On /score, max_tokens is sent as max_new_tokens and the deployment header picks the deployment."""
    result = make_model("score", max_tokens=2).invoke("one two three")
    request = emu.requests[0]
    assert "score" == request.headers["azureml-model-deployment"]
    assert {"max_new_tokens": 2} == request.body["input_data"]["parameters"]
    assert "You said:" == result.content


# --- errors ------------------------------------------------------------------------------------------------


async def test_same_error_for_invoke_and_stream(emu: Emulator) -> None:
    """A rejected key raises AuthenticationError from ainvoke and astream alike."""
    llm = AzureMLChatModel(endpoint_url=emu.chat_url, api_key="wrong", max_retries=0)
    try:
        with pytest.raises(AuthenticationError):
            await llm.ainvoke("hi")
        with pytest.raises(AuthenticationError):
            async for _ in llm.astream("hi"):
                pass
    finally:
        await llm.aclose()


# --- clients, loops and resources --------------------------------------------------------------------------


def _loop_threads() -> int:
    return sum(1 for thread in threading.enumerate() if thread.name == "azureml-chat-loop")


def test_model_works_across_event_loops_without_leaks(make_model: Callable[..., AzureMLChatModel]) -> None:
    """One model serves several asyncio.run loops, and each loop's connections close with it."""
    llm = make_model()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        answers = [asyncio.run(llm.ainvoke(text)).content for text in ("one", "two")]
        gc.collect()
    assert ["You said: one", "You said: two"] == answers
    assert [] == [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]


def test_close_stops_the_sync_loop_thread(make_model: Callable[..., AzureMLChatModel]) -> None:
    """The sync path runs one loop thread per model, and close() stops it."""
    before = _loop_threads()
    llm = make_model()
    llm.invoke("a")
    llm.invoke("b")
    during = _loop_threads()
    llm.close()
    assert (before + 1, before) == (during, _loop_threads())


async def test_invoke_works_inside_a_running_loop(make_model: Callable[..., AzureMLChatModel]) -> None:
    """invoke (sync) works from code running inside an event loop, as in Jupyter."""
    assert "You said: hi" == make_model().invoke("hi").content


async def test_async_context_manager(emu: Emulator) -> None:
    """async with gives the model and closes it on exit; the model answers inside."""
    async with AzureMLChatModel(endpoint_url=emu.chat_url, api_key=KEY) as llm:
        assert "You said: hi" == (await llm.ainvoke("hi")).content


async def test_from_async_client_uses_it_and_leaves_it_open(emu: Emulator) -> None:
    """to_langchain() on an AsyncChatClient takes its settings and call fields, and never closes it."""
    async with AsyncChatClient(emu.chat_url, KEY, deployment="chat") as client:
        llm = client.to_langchain(temperature=0.3)
        answer = await llm.ainvoke("hi")
        await llm.aclose()
        again = await client.chat([UserMessage("still open?")])
    assert isinstance(llm, AzureMLChatModel)
    assert ("You said: hi", "You said: still open?") == (answer.content, again.content)
    assert (0.3, "chat", emu.chat_url) == (llm.temperature, llm.deployment, llm.endpoint_url)
    assert [0.3, None] == [request.body.get("temperature") for request in emu.requests]


def test_from_client_model_runs_on_a_new_loop_with_a_sibling(emu: Emulator) -> None:
    """A model made from a client in one loop still works in a later loop, after that client closed."""

    async def first() -> AzureMLChatModel:
        async with AsyncChatClient(emu.chat_url, KEY) as client:
            llm: AzureMLChatModel = client.to_langchain()
            await llm.ainvoke("one")
            return llm

    llm = asyncio.run(first())
    try:
        assert "You said: two" == asyncio.run(llm.ainvoke("two")).content
    finally:
        llm.close()


def test_from_sync_client_uses_its_loop_thread(emu: Emulator) -> None:
    """Client.to_langchain() runs sync calls on that Client (no extra loop thread) and leaves it open."""
    with Client(emu.chat_url, KEY) as client:
        client.chat([UserMessage("warm up")])
        before = _loop_threads()
        llm = client.to_langchain()
        answer = llm.invoke("hi")
        during = _loop_threads()
        llm.close()
        again = client.chat([UserMessage("still open?")])
    assert (before, "You said: hi", "You said: still open?") == (during, answer.content, again.content)


def test_unnamed_client_pattern_leaves_nothing_open(emu: Emulator) -> None:
    """AsyncChatClient(url, key).to_langchain() used in asyncio.run and sync leaves no unclosed session at exit."""
    code = (
        "import asyncio, sys\n"
        "from azureml_chat import AsyncChatClient\n"
        f"llm = AsyncChatClient({emu.chat_url!r}, {KEY!r}).to_langchain()\n"
        "print(asyncio.run(llm.ainvoke('one')).content)\n"
        "print(llm.invoke('two').content)\n"
    )
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert ("You said: one\nYou said: two\n", "") == (done.stdout, done.stderr)


async def test_from_client_with_a_session_calls_through_it_and_leaves_it_open(emu: Emulator) -> None:
    """A client on the caller's session serves the model's calls on that session, which stays open."""
    sent: list[str] = []

    async def on_start(session: Any, context: Any, params: Any) -> None:
        sent.append(str(params.url))

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    async with (
        aiohttp.ClientSession(trace_configs=[trace]) as session,
        AsyncChatClient(emu.chat_url, KEY, session=session) as client,
    ):
        llm = client.to_langchain()
        answer = await llm.ainvoke("hi")
        await llm.aclose()
        still_open = not session.closed
    assert ("You said: hi", [emu.chat_url], True) == (answer.content, sent, still_open)


def test_a_model_over_several_endpoints_fails_over_in_sync_and_async_calls(emu: Emulator) -> None:
    """endpoints=[...]: a failing first endpoint's calls go to the fallback, named in response_metadata, from
    invoke and from ainvoke in a new loop alike."""
    emu.add_fault("status=503,times=2")
    with EmulatorThread(Emulator(KEY)) as fallback:
        llm = AzureMLChatModel(
            endpoints=[
                Endpoint(emu.chat_url, KEY, name="main"),
                Endpoint(fallback.chat_url, KEY, name="backup", priority=1),
            ],
            max_retries=1,
        )
        try:
            first = llm.invoke("one")
            second = asyncio.run(llm.ainvoke("two"))
        finally:
            llm.close()
        answered = [request.body["messages"][-1]["content"] for request in fallback.requests]
    assert ("You said: one", "backup") == (first.content, first.response_metadata["endpoint"])
    assert ("You said: two", "backup") == (second.content, second.response_metadata["endpoint"])
    assert ["one", "two"] == answered
    assert [503, 503] == [request.status for request in emu.requests]
    assert (None, None) == (llm.endpoint_url, llm.api_key)


def test_a_model_refuses_endpoints_with_an_endpoint_url(emu: Emulator) -> None:
    """endpoints= and endpoint_url= together are a validation error naming both."""
    with pytest.raises(ValidationError, match="endpoints="):
        AzureMLChatModel(endpoints=[Endpoint(emu.chat_url, KEY)], endpoint_url=emu.chat_url)


def test_from_client_refuses_connection_fields(emu: Emulator) -> None:
    """Connection settings come from the client; passing them to from_client is a TypeError."""
    client = AsyncChatClient(emu.chat_url, KEY)
    with pytest.raises(TypeError, match="deployment"):
        AzureMLChatModel.from_client(client, deployment="other")


def test_from_client_shows_the_clients_settings(emu: Emulator) -> None:
    """The model shows the client's connection settings (the key masked) and still takes model_kwargs."""
    client = AsyncChatClient(emu.chat_url, KEY, max_retries=5, timeout=7, headers={"x-team": "blue"})
    llm = AzureMLChatModel.from_client(client, model_kwargs={"top_k": 3})
    assert isinstance(llm.api_key, SecretStr)
    assert (KEY, 5, Timeout.coerce(7), {"x-team": "blue"}, {"top_k": 3}) == (
        llm.api_key.get_secret_value(),
        llm.max_retries,
        llm.timeout,
        llm.headers,
        llm.model_kwargs,
    )


def _clients_used(llm: AzureMLChatModel) -> list[AsyncChatClient]:
    """The async clients ``llm`` uses in a new event loop and for sync calls, after a call through each."""

    async def in_a_new_loop() -> AsyncChatClient:
        await llm.ainvoke("async")
        return await llm._pool.async_client()

    looped = asyncio.run(in_a_new_loop())
    llm.invoke("sync")
    return [looped, llm._pool.sync_client().async_client]


def test_from_client_siblings_share_its_rate_limiter(emu: Emulator) -> None:
    """The clients a from_client model builds for another loop and for sync calls share the client's limiter."""

    async def borrow() -> tuple[AsyncChatClient, AzureMLChatModel]:
        async with AsyncChatClient(emu.chat_url, KEY, rate_limit=RateLimit(max_concurrency=1)) as client:
            llm: AzureMLChatModel = client.to_langchain()
            await llm.ainvoke("borrowed")
        return client, llm

    client, llm = asyncio.run(borrow())
    try:
        siblings = _clients_used(llm)
    finally:
        llm.close()
    assert [False, False] == [sibling is client for sibling in siblings]
    assert [True, True] == [
        sibling._pipeline.router.first.limiter is client._pipeline.router.first.limiter
        for sibling in siblings
    ]


async def test_client_rate_limit_holds_across_the_models_loops(emu: Emulator) -> None:
    """max_concurrency=1 on the client holds across every loop the model runs in: no two calls overlap."""
    latency = 0.2
    slow = f"[[fault:latency={latency}]] one at a time"
    async with AsyncChatClient(emu.chat_url, KEY, rate_limit=RateLimit(max_concurrency=1)) as client:
        llm: AzureMLChatModel = client.to_langchain()
        try:
            await asyncio.gather(
                llm.ainvoke(slow),  # the client itself, on this loop
                asyncio.to_thread(llm.invoke, slow),  # the sync client's own loop thread
                asyncio.to_thread(asyncio.run, llm.ainvoke(slow)),  # a new loop in another thread
            )
        finally:
            await llm.aclose()
    # Only this test's requests: a slow one an earlier test gave up on may be recorded late.
    arrivals = sorted(request.time for request in emu.requests if slow in request.text)
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    # Each call is admitted only after the previous one was answered, at least `latency` after it arrived.
    assert [True, True] == [gap >= latency - 0.02 for gap in gaps]


def test_model_clients_have_their_own_connection_pools(make_model: Callable[..., AzureMLChatModel]) -> None:
    """A loop's client and the sync client each get their own aiohttp pool, and share the template's limiter."""
    llm = make_model()
    template = llm._pool.template
    clients = _clients_used(llm)
    transports = [client._pipeline.transport for client in (template, *clients)]
    assert isinstance(transports[0], AiohttpTransport)
    assert 3 == len({id(transport) for transport in transports})
    assert [True, True] == [
        client._pipeline.router.first.limiter is template._pipeline.router.first.limiter for client in clients
    ]


def test_a_transport_the_user_passed_is_shared_and_left_open() -> None:
    """A client's transport= serves every client of a from_client model, and closing the model leaves it open."""
    answer = {"choices": [{"message": {"role": "assistant", "content": "mocked"}, "finish_reason": "stop"}]}
    transport = MockTransport(lambda request: MockResponse(200, json=answer))
    llm = AzureMLChatModel.from_client(AsyncChatClient(PLACEHOLDER_CHAT, KEY, transport=transport))
    try:
        clients = _clients_used(llm)
    finally:
        llm.close()
    assert [True, True] == [client._pipeline.transport is transport for client in clients]
    assert False is transport.closed


def test_from_client_siblings_keep_the_clients_environment(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Siblings use what the client read from the AZUREML_* variables, even after those change."""
    monkeypatch.setenv("AZUREML_ENDPOINT_URL", emu.chat_url)
    monkeypatch.setenv("AZUREML_ENDPOINT_API_KEY", KEY)
    monkeypatch.setenv("AZUREML_DEPLOYMENT_NAME", "chat")
    with Client() as client:
        llm: AzureMLChatModel = client.to_langchain()
        monkeypatch.setenv("AZUREML_ENDPOINT_URL", "https://elsewhere.example/v1/chat/completions")
        monkeypatch.setenv("AZUREML_ENDPOINT_API_KEY", "other-key")
        monkeypatch.setenv("AZUREML_DEPLOYMENT_NAME", "mistral")
        try:
            answer = asyncio.run(llm.ainvoke("pinned?"))
        finally:
            llm.close()
    assert "You said: pinned?" == answer.content
    sent = [request for request in emu.requests if "pinned?" in request.text]
    assert ["chat"] == [request.headers["azureml-model-deployment"] for request in sent]


# --- identity, tracing, secrets ----------------------------------------------------------------------------


def test_key_never_shows(make_model: Callable[..., AzureMLChatModel]) -> None:
    """The key is a masked SecretStr, absent from repr and the identifying params."""
    llm = make_model()
    assert isinstance(llm.api_key, SecretStr)
    assert KEY not in repr(llm)
    assert KEY not in json.dumps(llm._identifying_params, default=str)


@pytest.mark.parametrize(
    ("cls", "key_field"),
    [(AzureMLChatModel, "api_key"), (AzureMLChatOnlineEndpoint, "endpoint_api_key")],
)
def test_construction_errors_never_show_the_key(cls: type[AzureMLChatModel], key_field: str) -> None:
    """A ValidationError at construction does not quote the key it was given."""
    with pytest.raises(ValidationError) as caught:
        cls(**{"endpoint_url": "https://h.example/v1/completions", key_field: "super-secret-key"})
    assert "endpoint_url must end with" in str(caught.value)
    assert "super-secret-key" not in str(caught.value)


def test_ls_params_name_the_model() -> None:
    """Tracing params: provider azureml, a per-call model wins, else model_name, deployment, host."""
    llm = AzureMLChatModel(endpoint_url=PLACEHOLDER_CHAT, api_key=KEY, temperature=0.2, stop=["x"])
    params = llm._get_ls_params()
    assert ("azureml", "<your-endpoint>.<your_region>.inference.ml.azure.com") == (
        params["ls_provider"],
        params["ls_model_name"],
    )
    assert (0.2, ["x"]) == (params["ls_temperature"], params["ls_stop"])
    assert "other" == llm._get_ls_params(model="other")["ls_model_name"]
    named = AzureMLChatModel(endpoint_url=PLACEHOLDER_CHAT, api_key=KEY, deployment="blue")
    assert "blue" == named._get_ls_params()["ls_model_name"]


def test_unknown_fields_are_refused() -> None:
    """A misspelt field is a ValidationError, not silently ignored."""
    with pytest.raises(ValidationError, match="temprature"):
        AzureMLChatModel(endpoint_url=PLACEHOLDER_CHAT, api_key=KEY, temprature=0.2)


def test_configuration_errors_surface_at_construction() -> None:
    """A bad endpoint URL fails when the model is built, with the client's message."""
    with pytest.raises(ValidationError, match="endpoint_url must end with"):
        AzureMLChatModel(endpoint_url="https://h.example/v1/completions", api_key=KEY)


# --- the AzureMLChatOnlineEndpoint shim --------------------------------------------------------------------


@pytest.fixture(params=["env", "constructor"])
def upstream_model(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> AzureMLChatOnlineEndpoint:
    """LangChain's own unit-test fixtures: the key from the environment (then removed) or the constructor."""
    if request.param == "env":
        monkeypatch.setenv("AZUREML_ENDPOINT_API_KEY", "my-api-key")
        model = AzureMLChatOnlineEndpoint(endpoint_url=PLACEHOLDER_SCORE)
        monkeypatch.delenv("AZUREML_ENDPOINT_API_KEY")
        return model
    return AzureMLChatOnlineEndpoint(endpoint_url=PLACEHOLDER_SCORE, endpoint_api_key="my-api-key")


def test_shim_key_is_a_masked_secret(
    upstream_model: AzureMLChatOnlineEndpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    """endpoint_api_key is a SecretStr, masked in str, repr and print, readable on purpose (LangChain's)."""
    key = upstream_model.endpoint_api_key
    print(key, end="")
    assert isinstance(key, SecretStr)
    assert ("**********", "SecretStr('**********')") == (str(key), repr(key))
    assert "**********" == capsys.readouterr().out
    assert "my-api-key" == key.get_secret_value()


def test_shim_builds_from_langchain_docs_examples() -> None:
    """The dedicated and serverless examples of LangChain's docs build unchanged (import aside)."""
    dedicated = AzureMLChatOnlineEndpoint(
        endpoint_url=PLACEHOLDER_SCORE,
        endpoint_api_type=AzureMLEndpointApiType.dedicated,
        endpoint_api_key="my-api-key",
        content_formatter=CustomOpenAIChatContentFormatter(),
    )
    serverless = AzureMLChatOnlineEndpoint(
        endpoint_url=PLACEHOLDER_CHAT,
        endpoint_api_type=AzureMLEndpointApiType.serverless,
        endpoint_api_key="my-api-key",
        content_formatter=CustomOpenAIChatContentFormatter,
        model_kwargs={"temperature": 0.8},
    )
    assert (AzureMLEndpointApiType.dedicated, "llama") == (
        dedicated.endpoint_api_type,
        dedicated.content_formatter.name,
    )
    assert (AzureMLEndpointApiType.serverless, {"temperature": 0.8}) == (
        serverless.endpoint_api_type,
        serverless.model_kwargs,
    )
    assert "azureml_chat_endpoint" == serverless._llm_type


def _langchain_formatter(name: str, base: type = object) -> type:
    """A class named like one of langchain_community's formatters (that package is not installed here)."""
    return type(name, (base,), {"__module__": "langchain_community.chat_models.azureml_endpoint"})


@pytest.mark.parametrize(
    ("formatter", "family"),
    [
        (_langchain_formatter("CustomOpenAIChatContentFormatter")(), "llama"),
        (_langchain_formatter("LlamaChatContentFormatter"), "llama"),
        (
            _langchain_formatter("MyFormatter", _langchain_formatter("MistralChatContentFormatter"))(),
            "mistral",
        ),
        ("MistralChatContentFormatter", "mistral"),
        (MistralChatContentFormatter(), "mistral"),
        ("openai", "openai"),
    ],
    ids=["community-instance", "community-class", "community-subclass", "name", "ours", "family"],
)
def test_shim_maps_langchain_formatters(formatter: Any, family: str) -> None:
    """LangChain's formatter classes, instances, subclasses and names map to our families."""
    model = AzureMLChatOnlineEndpoint(
        endpoint_url=PLACEHOLDER_SCORE, endpoint_api_key="k", content_formatter=formatter
    )
    assert family == model.content_formatter.name


def test_shim_refuses_unknown_custom_formatter() -> None:
    """A custom LangChain formatter we cannot map is refused with a pointer to ContentFormatter."""
    with pytest.raises(ValidationError, match=r"write an azureml_chat\.ContentFormatter"):
        AzureMLChatOnlineEndpoint(
            endpoint_url=PLACEHOLDER_SCORE,
            endpoint_api_key="k",
            content_formatter=_langchain_formatter("Mine")(),
        )


def test_shim_accepts_urls_langchain_rejects() -> None:
    """/v1/chat/completions and /chat/completions (rejected by langchain-community >= 0.3.25) work."""
    for path in ("/v1/chat/completions", "/chat/completions?api-version=2024-05-01-preview"):
        model = AzureMLChatOnlineEndpoint(
            endpoint_url="https://ep.eastus2.models.ai.azure.com" + path,
            endpoint_api_type="serverless",
            endpoint_api_key="k",
        )
        assert "serverless" == model.endpoint_type


def test_shim_reads_langchain_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    """The AZUREML_* variables LangChain reads configure the shim, realtime meaning dedicated."""
    monkeypatch.setenv("AZUREML_ENDPOINT_URL", PLACEHOLDER_SCORE)
    monkeypatch.setenv("AZUREML_ENDPOINT_API_KEY", "k")
    monkeypatch.setenv("AZUREML_ENDPOINT_API_TYPE", "realtime")
    monkeypatch.setenv("AZUREML_DEPLOYMENT_NAME", "blue")
    model = AzureMLChatOnlineEndpoint()
    assert (PLACEHOLDER_SCORE, "dedicated", "blue") == (
        model.endpoint_url,
        model.endpoint_type,
        model.deployment_name,
    )


def test_shim_honours_azureml_timeout(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """AZUREML_TIMEOUT is a real client timeout for the shim."""
    monkeypatch.setenv("AZUREML_TIMEOUT", "0.2")
    with (
        AzureMLChatOnlineEndpoint(endpoint_url=emu.chat_url, endpoint_api_key=KEY, max_retries=0) as llm,
        pytest.raises(APITimeoutError),
    ):
        llm.invoke("[[fault:latency=1]] slow")


def test_shim_ignores_unknown_arguments_with_a_warning() -> None:
    """Arguments LangChain's class silently ignored are ignored with a UserWarning naming them."""
    with pytest.warns(UserWarning, match="handle_parsing_errors"):
        model = AzureMLChatOnlineEndpoint(
            endpoint_url=PLACEHOLDER_CHAT, endpoint_api_key="k", handle_parsing_errors=True
        )
    assert PLACEHOLDER_CHAT == model.endpoint_url


def test_shim_refuses_disagreeing_spellings() -> None:
    """endpoint_api_type= and endpoint_type= may both be given only when they agree."""
    agreed = AzureMLChatOnlineEndpoint(
        endpoint_url=PLACEHOLDER_CHAT,
        endpoint_api_key="k",
        endpoint_api_type="serverless",
        endpoint_type="serverless",
    )
    assert "serverless" == agreed.endpoint_type
    with pytest.raises(ValidationError, match="disagree"):
        AzureMLChatOnlineEndpoint(
            endpoint_url=PLACEHOLDER_SCORE,
            endpoint_api_key="k",
            endpoint_api_type="dedicated",
            endpoint_type="serverless",
        )


def test_shim_sends_text_unescaped(emu: Emulator) -> None:
    """Quotes and newlines reach the model as themselves (LangChain escaped them twice)."""
    text = 'Say "hi"\nnow\t!'
    with AzureMLChatOnlineEndpoint(
        endpoint_url=emu.score_url, endpoint_api_key=KEY, deployment_name="score"
    ) as llm:
        result = llm.invoke([HumanMessage(text)])
    assert [{"role": "user", "content": text}] == emu.requests[0].body["input_data"]["input_string"]
    assert "You said: " + text == result.content


def test_shim_mistral_works_on_dedicated(emu: Emulator) -> None:
    """MistralChatContentFormatter works on a dedicated /score endpoint, folding the system message."""
    with AzureMLChatOnlineEndpoint(
        endpoint_url=emu.score_url,
        endpoint_api_key=KEY,
        deployment_name="mistral",
        content_formatter=MistralChatContentFormatter(),
    ) as llm:
        result = llm.invoke([SystemMessage("S"), HumanMessage("U")])
    assert [{"role": "user", "content": "S\n\nU"}] == emu.requests[0].body["input_data"]["input_string"]
    assert "You said: S\n\nU" == result.content


# --- langchain-core stays optional -------------------------------------------------------------------------


def _run_python(code: str) -> Any:
    """Run ``code`` in a fresh interpreter and return the JSON it prints."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(done.stdout)


def test_importing_the_package_does_not_import_langchain() -> None:
    """import azureml_chat loads no langchain module (checked in a fresh interpreter)."""
    code = (
        "import json, sys, azureml_chat\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0].startswith('langchain'))))"
    )
    assert [] == _run_python(code)


def test_to_langchain_without_the_extra_names_it() -> None:
    """Without langchain-core, to_langchain() and the import raise ImportError naming the extra."""
    code = """
import json, sys
sys.modules["langchain_core"] = None  # what an environment without the extra looks like to import
from azureml_chat import AsyncChatClient, Client
messages = []
attempts = [
    lambda: AsyncChatClient("http://127.0.0.1:9/score", "k").to_langchain(),
    lambda: Client("http://127.0.0.1:9/score", "k").to_langchain(),
    lambda: __import__("azureml_chat.langchain"),
]
for attempt in attempts:
    try:
        attempt()
    except ImportError as exc:
        messages.append(str(exc))
print(json.dumps(messages))
"""
    messages = _run_python(code)
    assert 3 == len(messages)
    assert all('pip install "azureml-chat[langchain]"' in message for message in messages)
