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

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, TypeVar, cast

from . import _defaults
from ._codec import decode_json, encode_json
from ._config import Timeout, check_header_token, check_headers
from ._endpoint import ResolvedEndpoint
from ._errors import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    AzureMLChatError,
    ConfigurationError,
    InvalidRequestError,
    RateLimitError,
    make_status_error,
    note_attempts,
)
from ._health import is_endpoint_fault
from ._instrument import CallObserver, Instrumentation
from ._operations import ChunkT, Operation
from ._ratelimit import Ticket
from ._retry import RetryPolicy, retry_decision
from ._retry_after import reset_after
from ._router import Member, Router
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
        self.tried: list[Member] = []
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
    ) -> None:
        self.router = router
        self.endpoint = router.first.endpoint
        self.transport = transport
        self.retry = retry
        self.instrumentation = instrumentation
        # One id per call: a per-pipeline random prefix plus a counter (cheaper than uuid4 per call). The
        # prefix leaves room for "-" and 15 hex digits of counter within the platform's limit.
        self._id_prefix = uuid.uuid4().hex[: _defaults.MAX_CLIENT_REQUEST_ID - 16]
        self._ids = itertools.count(1)
        self._describe = (
            f"POST {self.endpoint.where}" if router.single else f"a call over {len(router.members)} endpoints"
        )

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
            self._aim_anywhere(call)
        call.observer = self.instrumentation.start_call(
            operation.name, call.endpoint, params, stream=call.stream, request_id=request_id
        )
        return call

    def aim(self, call: Call[Any, Any], member: Member) -> None:
        """Point ``call`` at ``member``: the body in its family's shape and its headers.

        Raises:
            InvalidRequestError: the member's family cannot carry this call (its route, or its schema).
        """
        endpoint = member.endpoint
        formatter, route, operation = endpoint.formatter, endpoint.route, call.operation
        if not getattr(formatter, operation.able)(route):
            raise getattr(formatter, operation.unable)(route)
        stream = call.wants_stream and route in formatter.streaming_routes
        body = getattr(formatter, operation.build)(route, call.payload, call.params, stream=stream)
        call.body = encode_json(body)
        call.headers = _call_headers(endpoint, call.request_id, call.deployment, call.extra_headers)
        call.member, call.endpoint, call.stream = member, endpoint, stream

    def _aim_anywhere(self, call: Call[Any, Any]) -> None:
        """Aim a call at the best member that can carry it; when none can, raise the first one's reason."""
        refused: list[Member] = []
        first_error: InvalidRequestError | None = None
        while True:
            member, _ = self.router.choose(refused)
            if member in refused:
                assert first_error is not None
                raise first_error
            try:
                self.aim(call, member)
                return
            except InvalidRequestError as exc:
                first_error = first_error or exc
                refused.append(member)

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

    def read(self, call: Call[ResponseT, Any], response: Response) -> ResponseT:
        """Parse a 2xx answer, stamped with the server's request id (else ours), and charge its tokens."""
        endpoint = call.endpoint
        request_id = response.headers.get("x-request-id") or call.request_id
        body = decode_json(response.content, endpoint.formatter.name)
        answer: ResponseT = getattr(endpoint.formatter, call.operation.read)(
            endpoint.route, body, request_id=request_id
        )
        # Stamped here, not by the formatter (whose hooks know nothing of pools): one C-level store on a
        # frozen instance the formatter just built.
        object.__setattr__(answer, "endpoint", call.member.name)
        usage = getattr(answer, "usage", None)
        limiter = call.member.limiter
        if usage is not None and limiter.counts_tokens:
            limiter.charge(usage.total_tokens)
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
            if self.router.single:
                return await self.retry.call_after(first, lambda: attempt(call), describe=self._describe)
            return await self.retry.call_after(
                first,
                lambda: attempt(call),
                describe=self._describe,
                decide=lambda exc: self._fail_over(call, exc),
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

    def _fail_over(self, call: Call[Any, Any], error: BaseException) -> bool:
        """Whether a pool's call goes on after ``error``, and where: re-aims the call and sets ``call.wait``.

        What the retry rule retries goes to an untried member at once, else to a tried one after the usual
        backoff, else (none available) to the one back first, after its cooldown if that is within
        ``max_retry_after``. A 401/403/404, or a 429 asking more than ``max_retry_after``, goes to an untried
        member only. Nothing else is retried (400, 413, 422 are the request's fault).
        """
        decision = retry_decision(error, max_retry_after=self.retry.max_retry_after)
        if not (decision.retry or is_endpoint_fault(error) or isinstance(error, RateLimitError)):
            return False
        failed = call.member
        refused: list[Member] = []
        while True:
            member, wait = self.router.choose([*call.tried, *refused])
            if member in refused:
                return False
            fresh = wait == 0.0 and member not in call.tried
            if not fresh and not decision.retry:
                return False  # only somewhere it already failed: what the rule does not retry stops here
            if wait > self.retry.max_retry_after:
                return False
            if member is not call.member:
                try:
                    self.aim(call, member)
                except InvalidRequestError:
                    refused.append(member)  # its family cannot carry this call
                    continue
            call.wait = None if wait < 0 else wait
            if member is not failed:
                logger.info("Failing over from %s to %s after %s", failed.name, member.name, _outcome(error))
            return True

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

    async def _routed(self, call: Call[Any, Any]) -> Response | StreamResponse:
        """:meth:`_once` on a pool: waits out the chosen member's cooldown and another call's probe there (every
        member was set aside when it was chosen), claims its probe when one is due, and tells its health what
        the attempt met."""
        member = call.member
        health = member.health
        # A calm endpoint (the normal case) has nothing to wait for and no probe to claim.
        call.probe = probe = await self._wait_for_turn(member) if health.probe_due else False
        call.tried.append(member)
        health.in_flight += 1
        verdict = counted = False
        try:
            response = await (self._once(call) if call.endpoint.auth is None else self._refreshing(call))
            verdict = True
            if health.probe_due or health.failures:
                health.succeeded(probe=probe)
            headers = response.headers
            if headers.get(_REMAINING_REQUESTS) == "0" or headers.get(_REMAINING_TOKENS) == "0":
                member.spent_until = time.monotonic() + (
                    reset_after(headers) or _defaults.POOL_THROTTLE_COOLDOWN
                )
            if call.stream:
                call.holding, counted = member, True  # in flight until release()
            return response
        except AzureMLChatError as exc:
            verdict = True
            if health.failed(exc, time.monotonic(), probe=probe, retry_after=_cooldown_of(exc)):
                _log_set_aside(member, exc)
            raise
        finally:
            if not counted:
                health.in_flight -= 1
            if not verdict:
                health.release(probe)

    async def _wait_for_turn(self, member: Member) -> bool:
        """Wait until ``member`` takes calls (its cooldown over, and no other call's probe out there), up to
        ``max_retry_after``; returns whether this call is its probe.

        Raises:
            APIConnectionError: the member stays set aside longer than that (retried elsewhere, or raised).
        """
        health = member.health
        deadline = time.monotonic() + self.retry.max_retry_after
        while True:
            now = time.monotonic()
            if health.until > deadline:
                error = APIConnectionError(
                    f"every endpoint is set aside; {member.name} ({health.reason}) is back in "
                    f"{health.until - now:.1f} s, beyond max_retry_after ({self.retry.max_retry_after} s)",
                    url=member.endpoint.url,
                )
                error.endpoint = member.name
                raise error
            if health.until > now:
                await asyncio.sleep(health.until - now)
                continue
            if health.claim(now):
                return True
            if not health.probing or now >= deadline:
                return False
            # Another call's probe is out: its verdict says whether to go (a herd at half-open is what the
            # single probe is for). Health is plain data shared across loops and threads, so look again soon.
            await asyncio.sleep(_defaults.PROBE_POLL)

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
        call.observer.attempt(call.attempts, call.endpoint, error)

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


# A member whose answer says its quota is spent is left alone until the reset (routing prefers the others).
_REMAINING_REQUESTS = "x-ratelimit-remaining-requests"
_REMAINING_TOKENS = "x-ratelimit-remaining-tokens"


def _outcome(error: BaseException) -> str:
    return f"HTTP {error.status_code}" if isinstance(error, APIStatusError) else type(error).__name__


def _cooldown_of(error: AzureMLChatError) -> float | None:
    """How long a 429 asked its endpoint to be left alone (``Retry-After``, else Azure's reset headers)."""
    if not isinstance(error, RateLimitError):
        return None
    if error.retry_after is not None:
        return error.retry_after
    return reset_after(error.headers)


def _log_set_aside(member: Member, error: AzureMLChatError) -> None:
    if is_endpoint_fault(error):
        # Once per episode: the endpoint is set aside for minutes, so this does not repeat per call.
        logger.warning(
            "Endpoint %s answered %s: set aside as unhealthy (check its key, deployment and URL); calls go to "
            "the other endpoints",
            member.name,
            _outcome(error),
        )
    else:
        logger.info("Endpoint %s set aside: %s", member.name, member.health.reason)


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
    endpoint: ResolvedEndpoint,
    request_id: str,
    deployment: str | None,
    extra_headers: Mapping[str, str] | None,
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
