"""The fake Azure ML endpoint: a bare asyncio protocol that answers from precomputed bytes.

It must be much faster than any client, so it does almost nothing per request: find the end of the
headers, read ``Content-Length`` bytes of body, pick a canned reply by path, write it. It never parses
the JSON body; two byte regexes read ``"stream": true`` and ``"max_tokens": N`` so every client gets the
stream length it asked for. HTTP/1.1 keep-alive (``Connection: close`` is honoured; LangChain's urllib
sends it). It runs on uvloop when installed, pinned to one core (``--cpu``).

Routes (the query string, e.g. ``?api-version=``, is ignored):

* ``POST .../chat/completions`` or ``.../completions``: a ``chat.completion`` of ``max_tokens`` tokens
  (default 16), or with ``"stream": true`` an SSE stream of ``max_tokens`` chunks plus ``[DONE]``;
* ``POST .../score``: ``{"output": ...}`` (16 tokens);
* ``GET /health``: ``ok``.

Run: ``python server.py --port 0 --cpu 0``; it prints ``READY <port>`` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import sys

import payloads

_STREAM = re.compile(rb'"stream"\s*:\s*true')
_MAX_TOKENS = re.compile(rb'"max_(?:new_)?tokens"\s*:\s*(\d+)')
_MAX_STREAM = 4096


def _response(status: str, content_type: str, body: bytes, *, close: bool) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        f"x-request-id: bench-request-0001\r\n{'Connection: close' + chr(13) + chr(10) if close else ''}\r\n"
    )
    return head.encode() + body


def _sse_response(tokens: int, *, close: bool) -> bytes:
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache\r\n"
        f"Transfer-Encoding: chunked\r\nx-request-id: bench-request-0001\r\n"
        f"{'Connection: close' + chr(13) + chr(10) if close else ''}\r\n"
    ).encode()
    # One HTTP chunk per SSE event, as a token-by-token server sends them; written all at once, so the
    # time to the first parsed chunk is pure client overhead.
    parts = [head]
    for event in payloads.chat_chunks(tokens):
        parts.append(b"%x\r\n%s\r\n" % (len(event), event))
    parts.append(b"0\r\n\r\n")
    return b"".join(parts)


class Replies:
    """Every reply the server can give, built on first use and then served from memory."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int, bool], bytes] = {}

    def get(self, kind: str, tokens: int, close: bool) -> bytes:
        key = (kind, tokens, close)
        reply = self._cache.get(key)
        if reply is None:
            if kind == "chat":
                reply = _response("200 OK", "application/json", payloads.chat_completion(tokens), close=close)
            elif kind == "sse":
                reply = _sse_response(tokens, close=close)
            elif kind == "score":
                reply = _response("200 OK", "application/json", payloads.score_output(tokens), close=close)
            elif kind == "health":
                reply = _response("200 OK", "text/plain", b"ok", close=close)
            elif kind == "length":
                reply = _response("411 Length Required", "text/plain", b"send Content-Length", close=True)
            else:
                reply = _response("404 Not Found", "application/json", b'{"message":"no route"}', close=close)
            self._cache[key] = reply
        return reply


REPLIES = Replies()


class HTTPProtocol(asyncio.Protocol):
    """One connection: requests are parsed from a byte buffer and answered in order."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17 : stop if stop >= 0 else None])
            elif b"\r\ntransfer-encoding:" in head:
                self._reply(REPLIES.get("length", 0, True), close=True)
                return
            else:
                length = 0
            total = end + 4 + length
            if len(buf) < total:
                return
            body = bytes(buf[end + 4 : total])
            del buf[:total]
            if not self._answer(head, body):
                return

    def _answer(self, head: bytes, body: bytes) -> bool:
        line_end = head.find(b"\r\n")
        target = head[head.find(b" ") + 1 : head.rfind(b" ", 0, line_end)]
        path = target.split(b"?", 1)[0].rstrip(b"/")
        close = b"\r\nconnection: close" in head
        if path.endswith(b"completions"):
            found = _MAX_TOKENS.search(body)
            tokens = min(int(found.group(1)), _MAX_STREAM) if found else payloads.ANSWER_TOKENS
            kind = "sse" if _STREAM.search(body) else "chat"
        elif path.endswith(b"/score"):
            kind, tokens = "score", payloads.ANSWER_TOKENS
        elif path == b"/health":
            kind, tokens = "health", 0
        else:
            kind, tokens = "missing", 0
        return self._reply(REPLIES.get(kind, tokens, close), close=close)

    def _reply(self, reply: bytes, *, close: bool) -> bool:
        transport = self._transport
        assert transport is not None
        transport.write(reply)
        if close:
            transport.close()
            return False
        return True


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(HTTPProtocol, host, port, backlog=4096, reuse_address=True)
    actual = server.sockets[0].getsockname()[1]
    print(f"READY {actual}", flush=True)
    stopped = loop.create_future()

    def stop() -> None:
        if not stopped.done():
            stopped.set_result(None)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)
    async with server:
        await stopped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this core")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args()
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    if args.loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            print("uvloop is not installed; using the asyncio loop", file=sys.stderr)
        else:
            uvloop.run(serve(args.host, args.port))
            return
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
