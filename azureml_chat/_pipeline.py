"""The request pipeline: every call is prepared, sent in attempts under one retry loop, and parsed.

::

    prepare   check the messages (or prompt) and parameters; build the body, the headers, the request id
      |
    attempts  under the retry policy (RetryPolicy: which failures, how long to wait), each one:
      |         rate-limit admission -> authorization -> transport.send / transport.open
      |         -> a status >= 300 becomes its typed error (a 429 also starts the shared cooldown)
      |         -> the admission ticket is handed back (a stream keeps it until it is released)
    parse     the formatter reads the 2xx body (with the request id); the answer's tokens are charged

``chat``, ``complete`` and their streams are the same pipeline with another :class:`Operation`. The
instrumentation hook hears the call start, every attempt and the call's end. Every attempt logs one DEBUG line
on the ``azureml_chat`` logger with its outcome (a status, or the error class); an error raised after more
than one attempt says how many, over how long, and its traceback starts at the caller's call.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, TypeVar, cast

from . import _defaults
from ._codec import decode_json, encode_json
from ._config import Timeout, check_header_token, check_headers
from ._endpoint import Endpoint
from ._errors import (
    APIStatusError,
    AuthenticationError,
    AzureMLChatError,
    ConfigurationError,
    InvalidRequestError,
    RateLimitError,
    make_status_error,
    note_attempts,
)
from ._instrument import CallObserver, Instrumentation
from ._operations import ChunkT, Operation
from ._ratelimit import RateLimiter, Ticket
from ._retry import RetryPolicy
from ._transport import AsyncTransport, Request, Response, StreamResponse

__all__ = ["Call", "Pipeline"]

logger = logging.getLogger("azureml_chat")

_new_request = tuple.__new__

ResponseT = TypeVar("ResponseT")
T = TypeVar("T")


class Call(Generic[ResponseT, ChunkT]):
    """One prepared call and what its attempts learn: the per-call state the pipeline carries.

    Attributes:
        operation: chat or text completion.
        payload: the wire messages (chat) or the prompt (text completion), checked.
        params: the merged model parameters.
        stream: whether the body asks for server-sent events.
        endpoint: the endpoint the body and headers were built for.
        body: the encoded body for ``endpoint``.
        headers: the headers for ``endpoint``, without the token of a credential (added per attempt).
        timeout: the limits of one attempt.
        request_id: the ``x-ms-client-request-id`` of every attempt of this call.
        observer: what the instrumentation hears about this call.
        attempts: attempts made so far.
        started: when the first attempt started (``time.monotonic()``).
        ticket: the admission of an open stream, held until the stream is released.
    """

    __slots__ = (
        "attempts",
        "body",
        "endpoint",
        "headers",
        "observer",
        "operation",
        "params",
        "payload",
        "refreshed",
        "request_id",
        "started",
        "stream",
        "ticket",
        "timeout",
    )

    def __init__(
        self,
        operation: Operation[ResponseT, Any],
        payload: Any,
        params: Mapping[str, Any],
        stream: bool,
        endpoint: Endpoint,
        body: bytes,
        headers: dict[str, str],
        timeout: Timeout,
        request_id: str,
        observer: CallObserver,
    ) -> None:
        self.operation = operation
        self.payload = payload
        self.params = params
        self.stream = stream
        self.endpoint = endpoint
        self.body = body
        self.headers = headers
        self.timeout = timeout
        self.request_id = request_id
        self.observer = observer
        self.attempts = 0
        self.started = 0.0
        self.refreshed = False  # a rejected token was refreshed once already
        self.ticket: Ticket | None = None


class Pipeline:
    """Prepares and sends calls to an endpoint through a transport, with retries and admission control.

    One pipeline serves a client; siblings made by ``with_options`` share its transport and limiter.
    """

    def __init__(
        self,
        *,
        endpoint: Endpoint,
        transport: AsyncTransport,
        limiter: RateLimiter,
        retry: RetryPolicy,
        instrumentation: Instrumentation,
    ) -> None:
        self.endpoint = endpoint
        self.transport = transport
        self.limiter = limiter
        self.retry = retry
        self.instrumentation = instrumentation
        # One id per call: a per-pipeline random prefix plus a counter (cheaper than uuid4 per call). The
        # prefix leaves room for "-" and 15 hex digits of counter within the platform's limit.
        self._id_prefix = uuid.uuid4().hex[: _defaults.MAX_CLIENT_REQUEST_ID - 16]
        self._ids = itertools.count(1)
        self._describe = f"POST {endpoint.name}"

    # --- prepare ----------------------------------------------------------------------------------------

    def prepare(
        self,
        operation: Operation[ResponseT, ChunkT],
        payload: Any,
        params: Mapping[str, Any],
        *,
        stream: bool,
        timeout: Timeout,
        deployment: str | None,
        extra_headers: Mapping[str, str] | None,
    ) -> Call[ResponseT, ChunkT]:
        """Build the body and headers of a call (nothing is sent; a bad argument raises here).

        Raises:
            InvalidRequestError: what the formatter's schema cannot carry, or a bad header or deployment.
        """
        endpoint = self.endpoint
        build = getattr(endpoint.formatter, operation.build)
        body = encode_json(build(endpoint.route, payload, params, stream=stream))
        request_id = f"{self._id_prefix}-{next(self._ids):x}"
        headers = _call_headers(endpoint, request_id, deployment, extra_headers)
        observer = self.instrumentation.start_call(
            operation.name, endpoint, params, stream=stream, request_id=request_id
        )
        return Call(
            operation, payload, params, stream, endpoint, body, headers, timeout, request_id, observer
        )

    # --- send -------------------------------------------------------------------------------------------

    async def send(self, call: Call[ResponseT, Any]) -> ResponseT:
        """Send a non-streaming call with retries and return its parsed answer."""
        attempt = self._once if call.endpoint.auth is None else self._refreshing
        try:
            # The happy path is one direct await: retries are set up only after a failure.
            try:
                response = await attempt(call)
                failure = None
            except AzureMLChatError as first:
                failure = first
            if failure is not None:  # retried outside the except block: no failure is chained to the last
                response = await self._retry_after(call, attempt, failure)
            answer = self.read(call, cast(Response, response))
        except BaseException as exc:
            call.observer.end(None, exc)
            raise
        call.observer.end(answer, None)
        return answer

    def read(self, call: Call[ResponseT, Any], response: Response) -> ResponseT:
        """Parse a 2xx answer, stamped with the server's request id (else ours), and charge its tokens."""
        endpoint = call.endpoint
        request_id = response.headers.get("x-request-id") or call.request_id
        body = decode_json(response.content, endpoint.formatter.name)
        answer: ResponseT = getattr(endpoint.formatter, call.operation.read)(
            endpoint.route, body, request_id=request_id
        )
        usage = getattr(answer, "usage", None)
        if usage is not None and self.limiter.counts_tokens:
            self.limiter.charge(usage.total_tokens)
        return answer

    async def with_retries(
        self, call: Call[Any, Any], attempt: Callable[[Call[Any, Any]], Awaitable[T]]
    ) -> T:
        """Run ``attempt(call)`` under the retry policy; a failure carries the number of attempts made."""
        try:
            return await attempt(call)
        except AzureMLChatError as first:
            failure = first
        return await self._retry_after(call, attempt, failure)

    async def _retry_after(
        self, call: Call[Any, Any], attempt: Callable[[Call[Any, Any]], Awaitable[T]], first: AzureMLChatError
    ) -> T:
        try:
            return await self.retry.call_after(first, lambda: attempt(call), describe=self._describe)
        except AzureMLChatError as exc:
            failure = exc
        note_attempts(failure, call.attempts, time.monotonic() - call.started)
        # The caller's traceback starts here: the frames of the retry loop (tenacity's, our attempts') say
        # nothing a caller can act on, and the error's message and cause say what happened.
        raise failure.with_traceback(None)

    async def attempt(self, call: Call[Any, Any]) -> Response:
        """One attempt of a non-streaming call (twice when a credential's token was rejected)."""
        return cast(Response, await self._refreshing(call))

    async def open(self, call: Call[Any, Any]) -> StreamResponse:
        """One attempt to open a stream; the admission ticket stays in ``call.ticket`` until released."""
        return cast(StreamResponse, await self._refreshing(call))

    # --- one attempt ------------------------------------------------------------------------------------

    async def _refreshing(self, call: Call[Any, Any]) -> Response | StreamResponse:
        try:
            return await self._once(call)
        except AuthenticationError:
            auth = call.endpoint.auth
            if auth is None or call.refreshed:
                raise
        # The token was rejected (revoked, clock skew): fetch a new one and try once more at once (outside the
        # except block, so that what this attempt raises is not chained to the 401).
        call.refreshed = True
        auth.invalidate()
        return await self._once(call)

    async def _once(self, call: Call[Any, Any]) -> Response | StreamResponse:
        """Admission, authorization, the transport, the status. The admission ticket is handed back at once,
        except by an open stream, which keeps it in ``call.ticket`` until the stream is released."""
        endpoint = call.endpoint
        limiter = self.limiter
        started = time.monotonic()
        if not call.attempts:
            call.started = started
        call.attempts += 1
        ticket = None if limiter.open else await limiter.admit()
        try:
            headers = call.headers if endpoint.auth is None else await _authorized(call)
            # tuple.__new__ builds the named tuple in C (its generated __new__ is a Python call, on every attempt).
            request = _new_request(Request, ("POST", endpoint.url, headers, call.body, call.timeout))
            response: Response | StreamResponse
            if call.stream:
                response = opened = await self.transport.open(request)
                if opened.status_code >= 300:
                    raise await _stream_status_error(opened, call.request_id)
                call.ticket, ticket = ticket, None
            else:
                response = await self.transport.send(request)
                if response.status_code >= 300:
                    raise make_status_error(
                        response.status_code,
                        response.headers,
                        response.content,
                        sent_request_id=call.request_id,
                    )
        except BaseException as exc:
            self._failed(call, exc, started)
            raise
        finally:
            if ticket is not None:
                limiter.finish(ticket)
        if logger.isEnabledFor(logging.DEBUG):
            _log_attempt(call, str(response.status_code), started, response.headers.get("x-request-id"))
        call.observer.attempt(call.attempts, endpoint, None)
        return response

    def _failed(self, call: Call[Any, Any], error: BaseException, started: float) -> None:
        if isinstance(error, RateLimitError):
            self.limiter.throttled(error.retry_after)
        if logger.isEnabledFor(logging.DEBUG):
            if isinstance(error, APIStatusError):
                _log_attempt(call, str(error.status_code), started, error.request_id)
            else:
                _log_attempt(call, type(error).__name__, started, None)
        call.observer.attempt(call.attempts, call.endpoint, error)

    def release(self, call: Call[Any, Any], usage_tokens: int | None) -> None:
        """A stream of ``call`` is done with its connection: hand back its ticket and charge its tokens."""
        ticket, call.ticket = call.ticket, None
        if ticket is not None:
            self.limiter.finish(ticket)
        if usage_tokens is not None:
            self.limiter.charge(usage_tokens)


