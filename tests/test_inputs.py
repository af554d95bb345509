"""What goes in, through the public API: misspelt keywords, bare strings, what is not a conversation, and a client
used the wrong way (a plain ``with`` on the async client, a closed client). Each refusal sends nothing."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from azureml_chat import (
    AsyncChatClient,
    AzureMLChatError,
    ChatResponse,
    Client,
    ClientClosedError,
    InvalidRequestError,
    UserMessage,
)
from azureml_chat._transport import Request
from azureml_chat.testing import MockResponse, MockTransport

CHAT_URL = "https://x.eastus2.models.ai.azure.com/v1/chat/completions"
COMPLETIONS_URL = "https://x.eastus2.models.ai.azure.com/v1/completions"
HI = [UserMessage("hi")]


class Recorder:
    """A MockTransport handler that answers every request and keeps its decoded body."""

    def __init__(self) -> None:
        self.bodies: list[Any] = []

    def __call__(self, request: Request) -> MockResponse:
        body = request.json()
        self.bodies.append(body)
        if "prompt" in body:
            return MockResponse(200, json={"choices": [{"text": "ok", "finish_reason": "stop"}]})
        content = body["messages"][-1]["content"]
        message = {"role": "assistant", "content": f"re: {content}"}
        return MockResponse(200, json={"choices": [{"message": message, "finish_reason": "stop"}]})


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def client(recorder: Recorder) -> AsyncIterator[AsyncChatClient]:
    async with AsyncChatClient(CHAT_URL, "key", transport=MockTransport(recorder)) as client:
        yield client


@pytest.fixture
def sync_client(recorder: Recorder) -> Iterator[Client]:
    with Client(CHAT_URL, "key", transport=MockTransport(recorder)) as client:
        yield client


async def drain(stream: Any) -> list[Any]:
    async with stream as opened:
        return [chunk async for chunk in opened]


def sync_drain(stream: Any) -> list[Any]:
    with stream as opened:
        return list(opened)


async def as_completed(client: AsyncChatClient, conversations: Any, **params: Any) -> list[Any]:
    async with client.chat_as_completed(conversations, **params) as results:
        return [result async for _, result in results]


def sync_as_completed(client: Client, conversations: Any, **params: Any) -> list[Any]:
    with client.chat_as_completed(conversations, **params) as results:
        return [result for _, result in results]


# --- misspelt keywords (issue 14 item 10) ---------------------------------------------------------------------

# Each way in, with a misspelt keyword: (id, call on an async chat client, call on an async completions client).
ASYNC_CALLS: list[
    tuple[str, Callable[[AsyncChatClient, AsyncChatClient, dict[str, Any]], Awaitable[Any]]]
] = [
    ("chat", lambda chat, _, typo: chat.chat(HI, **typo)),
    ("stream", lambda chat, _, typo: drain(chat.stream(HI, **typo))),
    ("chat_many", lambda chat, _, typo: chat.chat_many([HI], **typo)),
    ("chat_as_completed", lambda chat, _, typo: as_completed(chat, [HI], **typo)),
    ("complete", lambda _, text, typo: text.complete("Once", **typo)),
    ("stream_complete", lambda _, text, typo: drain(text.stream_complete("Once", **typo))),
]
SYNC_CALLS: list[tuple[str, Callable[[Client, Client, dict[str, Any]], Any]]] = [
    ("chat", lambda chat, _, typo: chat.chat(HI, **typo)),
    ("stream", lambda chat, _, typo: sync_drain(chat.stream(HI, **typo))),
    ("chat_many", lambda chat, _, typo: chat.chat_many([HI], **typo)),
    ("chat_as_completed", lambda chat, _, typo: sync_as_completed(chat, [HI], **typo)),
    ("complete", lambda _, text, typo: text.complete("Once", **typo)),
    ("stream_complete", lambda _, text, typo: sync_drain(text.stream_complete("Once", **typo))),
]
TYPOS = [({"max_token": 10}, "did you mean max_tokens?"), ({"temprature": 0.2}, "did you mean temperature?")]


@pytest.mark.parametrize(("typo", "hint"), TYPOS, ids=["max_token", "temprature"])
@pytest.mark.parametrize("call", [row[1] for row in ASYNC_CALLS], ids=[row[0] for row in ASYNC_CALLS])
async def test_a_misspelt_keyword_is_refused_by_every_async_method(
    recorder: Recorder, call: Any, typo: dict[str, Any], hint: str
) -> None:
    """max_token= / temprature= raise InvalidRequestError with the suggestion, and nothing is sent."""
    transport = MockTransport(recorder)
    async with (
        AsyncChatClient(CHAT_URL, "key", transport=transport) as chat,
        AsyncChatClient(COMPLETIONS_URL, "key", transport=transport) as text,
    ):
        with pytest.raises(InvalidRequestError, match=re.escape(hint)) as caught:
            await call(chat, text, typo)
    assert "model_kwargs=" in str(caught.value)
    assert [] == recorder.bodies


@pytest.mark.parametrize(("typo", "hint"), TYPOS, ids=["max_token", "temprature"])
@pytest.mark.parametrize("call", [row[1] for row in SYNC_CALLS], ids=[row[0] for row in SYNC_CALLS])
def test_a_misspelt_keyword_is_refused_by_every_sync_method(
    recorder: Recorder, call: Any, typo: dict[str, Any], hint: str
) -> None:
    """The sync Client refuses max_token= / temprature= the same way, and nothing is sent."""
    transport = MockTransport(recorder)
    with (
        Client(CHAT_URL, "key", transport=transport) as chat,
        Client(COMPLETIONS_URL, "key", transport=transport) as text,
        pytest.raises(InvalidRequestError, match=re.escape(hint)),
    ):
        call(chat, text, typo)
    assert [] == recorder.bodies


async def test_a_misspelt_batch_keyword_is_refused(client: AsyncChatClient, recorder: Recorder) -> None:
    """chat_many(concurency=2) names concurrency instead of sending "concurency" to the model."""
    with pytest.raises(InvalidRequestError, match=re.escape("did you mean concurrency?")):
        await client.chat_many([HI, HI], concurency=2)
    assert [] == recorder.bodies


async def test_real_model_parameters_near_common_names_are_sent(
    client: AsyncChatClient, recorder: Recorder
) -> None:
    """top_k (one edit from top_p), min_p, min_tokens and best_of are model parameters, sent as given."""
    await client.chat(HI, top_p=0.9, top_k=40, min_p=0.05, min_tokens=2, best_of=1)
    sent = recorder.bodies[0]
    assert (0.9, 40, 0.05, 2, 1) == (
        sent["top_p"],
        sent["top_k"],
        sent["min_p"],
        sent["min_tokens"],
        sent["best_of"],
    )


async def test_model_kwargs_send_a_name_as_spelled(client: AsyncChatClient, recorder: Recorder) -> None:
    """model_kwargs= (constructor and with_options) is the explicit route: its names are sent unchecked."""
    transport = MockTransport(recorder)
    async with AsyncChatClient(CHAT_URL, "key", transport=transport, model_kwargs={"max_token": 7}) as built:
        await built.chat(HI)
    await client.with_options(model_kwargs={"temprature": 0.3}).chat(HI)
    assert [7, 0.3] == [recorder.bodies[0]["max_token"], recorder.bodies[1]["temprature"]]


# --- bare strings and what is not a conversation (issue 14 item 13) ----------------------------------------------

USER_HI = [{"role": "user", "content": "Hi!"}]


async def test_a_bare_string_is_one_user_message_in_chat_and_stream(
    client: AsyncChatClient, recorder: Recorder
) -> None:
    """chat("Hi!") and stream("Hi!") send one user message."""
    response = await client.chat("Hi!")
    chunks = await drain(client.stream("Hi!"))
    assert "re: Hi!" == response.content
    assert ["re: Hi!"] == [chunk.content for chunk in chunks]
    assert [USER_HI, USER_HI] == [body["messages"] for body in recorder.bodies]


async def test_bare_strings_are_conversations_in_a_batch(client: AsyncChatClient, recorder: Recorder) -> None:
    """chat_many(["q1", "q2"]) and chat_as_completed(["q1", "q2"]) answer each string as one user message."""
    many = await client.chat_many(["q1", "q2"], return_exceptions=False)
    completed = await as_completed(client, ["q1", "q2"])
    assert ["re: q1", "re: q2"] == [r.content for r in many]
    assert ["re: q1", "re: q2"] == sorted(r.content for r in completed)
    assert 4 == len(recorder.bodies)
    assert [{"role": "user", "content": "q1"}] == recorder.bodies[0]["messages"]


def test_the_sync_client_takes_bare_strings(sync_client: Client, recorder: Recorder) -> None:
    """The sync chat, stream, chat_many and chat_as_completed take bare strings too."""
    assert "re: Hi!" == sync_client.chat("Hi!").content
    assert ["re: Hi!"] == [chunk.content for chunk in sync_drain(sync_client.stream("Hi!"))]
    assert ["re: q1", "re: q2"] == [
        r.content for r in sync_client.chat_many(["q1", "q2"], return_exceptions=False)
    ]
    assert ["re: q1"] == [r.content for r in sync_as_completed(sync_client, ["q1"])]
    assert [USER_HI, USER_HI, *[[{"role": "user", "content": q}] for q in ("q1", "q2", "q1")]] == [
        body["messages"] for body in recorder.bodies
    ]


NOT_CONVERSATIONS = [
    ("single-dict", {"role": "user", "content": "hi"}, "got dict"),
    ("single-message", UserMessage("hi"), "got UserMessage"),
    ("none", None, "got None"),
    ("bytes", b"hi", "got bytes"),
]


@pytest.mark.parametrize(
    ("messages", "named"), [row[1:] for row in NOT_CONVERSATIONS], ids=[row[0] for row in NOT_CONVERSATIONS]
)
async def test_what_is_not_a_conversation_is_refused(
    client: AsyncChatClient, recorder: Recorder, messages: Any, named: str
) -> None:
    """chat() and stream() refuse a single dict or message, None and bytes, saying what shape they take."""
    expected = re.escape("messages must be a string (one user message) or a list of messages, " + named)
    with pytest.raises(InvalidRequestError, match=expected):
        await client.chat(messages)
    with pytest.raises(InvalidRequestError, match=expected):
        client.stream(messages)
    assert [] == recorder.bodies


@pytest.mark.parametrize(
    ("messages", "named"), [row[1:] for row in NOT_CONVERSATIONS], ids=[row[0] for row in NOT_CONVERSATIONS]
)
def test_the_sync_client_refuses_what_is_not_a_conversation(
    sync_client: Client, recorder: Recorder, messages: Any, named: str
) -> None:
    """The sync chat() and stream() refuse the same inputs with the same message."""
    with pytest.raises(InvalidRequestError, match=named):
        sync_client.chat(messages)
    with pytest.raises(InvalidRequestError, match=named):
        sync_client.stream(messages)
    assert [] == recorder.bodies


async def test_a_bare_string_as_the_whole_batch_is_refused(
    client: AsyncChatClient, recorder: Recorder
) -> None:
    """chat_many("q1") and chat_as_completed("q1") raise at once, pointing at chat() and chat_many([...])."""
    with pytest.raises(InvalidRequestError, match=r"call chat\(prompt\)"):
        await client.chat_many("q1")
    with pytest.raises(InvalidRequestError, match=r"chat_many\(\['q1', 'q2'\]\)"):
        client.chat_as_completed("q1")
    assert [] == recorder.bodies


@pytest.mark.parametrize(
    ("item", "named"), [row[1:] for row in NOT_CONVERSATIONS], ids=[row[0] for row in NOT_CONVERSATIONS]
)
async def test_an_item_that_is_not_a_conversation_is_its_own_error(
    client: AsyncChatClient, recorder: Recorder, item: Any, named: str
) -> None:
    """In a batch, an item that is not a conversation is that item's InvalidRequestError; the others answer."""
    results = await client.chat_many(["q1", item])
    assert ChatResponse is type(results[0])
    assert isinstance(results[1], InvalidRequestError)
    assert named in str(results[1])
    assert "use chat()" in str(results[1])
    assert 1 == len(recorder.bodies)


