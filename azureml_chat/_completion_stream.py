"""``AsyncCompletionStream``: an async iterator of :class:`CompletionChunk` that always releases its
connection (the machinery is ``_stream._BaseStream``; its sync view is ``_sync.CompletionStream``).

The rules are :class:`~azureml_chat.AsyncChatStream`'s: opening the stream is retried like any call; once a
chunk may have reached the caller nothing is retried, and any failure is a :class:`StreamError`. The HTTP
response is released on exhaustion, ``break`` (through ``async with`` or garbage collection), an error,
cancellation and :meth:`AsyncCompletionStream.aclose`. A route that cannot stream (``/score``) yields the
whole completion as one chunk.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ._responses import CompletionChunk, CompletionResponse, Usage
from ._stream import _BaseStream

__all__ = ["AsyncCompletionStream"]


class _Accumulator:
    """Folds chunks into the :class:`CompletionResponse` a non-streaming call would have returned."""

    def __init__(self) -> None:
        self._text: list[str] = []
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.model: str | None = None
        self.id: str | None = None

    def add(self, chunk: CompletionChunk) -> None:
        self._text.append(chunk.text)
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
        if chunk.usage is not None:
            self.usage = chunk.usage
        self.model = self.model or chunk.model
        self.id = self.id or chunk.id

    def response(self, *, request_id: str | None) -> CompletionResponse:
        return CompletionResponse(
            text="".join(self._text),
            finish_reason=self.finish_reason,
            usage=self.usage,
            model=self.model,
            id=self.id,
            request_id=request_id,
        )


def _whole(response: CompletionResponse) -> CompletionChunk:
    """The whole completion as one chunk, for routes that cannot stream."""
    return CompletionChunk(
        text=response.text,
        finish_reason=response.finish_reason,
        usage=response.usage,
        model=response.model,
        id=response.id,
        raw=response.raw,
    )


class AsyncCompletionStream(_BaseStream[CompletionChunk, CompletionResponse]):
    """The chunks of one streamed completion. Use ``async with client.stream_complete(...) as stream:``.

    Each :class:`CompletionChunk` carries a ``text`` delta; after the last one, :meth:`final_response` gives
    the aggregated :class:`CompletionResponse`.
    """

    _what: ClassVar[str] = "completion"

    def _new_accumulator(self) -> _Accumulator:
        return _Accumulator()

    def _whole_chunk(self, response: CompletionResponse) -> CompletionChunk:
        return _whole(response)

    def _parse_body(self, body: Any) -> CompletionResponse:
        return self._formatter.parse_completion(self._route, body)

    def _parse_event(self, data: Any) -> CompletionChunk | None:
        return self._formatter.parse_completion_chunk(self._route, data)
