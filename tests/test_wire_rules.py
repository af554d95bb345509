"""The wire rules of issue 15 (``_endpoint.py``, ``_headers.call_headers``, ``formatters/_openai.py``,
``_serialization.py``): ``?api-version=`` on the Azure AI Model Inference routes, ``extra-parameters:
pass-through`` for parameters outside that API's schema, and bodies valid under both Azure's and OpenAI's
schemas (``stop`` as a list, no ``"content": null``). Checked on the exact wire, through the public API."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest

from azureml_chat import (
    AssistantMessage,
    AsyncChatClient,
    Client,
    Endpoint,
    InvalidRequestError,
    ToolCall,
    ToolMessage,
    UserMessage,
    _defaults,
)
from azureml_chat._params import MODEL_INFERENCE_CHAT_FIELDS, MODEL_INFERENCE_TEXT_FIELDS
from azureml_chat._transport import Request
from azureml_chat.emulator import Emulator
from azureml_chat.emulator._azure import AZURE_CHAT_FIELDS, AZURE_COMPLETION_FIELDS
from azureml_chat.testing import MockResponse, MockTransport, fast_retry

KEY = "key"
VERSION = _defaults.MODEL_INFERENCE_API_VERSION
CHAT_ANSWER = {"choices": [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}
TEXT_ANSWER = {"choices": [{"index": 0, "text": "hi", "finish_reason": "stop"}]}
SERVERLESS = "https://h.eastus2.models.ai.azure.com"
FOUNDRY = "https://r.services.ai.azure.com"


class Recorder:
    """A MockTransport handler that answers every request with ``answer`` (after any ``first`` ones) and keeps the
    requests."""

    def __init__(self, answer: dict[str, Any] = CHAT_ANSWER, *first: MockResponse) -> None:
        self.answer = answer
        self.first = list(first)
        self.requests: list[Request] = []

    def __call__(self, request: Request) -> MockResponse:
        self.requests.append(request)
        return self.first.pop(0) if self.first else MockResponse(200, json=self.answer)

    @property
    def last(self) -> Request:
        return self.requests[-1]


def client(url: str, recorder: Recorder, **options: Any) -> AsyncChatClient:
    return AsyncChatClient(url, KEY, transport=MockTransport(recorder), retry=fast_retry(), **options)


# --- api-version ------------------------------------------------------------------------------------------------

API_VERSION_TABLE = [
    # (id, given url, the url requests go to)
    (
        "serverless-chat",
        f"{SERVERLESS}/chat/completions",
        f"{SERVERLESS}/chat/completions?api-version={VERSION}",
    ),
    (
        "foundry-models-chat",
        f"{FOUNDRY}/models/chat/completions",
        f"{FOUNDRY}/models/chat/completions?api-version={VERSION}",
    ),
    ("serverless-text", f"{SERVERLESS}/completions", f"{SERVERLESS}/completions?api-version={VERSION}"),
    (
        "gateway-prefix",
        "https://gw.example.com/llama/chat/completions",
        f"https://gw.example.com/llama/chat/completions?api-version={VERSION}",
    ),
    (
        "trailing-slash",
        f"{SERVERLESS}/chat/completions/",
        f"{SERVERLESS}/chat/completions?api-version={VERSION}",
    ),
    (
        "other-query-kept",
        f"{SERVERLESS}/chat/completions?trace=1",
        f"{SERVERLESS}/chat/completions?trace=1&api-version={VERSION}",
    ),
    (
        "own-version-kept",
        f"{SERVERLESS}/chat/completions?api-version=2024-05-01-preview",
        f"{SERVERLESS}/chat/completions?api-version=2024-05-01-preview",
    ),
    (
        "own-version-any-case-kept",
        f"{FOUNDRY}/models/chat/completions?Api-Version=2024-05-01-preview",
        f"{FOUNDRY}/models/chat/completions?Api-Version=2024-05-01-preview",
    ),
    ("v1-chat-never", f"{SERVERLESS}/v1/chat/completions", f"{SERVERLESS}/v1/chat/completions"),
    ("v1-text-never", f"{SERVERLESS}/v1/completions", f"{SERVERLESS}/v1/completions"),
    ("bare-serverless-host", f"{SERVERLESS}/", f"{SERVERLESS}/v1/chat/completions"),
    (
        "azure-openai-v1-never",
        f"{FOUNDRY}/openai/v1/chat/completions",
        f"{FOUNDRY}/openai/v1/chat/completions",
    ),
    (
        "azure-openai-deployment-untouched",
        f"{FOUNDRY}/openai/deployments/gpt-4o/chat/completions",
        f"{FOUNDRY}/openai/deployments/gpt-4o/chat/completions",
    ),
    (
        "score-never",
        "https://e.eastus2.inference.ml.azure.com/score",
        "https://e.eastus2.inference.ml.azure.com/score",
    ),
]


@pytest.mark.parametrize(
    ("url", "sent_to"), [row[1:] for row in API_VERSION_TABLE], ids=[row[0] for row in API_VERSION_TABLE]
)
async def test_model_inference_routes_get_an_api_version_and_v1_routes_never(url: str, sent_to: str) -> None:
    """A model-inference URL without ?api-version= gets the GA one; a user's own is kept as written; the /v1/,
    Azure OpenAI and /score routes are left alone."""
    text, score = "chat" not in sent_to and not sent_to.endswith("/score"), sent_to.endswith("/score")
    recorder = Recorder(TEXT_ANSWER if text else {"output": "hi"} if score else CHAT_ANSWER)
    endpoint_type = "serverless" if url == f"{SERVERLESS}/" else None
    async with client(url, recorder, endpoint_type=endpoint_type) as chat:
        await (chat.complete("hi") if text else chat.chat("hi"))
        assert (sent_to, sent_to) == (chat.endpoint_url, recorder.last.url)


def test_the_added_api_version_is_a_ga_one() -> None:
    """The default is a dated GA version (YYYY-MM-DD, no -preview)."""
    assert re.fullmatch(r"20\d\d-\d\d-\d\d", VERSION), VERSION


async def test_logs_show_the_url_without_its_query(caplog: pytest.LogCaptureFixture) -> None:
    """The per-attempt DEBUG line shows the route, never the added ?api-version=."""
    recorder = Recorder()
    caplog.set_level(logging.DEBUG, logger="azureml_chat")
    async with client(f"{SERVERLESS}/chat/completions", recorder) as chat:
        await chat.chat("hi")
    lines = [record.getMessage() for record in caplog.records]
    assert any(f"{SERVERLESS}/chat/completions " in line for line in lines), lines
    assert not any("api-version" in line for line in lines), lines


def test_an_endpoint_of_a_pool_gets_its_api_version_too() -> None:
    """Each Endpoint of endpoints=[...] is resolved by the same rule: the model-inference one gets the version."""
    pool = AsyncChatClient(
        endpoints=[
            Endpoint(f"{SERVERLESS}/chat/completions", KEY),
            Endpoint(f"{FOUNDRY}/v1/chat/completions", KEY),
        ]
    )
    urls = [member.endpoint.url for member in pool._pipeline.router.members]
    assert [f"{SERVERLESS}/chat/completions?api-version={VERSION}", f"{FOUNDRY}/v1/chat/completions"] == urls


# --- extra-parameters ---------------------------------------------------------------------------------------------

MODEL_INFERENCE = f"{SERVERLESS}/chat/completions"


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"temperature": 0.2, "top_p": 0.9, "max_tokens": 5, "stop": "END", "seed": 1, "model": "m"},
        {"presence_penalty": 0.1, "frequency_penalty": 0.1, "response_format": {"type": "text"}},
    ],
    ids=["none", "sampling", "penalties-format"],
)
async def test_schema_parameters_alone_send_no_extra_parameters_header(params: dict[str, Any]) -> None:
    """A call whose parameters are all in the model-inference schema leaves the service default alone."""
    recorder = Recorder()
    async with client(MODEL_INFERENCE, recorder) as chat:
        await chat.chat("hi", **params)
    assert "extra-parameters" not in recorder.last.headers


@pytest.mark.parametrize(
    ("call", "model_kwargs"),
    [
        ({"top_k": 40}, {}),
        ({"safe_prompt": True, "temperature": 0}, {}),
        ({}, {"repetition_penalty": 1.1}),
        ({"max_completion_tokens": 64}, {}),
    ],
    ids=["top_k", "safe_prompt", "from-model_kwargs", "max_completion_tokens"],
)
async def test_parameters_outside_the_schema_send_pass_through(
    call: dict[str, Any], model_kwargs: dict[str, Any]
) -> None:
    """A parameter outside the schema, from the call or model_kwargs, makes the call carry pass-through, and is
    sent in the body."""
    recorder = Recorder()
    async with client(MODEL_INFERENCE, recorder, model_kwargs=model_kwargs) as chat:
        await chat.chat("hi", **call)
    sent = recorder.last.json()
    assert "pass-through" == recorder.last.headers["extra-parameters"]
    assert {**model_kwargs, **call}.items() <= sent.items()


async def test_pass_through_is_decided_per_call() -> None:
    """The header follows each call's parameters: the next call without extras goes without it."""
    recorder = Recorder()
    async with client(MODEL_INFERENCE, recorder) as chat:
        await chat.chat("hi", top_k=40)
        await chat.chat("hi", temperature=0)
    assert ["pass-through", None] == [r.headers.get("extra-parameters") for r in recorder.requests]


