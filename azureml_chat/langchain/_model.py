"""``AzureMLChatModel``: a LangChain chat model backed by :class:`~azureml_chat.AsyncChatClient`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, model_validator

from .._client import AsyncChatClient
from .._config import Secret, Timeout
from .._endpoint import Endpoint
from .._errors import ConfigurationError
from .._options import ClientOptions
from .._retry import RetryPolicy
from .._sync import Client
from ..formatters import ContentFormatter, Route
from ._calls import (
    call_params,
    chat_result,
    check_route_takes,
    generation_chunk,
    identifying_params,
    last_generation_chunk,
    ls_params,
)
from ._clients import ClientPool
from ._convert import to_messages
from ._tools import (
    StructuredMethod,
    ToolLike,
    json_schema_format,
    output_parser,
    tool_choice_param,
    tool_definitions,
    with_parser,
)

__all__ = ["AzureMLChatModel"]


class AzureMLChatModel(BaseChatModel):
    """A LangChain chat model for an Azure ML online endpoint (dedicated ``/score`` or OpenAI-compatible).

    Build it from the same arguments as :class:`~azureml_chat.AsyncChatClient`, or from a client you already
    have with :meth:`from_client` (``client.to_langchain()``)::

        llm = AzureMLChatModel(endpoint_url="https://<ep>.<region>.inference.ml.azure.com/score", api_key=key)
        llm = AsyncChatClient(url, key).to_langchain(temperature=0.2)

    ``ainvoke``/``astream`` run natively on the running event loop; ``invoke``/``stream`` go through the
    synchronous :class:`~azureml_chat.Client` (its own loop thread), so they also work inside Jupyter.

    Resources: the model opens one connection pool per event loop it runs in, plus one for synchronous calls.
    A loop's pool is closed when that loop shuts down (``asyncio.run``, ``asyncio.Runner``, pytest-asyncio);
    call :meth:`close` (or :meth:`aclose`, or use ``with``/``async with``) when you are done to release the
    rest now. A client passed to :meth:`from_client` stays yours to close. All these clients share one rate
    limiter, so a ``rate_limit`` on the client given to :meth:`from_client` is enforced once across them.

    Connection fields (see :class:`~azureml_chat.AsyncChatClient`): ``endpoint_url``, ``api_key`` (held as a
    masked ``SecretStr``), ``endpoint_type``, ``formatter``, ``deployment``, ``timeout``, ``max_retries``,
    ``credential``, ``headers``, ``retry``, ``auth_header``, ``extra_parameters``, ``max_connections``,
    ``allow_insecure_http``, ``max_event_bytes``, ``credential_scope``, ``split_reasoning``, ``tracing``. The ``AZUREML_*``
    variables fill in what is not given, once, at construction.

    Call fields: ``model_name`` (alias ``model``; only names the model in metadata and traces unless you
    send it with ``model_kwargs``), ``temperature``, ``max_tokens`` (or ``max_completion_tokens``), ``top_p``,
    ``seed``, ``stop``, ``model_kwargs`` (any other parameter), ``streaming`` (``invoke`` streams),
    ``stream_usage``. A call's keyword arguments override them for that call only; nothing a call passes sticks.
    """

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        protected_namespaces=(),
        arbitrary_types_allowed=True,
        # pydantic quotes the constructor's input in its errors, and that input holds the key.
        hide_input_in_errors=True,
    )

    endpoint_url: str | None = None
    """The scoring URL; default ``AZUREML_ENDPOINT_URL``."""
    endpoints: list[Endpoint] | None = Field(default=None, exclude=True)
    """Several endpoints instead of ``endpoint_url`` (routing, failover; see ``AsyncChatClient``): then
    ``endpoint_url``, ``api_key``, ``endpoint_type``, ``formatter``, ``deployment`` and ``credential`` go on
    each ``Endpoint``."""
    api_key: SecretStr | None = None
    """The endpoint key; default ``AZUREML_ENDPOINT_API_KEY``."""
    endpoint_type: str | None = None
    """``"dedicated"`` or ``"serverless"``; default ``AZUREML_ENDPOINT_API_TYPE``, else from the URL."""
    formatter: str | ContentFormatter | None = None
    """The model family (``"llama"``, ``"mistral"``, ``"openai"`` ...) or a ``ContentFormatter``."""
    deployment: str | None = None
    """Sent as ``azureml-model-deployment``; default ``AZUREML_DEPLOYMENT_NAME``."""
    timeout: float | Timeout | None = None
    """Seconds per attempt, or a ``Timeout``; default ``AZUREML_TIMEOUT``, else the client's."""
    max_retries: int | None = None
    """Retries after the first attempt."""
    credential: Any = Field(default=None, repr=False, exclude=True)
    """An Entra ID credential instead of a key."""
    headers: dict[str, str] | None = Field(default=None, repr=False)
    """Extra headers for every request."""
    retry: RetryPolicy | None = None
    auth_header: str | None = None
    extra_parameters: str | None = None
    max_connections: int | None = None
    allow_insecure_http: bool = False
    max_event_bytes: int | None = None
    credential_scope: str | None = None
    split_reasoning: bool = True
    tracing: bool = True
    """Report calls as OpenTelemetry GenAI spans and metrics (see ``AsyncChatClient``)."""
    """Keep an opening ``<think>`` block apart as the reasoning (``additional_kwargs["reasoning_content"]``)."""

    model_name: str | None = Field(default=None, alias="model")
    """The model's name for metadata and tracing (the endpoint's own report wins in ``response_metadata``)."""
    temperature: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    """The answer's length limit for o-series (reasoning) deployments, instead of ``max_tokens`` (not both)."""
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] | None = None
    """Default stop sequences (a call's ``stop`` replaces them)."""
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Other default model parameters, under the fields above; copied per call, never changed."""
    streaming: bool = False
    """Whether ``invoke`` streams (LangChain's standard flag)."""
    stream_usage: bool = True
    """Ask OpenAI-compatible routes for a usage event when streaming (``stream_options.include_usage``);
    turn off for a server that rejects ``stream_options``."""

    _pool: ClientPool = PrivateAttr()
    _formatter: ContentFormatter = PrivateAttr()
    _route: Route = PrivateAttr()

    @model_validator(mode="after")
    def _connect(self) -> Self:
        # Resolve and check everything now, with the client's own rules; a ConfigurationError is a ValueError,
        # so it surfaces as a pydantic ValidationError, as LangChain users expect. The client built here is
        # the pool's template: every client the model uses is its sibling.
        template = AsyncChatClient(**self._client_arguments())
        for member in template._pipeline.router.members:
            endpoint = member.endpoint
            if not endpoint.formatter.can_chat(endpoint.route):
                raise ConfigurationError(
                    f"endpoint_url must end with a chat route for AzureMLChatModel: formatter "
                    f"{endpoint.formatter.name!r} completes text on {endpoint.url!r} and cannot chat there "
                    "(use AsyncChatClient.complete() for text completion)"
                )
        endpoint = template._endpoint
        if self.endpoints is None:
            self.endpoint_url = endpoint.url
            self.endpoint_type = endpoint.endpoint_type
            self.deployment = endpoint.deployment
            self.api_key = (
                None if endpoint.api_key is None else SecretStr(endpoint.api_key.get_secret_value())
            )
        self._pool = ClientPool(template, borrowed=False)
        self._formatter = endpoint.formatter
        self._route = endpoint.route
        return self

    @classmethod
    def from_client(cls, client: AsyncChatClient | Client, **fields: Any) -> Self:
        """A model with ``client``'s settings, calling through siblings of it that share its rate limiter, so a
        ``rate_limit`` given to ``client`` holds across all of them.

        The model closes what it opens and never closes ``client``. A ``Client`` serves the model's sync calls
        itself (no second loop thread); an ``AsyncChatClient`` serves async calls on its loop itself only when
        it runs on a ``session=`` of yours. Otherwise the model opens its own pools, so
        ``AsyncChatClient(url, key).to_langchain()`` leaves nothing open that nobody could close.

        Args:
            client: the client whose settings (and limiter) the model uses; it stays yours to close.
            **fields: call fields and LangChain fields (``temperature``, ``model_kwargs``, ``callbacks`` ...).

        Raises:
            TypeError: when ``fields`` holds a connection setting; those come from the client.
        """
        if not isinstance(client, AsyncChatClient | Client):
            raise TypeError(
                f"from_client() takes an AsyncChatClient or a Client, got {type(client).__name__}"
            )
        clashes = sorted(set(fields) & set(_CONNECTION_FIELDS))
        if clashes:
            raise TypeError(
                f"from_client(): {', '.join(clashes)} come from the client; build the client with them"
            )
        pool = ClientPool(client, borrowed=True)
        options: Mapping[str, Any] = pool.options
        shown = {name: value for name in _CONNECTION_FIELDS if (value := options.get(name)) is not None}
        if isinstance(shown.get("api_key"), Secret):
            shown["api_key"] = SecretStr(shown["api_key"].get_secret_value())
        model = cls(**shown, **fields)
        model._pool = pool
        return model

    # --- resources ---------------------------------------------------------------------------------------

    def close(self) -> None:
        """Release the connections this model opened (a client given to :meth:`from_client` stays open).

        The model stays usable: a later call opens new connections.
        """
        self._pool.close()

    async def aclose(self) -> None:
        """:meth:`close`, awaiting the running loop's connections."""
        await self._pool.aclose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # --- BaseChatModel ----------------------------------------------------------------------------------

    @property
    def _llm_type(self) -> str:
        return "azureml-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return identifying_params(self, formatter=self._formatter.name)

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return ls_params(self, stop, kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        wire = to_messages(messages)
        response = self._pool.sync_client().chat(wire, **self._call_params(stop, kwargs, stream=False))
        return chat_result(response, model_name=self.model_name)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        wire = to_messages(messages)
        params = self._call_params(stop, kwargs, stream=False)
        client = await self._pool.async_client()
        return chat_result(await client.chat(wire, **params), model_name=self.model_name)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        wire = to_messages(messages)
        params = self._call_params(stop, kwargs, stream=True)
        with self._pool.sync_client().stream(wire, **params) as stream:
            for event in stream:
                chunk = generation_chunk(event)
                if chunk is not None:
                    if run_manager is not None:
                        run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                    yield chunk
            final = stream.final_response()
        last = last_generation_chunk(final, request_id=stream.request_id, model_name=self.model_name)
        if run_manager is not None:
            run_manager.on_llm_new_token("", chunk=last)
        yield last

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        wire = to_messages(messages)
        params = self._call_params(stop, kwargs, stream=True)
        client = await self._pool.async_client()
        async with client.stream(wire, **params) as stream:
            async for event in stream:
                chunk = generation_chunk(event)
                if chunk is not None:
                    if run_manager is not None:
                        await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                    yield chunk
            final = stream.final_response()
        last = last_generation_chunk(final, request_id=stream.request_id, model_name=self.model_name)
        if run_manager is not None:
            await run_manager.on_llm_new_token("", chunk=last)
        yield last

    # --- tools and structured output ---------------------------------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[ToolLike],
        *,
        tool_choice: str | bool | Mapping[str, Any] | None = None,
        strict: bool | None = None,
        parallel_tool_calls: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer ``tools`` to the model on every call of the returned runnable.

        Args:
            tools: pydantic classes, TypedDicts, functions, ``BaseTool``s or OpenAI tool dicts.
            tool_choice: ``"auto"``, ``"none"``, ``"any"``/``"required"``/``True`` (must call a tool), a tool
                name (must call that one), or a chat-completions ``tool_choice`` dict.
            strict: ask for schema-exact arguments (``strict`` in each definition).
            parallel_tool_calls: allow or forbid several calls in one answer.
            **kwargs: other parameters to bind.

        Raises:
            InvalidRequestError: when this endpoint's route cannot carry tools (a classic ``/score``
                deployment); raised now rather than at the first call.
            ValueError: for a ``tool_choice`` naming a tool that is not bound.
        """
        definitions = tool_definitions(tools, strict=strict)
        if tool_choice is not None:
            names = [definition["function"]["name"] for definition in definitions]
            kwargs["tool_choice"] = tool_choice_param(tool_choice, names)
        if parallel_tool_calls is not None:
            kwargs["parallel_tool_calls"] = parallel_tool_calls
        check_route_takes(self._formatter, self._route, {"tools": definitions})
        return self.bind(tools=definitions, **kwargs)

    def with_structured_output(
        self,
        schema: Mapping[str, Any] | type,
        *,
        method: StructuredMethod = "json_schema",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | Any]:
        """A runnable that answers with data matching ``schema`` (a pydantic class gives instances).

        Args:
            schema: a pydantic class, a TypedDict, a JSON schema or an OpenAI function schema.
            method: ``"json_schema"`` (``response_format`` with the schema; vLLM's guided decoding and most
                OpenAI-compatible servers support it), ``"function_calling"`` (a forced tool call), or
                ``"json_mode"`` (``response_format`` ``json_object``; say in the prompt what JSON you want).
            include_raw: return ``{"raw": AIMessage, "parsed": ..., "parsing_error": ...}``.
            strict: ask the server for schema-exact output.

        Raises:
            InvalidRequestError: when this endpoint's route cannot carry ``response_format`` or tools (a
                classic ``/score`` deployment).
            ValueError: for an unknown ``method`` or an unexpected argument.
        """
        if kwargs:
            raise ValueError(f"with_structured_output() got unexpected arguments: {sorted(kwargs)}")
        traced = {"kwargs": {"method": method, "strict": strict}, "schema": schema}
        llm: Runnable[LanguageModelInput, AIMessage]
        if method == "function_calling":
            name = tool_definitions([schema], strict=strict)[0]["function"]["name"]
            llm = self.bind_tools(
                [schema], tool_choice=name, strict=strict, ls_structured_output_format=traced
            )
        elif method in ("json_schema", "json_mode"):
            response_format = (
                json_schema_format(schema, strict=strict)
                if method == "json_schema"
                else {"type": "json_object"}
            )
            check_route_takes(self._formatter, self._route, {"response_format": response_format})
            llm = self.bind(response_format=response_format, ls_structured_output_format=traced)
        else:
            raise ValueError(
                f"method must be 'json_schema', 'function_calling' or 'json_mode', got {method!r}"
            )
        return with_parser(llm, output_parser(schema, method), include_raw=include_raw)

    # --- internals ---------------------------------------------------------------------------------------

    def _client_arguments(self) -> dict[str, Any]:
        arguments = {name: value for name in _CONNECTION_FIELDS if (value := getattr(self, name)) is not None}
        if self.api_key is not None:
            arguments["api_key"] = self.api_key.get_secret_value()
        return arguments

    def _call_params(
        self, stop: list[str] | None, kwargs: Mapping[str, Any], *, stream: bool
    ) -> dict[str, Any]:
        can_stream_usage = stream and self._route in self._formatter.streaming_routes
        return call_params(self, stop, kwargs, can_stream_usage=can_stream_usage)


# The fields that configure the connection: the model's fields that are client options (``session`` and
# ``transport`` are not fields: a session belongs to one event loop, and a model meets many). ``model_kwargs``
# is a call field here: the model merges it into each call's parameters itself.
_CONNECTION_FIELDS = tuple(
    name
    for name in ClientOptions.__annotations__
    if name in AzureMLChatModel.model_fields and name != "model_kwargs"
)
