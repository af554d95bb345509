"""Tests for azureml_chat._sse: WHATWG framing, independence from chunk cuts, size limit, end of stream."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from azureml_chat import _defaults
from azureml_chat._errors import ConfigurationError, StreamError
from azureml_chat._sse import ServerSentEvent, SSEDecoder

E = ServerSentEvent


def decode(pieces: bytes | list[bytes], **kwargs: int) -> list[ServerSentEvent]:
    """Feed ``pieces`` (one chunk, or a list of them) and close; return every event."""
    decoder = SSEDecoder(**kwargs)
    events: list[ServerSentEvent] = []
    for piece in [pieces] if isinstance(pieces, bytes) else pieces:
        events += decoder.feed(piece)
    events += decoder.close()
    return events


def cut(stream: bytes, at: list[int]) -> list[bytes]:
    """Split ``stream`` at the given offsets (any order, duplicates allowed: they make empty chunks)."""
    bounds = [0, *sorted(at), len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(bounds)]


def reference(stream: bytes, max_event_bytes: int) -> tuple[list[ServerSentEvent], bool, bool]:
    """The WHATWG algorithm read literally over the whole stream: (events, raised, pending)."""
    stream = stream.removeprefix(b"\xef\xbb\xbf")
    *lines, tail = re.split(rb"\r\n|\r|\n", stream)
    events: list[ServerSentEvent] = []
    data: list[str] = []
    event, last_id, retry, size, in_event = "", None, None, 0, False
    for number, line in enumerate([*lines, tail]):
        if size + len(line) > max_event_bytes:
            return events, True, True
        is_tail = number == len(lines)
        if not line:
            if not is_tail:
                if data:
                    events.append(E("\n".join(data), event or "message", last_id, retry))
                data, event, retry, size, in_event = [], "", None, 0, False
            continue
        text = line.decode("utf-8", "replace")
        if text.startswith(":"):
            continue
        size += len(line)
        in_event = True
        name, _, value = text.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id" and "\0" not in value:
            last_id = value
        elif name == "retry" and re.fullmatch("[0-9]{1,4300}", value):
            # 4,300 digits is the most int() accepts; a longer value is no usable time either.
            retry = int(value)
    return events, False, in_event


# --- framing, one table ----------------------------------------------------------------------------

FRAMING = [
    ("lf", b"data: a\n\n", [E("a")]),
    ("crlf", b"data: a\r\n\r\n", [E("a")]),
    ("cr", b"data: a\r\r", [E("a")]),
    ("mixed line ends", b"data: a\r\ndata: b\rdata: c\n\r\n", [E("a\nb\nc")]),
    ("lf then cr is two line ends", b"data: a\n\rdata: b\n\n", [E("a"), E("b")]),
    ("multi-line data", b"data: one\ndata: two\ndata: three\n\n", [E("one\ntwo\nthree")]),
    ("several events", b"data: a\n\ndata: b\n\n", [E("a"), E("b")]),
    ("extra blank lines", b"\n\ndata: a\n\n\n\n", [E("a")]),
    ("comment alone", b": keep-alive\n\n", []),
    ("comment inside event", b"data: a\n: note\ndata: b\n\n", [E("a\nb")]),
    ("bare colon is a comment", b":\ndata: a\n\n", [E("a")]),
    ("event field", b"event: delta\ndata: x\n\n", [E("x", "delta")]),
    ("empty event field means message", b"event:\ndata: x\n\n", [E("x")]),
    ("event field does not persist", b"event: a\ndata: 1\n\ndata: 2\n\n", [E("1", "a"), E("2")]),
    ("id field", b"id: 7\ndata: x\n\n", [E("x", id="7")]),
    ("retry field", b"retry: 1500\ndata: x\n\n", [E("x", retry=1500)]),
    ("retry does not persist", b"retry: 10\ndata: a\n\ndata: b\n\n", [E("a", retry=10), E("b")]),
    ("retry decimal ignored", b"retry: 1.5\ndata: x\n\n", [E("x")]),
    ("retry negative ignored", b"retry: -1\ndata: x\n\n", [E("x")]),
    ("retry trailing letter ignored", b"retry: 10s\ndata: x\n\n", [E("x")]),
    ("retry empty ignored", b"retry:\ndata: x\n\n", [E("x")]),
    ("retry non-ascii digits ignored", "retry: ١٢\ndata: x\n\n".encode(), [E("x")]),
    ("retry too long for int() ignored", b"retry: " + b"9" * 5000 + b"\ndata: x\n\n", [E("x")]),
    ("field without colon is empty data", b"data\n\n", [E("")]),
    ("event without colon is empty", b"event\ndata: x\n\n", [E("x")]),
    ("no space after colon", b"data:x\n\n", [E("x")]),
    ("only one leading space stripped", b"data:  two\n\n", [E(" two")]),
    ("tab is not stripped", b"data:\tx\n\n", [E("\tx")]),
    ("trailing spaces kept", b"data: x  \n\n", [E("x  ")]),
    ("colons in the value kept", b'data: {"a": "b:c"}\n\n', [E('{"a": "b:c"}')]),
    ("empty data dispatches", b"data:\n\n", [E("")]),
    ("empty data lines join", b"data:\ndata:\n\n", [E("\n")]),
    ("no-data block not dispatched", b"event: ping\n\n", []),
    ("no-data block resets event", b"event: ping\n\ndata: x\n\n", [E("x")]),
    ("unknown field ignored", b"foo: bar\ndata: x\nDATA: y\n\n", [E("x")]),
    ("field names are case-sensitive", b"Data: x\n\n", []),
    ("id persists across events", b"id: 1\ndata: a\n\ndata: b\n\n", [E("a", id="1"), E("b", id="1")]),
    ("id from a no-data block persists", b"id: 5\n\ndata: a\n\n", [E("a", id="5")]),
    ("id with NUL ignored", b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n", [E("a", id="1"), E("b", id="1")]),
    ("empty id resets to empty", b"id: 1\ndata: a\n\nid\ndata: b\n\n", [E("a", id="1"), E("b", id="")]),
    ("last id in a block wins", b"id: 1\nid: 2\ndata: a\n\n", [E("a", id="2")]),
    ("bom skipped", b"\xef\xbb\xbfdata: x\n\n", [E("x")]),
    ("second bom not skipped", b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\n", []),
    ("bom mid-stream not skipped", b"data: a\n\n\xef\xbb\xbfdata: b\n\n", [E("a")]),
    ("bom inside data kept", "data: \ufeffx\n\n".encode(), [E("\ufeffx")]),
    ("utf-8 decoded", "data: héllo 世界 🎉\n\n".encode(), [E("héllo 世界 🎉")]),
    ("invalid utf-8 replaced", b"data: a\xffb\xe4\xb8\n\n", [E("a\ufffdb\ufffd")]),
    ("invalid utf-8 in event name replaced", b"event: \xff\ndata: x\n\n", [E("x", "\ufffd")]),
    ("nul in data kept", b"data: a\x00b\n\n", [E("a\x00b")]),
    ("done marker is plain data", b"data: [DONE]\n\n", [E("[DONE]")]),
    ("empty stream", b"", []),
]


@pytest.mark.parametrize(
    ("stream", "expected"), [case[1:] for case in FRAMING], ids=[case[0] for case in FRAMING]
)
def test_framing_whole(stream: bytes, expected: list[ServerSentEvent]) -> None:
    """Each framing rule gives the WHATWG events when the stream arrives in one chunk."""
    assert expected == decode(stream)


@pytest.mark.parametrize(
    ("stream", "expected"), [case[1:] for case in FRAMING], ids=[case[0] for case in FRAMING]
)
def test_framing_byte_by_byte(stream: bytes, expected: list[ServerSentEvent]) -> None:
    """Each framing rule gives the same events when every byte arrives as its own chunk."""
    assert expected == decode([stream[i : i + 1] for i in range(len(stream))])


@pytest.mark.parametrize(
    ("stream", "expected"), [case[1:] for case in FRAMING], ids=[case[0] for case in FRAMING]
)
def test_framing_matches_reference(stream: bytes, expected: list[ServerSentEvent]) -> None:
    """The table and the literal reference reading of the spec agree (so the oracle below is trusted)."""
    assert (expected, False) == reference(stream, _defaults.MAX_SSE_EVENT_BYTES)[:2]


CR_BOUNDARY = [
    ("crlf split over two chunks", [b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"], [E("a\nb")]),
    ("empty chunk between cr and lf", [b"data: a\r", b"", b"\n\r\n"], [E("a")]),
    ("cr then cr is two line ends", [b"data: a\r", b"\r"], [E("a")]),
    ("cr then data", [b"data: a\r", b"data: b\r\r"], [E("a\nb")]),
    ("lone lf chunk after cr", [b"data: a\r", b"\n", b"\n"], [E("a")]),
    ("bom split over chunks", [b"\xef", b"\xbb", b"\xbfdata: x\n\n"], [E("x")]),
    ("short first chunks are not lost", [b"d", b"a", b"ta: x\n\n"], [E("x")]),
    ("bom prefix that is not a bom", [b"\xef\xbb", b"\n", b"data: x\n\n"], [E("x")]),
]


@pytest.mark.parametrize(
    ("pieces", "expected"), [case[1:] for case in CR_BOUNDARY], ids=[case[0] for case in CR_BOUNDARY]
)
def test_chunk_boundaries(pieces: list[bytes], expected: list[ServerSentEvent]) -> None:
    """A CR ending one chunk and an LF opening the next are one line end; a split BOM is still skipped."""
    assert expected == decode(pieces)


def test_events_are_returned_by_the_chunk_that_completes_them() -> None:
    """feed() returns only the events its chunk completed, as soon as their blank line arrives."""
    decoder = SSEDecoder()
    assert not decoder.feed(b"data: a\n")
    assert [E("a"), E("b")] == decoder.feed(b"\ndata: b\n\ndata: c")
    assert [E("c")] == decoder.feed(b"\n\n")
    assert not decoder.close()


# --- a recorded stream, cut everywhere -------------------------------------------------------------

PAYLOADS = [
    '{"id":"c1","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,'
    '"delta":{"role":"assistant","content":""},"finish_reason":null}]}',
    '{"id":"c1","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,'
    '"delta":{"content":"héllo 世界 🎉"},"finish_reason":null}]}',
    '{"id":"c1","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,'
    '"delta":{"content":" ✓ ok"},"finish_reason":null}]}',
    '{"id":"c1","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,'
    '"delta":{},"finish_reason":"stop"}],'
    '"usage":{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13}}',
    "[DONE]",
]
RECORDED = b": ping\r\n\r\n" + b"".join(f"data: {payload}\r\n\r\n".encode() for payload in PAYLOADS)
RECORDED_EVENTS = [E(payload) for payload in PAYLOADS]


def test_recorded_stream_whole() -> None:
    """A recorded OpenAI-style stream (CRLF, unicode, [DONE]) decodes to its five data events."""
    expected = RECORDED_EVENTS
    assert expected == decode(RECORDED)


def test_recorded_stream_split_at_every_byte() -> None:
    """Cutting the recorded stream in two at any byte (inside CRLF or a UTF-8 character) changes nothing."""
    expected = RECORDED_EVENTS
    for at in range(len(RECORDED) + 1):
        assert expected == decode(cut(RECORDED, [at])), f"cut at byte {at}"


@given(st.lists(st.integers(min_value=0, max_value=len(RECORDED)), max_size=40))
def test_recorded_stream_random_pieces(at: list[int]) -> None:
    """Cutting the recorded stream into random pieces, empty ones included, changes nothing."""
    expected = RECORDED_EVENTS
    assert expected == decode(cut(RECORDED, at))


# --- arbitrary input --------------------------------------------------------------------------------

# Fragments that make field names, line ends, BOMs and broken UTF-8 likely; raw bytes for the rest.
SSE_FRAGMENTS = st.sampled_from(
    [
        b"data",
        b"data:",
        b"event:",
        b"id:",
        b"retry:",
        b":",
        b" ",
        b"\r",
        b"\n",
        b"\r\n",
        b"\n\n",
        b"x",
        b"7",
        b"\x00",
        b"\xef\xbb\xbf",
        b"\xef",
        b"\xe4\xb8",
        b"\x96",
        b"\xff",
        "é世🎉".encode(),
    ]
)
SSE_LIKE = st.lists(SSE_FRAGMENTS | st.binary(max_size=6), max_size=60).map(b"".join)


@st.composite
def stream_and_cuts(draw: st.DrawFn, streams: st.SearchStrategy[bytes]) -> tuple[bytes, list[int]]:
    """A stream and random cut offsets into it."""
    stream = draw(streams)
    return stream, draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=20))


@given(stream_and_cuts(SSE_LIKE))
def test_sse_like_bytes_match_reference(case: tuple[bytes, list[int]]) -> None:
    """SSE-like bytes in random pieces give exactly the events of the literal reference reading."""
    stream, at = case
    decoder = SSEDecoder()
    events = [event for piece in cut(stream, at) for event in decoder.feed(piece)]
    events += decoder.close()
    expected_events, _, expected_pending = reference(stream, _defaults.MAX_SSE_EVENT_BYTES)
    assert (expected_events, expected_pending) == (events, decoder.pending)


@given(stream_and_cuts(st.binary(max_size=300)))
def test_random_bytes_never_raise(case: tuple[bytes, list[int]]) -> None:
    """Arbitrary bytes in arbitrary pieces decode without error under the default limit, as the reference."""
    stream, at = case
    assert reference(stream, _defaults.MAX_SSE_EVENT_BYTES)[0] == decode(cut(stream, at))


@given(stream_and_cuts(SSE_LIKE | st.binary(max_size=200)), st.integers(min_value=1, max_value=40))
def test_small_limit_raises_only_stream_error(case: tuple[bytes, list[int]], limit: int) -> None:
    """Under a small limit only StreamError is raised, when and only when an event is over it."""
    stream, at = case
    decoder = SSEDecoder(max_event_bytes=limit)
    events: list[ServerSentEvent] = []
    raised = False
    try:
        for piece in cut(stream, at):
            events += decoder.feed(piece)
        events += decoder.close()
    except StreamError:
        raised = True
    expected_events, expected_raised, _ = reference(stream, limit)
    assert (expected_events, expected_raised) == (events, raised)


# --- size limit ------------------------------------------------------------------------------------

BIG = b"data: " + b"x" * (200 * 1024) + b"\n\n"


def test_large_event_whole() -> None:
    """A 200 KiB data line (over aiohttp's 128 KiB line limit) arriving in one chunk is one event."""
    assert [E("x" * (200 * 1024))] == decode(BIG)


def test_large_event_in_4k_pieces() -> None:
    """A 200 KiB data line arriving in 4 KiB pieces is one event."""
    assert [E("x" * (200 * 1024))] == decode([BIG[i : i + 4096] for i in range(0, len(BIG), 4096)])


def test_huge_event_with_raised_limit() -> None:
    """A 20 MiB event passes once max_event_bytes is raised above it."""
    size = 20 * 1024 * 1024
    stream = b"data: " + b"y" * size + b"\r\n\r\n"
    pieces = [stream[i : i + 65536] for i in range(0, len(stream), 65536)]
    [event] = decode(pieces, max_event_bytes=32 * 1024 * 1024)
    assert (size, "yy") == (len(event.data), event.data[:2])


def test_default_limit_rejects_huge_event() -> None:
    """A 20 MiB event is over the default 16 MiB limit, so the default does raise."""
    with pytest.raises(StreamError):
        decode(b"data: " + b"y" * (20 * 1024 * 1024) + b"\n\n")


LIMIT = 100
AT_LIMIT = b"data: " + b"x" * (LIMIT - 6) + b"\n\n"  # the line is exactly LIMIT bytes
OVER_LIMIT = b"data: " + b"x" * (LIMIT - 5) + b"\n\n"


@pytest.mark.parametrize("piece_size", [1, 7, 1000])
def test_event_at_limit_passes(piece_size: int) -> None:
    """An event whose lines total exactly max_event_bytes passes, however it is cut."""
    pieces = [AT_LIMIT[i : i + piece_size] for i in range(0, len(AT_LIMIT), piece_size)]
    assert [E("x" * (LIMIT - 6))] == decode(pieces, max_event_bytes=LIMIT)


@pytest.mark.parametrize("piece_size", [1, 7, 1000])
def test_event_over_limit_raises(piece_size: int) -> None:
    """An event one byte over max_event_bytes raises StreamError naming the limit and the setting."""
    pieces = [OVER_LIMIT[i : i + piece_size] for i in range(0, len(OVER_LIMIT), piece_size)]
    expected = r"max_event_bytes \(100 bytes\).*raise the max_event_bytes setting"
    with pytest.raises(StreamError, match=expected):
        decode(pieces, max_event_bytes=LIMIT)


def test_limit_counts_all_lines_of_one_event() -> None:
    """The limit applies to the sum of an event's lines, not to each line."""
    with pytest.raises(StreamError):
        decode(b"data: " + b"x" * 50 + b"\ndata: " + b"x" * 50 + b"\n\n", max_event_bytes=LIMIT)


def test_limit_resets_after_each_event() -> None:
    """Many events each under the limit pass even when together they are far over it."""
    stream = (b"data: " + b"x" * 80 + b"\n\n") * 10
    assert [E("x" * 80)] * 10 == decode(stream, max_event_bytes=LIMIT)


def test_comments_do_not_count_toward_the_limit() -> None:
    """Comment lines are dropped, so they do not add to an event's size."""
    stream = b": " + b"c" * 90 + b"\n" + AT_LIMIT
    assert [E("x" * (LIMIT - 6))] == decode(stream, max_event_bytes=LIMIT)


def test_one_long_comment_line_raises() -> None:
    """A single line over the limit raises even when it is a comment: it has to be held while read."""
    with pytest.raises(StreamError):
        decode(b": " + b"c" * LIMIT + b"\n\ndata: x\n\n", max_event_bytes=LIMIT)


def test_unterminated_line_over_limit_raises_at_once() -> None:
    """A line that never ends raises as soon as it passes the limit, before any line end arrives."""
    decoder = SSEDecoder(max_event_bytes=LIMIT)
    assert not decoder.feed(b"data: " + b"x" * (LIMIT - 6))
    with pytest.raises(StreamError):
        decoder.feed(b"x")


@pytest.mark.parametrize("oversized", [OVER_LIMIT, OVER_LIMIT.rstrip(b"\n")], ids=["ended", "unended"])
def test_events_before_an_oversized_one_are_kept(oversized: bytes) -> None:
    """Events completed earlier in the same chunk are returned; the error comes with the next call."""
    decoder = SSEDecoder(max_event_bytes=LIMIT)
    assert [E("a")] == decoder.feed(b"data: a\n\n" + oversized)
    with pytest.raises(StreamError):
        decoder.feed(b"data: b\n\n")


def test_every_call_after_the_error_raises() -> None:
    """After a limit error the decoder stays failed: feed() and close() both raise again."""
    decoder = SSEDecoder(max_event_bytes=LIMIT)
    with pytest.raises(StreamError):
        decoder.feed(OVER_LIMIT)
    with pytest.raises(StreamError):
        decoder.feed(b"data: small\n\n")
    with pytest.raises(StreamError):
        decoder.close()


@pytest.mark.parametrize("limit", [0, -1])
def test_non_positive_limit_rejected(limit: int) -> None:
    """max_event_bytes must be positive."""
    with pytest.raises(ConfigurationError):
        SSEDecoder(max_event_bytes=limit)


# --- end of stream ---------------------------------------------------------------------------------

CLOSE = [
    ("complete stream", b"data: a\n\n", [E("a")], False),
    ("empty stream", b"", [], False),
    ("unterminated last line", b"data: a\n\ndata: b", [E("a")], True),
    ("last line ended but no blank line", b"data: a\n\ndata: b\n", [E("a")], True),
    ("event field without blank line", b"event: x\n", [], True),
    ("unknown field without blank line", b"foo", [], True),
    ("last line ended by a lone cr", b"data: a\r", [], True),
    ("trailing comment after a complete event", b"data: a\n\n: bye", [E("a")], False),
    ("only comments", b": a\n: b\n", [], False),
    ("no-data block completed", b"event: ping\n\n", [], False),
]


@pytest.mark.parametrize(
    ("stream", "expected", "pending"), [case[1:] for case in CLOSE], ids=[case[0] for case in CLOSE]
)
def test_close(stream: bytes, expected: list[ServerSentEvent], pending: bool) -> None:
    """At end of input an unfinished event is discarded and reported by `pending`."""
    decoder = SSEDecoder()
    events = decoder.feed(stream)
    events += decoder.close()
    assert (expected, pending) == (events, decoder.pending)


def test_pending_while_reading() -> None:
    """`pending` is True while an event is being read and False once its blank line came."""
    decoder = SSEDecoder()
    decoder.feed(b"data: a")
    assert decoder.pending
    decoder.feed(b"\n\n")
    assert not decoder.pending