async def test_a_stream_and_a_text_completion_follow_the_rule() -> None:
    """Streams and text completions on the model-inference routes carry pass-through for extras too, and only
    then."""
    recorder = Recorder()
    sse = b'data: {"choices": [{"index": 0, "delta": {"content": "hi"}}]}\n\ndata: [DONE]\n\n'
    recorder.first = [MockResponse(200, content=[sse])]
    async with client(MODEL_INFERENCE, recorder) as chat, chat.stream("hi", top_k=40) as stream:
        assert ["hi"] == [chunk.content async for chunk in stream]
    text = Recorder(TEXT_ANSWER)
    async with client(f"{SERVERLESS}/completions", text) as completer:
        await completer.complete("Once", best_of=2)
        await completer.complete("Once", max_tokens=5, stop="END")
        # A chat field is outside the text schema: on /completions it is an extra parameter too.
        await completer.complete("Once", response_format={"type": "json_object"})
    assert "pass-through" == recorder.last.headers["extra-parameters"]
    assert ["pass-through", None, "pass-through"] == [
        r.headers.get("extra-parameters") for r in text.requests
    ]


@pytest.mark.parametrize(
    "url",
    [f"{SERVERLESS}/v1/chat/completions", "https://e.eastus2.inference.ml.azure.com/score"],
    ids=["v1", "score"],
)
async def test_no_automatic_header_off_the_model_inference_routes(url: str) -> None:
    """The /v1/ routes pass every field to the model anyway, and /score has no such header: neither gets it."""
    recorder = Recorder(CHAT_ANSWER if "v1" in url else {"output": "hi"})
    async with client(url, recorder) as chat:
        await chat.chat("hi", top_k=40)
    assert "extra-parameters" not in recorder.last.headers


