"""``ChatRows``: the per-batch function behind ``map_chat`` and the Spark recipe, against the emulator (no Ray).

Everything talks to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import functools
import json
import pickle
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pyarrow as pa  # type: ignore[import-untyped]
import pytest
from aiohttp import web
from conftest import LoopbackServer

from azureml_chat import ConfigurationError, InvalidRequestError
from azureml_chat._options import ClientOptions
from azureml_chat.emulator import Deployment, Emulator
from azureml_chat.rows import OUTPUT_COLUMNS, OUTPUT_TYPES, ChatRows, WorkerOptions
from azureml_chat.testing import fast_retry

KEY = "rows-key"
ARROW_TYPES = {name: pa.type_for_alias(alias) for name, alias in OUTPUT_TYPES.items()}


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator(key=KEY) as emu:
        yield emu


@pytest.fixture
async def rows(emulator: Emulator) -> AsyncIterator[ChatRows]:
    chat_rows = ChatRows(endpoint_url=emulator.chat_url, api_key=KEY, retry=fast_retry())
    yield chat_rows
    await chat_rows.aclose()


def table(conversations: list[Any]) -> pa.Table:
    return pa.table({"id": list(range(len(conversations))), "messages": conversations})


async def test_arrow_batch_keeps_input_columns_and_adds_typed_answers(rows: ChatRows) -> None:
    """The input columns come first, unchanged; every output column has its type even when all None."""
    out = await rows(table([user("a"), user("b"), user("c")]))
    assert ["id", "messages", *OUTPUT_COLUMNS] == out.column_names
    assert ARROW_TYPES == {name: out.schema.field(name).type for name in OUTPUT_COLUMNS}
    assert [0, 1, 2] == out.column("id").to_pylist()
    assert ["You said: a", "You said: b", "You said: c"] == out.column("content").to_pylist()
    assert [None] * 3 == out.column("reasoning").to_pylist()
    assert [None] * 3 == out.column("error").to_pylist()
    assert ["stop"] * 3 == out.column("finish_reason").to_pylist()
    assert [1, 1, 1] == out.column("attempts").to_pylist()
    assert all(count > 0 for count in out.column("completion_tokens").to_pylist())
    assert all(request_id for request_id in out.column("request_id").to_pylist())


async def test_pandas_batch_has_the_same_columns_with_nullable_dtypes(rows: ChatRows) -> None:
    """A pandas batch gets the same columns, with dtypes that keep their type when all missing."""
    frame = pd.DataFrame({"id": [7, 8], "messages": [user("x"), user("y")]})
    out = await rows(frame)
    assert ["id", "messages", *OUTPUT_COLUMNS] == list(out.columns)
    assert ["id", "messages"] == list(frame.columns)  # the caller's frame is left as it was
    assert "string" == str(out["reasoning"].dtype)
    assert "Int64" == str(out["prompt_tokens"].dtype)
    schema = pa.Schema.from_pandas(out)
    # pandas 3 stores strings as Arrow large_string: a string type still, whatever the values.
    assert ARROW_TYPES == {
        name: pa.string() if schema.field(name).type == pa.large_string() else schema.field(name).type
        for name in OUTPUT_COLUMNS
    }
    assert ["You said: x", "You said: y"] == list(out["content"])


async def test_messages_may_be_json_strings_numpy_arrays_or_arrow_structs(rows: ChatRows) -> None:
    """A JSON list, a JSON string (one user message), a numpy array of dicts and structs with None fields."""
    conversations = [
        json.dumps(user("json")),
        json.dumps("bare"),
        np.array(user("numpy"), dtype=object),
        [{"role": "user", "content": "struct", "name": None}],
        [{"role": "user", "content": [{"type": "text", "text": "parts", "image_url": None}]}],
        np.array([{"role": "user", "content": np.array([{"type": "text", "text": "deep"}])}], dtype=object),
    ]
    out = await rows(pd.DataFrame({"messages": conversations}))
    expected = ["json", "bare", "numpy", "struct", "parts", "deep"]
    assert [f"You said: {text}" for text in expected] == list(out["content"])
    assert [True] * 6 == list(out["error"].isna())


async def test_a_failing_row_is_a_row_with_its_error_and_the_others_succeed(
    rows: ChatRows, emulator: Emulator
) -> None:
    """Bad messages and an endpoint's 400 become error rows; the batch still answers every other row."""
    conversations = [
        json.dumps(user("ok 1")),
        "not json",
        json.dumps({"role": "user"}),
        json.dumps(user("[[fault:status=400]] refused")),
        json.dumps(user("ok 2")),
    ]
    out = (await rows(table(conversations))).to_pydict()
    assert ["You said: ok 1", None, None, None, "You said: ok 2"] == out["content"]
    assert [None, "InvalidRequestError", "InvalidRequestError", "BadRequestError", None] == out["error_type"]
    assert "not JSON" in out["error"][1]
    assert "400" in out["error"][3]
    assert [1, 0, 0, 1, 1] == out["attempts"]  # nothing is sent for messages refused before sending
    assert 3 == len(emulator.requests)


