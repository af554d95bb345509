"""``AsyncChatClient``: the public face of one endpoint. Each method checks its arguments, prepares a call and
hands it to the pipeline (``_pipeline.py``); nothing here knows a payload shape or does I/O."""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Literal, Self, Unpack, overload

import aiohttp

from . import _batch, _defaults
from ._auth import DEFAULT_SCOPE
from ._batch import BatchResults, Conversation
from ._config import ClientConfig, Secret, Timeout, build_config
from ._endpoint import Endpoint, build_endpoint
from ._errors import AzureMLChatError, ConfigurationError, InvalidRequestError
from ._instrument import NO_INSTRUMENTATION
from ._messages import Message
from ._operations import CHAT, TEXT_COMPLETION
from ._options import ClientOptions
from ._params import merge_params
from ._pipeline import Pipeline
from ._ratelimit import RateLimit, RateLimiter
from ._responses import ChatResponse, CompletionResponse
from ._retry import RetryPolicy
from ._serialization import messages_from_input, messages_to_wire, plain_messages
from ._stream import AsyncChatStream, AsyncCompletionStream
from ._transport import AiohttpTransport, AsyncTransport
from .formatters import ContentFormatter, Route

__all__ = ["AsyncChatClient"]

# Keys a completion call sets itself; passing them as model parameters would break the call's contract.
_COMPLETION_RESERVED = {
    "prompt": "pass the prompt as the first argument",
    "messages": "complete() takes a prompt; call chat() for messages",
    "stream": "call stream_complete(...) to stream",
}


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
        transport: what sends the requests: any object with the transport protocol (``send``, ``open``,
            ``aclose``), such as ``azureml_chat.testing.MockTransport`` in tests. Default: an aiohttp
            connection pool. A transport you pass stays yours: the client never closes it.
    """

    _options: ClientOptions
    _config: ClientConfig
    _pipeline: Pipeline
    _owns_transport: bool
    _closed: bool

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
        transport: AsyncTransport | None = None,
    ) -> None:
        self._setup(
            {
                "endpoint_url": endpoint_url,
                "api_key": api_key,
                "endpoint_type": endpoint_type,
                "formatter": formatter,
                "deployment": deployment,
                "timeout": timeout,
                "max_retries": max_retries,
                "model_kwargs": model_kwargs,
                "credential": credential,
                "headers": headers,
                "session": session,
                "retry": retry,
                "auth_header": auth_header,
                "extra_parameters": extra_parameters,
                "max_connections": max_connections,
                "allow_insecure_http": allow_insecure_http,
                "max_event_bytes": max_event_bytes,
                "credential_scope": credential_scope,
                "rate_limit": rate_limit,
                "transport": transport,
            },
            parent=None,
            own_transport=True,
        )

    def _setup(self, options: ClientOptions, *, parent: AsyncChatClient | None, own_transport: bool) -> None:
        """Resolve ``options``; share the transport (unless ``own_transport``) and limiter of ``parent``."""
        self._options = options
        endpoint = build_endpoint(
            url=options.get("endpoint_url"),
            api_key=options.get("api_key"),
            endpoint_type=options.get("endpoint_type"),
            formatter=options.get("formatter"),
            deployment=options.get("deployment"),
            credential=options.get("credential"),
            credential_scope=options.get("credential_scope", DEFAULT_SCOPE),
            headers=options.get("headers"),
            auth_header=options.get("auth_header", "bearer"),
            extra_parameters=options.get("extra_parameters"),
            allow_insecure_http=options.get("allow_insecure_http", False),
        )
        self._config = build_config(
            timeout=options.get("timeout"),
            max_retries=options.get("max_retries"),
            retry=options.get("retry"),
            model_kwargs=options.get("model_kwargs"),
            max_connections=options.get("max_connections"),
            max_event_bytes=options.get("max_event_bytes", _defaults.MAX_SSE_EVENT_BYTES),
        )
        rate_limit = options.get("rate_limit")
        if rate_limit is not None and not isinstance(rate_limit, RateLimit):
            raise ConfigurationError(f"rate_limit must be a RateLimit, got {type(rate_limit).__name__}")
        transport, session = options.get("transport"), options.get("session")
        if transport is not None and session is not None:
            raise ConfigurationError(
                "pass transport= or session=, not both (a session is one transport's pool)"
            )
        if transport is not None and not isinstance(transport, AsyncTransport):
            raise ConfigurationError(
                f"transport must have async send(), open() and aclose() methods, got {type(transport).__name__}"
            )
        # What a sibling shares with its parent: the limiter always (one RateLimit is enforced once), unless
        # it was given its own; the transport unless it needs its own pool (another loop, another size).
        if parent is not None and rate_limit is parent._options.get("rate_limit"):
            limiter = parent._pipeline.limiter
        else:
            limiter = RateLimiter(rate_limit or RateLimit(), max_wait=self._config.retry.max_retry_after)
        self._owns_transport = transport is None and (parent is None or own_transport)
        if transport is None and not self._owns_transport:
            assert parent is not None
            transport = parent._pipeline.transport
        self._closed = False
        self._pipeline = Pipeline(
            endpoint=endpoint,
            transport=transport
            or AiohttpTransport(max_connections=self._config.max_connections, session=session),
            limiter=limiter,
            retry=self._config.retry,
            instrumentation=NO_INSTRUMENTATION,
        )

    # --- public ----------------------------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        """The URL requests go to."""
        return self._endpoint.url

    @property
    def endpoint_type(self) -> str:
        """``"dedicated"`` or ``"serverless"``."""
        return self._endpoint.endpoint_type

    @property
    def formatter(self) -> ContentFormatter:
        """The model family's formatter."""
        return self._endpoint.formatter

    @property
    def route(self) -> Route:
        """The dialect the endpoint URL speaks (``Route.SCORE`` or ``Route.CHAT_COMPLETIONS``)."""
        return self._endpoint.route

    @property
    def deployment(self) -> str | None:
        """The client-wide deployment (sent as ``azureml-model-deployment``), if any."""
        return self._endpoint.deployment

    @property
    def timeout(self) -> Timeout:
        """The client-wide timeout of one attempt."""
        return self._config.timeout

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called (on this client, or on the one whose pool it shares)."""
        transport = self._pipeline.transport
        return self._closed or bool(getattr(transport, "closed", False))

    @property
    def _endpoint(self) -> Endpoint:
        return self._pipeline.endpoint

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
        common = _given(
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
        )
        pipeline = self._pipeline
        call = pipeline.prepare(
            CHAT,
            _wire_messages(messages),
            merge_params(self._config.model_kwargs, common, model_params),
            stream=False,
            timeout=self._call_timeout(timeout),
            deployment=deployment,
            extra_headers=extra_headers,
        )
        return await pipeline.send(call)

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
        those of :meth:`chat`; invalid ones raise here, before anything is sent. Failures before the first
        chunk reached you (connecting, a retryable status, a connection that breaks before the first event)
        are retried like a call; after it, nothing is retried and a failure raises :class:`StreamError`. A
        route that cannot stream (classic ``/score``) yields the whole answer as one chunk.
        """
        common = _given(
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
        )
        pipeline = self._pipeline
        call = pipeline.prepare(
            CHAT,
            _wire_messages(messages),
            merge_params(self._config.model_kwargs, common, model_params),
            stream=self._endpoint.streams,
            timeout=self._call_timeout(timeout),
            deployment=deployment,
            extra_headers=extra_headers,
        )
        return AsyncChatStream(pipeline, call, max_event_bytes=self._config.max_event_bytes)

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
        common = _given_completion(max_tokens, temperature, top_p, stop, seed)
        pipeline = self._pipeline
        call = pipeline.prepare(
            TEXT_COMPLETION,
            self._checked_prompt(prompt, model_params),
            merge_params(self._config.model_kwargs, common, model_params),
            stream=False,
            timeout=self._call_timeout(timeout),
            deployment=deployment,
            extra_headers=extra_headers,
        )
        return await pipeline.send(call)

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
        arguments are those of :meth:`complete`; invalid ones raise here, before anything is sent. Retries
        follow :meth:`stream`'s rule. ``/score`` cannot stream, so there the whole completion is one chunk.
        """
        common = _given_completion(max_tokens, temperature, top_p, stop, seed)
        pipeline = self._pipeline
        call = pipeline.prepare(
            TEXT_COMPLETION,
            self._checked_prompt(prompt, model_params),
            merge_params(self._config.model_kwargs, common, model_params),
            stream=self._endpoint.streams,
            timeout=self._call_timeout(timeout),
            deployment=deployment,
            extra_headers=extra_headers,
        )
        return AsyncCompletionStream(pipeline, call, max_event_bytes=self._config.max_event_bytes)

    def with_options(self, **changes: Unpack[ClientOptions]) -> Self:
        """A sibling client: this one's configuration with ``changes`` (any constructor argument).

        The sibling shares this client's connection pool and rate limiter: one :class:`RateLimit` is enforced
        once across a client and all its siblings. Close the client you built; its siblings need no closing
        (closing one does not close the shared pool). A sibling given its own ``rate_limit``, ``transport``,
        ``session`` or ``max_connections`` gets its own limiter or pool.

        Example: ``await client.with_options(timeout=5, max_retries=0).chat(messages)``.

        Raises:
            ConfigurationError: for an unknown option or an invalid value (as the constructor would).
        """
        unknown = sorted(set(changes) - set(ClientOptions.__annotations__))
        if unknown:
            raise ConfigurationError(
                f"with_options() got unknown option(s) {', '.join(unknown)}; it takes the constructor's arguments"
            )
        own_pool = any(name in changes for name in ("transport", "session", "max_connections"))
        return self._sibling({**self._options, **changes}, own_transport=own_pool)

    def to_langchain(self, **kwargs: Any) -> Any:
        """A LangChain chat model (``azureml_chat.langchain.AzureMLChatModel``) backed by this client.

        ``kwargs`` are model fields (for example default call parameters). Needs the ``langchain`` extra.

        Raises:
            ImportError: when langchain-core is not installed, naming the extra to install.
        """
        return langchain_module().AzureMLChatModel.from_client(self, **kwargs)

    async def aclose(self) -> None:
        """Close the connection pool (a ``session=`` or ``transport=`` you passed in stays open, and so does
        the pool of the client this one is a sibling of). Safe to call twice."""
        self._closed = True
        if self._owns_transport:
            await self._pipeline.transport.aclose()

    async def __aenter__(self) -> Self:
        if self.closed:
            raise RuntimeError("this client is closed; create a new one")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        endpoint = self._endpoint
        deployment = f", deployment={endpoint.deployment!r}" if endpoint.deployment else ""
        return (
            f"{type(self).__name__}(endpoint_url={endpoint.url!r}, endpoint_type={endpoint.endpoint_type!r}, "
            f"formatter={endpoint.formatter.name!r}{deployment}, api_key={endpoint.api_key!r})"
        )

    # --- internals ------------------------------------------------------------------------------------

    def _sibling(self, options: ClientOptions, *, own_transport: bool) -> Self:
        """A client built from ``options`` that shares this one's limiter, and its transport unless
        ``own_transport`` (a client for another event loop needs its own pool)."""
        sibling = type(self).__new__(type(self))
        sibling._setup(options, parent=self, own_transport=own_transport)
        return sibling

    def _checked_prompt(self, prompt: str, model_params: Mapping[str, Any]) -> str:
        endpoint = self._endpoint
        if not endpoint.formatter.can_complete(endpoint.route):
            raise endpoint.formatter.cannot_complete(endpoint.route)
        if not isinstance(prompt, str):
            raise InvalidRequestError(f"prompt must be a string, got {type(prompt).__name__}")
        for name in sorted(
            (model_params.keys() | self._config.model_kwargs.keys()) & _COMPLETION_RESERVED.keys()
        ):
            raise InvalidRequestError(f"{name!r} is not a model parameter: {_COMPLETION_RESERVED[name]}")
        return prompt

    def _call_timeout(self, timeout: float | Timeout | None) -> Timeout:
        if timeout is None:
            return self._config.timeout
        try:
            return Timeout.coerce(timeout)
        except ConfigurationError as exc:
            raise InvalidRequestError(str(exc)) from None


def _wire_messages(messages: Iterable[Message | Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The messages in the OpenAI wire shape, checked. Plain ``{"role", "content"}`` dicts already are: the
    caller's list is used as is (formatters never change it), with no message objects built in between."""
    wire = plain_messages(messages)
    if wire is not None:
        return wire
    return messages_to_wire(messages_from_input(messages))


def langchain_module() -> Any:
    """``azureml_chat.langchain``, imported only when asked for (the core never needs langchain-core)."""
    try:
        import langchain_core  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            'to_langchain() needs langchain-core: pip install "azureml-chat[langchain]"', name=exc.name
        ) from exc
    return importlib.import_module("azureml_chat.langchain")


def _given_completion(max_tokens: Any, temperature: Any, top_p: Any, stop: Any, seed: Any) -> dict[str, Any]:
    """The common completion parameters that were given (not None), by name."""
    return _given(temperature, top_p, max_tokens, stop, seed, None, None, None, None, None)


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
