"""The sync Client facade: plain code, inside a running loop, many threads, streams, shutdown."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator

import pytest
from aiohttp import web
from loopback import ANSWER, completion, stream_events, write_sse

from azureml_chat import APIStatusError, Client, ConfigurationError, UserMessage

HI = [UserMessage("hi")]


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
    session = client.async_client._pipeline.transport._session
    assert session is not None
    return len(session.connector._acquired)  # type: ignore[union-attr]


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
    loop_thread = client._state["loop"]
    client.close()
    client.close()
    assert not loop_thread.thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        client.chat(HI)


def test_session_argument_is_refused() -> None:
    """Client has its own loop, so a caller's session (bound to another loop) is refused."""
    with pytest.raises(ConfigurationError, match="session"):
        Client("http://127.0.0.1:9/score", "key", session=object())


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