async def test_attempts_count_retries_as_the_error_does(rows: ChatRows) -> None:
    """A row retried to exhaustion reports every attempt (fast_retry: 3), and its error says so too."""
    out = (await rows(table([user("[[fault:status=503]] down")]))).to_pydict()
    assert ["InternalServerError"] == out["error_type"]
    assert [3] == out["attempts"]
    assert "after 3 attempts" in out["error"][0]


async def test_retry_after_is_honoured_and_counted(emulator: Emulator) -> None:
    """A 429 with Retry-After: the row waits that long, then succeeds on its second attempt."""
    emulator.add_fault("429,retry_after=0.3,times=1")
    rows = ChatRows(endpoint_url=emulator.chat_url, api_key=KEY, retry=fast_retry())
    try:
        out = (await rows(table([user("later")]))).to_pydict()
    finally:
        await rows.aclose()
    assert (["You said: later"], [2], [None]) == (out["content"], out["attempts"], out["error"])
    assert out["latency_s"][0] >= 0.3
    assert [429, 200] == [request.status for request in emulator.requests]


async def test_chat_options_reach_every_row(rows: ChatRows, emulator: Emulator) -> None:
    """chat_options are chat() keywords, sent with every row."""
    limited = ChatRows(
        endpoint_url=emulator.chat_url, api_key=KEY, chat_options={"max_tokens": 1, "temperature": 0.5}
    )
    try:
        out = (await limited(table([user("one two three")]))).to_pydict()
    finally:
        await limited.aclose()
    assert ["length"] == out["finish_reason"]
    assert {"max_tokens": 1, "temperature": 0.5}.items() <= emulator.requests[-1].body.items()


async def test_reasoning_is_its_own_column() -> None:
    """A reasoning model's thinking lands in reasoning, apart from content."""
    async with Emulator(key=KEY, deployments=[Deployment("r1", reasoning="think")]) as emu:
        rows = ChatRows(endpoint_url=emu.chat_url, api_key=KEY)
        try:
            out = (await rows(table([user("think")]))).to_pydict()
        finally:
            await rows.aclose()
    assert ["You said: think"] == out["content"]
    assert out["reasoning"][0]


async def test_one_semaphore_bounds_calls_across_concurrent_batches(
    loopback_server: Callable[..., Any],
) -> None:
    """per_worker_concurrency bounds the calls in flight across every batch the worker runs at once."""
    in_flight = peak = 0

    async def handle(request: web.Request) -> web.StreamResponse:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.02)
        in_flight -= 1
        answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}]}
        return web.json_response(answer)

    server: LoopbackServer = await loopback_server(handle)
    rows = ChatRows(endpoint_url=server.url("/v1/chat/completions"), api_key=KEY, per_worker_concurrency=3)
    try:
        outs = await asyncio.gather(*(rows(table([user(str(i)) for i in range(6)])) for _ in range(3)))
    finally:
        await rows.aclose()
    assert 3 == peak
    assert [["ok"] * 6] * 3 == [out.column("content").to_pylist() for out in outs]


async def test_cancellation_propagates_instead_of_becoming_error_rows(emulator: Emulator) -> None:
    """Cancelling a batch cancels its calls and raises CancelledError; nothing is swallowed as a row."""
    emulator.add_fault("latency=5")
    rows = ChatRows(endpoint_url=emulator.chat_url, api_key=KEY)
    batch = asyncio.ensure_future(rows(table([user("slow")] * 3)))
    await asyncio.sleep(0.2)
    batch.cancel()
    with pytest.raises(asyncio.CancelledError):
        await batch
    await rows.aclose()


