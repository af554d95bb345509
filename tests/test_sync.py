"""The sync Client facade: plain code, inside a running loop, many threads, streams, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp import web
from loopback import ANSWER, completion, stream_events, write_sse

from azureml_chat import (
    APIStatusError,
    AsyncChatClient,
    AzureMLChatError,
    BadRequestError,
    ChatResponse,
    Client,
    ClientClosedError,
    ConfigurationError,
    InvalidRequestError,
    UserMessage,
)
from azureml_chat._transport import AiohttpTransport
from azureml_chat.emulator import Emulator
from azureml_chat.testing import MockResponse, MockTransport

HI = [UserMessage("hi")]
KEY = "test-key"
ANSWER_OF_HI = "You said: hi"


class ThreadedServer:
    """An aiohttp app on 127.0.0.1, run on its own loop in a thread (the test thread blocks in sync calls)."""

    def __init__(self, app: web.Application) -> None:
        self.loop = asyncio.new_event_loop()
        # handler_cancellation: a handler whose client went away is cancelled, as a real server would stop work.
        self.runner = web.AppRunner(app, handler_cancellation=True)
        self.cancelled = 0
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> int:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return int(self.runner.addresses[0][1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/chat/completions"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body["messages"][-1]["content"] == "fail":
            return web.json_response({"message": "nope"}, status=400)
        if body["messages"][-1]["content"] == "slow":
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                running.cancelled += 1
                raise
        if body.get("stream"):
            return await write_sse(request, stream_events() * (20 if body.get("long") else 1), delay=0.005)
        return web.json_response(completion())

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    running = ThreadedServer(app)
    yield running
    running.close()


def acquired(client: Client) -> int:
    transport = client.async_client._pipeline.transport
    assert isinstance(transport, AiohttpTransport)
    session = transport._session
    assert session is not None
    assert session.connector is not None
    return len(session.connector._acquired)


def test_chat_and_stream_from_plain_code(server: ThreadedServer) -> None:
    """chat() returns the answer and stream() yields chunks that join to the same text."""
    with Client(server.url, "key") as client:
        assert ANSWER == client.chat(HI).content
        with client.stream(HI) as stream:
            text = "".join(chunk.content or "" for chunk in stream)
        assert ANSWER == text == stream.final_response().content


def test_errors_are_the_same_typed_errors(server: ThreadedServer) -> None:
    """A failing call raises the same typed error as the async client."""
    with Client(server.url, "key") as client, pytest.raises(APIStatusError, match="nope") as caught:
        client.chat([UserMessage("fail")])
    assert 400 == caught.value.status_code


def test_works_inside_a_running_event_loop(server: ThreadedServer) -> None:
    """Called from a coroutine (as in Jupyter), the sync client still works."""

    async def notebook_cell() -> str | None:
        with Client(server.url, "key") as client:
            return client.chat(HI).content

    assert ANSWER == asyncio.run(notebook_cell())


def test_eight_threads_share_one_client(server: ThreadedServer) -> None:
    """Eight threads calling one client concurrently all get the answer."""
    results: list[str | None] = []
    lock = threading.Lock()
    with Client(server.url, "key") as client:

        def work() -> None:
            for _ in range(5):
                content = client.chat(HI).content
                with lock:
                    results.append(content)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert [ANSWER] * 40 == results


def test_stream_early_break_releases_the_connection(server: ThreadedServer) -> None:
    """Breaking out of a sync stream inside `with` gives the connection back."""
    with Client(server.url, "key") as client:
        with client.stream(HI, long=True) as stream:
            for _ in stream:
                assert 1 == acquired(client)
                break
        assert 0 == acquired(client)


def test_close_stops_the_thread_and_refuses_new_calls(server: ThreadedServer) -> None:
    """close() ends the loop thread; a later call raises instead of hanging."""
    client = Client(server.url, "key")
    client.chat(HI)
    loop_thread = client._loop()
    client.close()
    client.close()
    assert not loop_thread.thread.is_alive()
    with pytest.raises(ClientClosedError, match="closed"):
        client.chat(HI)


def test_session_argument_is_refused() -> None:
    """Client has its own loop, so a caller's session (bound to another loop) is refused."""
    with pytest.raises(ConfigurationError, match="session"):
        Client("http://127.0.0.1:9/score", "key", session=object())  # type: ignore[arg-type]


def test_unclosed_client_does_not_hang_exit(server: ThreadedServer) -> None:
    """A script that never closes its client exits promptly and without warnings."""
    script = textwrap.dedent(
        f"""
        import warnings
        warnings.simplefilter("error")
        from azureml_chat import Client, UserMessage
        client = Client({server.url!r}, "key")
        print(client.chat([UserMessage("hi")]).content)
        """
    )
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert (0, ANSWER) == (done.returncode, done.stdout.strip()), done.stderr
    assert "Unclosed" not in done.stderr


