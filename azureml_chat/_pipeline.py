"""The request pipeline: every call is prepared, sent in attempts under one retry loop, and parsed.

::

    prepare   check the messages (or prompt) and parameters; build the body, the headers, the request id
      |
    attempts  under the retry policy (RetryPolicy: which failures, how long to wait), each one:
      |         rate-limit admission -> authorization -> transport.send / transport.open
      |         -> a status >= 300 becomes its typed error (a 429 also starts the shared cooldown, for as
      |            long as its Retry-After, else its quota's reset, says: _retry_after.py)
      |         -> an answer whose x-ratelimit-remaining-* is 0 pauses the next calls until the reset
      |         -> the admission ticket is handed back (a stream keeps it until it is released)
    parse     the formatter reads the 2xx body (with the request id); an opening <think> block becomes the
              answer's reasoning (_reasoning.py); the headers are stamped; the answer's tokens are charged

A call's state is a :class:`~azureml_chat._call.Call`. On a client over several endpoints the router picks
each attempt's endpoint and the call fails over between them (``_failover.py``); over one URL the router
always answers with that one and nothing else changes.

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
from typing import Any, TypeVar, cast

from multidict import CIMultiDictProxy

from . import _defaults
from ._call import Call
from ._codec import decode_json, encode_json
from ._config import Timeout
from ._errors import (
    APIStatusError,
    AuthenticationError,
    AzureMLChatError,
    RateLimitError,
    make_status_error,
    note_attempts,
)
from ._failover import aim_anywhere, fail_over, note_headroom, record_failure, wait_for_turn
from ._headers import authorized, call_headers
from ._instrument import Instrumentation
from ._operations import ChunkT, Operation
from ._reasoning import MAY_OPEN_THINK, split_reasoning
from ._retry import RetryPolicy
from ._router import Member, Router
from ._transport import AsyncTransport, Request, Response, StreamResponse, read_only

__all__ = ["Pipeline"]

logger = logging.getLogger("azureml_chat")

_new_request = tuple.__new__

ResponseT = TypeVar("ResponseT")
T = TypeVar("T")


class Pipeline:
    """Prepares and sends calls through a transport to the endpoints of a router, with retries and admission
    control.

    One pipeline serves a client; siblings made by ``with_options`` share its transport and router (so its
    members' limiters and health).
    """

    def __init__(
        self,
        *,
        router: Router,
        transport: AsyncTransport,
        retry: RetryPolicy,
        instrumentation: Instrumentation,
        split_reasoning: bool = True,
    ) -> None:
        self.router = router
        self.split_reasoning = split_reasoning
        self.endpoint = router.first.endpoint
        self.transport = transport
        self.retry = retry
        self.instrumentation = instrumentation
        # One id per call: a per-pipeline random prefix plus a counter (cheaper than uuid4 per call). The
        # prefix leaves room for "-" and 15 hex digits of counter within the platform's limit.
        self._id_prefix = uuid.uuid4().hex[: _defaults.MAX_CLIENT_REQUEST_ID - 16]
        self._ids = itertools.count(1)
        self._describe = f"POST {self.endpoint.where}"

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
        """Choose the endpoint of the first attempt and build the body and headers for it (nothing is sent; a
        bad argument raises here).

        Raises:
            InvalidRequestError: what the formatter's schema cannot carry (on every endpoint of a pool), or a
                bad header or deployment.
        """
        request_id = f"{self._id_prefix}-{next(self._ids):x}"
        call: Call[ResponseT, ChunkT] = Call(
            operation, payload, params, stream, timeout, request_id, deployment, extra_headers
        )
        router = self.router
        if router.single:
            self.aim(call, router.first)
        else:
            aim_anywhere(call, router, self.aim)
        call.observer = self.instrumentation.start_call(
            operation.name,
            call.endpoint,
            params,
            stream=call.stream,
            request_id=request_id,
            payload=call.payload,
        )
        return call

    def aim(self, call: Call[Any, Any], member: Member) -> None:
        """Point ``call`` at ``member``: the body in its family's shape and its headers.

        Raises:
            InvalidRequestError: the member's family cannot carry this call (its route, or its schema).
        """
        endpoint = member.endpoint
        formatter, route, operation = endpoint.formatter, endpoint.route, call.operation
        if operation.name not in endpoint.operations:
            raise getattr(formatter, operation.unable)(route)
        stream = call.wants_stream and route in formatter.streaming_routes
        body = getattr(formatter, operation.build)(route, call.payload, call.params, stream=stream)
        call.body = encode_json(body)
        call.headers = call_headers(
            endpoint, call.request_id, call.deployment, call.extra_headers, call.params
        )
        call.member, call.endpoint, call.stream = member, endpoint, stream

    # --- send -------------------------------------------------------------------------------------------

    async def send(self, call: Call[ResponseT, Any]) -> ResponseT:
        """Send a non-streaming call with retries and return its parsed answer."""
        attempt = self._attempt_of(call)
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

    def read(self, call: Call[ResponseT, Any], response: Response, *, charge: bool = True) -> ResponseT:
        """Parse a 2xx answer, stamped with the server's request id (else ours), its headers and its endpoint,
        with any opening ``<think>`` block kept apart (unless the client keeps reasoning in the text); charge
        its tokens (``charge=False``: a stream charges what it read when it is released)."""
        endpoint = call.endpoint
        headers = response.headers
        request_id = headers.get("x-request-id") or call.request_id
        body = decode_json(response.content, endpoint.formatter.name)
        operation = call.operation
        answer: Any = getattr(endpoint.formatter, operation.read)(endpoint.route, body, request_id=request_id)
        if self.split_reasoning and operation.splits_reasoning:
            choices = answer.choices
            content = choices[0].message.content
            # Tested inline (a call per answer costs more than the test): most answers have one choice that
            # cannot open with a <think> block.
            if len(choices) > 1 or (content is not None and content.startswith(MAY_OPEN_THINK)):
                answer = split_reasoning(answer)
        # Stamped here, not by the formatter (whose hooks know nothing of pools or transports): C-level stores
        # on a frozen instance the formatter just built.
        object.__setattr__(answer, "endpoint", call.member.name)
        # The formatters' answers say 1 attempt already, which is every call's but a retried one.
        if call.attempts != 1:
            object.__setattr__(answer, "attempts", call.attempts)
        object.__setattr__(
            answer, "headers", headers if type(headers) is CIMultiDictProxy else read_only(headers)
        )
        usage = getattr(answer, "usage", None)
        limiter = call.member.limiter
        if charge and usage is not None and limiter.counts_tokens:
            limiter.charge(usage.total_tokens)
        return answer  # type: ignore[no-any-return]  # the operation's own response type

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
            if self.router.single:
                return await self.retry.call_after(first, lambda: attempt(call), describe=self._describe)
            return await self.retry.call_after(
                first,
                lambda: attempt(call),
                describe=lambda: _next_step(call),
                decide=lambda exc: fail_over(call, exc, self.router, self.retry, self.aim),
                wait=lambda exc: call.wait,
            )
        except AzureMLChatError as exc:
            failure = exc
        note_attempts(failure, call.attempts, time.monotonic() - call.started)
        # The caller's traceback starts here: the frames of the retry loop (tenacity's, our attempts') say
        # nothing a caller can act on, and the error's message and cause say what happened.
        raise failure.with_traceback(None)

    async def attempt(self, call: Call[Any, Any]) -> Response:
        """One attempt of a non-streaming call (twice when a credential's token was rejected)."""
        return cast(Response, await self._attempt_of(call)(call))

    async def open(self, call: Call[Any, Any]) -> StreamResponse:
        """One attempt to open a stream; the admission ticket stays in ``call.ticket`` until released."""
        return cast(StreamResponse, await self._attempt_of(call)(call))

    def _attempt_of(
        self, call: Call[Any, Any]
    ) -> Callable[[Call[Any, Any]], Awaitable[Response | StreamResponse]]:
        """The attempt function for ``call``: on a pool, routed; else the plain one unless a token may need
        refreshing."""
        if not self.router.single:
            return self._routed
        return self._once if call.endpoint.auth is None else self._refreshing

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
        limiter = call.member.limiter
        started = time.monotonic()
        if not call.attempts:
            call.started = started
        call.attempts += 1
        ticket = None if limiter.open else await limiter.admit()
        try:
            headers = call.headers if endpoint.auth is None else await authorized(call)
            # tuple.__new__ builds the named tuple in C (its generated __new__ is a Python call, on every attempt).
            request = _new_request(Request, ("POST", endpoint.url, headers, call.body, call.timeout))
            response: Response | StreamResponse
            if call.stream:
                response = opened = await self.transport.open(request)
                if opened.status_code >= 300:
                    raise await _stream_status_error(opened, call.request_id)
                if ticket is not None:
                    # The quota took it: the release after a cooldown need not wait for the stream's end.
                    limiter.answered(ticket)
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
        if self.router.single:  # a pool routes around a member whose quota is spent instead (_routed)
            limiter.note_answer(response.headers)  # remaining 0: the next calls wait for the reset
        if logger.isEnabledFor(logging.DEBUG):
            _log_attempt(call, str(response.status_code), started, response.headers.get("x-request-id"))
        call.observer.attempt(call.attempts, endpoint, response.status_code, None, started)
        return response

    async def _routed(self, call: Call[Any, Any]) -> Response | StreamResponse:
        """:meth:`_once` on a pool: waits out the chosen member's cooldown and another call's probe there (every
        member was set aside when it was chosen), claims its probe when one is due, and tells its health what
        the attempt met."""
        member = call.member
        health = member.health
        # A calm endpoint (the normal case) has nothing to wait for and no probe to claim.
        call.probe = probe = (
            await wait_for_turn(member, self.retry.max_retry_after) if health.probe_due else False
        )
        call.tried += (member,)
        health.in_flight += 1
        verdict = counted = False
        try:
            response = await (self._once(call) if call.endpoint.auth is None else self._refreshing(call))
            verdict = True
            if health.probe_due or health.failures:
                health.succeeded(probe=probe)
            note_headroom(member, response.headers)
            if call.stream:
                call.holding, counted = member, True  # in flight until release()
            return response
        except AzureMLChatError as exc:
            verdict = True
            record_failure(member, exc, probe=probe)
            raise
        finally:
            if not counted:
                health.in_flight -= 1
            if not verdict:
                health.release(probe)

    def _failed(self, call: Call[Any, Any], error: BaseException, started: float) -> None:
        if isinstance(error, AzureMLChatError):
            error.endpoint = call.member.name
        if isinstance(error, RateLimitError):
            call.member.limiter.throttled(error.retry_after)
        if logger.isEnabledFor(logging.DEBUG):
            if isinstance(error, APIStatusError):
                _log_attempt(call, str(error.status_code), started, error.request_id)
            else:
                _log_attempt(call, type(error).__name__, started, None)
        call.observer.attempt(
            call.attempts,
            call.endpoint,
            error.status_code if isinstance(error, APIStatusError) else None,
            error,
            started,
        )

    def release(
        self, call: Call[Any, Any], usage_tokens: int | None, *, broke: AzureMLChatError | None = None
    ) -> None:
        """A stream of ``call`` is done with its connection: hand back its ticket and charge its tokens.

        ``broke``: the stream broke before its first chunk, a connection failure of its endpoint (on a pool,
        its health hears it; the call fails over).
        """
        ticket, call.ticket = call.ticket, None
        limiter = call.member.limiter
        if ticket is not None:
            limiter.finish(ticket)
        if usage_tokens is not None:
            limiter.charge(usage_tokens)
        holding, call.holding = call.holding, None
        if holding is not None:
            holding.health.in_flight -= 1
            if broke is not None:
                holding.health.failed(broke, time.monotonic(), probe=False, retry_after=None)


def _next_step(call: Call[Any, Any]) -> str:
    """The opening of a pool call's one INFO line per retry: a failover names both endpoints."""
    next_member = call.member
    # No attempt was sent when the call found every endpoint set aside for too long (nothing tried yet).
    failed = call.tried[-1] if call.tried else next_member
    if next_member is failed:
        return f"Retrying on {failed.name}"
    return f"Failing over from {failed.name} to {next_member.name}"


def _log_attempt(call: Call[Any, Any], outcome: str, started: float, request_id: str | None) -> None:
    # The one DEBUG line per attempt (README "Logging and secrets"): never a header or a body, so never a
    # key or a token; the URL without its query.
    logger.debug(
        "POST %s -> %s in %.1f ms (attempt %d, request id %s)",
        call.endpoint.where,
        outcome,
        (time.monotonic() - started) * 1000,
        call.attempts,
        request_id or call.request_id,
    )


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