@pytest.mark.parametrize(
    ("options", "call", "expected"),
    [
        ({"extra_parameters": "drop"}, {}, "drop"),
        ({"extra_parameters": "error"}, {}, "error"),
        ({"headers": {"Extra-Parameters": "drop"}}, {}, "drop"),
        ({}, {"extra_headers": {"extra-parameters": "error"}}, "error"),
        (
            {"extra_parameters": "drop"},
            {"extra_headers": {"Extra-Parameters": "pass-through"}},
            "pass-through",
        ),
    ],
    ids=["client-drop", "client-error", "client-header", "call-header", "call-over-client"],
)
async def test_a_value_the_user_chose_wins(
    options: dict[str, Any], call: dict[str, Any], expected: str
) -> None:
    """extra_parameters=, headers= or the call's extra_headers= decide; the automatic pass-through never
    overrides them (and there is one header, not two)."""
    recorder = Recorder()
    async with client(MODEL_INFERENCE, recorder, **options) as chat:
        await chat.chat("hi", top_k=40, **call)
    sent = recorder.last.headers
    assert (expected, 1) == (
        sent["extra-parameters"],
        [name.lower() for name in sent].count("extra-parameters"),
    )


async def test_a_failover_decides_per_endpoint() -> None:
    """On a pool, the header is worked out for the endpoint each attempt goes to: none on the /v1/ endpoint that
    failed, pass-through on the model-inference one the call fails over to."""
    recorder = Recorder(CHAT_ANSWER, MockResponse(503, json={"error": "busy"}))
    endpoints = [
        Endpoint(f"{FOUNDRY}/v1/chat/completions", KEY, priority=0),
        Endpoint(MODEL_INFERENCE, KEY, priority=1),
    ]
    async with AsyncChatClient(
        endpoints=endpoints, transport=MockTransport(recorder), retry=fast_retry()
    ) as pool:
        await pool.chat("hi", top_k=40)
    sent = [(r.url, r.headers.get("extra-parameters")) for r in recorder.requests]
    assert [
        (f"{FOUNDRY}/v1/chat/completions", None),
        (f"{MODEL_INFERENCE}?api-version={VERSION}", "pass-through"),
    ] == sent


