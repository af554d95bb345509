"""One call's state as the pipeline carries it through its attempts (and, on a pool, between endpoints)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from ._config import Timeout
from ._endpoint import ResolvedEndpoint
from ._instrument import CallObserver
from ._operations import ChunkT, Operation
from ._ratelimit import Ticket
from ._router import Member

__all__ = ["Call"]

ResponseT = TypeVar("ResponseT")


class Call(Generic[ResponseT, ChunkT]):
    """One prepared call and what its attempts learn: the per-call state the pipeline carries.

    Attributes:
        operation: chat or text completion.
        payload: the wire messages (chat) or the prompt (text completion), checked.
        params: the merged model parameters.
        wants_stream: whether the caller asked for a stream.
        stream: whether the body asks ``endpoint`` for server-sent events (a route that cannot stream answers
            whole, as one chunk).
        timeout: the limits of one attempt.
        request_id: the ``x-ms-client-request-id`` of every attempt of this call.
        deployment, extra_headers: the call's own request options (kept to build another endpoint's headers).
        member: the pool member the next attempt goes to, and ``endpoint``, its endpoint.
        body: the encoded body for ``endpoint``.
        headers: the headers for ``endpoint``, without the token of a credential (added per attempt).
        tried: the members this call's attempts went to (failover prefers the others).
        wait: the wait before the next attempt, when routing decided it (``None``: the retry policy's).
        probe: whether the attempt under way is its endpoint's probe.
        holding: on a pool, the member of an open stream (counted in flight until the stream is released).
        observer: what the instrumentation hears about this call.
        attempts: attempts made so far.
        started: when the first attempt started (``time.monotonic()``).
        ticket: the admission of an open stream, held until the stream is released.
    """

    __slots__ = (
        "attempts",
        "body",
        "deployment",
        "endpoint",
        "extra_headers",
        "headers",
        "holding",
        "member",
        "observer",
        "operation",
        "params",
        "payload",
        "probe",
        "refreshed",
        "request_id",
        "started",
        "stream",
        "ticket",
        "timeout",
        "tried",
        "wait",
        "wants_stream",
    )

    def __init__(
        self,
        operation: Operation[ResponseT, Any],
        payload: Any,
        params: Mapping[str, Any],
        wants_stream: bool,
        timeout: Timeout,
        request_id: str,
        deployment: str | None,
        extra_headers: Mapping[str, str] | None,
    ) -> None:
        self.operation = operation
        self.payload = payload
        self.params = params
        self.wants_stream = wants_stream
        self.timeout = timeout
        self.request_id = request_id
        self.deployment = deployment
        self.extra_headers = extra_headers
        self.attempts = 0
        self.started = 0.0
        self.refreshed = False  # a rejected token was refreshed once already
        self.ticket: Ticket | None = None
        self.tried: tuple[Member, ...] = ()  # a tuple: most calls never fail over, and () costs nothing
        self.wait: float | None = None
        self.probe = False
        self.holding: Member | None = None  # an open stream's member, whose in-flight count it holds
        # Set by Pipeline.aim() before anything is sent.
        self.member: Member
        self.endpoint: ResolvedEndpoint
        self.stream: bool
        self.body: bytes
        self.headers: dict[str, str]
        self.observer: CallObserver
