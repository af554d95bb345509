"""``AsyncChatClient``: configuration, headers and retries around one formatter and one transport."""

from __future__ import annotations

import importlib
import itertools
import platform
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Literal, Protocol, Self, TypeVar, cast, overload

import aiohttp
import attrs
from yarl import URL

from . import _batch, _completions, _defaults
from ._auth import DEFAULT_SCOPE, TokenProvider
from ._batch import BatchResults, Conversation
from ._codec import decode_json, encode_json
from ._completion_stream import AsyncCompletionStream
from ._config import ClientConfig, Secret, Timeout, build_config, check_header_token, check_headers
from ._errors import (
    AuthenticationError,
    AzureMLChatError,
    ConfigurationError,
    InvalidRequestError,
    RateLimitError,
)
from ._messages import Message
from ._params import given, merge_params
from ._ratelimit import RateLimit, RateLimiter, Ticket
from ._responses import ChatResponse, CompletionResponse, Usage
from ._retry import RetryPolicy
from ._serialization import messages_from_input, plain_messages
from ._stream import AsyncChatStream
from ._transport import RawResponse, Transport
from ._version import __version__
from .formatters import ContentFormatter, Route
from .formatters._plain import plain_body_builder

__all__ = ["AsyncChatClient"]

T = TypeVar("T")
StreamT = TypeVar("StreamT")


class _Answer(Protocol):
    @property
    def usage(self) -> Usage | None: ...

    @property
    def request_id(self) -> str | None: ...


AnswerT = TypeVar("AnswerT", bound=_Answer)

_USER_AGENT = f"azureml-chat/{__version__} python/{platform.python_version()} aiohttp/{aiohttp.__version__}"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9-]{1,40}$")