def test_the_schema_is_the_model_inference_request_fields() -> None:
    """The schemas hold the chat and the text request fields of the API, and not OpenAI's extras."""
    chat = {
        "messages",
        "model",
        "frequency_penalty",
        "presence_penalty",
        "temperature",
        "top_p",
        "max_tokens",
    }
    chat |= {"stop", "stream", "seed", "response_format", "tools", "tool_choice", "modalities"}
    text = chat - {"messages", "response_format", "tools", "tool_choice", "modalities"} | {"prompt"}
    assert (chat, text) == (MODEL_INFERENCE_CHAT_FIELDS, MODEL_INFERENCE_TEXT_FIELDS)
    extras = {"max_completion_tokens", "n", "logprobs", "stream_options", "user"}
    assert not extras & (MODEL_INFERENCE_CHAT_FIELDS | MODEL_INFERENCE_TEXT_FIELDS)


def test_the_client_and_the_emulator_agree_on_the_schema() -> None:
    """The client's schema (when to send pass-through) is the emulator's (when to answer 400), per operation."""
    assert (AZURE_CHAT_FIELDS, AZURE_COMPLETION_FIELDS) == (
        MODEL_INFERENCE_CHAT_FIELDS,
        MODEL_INFERENCE_TEXT_FIELDS,
    )


async def test_against_the_emulator_extras_and_version_reach_it() -> None:
    """End to end: a call with top_k on the emulator's /chat/completions (no version in the URL) is answered,
    and the emulator saw the version, the header and top_k."""
    async with (
        Emulator(key=KEY) as emulator,
        AsyncChatClient(emulator.url + "/chat/completions", KEY, retry=fast_retry()) as chat,
    ):
        answer = await chat.chat("hi", top_k=40)
    (request,) = emulator.requests
    assert "hi" in (answer.content or "")
    assert (VERSION, "pass-through", 40) == (
        request.query["api-version"],
        request.headers["extra-parameters"],
        request.body["top_k"],
    )


# --- bodies valid under both specs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stop", "sent"),
    [("END", ["END"]), (["A", "B"], ["A", "B"]), (("A",), ["A"]), ([], [])],
    ids=["string", "list", "tuple", "empty"],
)
async def test_stop_goes_out_as_a_list(stop: Any, sent: list[str]) -> None:
    """Azure's schema takes stop only as a list: a string is sent as a one-item list, on chat and text routes."""
    chat_recorder, text_recorder = Recorder(), Recorder(TEXT_ANSWER)
    async with (
        client(MODEL_INFERENCE, chat_recorder) as chat,
        client(f"{SERVERLESS}/v1/completions", text_recorder) as completer,
    ):
        await chat.chat("hi", stop=stop)
        await completer.complete("Once", stop=stop)
    assert (sent, sent) == (chat_recorder.last.json()["stop"], text_recorder.last.json()["stop"])


async def test_a_stop_string_in_model_kwargs_goes_out_as_a_list() -> None:
    """The rule holds whichever layer gave stop."""
    recorder = Recorder()
    async with client(MODEL_INFERENCE, recorder, model_kwargs={"stop": "\n\n"}) as chat:
        await chat.chat("hi")
    assert ["\n\n"] == recorder.last.json()["stop"]


async def test_an_assistant_message_with_only_tool_calls_has_no_content() -> None:
    """A replayed assistant turn that only called tools omits content (Azure types it as a string; OpenAI needs
    it only without tool_calls), whether given as an object or as a dict with content null."""
    call = ToolCall("c1", "get_weather", '{"city": "Oslo"}')
    wire_call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
    }
    as_dict = {"role": "assistant", "content": None, "tool_calls": [wire_call]}
    recorder = Recorder()
    async with client(MODEL_INFERENCE, recorder) as chat:
        for assistant in (AssistantMessage(tool_calls=[call]), as_dict):
            await chat.chat([UserMessage("Oslo?"), assistant, ToolMessage("sunny", tool_call_id="c1")])
    expected = {"role": "assistant", "tool_calls": [wire_call]}
    assert [expected, expected] == [r.json()["messages"][1] for r in recorder.requests]