# --- misuse of the client (issue 14 item 12) ----------------------------------------------------------------------


def test_a_plain_with_on_the_async_client_says_what_to_use() -> None:
    """``with AsyncChatClient(...)`` raises a TypeError naming ``async with`` and the sync Client."""
    client = AsyncChatClient(CHAT_URL, "key", transport=MockTransport(Recorder()))
    expected = "use 'async with AsyncChatClient(...) as client:', or the sync Client"
    with pytest.raises(TypeError, match=re.escape(expected)), client:
        pass


CLOSED_ASYNC_CALLS: list[tuple[str, Callable[[AsyncChatClient], Awaitable[Any]]]] = [
    ("chat", lambda client: client.chat(HI)),
    ("stream", lambda client: drain(client.stream(HI))),
    ("chat_many", lambda client: client.chat_many([HI])),
    ("chat_as_completed", lambda client: as_completed(client, [HI])),
    ("async-with", lambda client: drain(client)),
]


@pytest.mark.parametrize(
    "call", [row[1] for row in CLOSED_ASYNC_CALLS], ids=[row[0] for row in CLOSED_ASYNC_CALLS]
)
async def test_a_closed_async_client_raises_client_closed_error(recorder: Recorder, call: Any) -> None:
    """After aclose(), every way in raises ClientClosedError (one error for a batch, not one per item)."""
    client = AsyncChatClient(CHAT_URL, "key", transport=MockTransport(recorder))
    await client.aclose()
    with pytest.raises(ClientClosedError, match="create a new client") as caught:
        await call(client)
    assert isinstance(caught.value, AzureMLChatError)
    assert isinstance(caught.value, RuntimeError)
    assert [] == recorder.bodies