def test_ctrl_c_cancels_the_request(server: ThreadedServer) -> None:
    """SIGINT during a blocked call raises KeyboardInterrupt promptly and cancels the request."""
    script = textwrap.dedent(
        f"""
        import os, signal, threading, time
        from azureml_chat import Client, UserMessage
        client = Client({server.url!r}, "key")
        threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        started = time.monotonic()
        try:
            client.chat([UserMessage("slow")])
        except KeyboardInterrupt:
            print("interrupted after", round(time.monotonic() - started, 1))
            session = client.async_client._pipeline.transport._session
            time.sleep(0.2)
            print("acquired", len(session.connector._acquired))
        client.close()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    lines = done.stdout.split("\n")
    assert lines[0].startswith("interrupted after"), done.stderr
    assert float(lines[0].split()[-1]) < 5
    assert "acquired 0" == lines[1]
    assert 1 == server.cancelled  # the server saw the request abandoned, not left running


def test_chunks_before_a_mid_stream_error_are_not_lost() -> None:
    """A sync stream hands out every chunk that arrived before a mid-stream error, then raises it."""
    from azureml_chat import StreamError

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for word in ("one", "two", "three"):
            await response.write(
                f'data: {{"choices": [{{"index": 0, "delta": {{"content": "{word}"}}}}]}}\n\n'.encode()
            )
        await response.write(b'data: {"error": {"message": "overloaded"}}\n\n')
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    running = ThreadedServer(app)
    try:
        with Client(running.url, "key") as client, client.stream(HI) as stream:
            received: list[str | None] = []
            with pytest.raises(StreamError, match="overloaded"):
                for chunk in stream:
                    received.append(chunk.content)
        assert ["one", "two", "three"] == received
    finally:
        running.close()


# --- typed parameters, chat_as_completed, with_options, _driving (against the emulator) --------------------


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    """An emulator served from its own thread (the test thread blocks in sync calls)."""
    with Emulator(KEY).start_in_thread() as running:
        yield running


def late(seconds: float, text: str = "hi") -> list[UserMessage]:
    """A conversation the emulator answers ``seconds`` late."""
    return [UserMessage(f"{text} [[fault:latency={seconds}]]")]


def test_named_and_extra_parameters_reach_the_request(emu: Emulator) -> None:
    """The sync chat() sends its named parameters and passes any other keyword through, as the async one."""
    with Client(emu.chat_url, KEY) as client:
        client.chat(HI, max_tokens=7, temperature=0.5, seed=3, top_k=40, extra_headers={"x-trace": "t1"})
    request = emu.requests[-1]
    assert {"max_tokens": 7, "temperature": 0.5, "seed": 3, "top_k": 40} == {
        name: request.body[name] for name in ("max_tokens", "temperature", "seed", "top_k")
    }
    assert "t1" == request.headers["x-trace"]


def test_an_unknown_constructor_option_is_a_type_error() -> None:
    """The sync constructor takes exactly the async one's options; anything else is a TypeError."""
    with pytest.raises(TypeError, match="max_tokens"):
        Client("http://127.0.0.1:9/score", "key", max_tokens=5)  # type: ignore[call-arg]


def test_chat_as_completed_yields_in_completion_order(emu: Emulator) -> None:
    """chat_as_completed() hands out (index, response) pairs in the order the calls finish."""
    conversations = [late(0.6, "slow"), late(0.0, "fast"), late(0.3, "middle")]
    with (
        Client(emu.chat_url, KEY) as client,
        client.chat_as_completed(conversations, concurrency=3) as results,
    ):
        pairs = list(results)
    assert [1, 2, 0] == [index for index, _ in pairs]
    assert ["You said: fast", "You said: middle", "You said: slow"] == [
        result.content for _, result in pairs if isinstance(result, ChatResponse)
    ]


def test_chat_as_completed_returns_errors_as_results(emu: Emulator) -> None:
    """A failed conversation's error is its result; the others still answer."""
    conversations = [HI, [UserMessage("no [[fault:status=400]]")], HI]
    with Client(emu.chat_url, KEY) as client, client.chat_as_completed(conversations) as results:
        outcome = dict(results)
    assert [ChatResponse, BadRequestError, ChatResponse] == [type(outcome[index]) for index in range(3)]


def test_chat_as_completed_checks_its_arguments_at_once(emu: Emulator) -> None:
    """A bad concurrency raises InvalidRequestError before anything is sent."""
    sent = len(emu.requests)
    with Client(emu.chat_url, KEY) as client, pytest.raises(InvalidRequestError, match="concurrency"):
        client.chat_as_completed([HI], concurrency=0)
    assert sent == len(emu.requests)


@pytest.mark.parametrize("leave", ["break", "exception", "KeyboardInterrupt"])
def test_leaving_chat_as_completed_early_cancels_the_calls(emu: Emulator, leave: str) -> None:
    """Leaving the with-block early cancels the calls in flight at once and gives every connection back."""
    conversations = [late(30), late(0.0), late(30), late(30)]
    client = Client(emu.chat_url, KEY)
    started = time.monotonic()
    with (
        contextlib.suppress(RuntimeError, KeyboardInterrupt),
        client.chat_as_completed(conversations, concurrency=4) as results,
    ):
        for index, _ in results:
            assert 1 == index
            if leave == "exception":
                raise RuntimeError("stop")
            if leave == "KeyboardInterrupt":
                raise KeyboardInterrupt
            break
    elapsed = time.monotonic() - started
    assert 0 == acquired(client)
    assert elapsed < 10
    assert ANSWER_OF_HI == client.chat(HI).content  # still usable
    client.close()


def test_ctrl_c_while_waiting_for_results_cancels_the_batch(emu: Emulator) -> None:
    """SIGINT while blocked on the next result raises KeyboardInterrupt and cancels the whole batch."""
    script = textwrap.dedent(
        f"""
        import os, signal, threading, time
        from azureml_chat import Client, UserMessage
        client = Client({emu.chat_url!r}, {KEY!r})
        slow = [UserMessage("hi [[fault:latency=30]]")]
        threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        started = time.monotonic()
        try:
            with client.chat_as_completed([slow] * 4, concurrency=4) as results:
                for pair in results:
                    pass
        except KeyboardInterrupt:
            print("interrupted after", round(time.monotonic() - started, 1))
            session = client.async_client._pipeline.transport._session
            print("acquired", len(session.connector._acquired))
        client.close()
        """
    )
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = done.stdout.split("\n")
    assert lines[0].startswith("interrupted after"), done.stderr
    assert float(lines[0].split()[-1]) < 5
    assert ("acquired 0", "") == (lines[1], done.stderr)


def test_ready_results_come_back_in_one_trip() -> None:
    """Results that finished together are taken from the loop thread in one trip, not one trip each."""
    transport = MockTransport(lambda request: MockResponse(200, json=completion()))
    with Client("http://127.0.0.1:9/v1/chat/completions", "key", transport=transport) as client:
        loop_thread = client._loop()
        trips = 0
        run = loop_thread.run

        def counted(coro: Any) -> Any:
            nonlocal trips
            trips += 1
            return run(coro)

        with client.chat_as_completed([HI] * 16, concurrency=16) as results:
            loop_thread.run = counted  # type: ignore[method-assign]
            indexes = sorted(index for index, _ in results)
    assert list(range(16)) == indexes
    assert trips <= 4


def test_with_options_shares_the_loop_pool_and_limiter(emu: Emulator) -> None:
    """A with_options() sibling runs on its parent's loop thread, pool and rate limiter, with its changes."""
    with Client(emu.chat_url, KEY) as parent:
        sibling = parent.with_options(deployment="default", timeout=5)
        assert ANSWER_OF_HI == sibling.chat(HI).content
        assert sibling._loop() is parent._loop()
        assert sibling.async_client._pipeline.transport is parent.async_client._pipeline.transport
        assert (
            sibling.async_client._pipeline.router.first.limiter
            is parent.async_client._pipeline.router.first.limiter
        )
        assert ("default", None) == (sibling.async_client.deployment, parent.async_client.deployment)
        assert "default" == emu.requests[-1].headers["azureml-model-deployment"]


def test_closing_a_sibling_leaves_the_parent_open(emu: Emulator) -> None:
    """Closing a sibling refuses its later calls but leaves the parent's loop thread and pool working."""
    with Client(emu.chat_url, KEY) as parent:
        parent.chat(HI)
        sibling = parent.with_options(max_retries=0)
        sibling.chat(HI)
        sibling.close()
        sibling.close()
        with pytest.raises(ClientClosedError, match="closed"):
            sibling.chat(HI)
        assert ANSWER_OF_HI == parent.chat(HI).content
        assert parent._loop().thread.is_alive()


def test_closing_the_parent_closes_its_siblings(emu: Emulator) -> None:
    """Closing the parent closes a sibling's own pool too, and stops the shared loop thread."""
    parent = Client(emu.chat_url, KEY)
    sibling = parent.with_options(max_connections=2)
    sibling.chat(HI)
    assert sibling.async_client._pipeline.transport is not parent.async_client._pipeline.transport
    loop_thread = parent._loop()
    parent.close()
    assert (True, False) == (sibling.async_client.closed, loop_thread.thread.is_alive())
    with pytest.raises(ClientClosedError, match="closed"):
        sibling.chat(HI)
    sibling.close()


def test_with_options_refuses_a_session() -> None:
    """with_options(session=...) is refused as the constructor refuses it."""
    with (
        Client("http://127.0.0.1:9/score", "key") as client,
        pytest.raises(ConfigurationError, match="session"),
    ):
        client.with_options(session=object())  # type: ignore[arg-type]


def test_driving_owns_the_async_client_it_is_given(emu: Emulator) -> None:
    """Client._driving() runs a fresh AsyncChatClient on its own loop thread and closes it on close()."""
    async_client = AsyncChatClient(emu.chat_url, KEY)
    client = Client._driving(async_client)
    assert (ANSWER_OF_HI, async_client) == (client.chat(HI).content, client.async_client)
    loop_thread = client._loop()
    client.close()
    assert (True, False) == (async_client.closed, loop_thread.thread.is_alive())


def test_close_while_another_thread_waits_ends_that_call(emu: Emulator) -> None:
    """Closing the client while another thread waits on a call ends that call promptly with an error."""
    client = Client(emu.chat_url, KEY)
    client.chat(HI)
    errors: list[BaseException] = []

    def wait_long() -> None:
        try:
            client.chat(late(30))
        except (RuntimeError, AzureMLChatError) as exc:
            errors.append(exc)

    waiter = threading.Thread(target=wait_long)
    waiter.start()
    time.sleep(0.3)
    started = time.monotonic()
    client.close()
    waiter.join(10)
    assert (False, 1) == (waiter.is_alive(), len(errors))
    assert time.monotonic() - started < 5


def test_a_call_from_the_loop_thread_itself_is_refused(emu: Emulator) -> None:
    """A sync method called on the client's own loop thread raises instead of deadlocking."""

    async def on_the_loop() -> None:
        client.chat(HI)

    with Client(emu.chat_url, KEY) as client, pytest.raises(RuntimeError, match="own event-loop thread"):
        client._loop().run(on_the_loop())


def eventually(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    """Whether ``condition()`` becomes true within ``seconds`` (for work finished on the loop thread)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_results_read_to_the_end_close_themselves(emu: Emulator) -> None:
    """Read to its end without `with`, chat_as_completed leaves no call or connection behind."""
    with Client(emu.chat_url, KEY) as client:
        results = client.chat_as_completed([HI] * 5, concurrency=2)
        assert [0, 1, 2, 3, 4] == sorted(index for index, _ in results)
        assert [] == list(results)
        assert 0 == acquired(client)


def test_dropped_results_cancel_their_calls(emu: Emulator) -> None:
    """chat_as_completed results dropped after one item, without `with`, cancel the calls still running."""
    with Client(emu.chat_url, KEY) as client:
        results = client.chat_as_completed([late(0.0), late(30), late(30)], concurrency=3)
        assert 0 == next(results)[0]
        del results
        gc.collect()
        assert eventually(lambda: 0 == acquired(client))


def test_a_dropped_sibling_closes_its_own_pool(emu: Emulator) -> None:
    """A sibling with a pool of its own, dropped without close(), has that pool closed on the loop thread."""
    with Client(emu.chat_url, KEY) as parent:
        sibling = parent.with_options(max_connections=2)
        sibling.chat(HI)
        transport = sibling.async_client._pipeline.transport
        del sibling
        gc.collect()
        assert eventually(lambda: bool(getattr(transport, "closed", False)))
        assert ANSWER_OF_HI == parent.chat(HI).content


_SSE = (
    b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'
    b'data: {"choices":[{"index":0,"delta":{"content":"b"},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)


def test_a_stream_or_batch_made_before_close_raises_client_closed_error_after_it() -> None:
    """A sync stream or chat_as_completed created before close() and read after it raises ClientClosedError."""
    transport = MockTransport(
        lambda request: MockResponse(200, content=_SSE, headers={"content-type": "text/event-stream"})
    )
    url = "https://x.eastus2.models.ai.azure.com/v1/chat/completions"
    streaming = Client(url, "key", transport=transport)
    stream = streaming.stream([UserMessage("hi")])
    streaming.close()
    with pytest.raises(ClientClosedError, match="create a new client"):
        list(stream)
    batching = Client(url, "key", transport=transport)
    results = batching.chat_as_completed([[UserMessage("q1")]])
    batching.close()
    with pytest.raises(ClientClosedError, match="create a new client"), results as pairs:
        list(pairs)
