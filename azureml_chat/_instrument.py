"""The instrumentation hook: what the pipeline reports about every call, for tracing and metrics to read.

The pipeline calls :meth:`Instrumentation.start_call` once per call (``chat``, ``stream``, ``complete``,
``stream_complete``) and reports to the :class:`CallObserver` it returns: each attempt as it ends, the first
chunk of a stream, and the end of the call (its answer, or the error it raised). The default reports to no one
and costs three no-op method calls per call; an OpenTelemetry implementation plugs in here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ._endpoint import ResolvedEndpoint

__all__ = ["NO_INSTRUMENTATION", "CallObserver", "Instrumentation"]


class CallObserver(Protocol):
    """Hears about one call. Its methods must not raise and must not block."""

    def attempt(
        self,
        number: int,
        endpoint: ResolvedEndpoint,
        status: int | None,
        error: BaseException | None,
        started: float,
    ) -> None:
        """Attempt ``number`` (1 for the first) to ``endpoint`` ended: ``status`` is the HTTP status it got
        (``None`` when no answer came: a connection error, a timeout); ``error`` is ``None`` when it got a 2xx
        answer (for a stream: when it opened), else what it raised; ``started`` is when it began
        (``time.monotonic()``, so the wait before it is known)."""
        ...

    def first_chunk(self) -> None:
        """A stream handed its first chunk to the caller."""
        ...

    def end(self, response: Any, error: BaseException | None) -> None:
        """The call ended with ``response`` (a ``ChatResponse`` / ``CompletionResponse``; for a stream, the
        aggregated answer when it was read to its end, else ``None``) or with ``error``."""
        ...


class Instrumentation(Protocol):
    """Starts a :class:`CallObserver` per call."""

    def start_call(
        self,
        operation: str,
        endpoint: ResolvedEndpoint,
        params: Mapping[str, Any],
        *,
        stream: bool,
        request_id: str,
        payload: Any,
    ) -> CallObserver:
        """A call starts: ``operation`` is ``"chat"`` or ``"text_completion"``; ``params`` are its merged
        model parameters and ``payload`` its messages (OpenAI-shaped dicts) or prompt (read them, never change
        them); ``request_id`` is its ``x-ms-client-request-id``."""
        ...


class _Silent:
    """Both protocols, doing nothing: the default."""

    def start_call(
        self,
        operation: str,
        endpoint: ResolvedEndpoint,
        params: Mapping[str, Any],
        *,
        stream: bool,
        request_id: str,
        payload: Any,
    ) -> CallObserver:
        return self

    def attempt(
        self,
        number: int,
        endpoint: ResolvedEndpoint,
        status: int | None,
        error: BaseException | None,
        started: float,
    ) -> None:
        pass

    def first_chunk(self) -> None:
        pass

    def end(self, response: Any, error: BaseException | None) -> None:
        pass


NO_INSTRUMENTATION: Instrumentation = _Silent()