async def test_a_sibling_of_a_closed_client_raises_client_closed_error() -> None:
    """A with_options() sibling whose parent closed the shared pool raises ClientClosedError when it sends."""
    client = AsyncChatClient(CHAT_URL, "key")
    sibling = client.with_options(timeout=5)
    await client.aclose()
    with pytest.raises(ClientClosedError, match="create a new client"):
        await sibling.chat(HI)


async def test_a_closed_text_client_raises_client_closed_error(recorder: Recorder) -> None:
    """complete() and stream_complete() on a closed client raise ClientClosedError."""
    client = AsyncChatClient(COMPLETIONS_URL, "key", transport=MockTransport(recorder))
    await client.aclose()
    with pytest.raises(ClientClosedError):
        await client.complete("Once")
    with pytest.raises(ClientClosedError):
        client.stream_complete("Once")
    assert [] == recorder.bodies


CLOSED_SYNC_CALLS: list[tuple[str, Callable[[Client], Any]]] = [
    ("chat", lambda client: client.chat(HI)),
    ("stream", lambda client: client.stream(HI)),
    ("chat_many", lambda client: client.chat_many([HI])),
    ("chat_as_completed", lambda client: client.chat_as_completed([HI])),
    ("with_options", lambda client: client.with_options(timeout=5)),
]


@pytest.mark.parametrize(
    "call", [row[1] for row in CLOSED_SYNC_CALLS], ids=[row[0] for row in CLOSED_SYNC_CALLS]
)
def test_a_closed_sync_client_raises_client_closed_error(recorder: Recorder, call: Any) -> None:
    """After close(), the sync Client raises ClientClosedError (still a RuntimeError), for a used or unused one."""
    used = Client(CHAT_URL, "key", transport=MockTransport(recorder))
    used.chat(HI)
    used.close()
    unused = Client(CHAT_URL, "key", transport=MockTransport(recorder))
    unused.close()
    for client in (used, unused):
        with pytest.raises(ClientClosedError, match="create a new client") as caught:
            call(client)
        assert isinstance(caught.value, RuntimeError)
    assert 1 == len(recorder.bodies)


def test_a_sibling_of_a_closed_sync_client_raises_client_closed_error(recorder: Recorder) -> None:
    """Closing the Client you built closes its siblings: their calls raise ClientClosedError."""
    client = Client(CHAT_URL, "key", transport=MockTransport(recorder))
    sibling = client.with_options(timeout=5)
    client.close()
    with pytest.raises(ClientClosedError):
        sibling.chat(HI)
    assert [] == recorder.bodies