def _log_attempt(call: Call[Any, Any], outcome: str, started: float, request_id: str | None) -> None:
    # The one DEBUG line per attempt (README "Logging and secrets"): never a header or a body, so never a
    # key or a token; the URL without its query.
    logger.debug(
        "POST %s -> %s in %.1f ms (attempt %d, request id %s)",
        call.endpoint.name,
        outcome,
        (time.monotonic() - started) * 1000,
        call.attempts,
        request_id or call.request_id,
    )


async def _authorized(call: Call[Any, Any]) -> dict[str, str]:
    auth = call.endpoint.auth
    if auth is None or "authorization" in call.headers:
        return call.headers
    return {**call.headers, "authorization": f"Bearer {await auth.token()}"}


async def _stream_status_error(response: StreamResponse, request_id: str) -> AzureMLChatError:
    """The typed error of a non-2xx answer to a stream request, from its bounded body; the response is closed."""
    body = bytearray()
    try:
        while len(body) < _defaults.MAX_ERROR_BODY:
            piece = await response.read_some()
            if not piece:
                break
            body += piece
    except AzureMLChatError:
        pass  # the status says enough; a body cut short by a broken connection is still shown
    finally:
        response.close()
    return make_status_error(
        response.status_code,
        response.headers,
        bytes(body[: _defaults.MAX_ERROR_BODY]),
        sent_request_id=request_id,
    )


def _call_headers(
    endpoint: Endpoint, request_id: str, deployment: str | None, extra_headers: Mapping[str, str] | None
) -> dict[str, str]:
    headers = dict(endpoint.headers)
    headers["x-ms-client-request-id"] = request_id
    chosen = deployment if deployment is not None else endpoint.deployment
    try:
        if chosen is not None:
            headers["azureml-model-deployment"] = check_header_token(chosen, "deployment")
        if extra_headers:
            headers.update(check_headers(extra_headers, "extra_headers"))
    except ConfigurationError as exc:
        raise InvalidRequestError(str(exc)) from None
    if extra_headers:  # our own id is always valid; a caller's replacement may not be
        sent_id = headers["x-ms-client-request-id"]
        if len(sent_id) > _defaults.MAX_CLIENT_REQUEST_ID or not _is_request_id(sent_id):
            raise InvalidRequestError(
                f"x-ms-client-request-id must be 1-{_defaults.MAX_CLIENT_REQUEST_ID} letters, digits or '-'"
            )
    return headers


def _is_request_id(value: str) -> bool:
    return bool(value) and value.isascii() and value.replace("-", "").isalnum()
