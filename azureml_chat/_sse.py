"""An incremental Server-Sent Events decoder over raw bytes, following the WHATWG EventSource rules.

It is fed the chunks of ``resp.content.iter_any()`` as they arrive, split anywhere. aiohttp's own line
iterator refuses lines above 128 KiB (sdk_design.md 2.6), and a large tool call or a non-delta final
event can be longer, so lines are split here, on bytes, with no limit but ``max_event_bytes``.
"""

from __future__ import annotations

import contextlib

import attrs

from . import _defaults
from ._errors import ConfigurationError, StreamError

__all__ = ["SSEDecoder", "ServerSentEvent"]

_BOM = b"\xef\xbb\xbf"


@attrs.frozen
class ServerSentEvent:
    """One dispatched event.

    Attributes:
        data: the event's ``data:`` lines joined with ``"\\n"``.
        event: the ``event:`` field, ``"message"`` when absent or empty.
        id: the last event id seen on the stream so far (ids persist across events), ``None`` before any.
        retry: the ``retry:`` field of this event, in milliseconds, when it was all ASCII digits.
    """

    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Turns raw SSE bytes, fed in arbitrary pieces, into :class:`ServerSentEvent` objects.

    Lines end with ``\\n``, ``\\r\\n`` or ``\\r`` (a ``\\r\\n`` split across two chunks is one line end); a
    blank line dispatches the event. Bytes are decoded as UTF-8 with invalid sequences replaced, and a
    byte order mark at the very start of the stream is skipped.

    Example::

        decoder = SSEDecoder()
        async for chunk in resp.content.iter_any():
            for event in decoder.feed(chunk):
                handle(event)
        decoder.close()
        if decoder.pending:
            raise StreamError("the stream ended inside an event")

    Args:
        max_event_bytes: the most bytes one event may hold: its lines, without line ends and
            comments, plus the line being read. Bounds memory against a server that never ends a line.

    Raises:
        ConfigurationError: ``max_event_bytes`` is not positive.
    """

    __slots__ = (
        "_at_start",
        "_buf",
        "_data",
        "_error",
        "_event",
        "_in_event",
        "_last_id",
        "_max",
        "_retry",
        "_size",
        "_skip_lf",
    )

    def __init__(self, *, max_event_bytes: int = _defaults.MAX_SSE_EVENT_BYTES) -> None:
        if max_event_bytes < 1:
            raise ConfigurationError(f"max_event_bytes must be positive, got {max_event_bytes}")
        self._max = max_event_bytes
        # The line read so far: everything after the last line end.
        self._buf = bytearray()
        # The first bytes are held back while they could still be the start of a BOM.
        self._at_start = True
        # The previous chunk ended with "\r": a "\n" opening the next one belongs to that line end.
        self._skip_lf = False
        self._data: list[bytes] = []
        self._event = b""
        self._retry: int | None = None
        self._last_id: str | None = None
        # Bytes of the current event's non-comment lines, for the size limit.
        self._size = 0
        # A field line of the current event was seen (what `pending` reports).
        self._in_event = False
        # The limit error, once met, is raised by every later call. Events the same chunk had already
        # completed are returned first and the error waits for the next call, so none is lost.
        self._error: str | None = None

    @property
    def pending(self) -> bool:
        """Whether bytes of an unfinished event were seen: after :meth:`close`, the stream was cut short."""
        return self._in_event or bool(self._buf)

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Decode the next piece of the stream.

        Args:
            chunk: the next bytes, cut anywhere (inside a line, a line end, or a UTF-8 character).

        Returns:
            The events this chunk completed, in order.

        Raises:
            StreamError: an event grew past ``max_event_bytes``. Once raised, every later call raises it.
        """
        if self._error is not None:
            raise StreamError(self._error)
        if self._at_start:
            if len(self._buf) + len(chunk) < len(_BOM) and _BOM.startswith(self._buf + chunk):
                self._buf += chunk
                return []
            self._at_start = False
            if self._buf:
                chunk = bytes(self._buf) + chunk
                self._buf.clear()
            if chunk.startswith(_BOM):
                chunk = chunk[len(_BOM) :]
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk[0] == 0x0A:
                chunk = chunk[1:]
        if b"\r" in chunk:
            # A final "\r" may be the first half of "\r\n"; the flag drops the "\n" if it comes next.
            self._skip_lf = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if b"\n" not in chunk:
            self._buf += chunk
            self._check_partial_line()
            return []
        lines = chunk.split(b"\n")
        tail = lines.pop()
        if self._buf:
            lines[0] = bytes(self._buf) + lines[0]
            self._buf.clear()
        events = self._decode_lines(lines)
        if self._error is None:
            self._buf += tail
            try:
                self._check_partial_line()
            except StreamError:
                if not events:
                    raise
        return events

    def close(self) -> list[ServerSentEvent]:
        """Mark the end of input and read a last line that had no line end.

        An event whose blank line never came is discarded (WHATWG); :attr:`pending` tells whether there
        was one.

        Returns:
            The events completed at the end of input: always none under the WHATWG rules, since only a
            blank line dispatches; a list so callers can treat it like :meth:`feed`.

        Raises:
            StreamError: a limit error held back by the last :meth:`feed`.
        """
        if self._error is not None:
            raise StreamError(self._error)
        self._at_start = False
        self._skip_lf = False
        if not self._buf:
            return []
        line = bytes(self._buf)
        self._buf.clear()
        return self._decode_lines([line])

    def _decode_lines(self, lines: list[bytes]) -> list[ServerSentEvent]:
        events: list[ServerSentEvent] = []
        for line in lines:
            if not line:
                if self._data:
                    events.append(
                        ServerSentEvent(
                            b"\n".join(self._data).decode("utf-8", "replace"),
                            self._event.decode("utf-8", "replace") if self._event else "message",
                            self._last_id,
                            self._retry,
                        )
                    )
                    self._data = []
                self._event = b""
                self._retry = None
                self._size = 0
                self._in_event = False
                continue
            if self._size + len(line) > self._max:
                error = self._too_big()
                if not events:
                    raise error
                return events
            name, _, value = line.partition(b":")
            if not name:
                # A comment: kept nowhere, so it does not count toward the event's size.
                continue
            self._size += len(line)
            self._in_event = True
            if value.startswith(b" "):
                value = value[1:]
            if name == b"data":
                self._data.append(value)
            elif name == b"event":
                self._event = value
            elif name == b"id":
                if b"\0" not in value:
                    self._last_id = value.decode("utf-8", "replace")
            elif name == b"retry" and value.isdigit():
                # More digits than int() accepts (4,300) is no usable reconnection time either.
                with contextlib.suppress(ValueError):
                    self._retry = int(value)
        return events

    def _check_partial_line(self) -> None:
        # Counting the unfinished line the same way as a finished one keeps the outcome independent of
        # where the chunks were cut; only the moment of the error differs.
        if self._size + len(self._buf) > self._max:
            self._buf.clear()
            raise self._too_big()

    def _too_big(self) -> StreamError:
        # Kept, so that every later call raises it too: the stream cannot be resynchronised.
        self._error = (
            f"a server-sent event is larger than max_event_bytes ({self._max:,} bytes); "
            "raise the max_event_bytes setting if the endpoint really sends events this large"
        )
        return StreamError(self._error)