async def test_an_assistant_message_with_text_and_tool_calls_keeps_both() -> None:
    """Text beside tool calls is kept; an assistant turn with text only is its text."""
    recorder = Recorder()
    messages = [
        UserMessage("Oslo?"),
        AssistantMessage("Looking.", tool_calls=[ToolCall("c1", "f", "{}")]),
        ToolMessage("sunny", tool_call_id="c1"),
        AssistantMessage("Sunny."),
        UserMessage("Thanks"),
    ]
    async with client(MODEL_INFERENCE, recorder) as chat:
        await chat.chat(messages)
    sent = recorder.last.json()["messages"]
    assert ("Looking.", 1) == (sent[1]["content"], len(sent[1]["tool_calls"]))
    assert {"role": "assistant", "content": "Sunny."} == sent[3]


# --- max_completion_tokens ------------------------------------------------------------------------------------------


async def test_max_completion_tokens_is_sent_as_given() -> None:
    """chat(max_completion_tokens=...) sends that name, checked like max_tokens, and no max_tokens."""
    recorder = Recorder()
    async with client(f"{SERVERLESS}/v1/chat/completions", recorder) as chat:
        await chat.chat("hi", max_completion_tokens=64)
        with pytest.raises(InvalidRequestError, match="max_completion_tokens must be a whole number >= 1"):
            await chat.chat("hi", max_completion_tokens=0)
    (request,) = recorder.requests
    body = request.json()
    assert (64, False) == (body["max_completion_tokens"], "max_tokens" in body)


async def test_both_length_limits_are_refused_before_sending() -> None:
    """max_tokens and max_completion_tokens together (a call's, or one from model_kwargs) raise and send nothing."""
    recorder = Recorder()
    async with client(MODEL_INFERENCE, recorder, model_kwargs={"max_tokens": 256}) as chat:
        with pytest.raises(InvalidRequestError, match="not both"):
            await chat.chat("hi", max_completion_tokens=64)
        with pytest.raises(InvalidRequestError, match="not both"):
            await chat.with_options(model_kwargs={}).chat("hi", max_tokens=5, max_completion_tokens=64)
    assert [] == recorder.requests


def test_the_sync_client_and_batches_take_max_completion_tokens() -> None:
    """Client.chat and chat_many pass max_completion_tokens through the same checks."""
    recorder = Recorder()
    with Client(MODEL_INFERENCE, KEY, transport=MockTransport(recorder), retry=fast_retry()) as chat:
        chat.chat("hi", max_completion_tokens=8)
        chat.chat_many(["a", "b"], max_completion_tokens=9)
        with pytest.raises(InvalidRequestError, match="did you mean max_completion_tokens"):
            chat.chat_many(["a"], max_completion_token=9)
    assert [8, 9, 9] == [r.json()["max_completion_tokens"] for r in recorder.requests]


def test_the_cli_takes_max_completion_tokens(capsys: pytest.CaptureFixture[str]) -> None:
    """`chat --max-completion-tokens N` sends that name; with --max-tokens too it is a usage error (exit 2)."""
    from azureml_chat.cli import main

    emulator = Emulator(key=KEY)
    with emulator.start_in_thread():
        url = emulator.url + "/chat/completions"
        assert 0 == main(
            ["chat", "one two three", "--url", url, "--key", KEY, "--max-completion-tokens", "3"]
        )
        with pytest.raises(SystemExit) as usage:
            main(
                [
                    "chat",
                    "hi",
                    "--url",
                    url,
                    "--key",
                    KEY,
                    "--max-tokens",
                    "3",
                    "--max-completion-tokens",
                    "3",
                ]
            )
    (request,) = emulator.requests
    assert (3, "max_tokens" in request.body) == (request.body["max_completion_tokens"], False)
    assert 2 == usage.value.code
    assert "not allowed with argument" in capsys.readouterr().err


def test_the_langchain_model_sends_its_max_completion_tokens_field() -> None:
    """AzureMLChatModel(max_completion_tokens=...) sends it as a default of every call; with max_tokens too, the
    call is refused."""
    pytest.importorskip("langchain_core")
    recorder = Recorder()
    with Client(MODEL_INFERENCE, KEY, transport=MockTransport(recorder), retry=fast_retry()) as chat:
        assert "hi" == chat.to_langchain(max_completion_tokens=32).invoke("hello").content
        with pytest.raises(InvalidRequestError, match="not both"):
            chat.to_langchain(max_completion_tokens=32, max_tokens=8).invoke("hello")
    (request,) = recorder.requests
    assert (32, "pass-through") == (
        request.json()["max_completion_tokens"],
        request.headers["extra-parameters"],
    )