def test_output_types_are_strings_int64s_and_a_float64() -> None:
    """The added columns' Arrow types, in order: what every batch's columns must have."""
    expected = {
        "content": "string",
        "reasoning": "string",
        "finish_reason": "string",
        "prompt_tokens": "int64",
        "completion_tokens": "int64",
        "request_id": "string",
        "attempts": "int64",
        "latency_s": "float64",
        "error_type": "string",
        "error": "string",
    }
    assert list(expected.items()) == list(OUTPUT_TYPES.items())
    assert tuple(expected) == OUTPUT_COLUMNS


# --- options, credentials, pickling ----------------------------------------------------------------------


def test_worker_options_are_the_client_options_that_cross_processes() -> None:
    """WorkerOptions is ClientOptions less session, transport and credential (which crosses as a factory)."""
    expected = set(ClientOptions.__annotations__) - {"session", "transport", "credential"}
    assert expected == set(WorkerOptions.__annotations__)


def test_options_are_checked_on_the_driver() -> None:
    """A bad client option or a misspelt chat option fails when ChatRows is built, before any batch."""
    with pytest.raises(ConfigurationError, match="endpoint_type"):
        ChatRows(endpoint_url="http://127.0.0.1:1/score", api_key=KEY, endpoint_type="bogus")
    with pytest.raises(InvalidRequestError, match="did you mean max_tokens"):
        ChatRows(endpoint_url="http://127.0.0.1:1/score", api_key=KEY, chat_options={"max_token": 5})
    with pytest.raises(InvalidRequestError, match="mapping"):
        ChatRows(endpoint_url="http://127.0.0.1:1/score", api_key=KEY, chat_options=["max_tokens"])  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="messages_column"):
        ChatRows(endpoint_url="http://127.0.0.1:1/score", api_key=KEY, chat_options={"messages": []})
    with pytest.raises(ConfigurationError, match="column name"):
        ChatRows(endpoint_url="http://127.0.0.1:1/score", api_key=KEY, messages_column="")
    with pytest.raises(InvalidRequestError, match="concurrency"):
        ChatRows(endpoint_url="http://127.0.0.1:1/score", api_key=KEY, per_worker_concurrency=0)
    with pytest.raises(ConfigurationError, match=r"unknown client option.*endpoint_ur"):
        ChatRows(endpoint_ur="http://127.0.0.1:1/score", api_key=KEY)  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError, match="cross"):
        ChatRows(endpoint_url="http://127.0.0.1:1/score", api_key=KEY, session=object())  # type: ignore[call-arg]


class _LiveCredential:
    def get_token(self, *scopes: str) -> str:
        return KEY


def _needs_scope(scope: str) -> str:
    return KEY


def test_a_live_credential_is_refused_with_how_to_pass_a_factory() -> None:
    """A credential object (anything with get_token) is refused; the message shows the factory form."""
    with pytest.raises(ConfigurationError, match=r"functools\.partial\(DefaultAzureCredential\)"):
        ChatRows(endpoint_url="http://127.0.0.1:1/score", credential=_LiveCredential())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="no arguments"):
        ChatRows(endpoint_url="http://127.0.0.1:1/score", credential=_needs_scope)  # type: ignore[arg-type]


def test_a_credential_class_and_a_key_are_refused_together() -> None:
    """A factory plus an api_key is refused on the driver, as the client refuses a credential plus a key."""
    ChatRows(endpoint_url="http://127.0.0.1:1/score", credential=_LiveCredential)  # the class is a factory
    with pytest.raises(ConfigurationError):
        ChatRows(endpoint_url="http://127.0.0.1:1/score", api_key=KEY, credential=_LiveCredential)