class AsyncChatClient:
    """An async client for one Azure ML online endpoint (dedicated ``/score`` or OpenAI-compatible).

    Use it as ``async with AsyncChatClient(...) as client:`` or call :meth:`aclose` when done. One client
    holds one connection pool; share it between tasks instead of creating one per call.

    Args:
        endpoint_url: the scoring URL (``.../score``, ``.../v1/chat/completions``, ``.../chat/completions``,
            ``.../models/chat/completions``; ``?api-version=`` is kept). Default: ``AZUREML_ENDPOINT_URL``.
        api_key: the endpoint key. Default: ``AZUREML_ENDPOINT_API_KEY``. Held masked.
        endpoint_type: ``"dedicated"`` (alias ``"realtime"``) or ``"serverless"``. Default:
            ``AZUREML_ENDPOINT_API_TYPE``, else inferred from the URL.
        formatter: a family name (see :func:`available_formatters`) or a :class:`ContentFormatter`. Default:
            ``"llama"`` on ``/score``, ``"openai"`` on chat completions.
        deployment: sent as ``azureml-model-deployment``. Default: ``AZUREML_DEPLOYMENT_NAME``.
        timeout: seconds per attempt, or a :class:`Timeout`. Default: ``AZUREML_TIMEOUT``, else ``Timeout()``.
        max_retries: retries after the first attempt (default 2).
        model_kwargs: default model parameters, merged under each call's parameters (copied, never mutated).
        credential: an Entra ID credential instead of a key: an azure-identity (Async)TokenCredential, or a
            callable (sync or async) returning a token string or an object with ``token``/``expires_on``.
            Tokens are cached until shortly before expiry; a 401 refreshes the token and retries once.
        headers: extra headers for every request.
        session: an ``aiohttp.ClientSession`` you own; the client then never closes it.
        retry: a full :class:`RetryPolicy` (backoff, caps); ``max_retries`` overrides its count.
        auth_header: ``"bearer"`` (``Authorization: Bearer``), ``"api-key"``, or ``"both"``.
        extra_parameters: send ``extra-parameters: pass-through|drop|error`` (serverless unknown-parameter rule).
        max_connections: the connection pool size.
        allow_insecure_http: allow sending the key over ``http://`` to a host that is not this machine.
        max_event_bytes: the largest stream event accepted (a bigger one is a :class:`StreamError`).
        credential_scope: the scope tokens are requested for.
        rate_limit: client-wide pacing (:class:`RateLimit`): by default a 429 with a wait starts one cooldown
            for every call on the client; optional concurrency, requests-per-minute and tokens-per-minute limits.
    """

    def __init__(
        self,
        endpoint_url: str | None = None,
        api_key: str | Secret | None = None,
        *,
        endpoint_type: str | None = None,
        formatter: str | ContentFormatter | None = None,
        deployment: str | None = None,
        timeout: float | Timeout | None = None,
        max_retries: int | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        credential: Any = None,
        headers: Mapping[str, str] | None = None,
        session: aiohttp.ClientSession | None = None,
        retry: RetryPolicy | None = None,
        auth_header: str = "bearer",
        extra_parameters: str | None = None,
        max_connections: int | None = None,
        allow_insecure_http: bool = False,
        max_event_bytes: int = _defaults.MAX_SSE_EVENT_BYTES,
        credential_scope: str = DEFAULT_SCOPE,
        rate_limit: RateLimit | None = None,
    ) -> None:
        self._config: ClientConfig = build_config(
            endpoint_url=endpoint_url,
            api_key=api_key,
            endpoint_type=endpoint_type,
            formatter=formatter,
            deployment=deployment,
            timeout=timeout,
            max_retries=max_retries,
            retry=retry,
            model_kwargs=model_kwargs,
            credential=credential,
            headers=headers,
            auth_header=auth_header,
            extra_parameters=extra_parameters,
            max_connections=max_connections,
            allow_insecure_http=allow_insecure_http,
        )
        # What this client was built from (minus a caller's session), so adapters can build siblings of it.
        self._options: dict[str, Any] = {
            name: value
            for name, value in locals().items()
            if name not in ("self", "session") and name in _OPTION_NAMES
        }
        config = self._config
        self._options["api_key"] = config.api_key  # held masked, like the config's copy
        self._auth = TokenProvider(credential, credential_scope) if credential is not None else None
        if rate_limit is not None and not isinstance(rate_limit, RateLimit):
            raise ConfigurationError(f"rate_limit must be a RateLimit, got {type(rate_limit).__name__}")
        self._limiter = RateLimiter(rate_limit or RateLimit(), max_wait=self._config.retry.max_retry_after)
        self._url = URL(config.endpoint.url)
        self._transport = Transport(
            max_connections=config.max_connections, proxy=config.proxy, session=session
        )
        self._headers = _base_headers(config)
        # One id per call: a per-client random prefix plus a counter (cheaper than uuid4 per call), <= 40 chars.
        self._id_prefix = uuid.uuid4().hex[:24]
        self._ids = itertools.count(1)
        self._describe = f"POST {self._url.with_query(None)}"
        if isinstance(max_event_bytes, bool) or not isinstance(max_event_bytes, int) or max_event_bytes < 1:
            raise ConfigurationError(f"max_event_bytes must be a whole number >= 1, got {max_event_bytes!r}")
        self._max_event_bytes = max_event_bytes
        self._fresh_answers = _builds_fresh_answers(config.formatter)
        # The package's own formatters build their body for plain-dict messages from the dicts themselves.
        self._plain_body = plain_body_builder(config.formatter, config.endpoint.route)

    # --- public ----------------------------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        """The URL requests go to."""
        return self._config.endpoint.url

    @property
    def endpoint_type(self) -> str:
        """``"dedicated"`` or ``"serverless"``."""
        return self._config.endpoint.endpoint_type

    @property
    def formatter(self) -> ContentFormatter:
        """The model family's formatter."""
        return self._config.formatter

    @property
    def route(self) -> Route:
        """The dialect the endpoint URL speaks (``Route.SCORE`` or ``Route.CHAT_COMPLETIONS``)."""
        return self._config.endpoint.route

    @property
    def deployment(self) -> str | None:
        """The client-wide deployment (sent as ``azureml-model-deployment``), if any."""
        return self._config.deployment

    @property
    def timeout(self) -> Timeout:
        """The client-wide timeout of one attempt."""
        return self._config.timeout

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._transport.closed

    async def chat(
        self,
        messages: Iterable[Message | Mapping[str, Any]],
        *,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        stop: str | list[str] | None = None,
        seed: int | None = None,
        tools: list[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        response_format: Mapping[str, Any] | None = None,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        timeout: float | Timeout | None = None,
        deployment: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        **model_params: Any,
    ) -> ChatResponse:
        """Send a conversation and return the whole answer.

        Args:
            messages: message objects, or dicts in the OpenAI shape (``{"role": "user", "content": "hi"}``).
            temperature, top_p, max_tokens, stop, seed, tools, tool_choice, response_format, presence_penalty,
                frequency_penalty: the common model parameters (the formatter renames them as its family needs).
            timeout: this call's timeout (seconds or :class:`Timeout`); default: the client's.
            deployment: this call's deployment; default: the client's. Never sticks to later calls.
            extra_headers: headers for this call only.
            **model_params: any other model parameter, passed through as is.

        Raises:
            InvalidRequestError: bad messages or parameters (nothing was sent).
            APIStatusError: the endpoint answered non-2xx (after retries, for the retryable ones).
            APIConnectionError: the endpoint could not be reached (after retries).
            ResponseFormatError: a 2xx body that is not the formatter's shape.
        """
        body, headers, call_timeout = self._prepare(
            messages,
            _given(
                temperature,
                top_p,
                max_tokens,
                stop,
                seed,
                tools,
                tool_choice,
                response_format,
                presence_penalty,
                frequency_penalty,
            ),
            model_params,
            timeout,
            deployment,
            extra_headers,
            stream=False,
        )
        return await self._send(body, headers, call_timeout, self._config.formatter.parse_response)

    def stream(
        self,
        messages: Iterable[Message | Mapping[str, Any]],
        *,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        stop: str | list[str] | None = None,
        seed: int | None = None,
        tools: list[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        response_format: Mapping[str, Any] | None = None,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        timeout: float | Timeout | None = None,
        deployment: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        **model_params: Any,
    ) -> AsyncChatStream:
        """Send a conversation and stream the answer as :class:`ChatChunk` objects.

        Use it as ``async with client.stream(messages) as stream: async for chunk in stream: ...``; after the
        last chunk, ``stream.final_response()`` is the aggregated :class:`ChatResponse`. The arguments are
        those of :meth:`chat`; invalid ones raise here, before anything is sent. Opening the stream is retried
        like a call; a failure after that raises :class:`StreamError`. A route that cannot stream (classic
        ``/score``) yields the whole answer as one chunk.
        """
        config = self._config
        route = config.endpoint.route
        streams = route in config.formatter.streaming_routes
        body, headers, call_timeout = self._prepare(
            messages,
            _given(
                temperature,
                top_p,
                max_tokens,
                stop,
                seed,
                tools,
                tool_choice,
                response_format,
                presence_penalty,
                frequency_penalty,
            ),
            model_params,
            timeout,
            deployment,
            extra_headers,
            stream=streams,
        )
        return self._streamed(
            AsyncChatStream,
            body,
            headers,
            call_timeout,
            streams=streams,
            parse=config.formatter.parse_response,
        )

    @overload
    async def chat_many(
        self,
        conversations: Iterable[Conversation],
        *,
        concurrency: int = ...,
        return_exceptions: Literal[True] = ...,
        **params: Any,
    ) -> list[ChatResponse | AzureMLChatError]: ...
    @overload
    async def chat_many(
        self,
        conversations: Iterable[Conversation],
        *,
        concurrency: int = ...,
        return_exceptions: Literal[False],
        **params: Any,
    ) -> list[ChatResponse]: ...
    @overload
    async def chat_many(
        self,
        conversations: Iterable[Conversation],
        *,
        concurrency: int = ...,
        return_exceptions: bool,
        **params: Any,
    ) -> list[ChatResponse | AzureMLChatError]: ...
    async def chat_many(
        self,
        conversations: Iterable[Conversation],
        *,
        concurrency: int = _defaults.BATCH_CONCURRENCY,
        return_exceptions: bool = True,
        **params: Any,
    ) -> list[ChatResponse] | list[ChatResponse | AzureMLChatError]:
        """Send many conversations, at most ``concurrency`` at a time; one result per conversation, in order.

        The conversations are pulled lazily (a generator is read only as calls start), and every call is an
        ordinary :meth:`chat` call (retries, timeouts) with the same ``params``.

        Args:
            conversations: an iterable of conversations, each a list of messages or OpenAI-shaped dicts.
            concurrency: how many calls run at once (default 8). Keep it at or below ``max_connections``
                and what the deployment accepts (a dedicated endpoint answers 429 above
                2 x max_concurrent_requests_per_instance x instances in flight).
            return_exceptions: ``True``: a failed conversation's :class:`AzureMLChatError` takes its place in
                the list. ``False``: the first error raises, and the calls still in flight are cancelled.
            **params: :meth:`chat` arguments (model parameters, ``timeout=``, ``deployment=``,
                ``extra_headers=``), the same for every conversation.

        Returns:
            One :class:`ChatResponse` (or, with ``return_exceptions``, :class:`AzureMLChatError`) per
            conversation, in input order.

        Raises:
            InvalidRequestError: ``concurrency`` or ``conversations`` is unusable (nothing was sent).
            AzureMLChatError: with ``return_exceptions=False``, the first error of any conversation.

        Cancelling the call cancels every call in flight and waits for them; nothing is left running.
        """
        return await _batch.chat_many(
            self, conversations, concurrency=concurrency, return_exceptions=return_exceptions, **params
        )

    def chat_as_completed(
        self,
        conversations: Iterable[Conversation],
        *,
        concurrency: int = _defaults.BATCH_CONCURRENCY,
        **params: Any,
    ) -> BatchResults[ChatResponse]:
        """Send many conversations, at most ``concurrency`` at a time, and get each result as it finishes.

        Use it as ``async with client.chat_as_completed(conversations) as results: async for index, result
        in results: ...``. ``index`` is the conversation's position in the input; ``result`` is its
        :class:`ChatResponse` or its :class:`AzureMLChatError`. Leaving the block early (``break``, an
        exception, cancellation) cancels the calls still in flight. Memory stays bounded whatever the
        input's length: the input is pulled as calls start, and finished results wait for you.

        Args:
            conversations: an iterable of conversations, each a list of messages or OpenAI-shaped dicts.
            concurrency: how many calls run at once (default 8).
            **params: :meth:`chat` arguments, the same for every conversation.

        Raises:
            InvalidRequestError: ``concurrency`` or ``conversations`` is unusable (nothing was sent).
        """
        return _batch.chat_as_completed(self, conversations, concurrency=concurrency, **params)

    async def complete(
        self,
        prompt: str,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: str | list[str] | None = None,
        seed: int | None = None,
        timeout: float | Timeout | None = None,
        deployment: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        **model_params: Any,
    ) -> CompletionResponse:
        """Continue a text prompt on a text-generation endpoint and return the whole completion.

        Works where the family completes text: ``gpt2``, ``hf`` or ``dolly`` on ``/score``, and ``openai``
        on ``/v1/completions`` (or ``/completions``). The prompt is sent exactly as given.

        Args:
            prompt: the text to continue.
            max_tokens, temperature, top_p, stop, seed: the common model parameters (``max_tokens`` is sent
                as ``max_new_tokens`` on ``/score``).
            timeout: this call's timeout (seconds or :class:`Timeout`); default: the client's.
            deployment: this call's deployment; default: the client's. Never sticks to later calls.
            extra_headers: headers for this call only.
            **model_params: any other model parameter, passed through as is.

        Raises:
            InvalidRequestError: the family cannot complete text on this route (a chat family, or ``openai``
                on a chat URL), or a bad prompt or parameter (nothing was sent).
            APIStatusError: the endpoint answered non-2xx (after retries, for the retryable ones).
            APIConnectionError: the endpoint could not be reached (after retries).
            ResponseFormatError: a 2xx body that is not the formatter's shape.
        """
        return await _completions.complete(
            self,
            prompt,
            given(_completions.COMMON_PARAMS, (max_tokens, temperature, top_p, stop, seed)),
            model_params,
            timeout,
            deployment,
            extra_headers,
        )

    def stream_complete(
        self,
        prompt: str,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: str | list[str] | None = None,
        seed: int | None = None,
        timeout: float | Timeout | None = None,
        deployment: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        **model_params: Any,
    ) -> AsyncCompletionStream:
        """Continue a text prompt and stream the completion as :class:`CompletionChunk` objects (``.text``).

        Use it as ``async with client.stream_complete(prompt) as stream: async for chunk in stream: ...``;
        after the last chunk, ``stream.final_response()`` is the aggregated :class:`CompletionResponse`. The
        arguments are those of :meth:`complete`; invalid ones raise here, before anything is sent. Opening the
        stream is retried like a call; a failure after that raises :class:`StreamError`. ``/score`` cannot
        stream, so there the whole completion is one chunk.
        """
        return _completions.stream_complete(
            self,
            prompt,
            given(_completions.COMMON_PARAMS, (max_tokens, temperature, top_p, stop, seed)),
            model_params,
            timeout,
            deployment,
            extra_headers,
        )

    def to_langchain(self, **kwargs: Any) -> Any:
        """A LangChain chat model (``azureml_chat.langchain.AzureMLChatModel``) backed by this client.

        ``kwargs`` are model fields (for example default call parameters). Needs the ``langchain`` extra.

        Raises:
            ImportError: when langchain-core is not installed, naming the extra to install.
        """
        return _langchain_module().AzureMLChatModel.from_client(self, **kwargs)

    async def aclose(self) -> None:
        """Close the connection pool (a ``session=`` you passed in stays open). Safe to call twice."""
        await self._transport.aclose()

    async def __aenter__(self) -> Self:
        if self._transport.closed:
            raise RuntimeError("this client is closed; create a new one")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        config = self._config
        deployment = f", deployment={config.deployment!r}" if config.deployment else ""
        return (
            f"AsyncChatClient(endpoint_url={config.endpoint.url!r}, endpoint_type={config.endpoint.endpoint_type!r}, "
            f"formatter={config.formatter.name!r}{deployment}, api_key={config.api_key!r})"
        )

    # --- per call -------------------------------------------------------------------------------------

    def _prepare(
        self,
        messages: Iterable[Message | Mapping[str, Any]],
        common: Mapping[str, Any],
        model_params: Mapping[str, Any],
        timeout: float | Timeout | None,
        deployment: str | None,
        extra_headers: Mapping[str, str] | None,
        *,
        stream: bool,
    ) -> tuple[bytes, dict[str, str], Timeout]:
        """Check everything a call was given and build its body, headers and timeout (nothing is sent)."""
        config = self._config
        params = merge_params(config.model_kwargs, common, model_params)
        if self._plain_body is not None and (wire := plain_messages(messages)) is not None:
            # No message objects built only to be turned back into the same dicts (docs/performance.md).
            request = self._plain_body(wire, params, stream=stream)
        else:
            checked = messages_from_input(messages)
            request = config.formatter.build_request(config.endpoint.route, checked, params, stream=stream)
        return (
            encode_json(request),
            self._request_headers(deployment, extra_headers),
            self._call_timeout(timeout),
        )

    async def _send(
        self, body: bytes, headers: dict[str, str], timeout: Timeout, parse: Callable[[Route, Any], AnswerT]
    ) -> AnswerT:
        """POST with retries, ``parse`` the 2xx body, charge its tokens, and stamp the request id."""
        if self._auth is None and self._limiter.open:
            # The happy path: one direct await, no closure or wrapper; retries are set up only after a failure.
            try:
                raw = await self._transport.post(self._url, body, headers, timeout)
            except AzureMLChatError as exc:
                raw = await self._retry_after(exc, body, headers, timeout)
        else:
            raw = await self._post(body, headers, timeout)
        config = self._config
        response = parse(config.endpoint.route, decode_json(raw.body, config.formatter.name))
        if response.usage is not None:
            self._limiter.charge(response.usage.total_tokens)
        request_id = raw.headers.get("x-request-id") or headers["x-ms-client-request-id"]
        if self._fresh_answers:
            # The package's own parsers return a new object every call, still unseen by anyone: stamping it
            # costs a fraction of the copy that attrs.evolve makes (docs/performance.md).
            object.__setattr__(response, "request_id", request_id)
            return response
        # A formatter's own parser may hand out a shared answer: stamp a copy. Both answer types are frozen
        # attrs classes; mypy cannot see that through the TypeVar.
        return cast(AnswerT, attrs.evolve(cast(Any, response), request_id=request_id))

    def _streamed(
        self,
        stream_cls: Callable[..., StreamT],
        body: bytes,
        headers: dict[str, str],
        timeout: Timeout,
        *,
        streams: bool,
        parse: Callable[[Route, Any], Any],
    ) -> StreamT:
        """A stream of ``stream_cls`` that opens on first use (a plain request when the route cannot stream),
        holding its rate-limiter ticket until it is released."""
        limiter = self._limiter
        ticket: Ticket | None = None

        async def opener() -> Any:
            nonlocal ticket
            if not streams:
                return await self._send(body, headers, timeout, parse)
            response, ticket = await self._open_stream(body, headers, timeout)
            return response

        def on_release(usage: Usage | None) -> None:
            if ticket is not None:
                limiter.finish(ticket)
            if usage is not None and streams:  # a plain request was charged by _send already
                limiter.charge(usage.total_tokens)

        return stream_cls(
            opener,
            formatter=self._config.formatter,
            route=self._config.endpoint.route,
            request_id=headers["x-ms-client-request-id"],
            max_event_bytes=self._max_event_bytes,
            on_release=on_release,
        )

    async def _post(self, body: bytes, headers: dict[str, str], timeout: Timeout) -> RawResponse:
        """POST with retries; each attempt is admitted by the rate limiter and carries a fresh token."""
        return await self._config.retry.call(
            self._refreshing_on_401(self._post_attempt(body, headers, timeout)), describe=self._describe
        )

    async def _retry_after(
        self, failure: AzureMLChatError, body: bytes, headers: dict[str, str], timeout: Timeout
    ) -> RawResponse:
        """The retries of a happy-path first attempt that failed with ``failure`` (raised if not retryable)."""
        if isinstance(failure, RateLimitError):
            self._limiter.throttled(failure.retry_after)
        return await self._config.retry.call_after(
            failure, self._post_attempt(body, headers, timeout), describe=self._describe
        )

    def _post_attempt(
        self, body: bytes, headers: dict[str, str], timeout: Timeout
    ) -> Callable[[], Awaitable[RawResponse]]:
        """One POST attempt, admitted by the rate limiter, with a fresh token when there is a credential."""
        transport = self._transport
        limiter = self._limiter

        async def attempt() -> RawResponse:
            ticket = None if limiter.open else await limiter.admit()
            try:
                sent = headers if self._auth is None else await self._authorized(headers)
                return await transport.post(self._url, body, sent, timeout)
            except RateLimitError as exc:
                limiter.throttled(exc.retry_after)
                raise
            finally:
                if ticket is not None:
                    limiter.finish(ticket)

        return attempt

    async def _open_stream(
        self, body: bytes, headers: dict[str, str], timeout: Timeout
    ) -> tuple[aiohttp.ClientResponse, Ticket | None]:
        """Open a stream with retries; the admitting ticket stays with the stream until it is released."""
        transport = self._transport
        limiter = self._limiter

        async def attempt() -> tuple[aiohttp.ClientResponse, Ticket | None]:
            ticket = None if limiter.open else await limiter.admit()
            try:
                sent = headers if self._auth is None else await self._authorized(headers)
                return await transport.open_stream(self._url, body, sent, timeout), ticket
            except RateLimitError as exc:
                limiter.throttled(exc.retry_after)
                if ticket is not None:
                    limiter.finish(ticket)
                raise
            except BaseException:
                if ticket is not None:
                    limiter.finish(ticket)
                raise

        return await self._config.retry.call(self._refreshing_on_401(attempt), describe=self._describe)

    def _request_headers(
        self, deployment: str | None, extra_headers: Mapping[str, str] | None
    ) -> dict[str, str]:
        headers = dict(self._headers)
        headers["x-ms-client-request-id"] = f"{self._id_prefix}-{next(self._ids):x}"
        chosen = deployment if deployment is not None else self._config.deployment
        if chosen is not None:
            try:
                headers["azureml-model-deployment"] = check_header_token(chosen, "deployment")
            except ConfigurationError as exc:
                raise InvalidRequestError(str(exc)) from None
        if extra_headers:
            try:
                headers.update(check_headers(extra_headers, "extra_headers"))
            except ConfigurationError as exc:
                raise InvalidRequestError(str(exc)) from None
            if not _REQUEST_ID.match(headers["x-ms-client-request-id"]):
                raise InvalidRequestError("x-ms-client-request-id must be 1-40 letters, digits or '-'")
        return headers

    async def _authorized(self, headers: dict[str, str]) -> dict[str, str]:
        if self._auth is not None and "authorization" not in headers:
            return {**headers, "authorization": f"Bearer {await self._auth.token()}"}
        return headers

    def _refreshing_on_401(self, attempt: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
        """``attempt``, retried once with a fresh token when a credential's token was rejected."""
        auth = self._auth
        if auth is None:
            return attempt

        async def with_refresh() -> T:
            try:
                return await attempt()
            except AuthenticationError:
                auth.invalidate()
                return await attempt()

        return with_refresh

    def _call_timeout(self, timeout: float | Timeout | None) -> Timeout:
        if timeout is None:
            return self._config.timeout
        try:
            return Timeout.coerce(timeout)
        except ConfigurationError as exc:
            raise InvalidRequestError(str(exc)) from None


def _builds_fresh_answers(formatter: ContentFormatter) -> bool:
    """True when the formatter parses with the package's own code, which builds a new answer every call."""
    cls = type(formatter)
    return all(
        getattr(cls, name).__module__.startswith("azureml_chat.")
        for name in ("parse_response", "parse_completion")
    )


def _base_headers(config: ClientConfig) -> dict[str, str]:
    """Headers every request carries, built once per client."""
    headers = {
        "content-type": "application/json",
        "accept": "application/json",
        "user-agent": _USER_AGENT,
    }
    if config.api_key is not None:
        headers.update(_auth_headers(config.api_key, config.auth_header))
    headers.update(config.headers)
    return headers


def _auth_headers(key: Secret, mode: str) -> dict[str, str]:
    value = key.get_secret_value()
    headers = {}
    if mode in ("bearer", "both"):
        headers["authorization"] = f"Bearer {value}"
    if mode in ("api-key", "both"):
        headers["api-key"] = value
    return headers


_OPTION_NAMES = frozenset(
    (
        "endpoint_url",
        "api_key",
        "endpoint_type",
        "formatter",
        "deployment",
        "timeout",
        "max_retries",
        "model_kwargs",
        "credential",
        "headers",
        "retry",
        "auth_header",
        "extra_parameters",
        "max_connections",
        "allow_insecure_http",
        "max_event_bytes",
        "credential_scope",
        "rate_limit",
    )
)


def _langchain_module() -> Any:
    """``azureml_chat.langchain``, imported only when asked for (the core never needs langchain-core)."""
    try:
        import langchain_core  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            'to_langchain() needs langchain-core: pip install "azureml-chat[langchain]"', name=exc.name
        ) from exc
    return importlib.import_module("azureml_chat.langchain")


def _given(
    temperature: Any,
    top_p: Any,
    max_tokens: Any,
    stop: Any,
    seed: Any,
    tools: Any,
    tool_choice: Any,
    response_format: Any,
    presence_penalty: Any,
    frequency_penalty: Any,
) -> dict[str, Any]:
    """The common model parameters that were given (not None), by name.

    Spelled out rather than looped: this runs on every call, and ten plain tests cost a fifth of a
    comprehension over ten pairs (docs/performance.md).
    """
    common: dict[str, Any] = {}
    if temperature is not None:
        common["temperature"] = temperature
    if top_p is not None:
        common["top_p"] = top_p
    if max_tokens is not None:
        common["max_tokens"] = max_tokens
    if stop is not None:
        common["stop"] = stop
    if seed is not None:
        common["seed"] = seed
    if tools is not None:
        common["tools"] = tools
    if tool_choice is not None:
        common["tool_choice"] = tool_choice
    if response_format is not None:
        common["response_format"] = response_format
    if presence_penalty is not None:
        common["presence_penalty"] = presence_penalty
    if frequency_penalty is not None:
        common["frequency_penalty"] = frequency_penalty
    return common
