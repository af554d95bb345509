"""A tiny scripted chat server on 127.0.0.1 for streaming, sync and auth tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ANSWER = "Hello there, world"
USAGE = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def completion(
    content: str | None = ANSWER, *, tool_calls: list[Any] | None = None, finish: str = "stop"
) -> dict[str, Any]:
    """A chat.completion body, written from the OpenAI schema."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": "cmpl-1",
        "object": "chat.completion",
        "model": "m-1",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": USAGE,
    }


def stream_events(text: str = ANSWER, *, finish: str = "stop") -> list[dict[str, Any]]:
    """The chunk events of ``text`` split into words, as an OpenAI server sends them."""
    pieces = text.split(" ")
    deltas = [piece if i == 0 else " " + piece for i, piece in enumerate(pieces)]
    events: list[dict[str, Any]] = [
        {"id": "cmpl-1", "model": "m-1", "choices": [{"index": 0, "delta": {"role": "assistant"}}]}
    ]
    events += [
        {"id": "cmpl-1", "model": "m-1", "choices": [{"index": 0, "delta": {"content": d}}]} for d in deltas
    ]
    events.append(
        {"id": "cmpl-1", "model": "m-1", "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
    )
    events.append({"id": "cmpl-1", "model": "m-1", "choices": [], "usage": USAGE})
    return events


async def write_sse(
    request: web.Request,
    events: list[Any],
    *,
    done: bool = True,
    delay: float = 0.0,
    drop_after: int | None = None,
) -> web.StreamResponse:
    """Send ``events`` as SSE (strings are sent as raw data lines), then ``[DONE]`` unless told not to."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "x-request-id": "srv-req-1"})
    await response.prepare(request)
    for index, event in enumerate(events):
        if drop_after is not None and index == drop_after:
            assert request.transport is not None
            request.transport.close()
            return response
        data = event if isinstance(event, str) else json.dumps(event)
        await response.write(f"data: {data}\n\n".encode())
        if delay:
            await asyncio.sleep(delay)
    if done:
        await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


class Recorder:
    """The requests a server received."""

    def __init__(self) -> None:
        self.bodies: list[Any] = []
        self.headers: list[dict[str, str]] = []

    async def record(self, request: web.Request) -> Any:
        body = await request.json()
        self.bodies.append(body)
        self.headers.append(dict(request.headers))
        return body


async def serve(routes: dict[str, Handler]) -> AsyncIterator[str]:
    """Serve ``routes`` (path -> POST handler) on 127.0.0.1; yields the base URL."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_post(path, handler)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()