class _ClosingCredential:
    """A token callable that records being closed."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def __call__(self) -> str:
        return KEY

    async def close(self) -> None:
        self.log.append("closed")


def _factory(log: list[str]) -> _ClosingCredential:
    log.append("built")
    return _ClosingCredential(log)


async def test_the_credential_factory_is_called_once_per_worker_and_closed_with_it(
    emulator: Emulator,
) -> None:
    """One credential per worker, however many batches; aclose() closes what the factory built."""
    log: list[str] = []
    rows = ChatRows(endpoint_url=emulator.chat_url, credential=functools.partial(_factory, log))
    out = await asyncio.gather(rows(table([user("a")])), rows(table([user("b")])))
    assert ["You said: a", "You said: b"] == [batch.column("content")[0].as_py() for batch in out]
    assert ["built"] == log
    await rows.aclose()
    assert ["built", "closed"] == log


async def test_chat_rows_pickle_without_their_worker_state(rows: ChatRows) -> None:
    """After use, a ChatRows pickles its configuration only; its key stays masked in its repr."""
    await rows(table([user("a")]))
    copy = pickle.loads(pickle.dumps(rows))
    assert "rows-key" not in repr(copy)
    assert None is copy._client
    assert ["You said: b"] == (await copy(table([user("b")]))).column("content").to_pylist()
    await copy.aclose()


async def test_a_missing_or_clashing_column_fails_the_batch(rows: ChatRows) -> None:
    """The messages column must exist, and no output column may be overwritten."""
    with pytest.raises(ConfigurationError, match="messages_column"):
        await rows(pa.table({"prompt": ["hi"]}))
    with pytest.raises(ConfigurationError, match="content"):
        await rows(pa.table({"messages": [json.dumps(user("hi"))], "content": ["x"]}))
    with pytest.raises(TypeError, match=r"pyarrow\.Table or a pandas\.DataFrame"):
        await rows([user("hi")])


# --- Spark's mapInPandas, and closing from another thread ----------------------------------------------


def test_map_in_pandas_answers_each_frame_with_one_client_and_closes_it() -> None:
    """The Spark recipe: a sync generator over frames, one loop and client for all, closed at the end."""
    emulator = Emulator(key=KEY)
    with emulator.start_in_thread():
        rows = ChatRows(endpoint_url=emulator.chat_url, api_key=KEY, chat_options={"max_tokens": 16})

        def frames() -> Iterator[pd.DataFrame]:
            yield pd.DataFrame({"id": [1, 2], "messages": [json.dumps(user("a")), json.dumps(user("b"))]})
            yield pd.DataFrame({"id": [3], "messages": [json.dumps(user("c"))]})

        outs = list(rows.map_in_pandas(frames()))
    assert [[1, 2], [3]] == [list(out["id"]) for out in outs]
    assert ["You said: a", "You said: b", "You said: c"] == [c for out in outs for c in out["content"]]
    assert None is rows._client


def test_map_in_pandas_closes_when_spark_stops_reading_early() -> None:
    """A generator closed after its first frame still closes its client (no unclosed-session warning)."""
    emulator = Emulator(key=KEY)
    with emulator.start_in_thread():
        rows = ChatRows(endpoint_url=emulator.chat_url, api_key=KEY)
        frames = (pd.DataFrame({"messages": [json.dumps(user(str(i)))]}) for i in range(3))
        results = rows.map_in_pandas(frames)
        assert ["You said: 0"] == list(next(results)["content"])
        results.close()
    assert None is rows._client


def test_close_from_another_thread_closes_the_client_on_its_loop() -> None:
    """As Ray's actor teardown does: the client is closed on the loop thread that built it."""
    emulator = Emulator(key=KEY)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    with emulator.start_in_thread():
        thread.start()
        try:
            rows = ChatRows(endpoint_url=emulator.chat_url, api_key=KEY)
            future = asyncio.run_coroutine_threadsafe(rows(table([user("a")])), loop)
            assert ["You said: a"] == future.result(10).column("content").to_pylist()
            client = rows._client
            assert client is not None
            started = time.monotonic()
            rows.close_from_another_thread()
            assert client.closed
            assert time.monotonic() - started < 5
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            loop.close()


async def test_close_from_the_loop_thread_schedules_the_close(rows: ChatRows) -> None:
    """Called on the client's own loop (as a garbage-collected actor may), the close is scheduled, not awaited."""
    rows.close_from_another_thread()  # before any batch: nothing to close
    await rows(table([user("a")]))
    client = rows._client
    assert client is not None
    rows.close_from_another_thread()
    for _ in range(5):
        await asyncio.sleep(0)
    assert client.closed
