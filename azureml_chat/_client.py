"""``AsyncChatClient``: what a client can do. Each method checks its arguments, prepares a call and hands it
to the pipeline (``_pipeline.py``); nothing here knows a payload shape or does I/O. How the client is built,
shares its resources and closes is ``_base_client.py``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from typing import Any, Literal, overload

from . import _batch, _defaults
from ._base_client import BaseAsyncClient
from ._batch import BatchResults, Conversation
from ._config import Timeout
from ._errors import AzureMLChatError, InvalidRequestError
from ._messages import Message
from ._operations import CHAT, TEXT_COMPLETION
from ._params import check_completion_params, given, merge_params
from ._responses import ChatResponse, CompletionResponse
from ._serialization import wire_messages
from ._stream import AsyncChatStream, AsyncCompletionStream

__all__ = ["AsyncChatClient", "langchain_module"]


class AsyncChatClient(BaseAsyncClient):
    """An async client for one Azure ML online endpoint (dedicated ``/score`` or OpenAI-compatible).

    Use it as ``async with AsyncChatClient(...) as client:`` or call :meth:`aclose` when done. One client
    holds one connection pool; share it between tasks instead of creating one per call.

    Args:
        endpoint_url: the scoring URL (``.../score``, ``.../v1/chat/completions``, ``.../chat/completions``,
            ``.../models/chat/completions``). Your ``?api-version=`` is kept; an Azure AI Model Inference route
            (``.../chat/completions``, ``.../completions`` without ``/v1/``) without one gets the current GA
            version. Default: ``AZUREML_ENDPOINT_URL``.
        api_key: the endpoint key. Default: ``AZUREML_ENDPOINT_API_KEY``. Held masked.
        endpoint_type: ``"dedicated"`` (alias ``"realtime"``) or ``"serverless"``. Default:
            ``AZUREML_ENDPOINT_API_TYPE``, else inferred from the URL.
        formatter: a family name (see :func:`available_formatters`) or a :class:`ContentFormatter`. Default:
            ``"llama"`` on ``/score``, ``"openai"`` on chat completions.
        deployment: sent as ``azureml-model-deployment``. Default: ``AZUREML_DEPLOYMENT_NAME``.
        timeout: seconds per attempt, or a :class:`Timeout`. Default: ``AZUREML_TIMEOUT``, else ``Timeout()``.
        max_retries: retries after the first attempt (default 2).
        model_kwargs: default model parameters, merged under each call's parameters (copied, never mutated).
        credential: an Entra ID credential instead of a key (passing both is a :class:`ConfigurationError`;
            a key from ``AZUREML_ENDPOINT_API_KEY`` is ignored when a credential is given). Either an
            azure-identity ``AsyncTokenCredential`` (``await credential.get_token(scope)``) or
            ``TokenCredential`` (``credential.get_token(scope)``, run in a worker thread), or a callable: called
            with the scope (``credential_scope``, one string) when it takes a positional argument
            (``def cred(scope)``, ``def cred(*scopes)``, a bound ``get_token``), else with no arguments; an
            ``async def`` callable is awaited, a plain one runs in a worker thread (an awaitable it returns is
            awaited). It returns a token string (reused until a 401) or an object with ``token`` and
            ``expires_on`` (epoch seconds), such as azure-identity's ``AccessToken`` (reused until five
            minutes before expiry). A 401 drops the token, fetches a new one and retries once.
        headers: extra headers for every request.
        session: an ``aiohttp.ClientSession`` you own; the client then never closes it.
        retry: a full :class:`RetryPolicy` (backoff, caps); ``max_retries`` overrides its count.
        auth_header: ``"bearer"`` (``Authorization: Bearer``), ``"api-key"``, or ``"both"``.
        extra_parameters: send ``extra-parameters: pass-through|drop|error`` (serverless unknown-parameter rule)
            on every call. Default: none, except that a call with parameters outside the Azure AI Model Inference
            schema sends ``pass-through`` on that API's routes (so ``top_k=40`` reaches the model).
        max_connections: the connection pool size.
        allow_insecure_http: allow sending the key over ``http://`` to a host that is not this machine.
        max_event_bytes: the largest stream event accepted (a bigger one is a :class:`StreamError`).
        credential_scope: the scope tokens are requested for.
        rate_limit: client-wide pacing (:class:`RateLimit`): by default a 429 with a wait starts one cooldown
            for every call on the client; optional concurrency, requests-per-minute and tokens-per-minute limits.
        transport: what sends the requests: any object with the transport protocol (``send``, ``open``,
            ``aclose``), such as ``azureml_chat.testing.MockTransport`` in tests. Default: an aiohttp
            connection pool. A transport you pass stays yours: the client never closes it.
        split_reasoning: keep a chat answer's opening ``<think>...</think>`` block apart, as ``.reasoning``
            (``True``, the default), or leave the text exactly as the model wrote it (``False``). A
            ``reasoning_content`` field is read into ``.reasoning`` either way.
        tracing: report every call as OpenTelemetry GenAI spans and metrics through the global providers, when
            ``opentelemetry-api`` is installed (the ``otel`` extra); nothing is recorded until the application
            configures OpenTelemetry (docs/observability.md). ``False`` turns it off.
    """

    async def chat(
        self,
        messages: str | Iterable[Message | Mapping[str, Any]],
        *,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        max_completion_tokens: int | None = None,
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
            messages: a list of message objects or of dicts in the OpenAI shape
                (``{"role": "user", "content": "hi"}``), or a bare string, which is one user message
                (``await client.chat("Hi!")``).
            temperature, top_p, max_tokens, stop, seed, tools, tool_choice, response_format, presence_penalty,
                frequency_penalty: the common model parameters (the formatter renames them as its family needs).
                A ``stop`` string is sent as a one-item list on the chat and text completions routes.
            max_completion_tokens: the answer's length limit under the name o-series (reasoning) deployments take
                instead of ``max_tokens``; passing both is an :class:`InvalidRequestError`, as OpenAI answers 400
                to both. Sent as given (not part of the Azure AI Model Inference schema, so such a call
                carries ``extra-parameters: pass-through`` there).
            timeout: this call's timeout (seconds or :class:`Timeout`); default: the client's.
            deployment: this call's deployment; default: the client's. Never sticks to later calls.
            extra_headers: headers for this call only.
            **model_params: any other model parameter, passed through as is, unless its name is within a
                typo's reach of one of this method's keywords (``max_token``, ``temprature``): that raises
                :class:`InvalidRequestError` ("did you mean max_tokens?"). A parameter meant for the model as
                spelled goes in the client's ``model_kwargs=``, which is not checked by name. On an Azure AI
                Model Inference route (``.../chat/completions`` without ``/v1/``), a call with parameters
                outside that API's schema carries ``extra-parameters: pass-through`` unless the client's
                ``extra_parameters=`` (or a header) says otherwise.

        Raises:
            InvalidRequestError: bad messages or parameters, or a misspelt keyword (nothing was sent).
            ClientClosedError: the client was closed.
            APIStatusError: the endpoint answered non-2xx (after retries, for the retryable ones).
            APIConnectionError: the endpoint could not be reached (after retries).
            ResponseFormatError: a 2xx body that is not the formatter's shape.
        """
        common = given(
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
            max_completion_tokens,
        )
        pipeline = self._open_pipeline()
        call = pipeline.prepare(
            CHAT,
            wire_messages(messages),
            merge_params(self._config.model_kwargs, common, model_params),
            stream=False,
            timeout=self._config.timeout if timeout is None else self._call_timeout(timeout),
            deployment=deployment,
            extra_headers=extra_headers,
        )
        return await pipeline.send(call)

    def stream(
        self,
        messages: str | Iterable[Message | Mapping[str, Any]],
        *,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        max_completion_tokens: int | None = None,
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
        common = given(
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
            max_completion_tokens,
        )
        pipeline = self._open_pipeline()
        call = pipeline.prepare(
            CHAT,
            wire_messages(messages),
            merge_params(self._config.model_kwargs, common, model_params),
            stream=True,
            timeout=self._config.timeout if timeout is None else self._call_timeout(timeout),
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
            conversations: an iterable of conversations, each a list of messages or OpenAI-shaped dicts, or a
                bare string (one user message): ``chat_many(["q1", "q2"])``.
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
            InvalidRequestError: ``concurrency`` or ``conversations`` is unusable (a bare string is one
                prompt: call :meth:`chat`), or a keyword looks misspelt (nothing was sent). A conversation
                that is not one (a single dict or message, ``None``) is that item's error.
            ClientClosedError: the client was closed.
            AzureMLChatError: with ``return_exceptions=False``, the first error of any conversation.

        Cancelling the call cancels every call in flight and waits for them; nothing is left running.
        """
        self._open_pipeline()  # a closed client refuses the batch at once, not item by item
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
            conversations: an iterable of conversations, each a list of messages or OpenAI-shaped dicts, or a
                bare string (one user message).
            concurrency: how many calls run at once (default 8).
            **params: :meth:`chat` arguments, the same for every conversation.

        Raises:
            InvalidRequestError: ``concurrency`` or ``conversations`` is unusable, or a keyword looks
                misspelt (nothing was sent).
            ClientClosedError: the client was closed.
        """
        self._open_pipeline()  # a closed client refuses the batch at once, not item by item
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
            **model_params: any other model parameter, passed through as is; a name within a typo's reach of
                a keyword is refused, as in :meth:`chat`.

        Raises:
            InvalidRequestError: the family cannot complete text on this route (a chat family, or ``openai``
                on a chat URL), or a bad prompt or parameter (nothing was sent).
            ClientClosedError: the client was closed.
            APIStatusError: the endpoint answered non-2xx (after retries, for the retryable ones).
            APIConnectionError: the endpoint could not be reached (after retries).
            ResponseFormatError: a 2xx body that is not the formatter's shape.
        """
        common = given(temperature, top_p, max_tokens, stop, seed)
        pipeline = self._open_pipeline()
        call = pipeline.prepare(
            TEXT_COMPLETION,
            self._checked_prompt(prompt, model_params),
            merge_params(self._config.model_kwargs, common, model_params),
            stream=False,
            timeout=self._config.timeout if timeout is None else self._call_timeout(timeout),
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
        common = given(temperature, top_p, max_tokens, stop, seed)
        pipeline = self._open_pipeline()
        call = pipeline.prepare(
            TEXT_COMPLETION,
            self._checked_prompt(prompt, model_params),
            merge_params(self._config.model_kwargs, common, model_params),
            stream=True,
            timeout=self._config.timeout if timeout is None else self._call_timeout(timeout),
            deployment=deployment,
            extra_headers=extra_headers,
        )
        return AsyncCompletionStream(pipeline, call, max_event_bytes=self._config.max_event_bytes)

    def to_langchain(self, **kwargs: Any) -> Any:
        """A LangChain chat model (``azureml_chat.langchain.AzureMLChatModel``) backed by this client.

        ``kwargs`` are model fields (for example default call parameters). Needs the ``langchain`` extra.

        Raises:
            ImportError: when langchain-core is not installed, naming the extra to install.
        """
        return langchain_module().AzureMLChatModel.from_client(self, **kwargs)

    # --- internals ------------------------------------------------------------------------------------

    def _checked_prompt(self, prompt: str, model_params: Mapping[str, Any]) -> str:
        # Whether the endpoint's family can complete text at all is checked where the body is built
        # (Pipeline.aim): with several endpoints, that is per endpoint.
        if not isinstance(prompt, str):
            raise InvalidRequestError(f"prompt must be a string, got {type(prompt).__name__}")
        check_completion_params(self._config.model_kwargs, model_params)
        return prompt


def langchain_module() -> Any:
    """``azureml_chat.langchain``, imported only when asked for (the core never needs langchain-core)."""
    try:
        import langchain_core  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            'to_langchain() needs langchain-core: pip install "azureml-chat[langchain]"', name=exc.name
        ) from exc
    return importlib.import_module("azureml_chat.langchain")
