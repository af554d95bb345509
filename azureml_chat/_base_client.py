"""How a client is built, what its siblings share, and how it closes: the half of ``AsyncChatClient`` that
is configuration and lifecycle (the calls are in ``_client.py``).

A client resolves its options once into an :class:`~azureml_chat._endpoint.ResolvedEndpoint` (where and how requests
go) and a ``ClientConfig`` (client-wide settings), and builds one :class:`~azureml_chat._pipeline.Pipeline`
around a transport and a rate limiter. ``with_options`` makes a sibling that shares both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, NoReturn, Self, Unpack

import aiohttp

from . import _defaults
from ._auth import DEFAULT_SCOPE
from ._config import ClientConfig, Secret, Timeout, build_config
from ._endpoint import Endpoint, ResolvedEndpoint, build_endpoint
from ._errors import ClientClosedError, ConfigurationError, InvalidRequestError
from ._instrument import NO_INSTRUMENTATION, Instrumentation
from ._options import ClientOptions
from ._pipeline import Pipeline
from ._ratelimit import RateLimit, RateLimiter
from ._retry import RetryPolicy
from ._router import EndpointStatus, Member, Router
from ._transport import AiohttpTransport, AsyncTransport
from .formatters import ContentFormatter, Route

__all__ = ["BaseAsyncClient"]


def not_picklable(client: object) -> TypeError:
    """What pickling a client raises: it holds a connection pool bound to its event loop, which no other process
    can use; its options (endpoints, ``RateLimit``, ``RetryPolicy``, ``Timeout``) are plain data and pickle."""
    return TypeError(
        f"a {type(client).__name__} cannot be pickled (it holds a connection pool): send its options to the "
        "worker and build a client there, with credential= made in the worker by a picklable factory "
        "such as functools.partial(DefaultAzureCredential); azureml_chat.ray.map_chat does this for you"
    )


class BaseAsyncClient:
    """Construction, siblings and closing, shared by every async client; see :class:`AsyncChatClient` for the
    arguments."""

    _options: ClientOptions
    _config: ClientConfig
    _pipeline: Pipeline
    _owns_transport: bool
    _own_limiters: list[RateLimiter]
    _closed: bool

    def __init__(
        self,
        endpoint_url: str | None = None,
        api_key: str | Secret | None = None,
        *,
        endpoints: Sequence[Endpoint] | None = None,
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
        split_reasoning: bool = True,
        tracing: bool = True,
    ) -> None:
        self._setup(
            {
                "endpoint_url": endpoint_url,
                "api_key": api_key,
                "endpoints": endpoints,
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
                "split_reasoning": split_reasoning,
                "tracing": tracing,
            },
            parent=None,
            own_transport=True,
        )

    def _setup(self, options: ClientOptions, *, parent: BaseAsyncClient | None, own_transport: bool) -> None:
        """Resolve ``options``; share the transport (unless ``own_transport``) and router (so the limiters and
        the endpoints' health) of ``parent``."""
        self._options = options
        self._config = build_config(
            timeout=options.get("timeout"),
            max_retries=options.get("max_retries"),
            retry=options.get("retry"),
            model_kwargs=options.get("model_kwargs"),
            max_connections=options.get("max_connections"),
            max_event_bytes=options.get("max_event_bytes", _defaults.MAX_SSE_EVENT_BYTES),
        )
        split_reasoning, tracing = options.get("split_reasoning", True), options.get("tracing", True)
        if not isinstance(split_reasoning, bool):
            raise ConfigurationError(f"split_reasoning must be True or False, got {split_reasoning!r}")
        if not isinstance(tracing, bool):
            raise ConfigurationError(f"tracing must be True or False, got {tracing!r}")
        transport, session = options.get("transport"), options.get("session")
        if transport is not None and session is not None:
            raise ConfigurationError(
                "pass transport= or session=, not both (a session is one transport's pool)"
            )
        if transport is not None and not isinstance(transport, AsyncTransport):
            raise ConfigurationError(
                f"transport must have async send(), open() and aclose() methods, got {type(transport).__name__}"
            )
        # What a sibling shares with its parent: the transport unless it needs its own pool (another loop,
        # another size), and the router (limiters, health) unless it routes differently (see _router_for).
        router = _router_for(options, self._config, parent)
        self._owns_transport = transport is None and (parent is None or own_transport)
        # The limiters this client made (not shared with its parent): closing it lets go of their stores.
        inherited = () if parent is None else tuple(m.limiter for m in parent._pipeline.router.members)
        self._own_limiters = [m.limiter for m in router.members if m.limiter not in inherited]
        if transport is None and not self._owns_transport:
            assert parent is not None
            transport = parent._pipeline.transport
        self._closed = False
        self._pipeline = Pipeline(
            router=router,
            transport=transport
            or AiohttpTransport(max_connections=self._config.max_connections, session=session),
            retry=self._config.retry,
            instrumentation=_instrumentation(tracing, pooled=not router.single),
            split_reasoning=split_reasoning,
        )

    # --- configuration ----------------------------------------------------------------------------------------

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
    def _endpoint(self) -> ResolvedEndpoint:
        return self._pipeline.endpoint

    def endpoint_status(self) -> dict[str, EndpointStatus]:
        """Each endpoint's standing, by name: whether calls are routed there now (``healthy``), until when
        it is set aside (``cooling_until``, ``time.time()`` seconds) and why, its failures in a row and its
        attempts in flight. A client over one URL reports that one endpoint, always healthy (it never
        routes around it)."""
        return self._pipeline.router.status()

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

    async def aclose(self) -> None:
        """Close the connection pool (a ``session=`` or ``transport=`` you passed in stays open, and so does
        the pool of the client this one is a sibling of). Safe to call twice."""
        self._closed = True
        for limiter in self._own_limiters:
            await limiter.aclose()
        if self._owns_transport:
            await self._pipeline.transport.aclose()

    async def __aenter__(self) -> Self:
        if self.closed:
            raise ClientClosedError()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __reduce__(self) -> NoReturn:
        raise not_picklable(self)

    def __enter__(self) -> NoReturn:
        # A plain `with` on an async client is a slip worth naming; without these two, Python says only that
        # the object "does not support the context manager protocol".
        raise TypeError(
            f"{type(self).__name__} is async: use 'async with {type(self).__name__}(...) as client:', "
            "or the sync Client with a plain 'with Client(...) as client:'"
        )

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:  # pragma: no cover - never reached: __enter__ always raises
        return None

    def __repr__(self) -> str:
        endpoint = self._endpoint
        deployment = f", deployment={endpoint.deployment!r}" if endpoint.deployment else ""
        return (
            f"{type(self).__name__}(endpoint_url={endpoint.url!r}, endpoint_type={endpoint.endpoint_type!r}, "
            f"formatter={endpoint.formatter.name!r}{deployment}, api_key={endpoint.api_key!r})"
        )

    # --- internals ------------------------------------------------------------------------------------

    def _open_pipeline(self) -> Pipeline:
        """The pipeline, for a call about to be prepared.

        Raises:
            ClientClosedError: this client was closed (a sibling of a closed client finds its pool closed
                when it sends, in the transport).
        """
        if self._closed:
            raise ClientClosedError()
        return self._pipeline

    def _sibling(self, options: ClientOptions, *, own_transport: bool) -> Self:
        """A client built from ``options`` that shares this one's limiter, and its transport unless
        ``own_transport`` (a client for another event loop needs its own pool)."""
        sibling = type(self).__new__(type(self))
        sibling._setup(options, parent=self, own_transport=own_transport)
        return sibling

    def _call_timeout(self, timeout: float | Timeout | None) -> Timeout:
        if timeout is None:
            return self._config.timeout
        try:
            return Timeout.coerce(timeout)
        except ConfigurationError as exc:
            raise InvalidRequestError(str(exc)) from None


# Options that decide where requests go and how they are authorized: a sibling that changes none of them shares
# its parent's router, so the endpoints' health and the rate limiters are one across a client and its siblings.
_ROUTING_OPTIONS = (
    "endpoint_url",
    "api_key",
    "endpoints",
    "endpoint_type",
    "formatter",
    "deployment",
    "credential",
    "headers",
    "auth_header",
    "extra_parameters",
    "allow_insecure_http",
    "credential_scope",
)
# What a client over endpoints=[...] takes from each Endpoint instead.
_PER_ENDPOINT = ("endpoint_url", "api_key", "endpoint_type", "formatter", "deployment", "credential")


def _instrumentation(tracing: bool, *, pooled: bool) -> Instrumentation:
    """OpenTelemetry's GenAI spans and metrics when tracing is on and the API is installed (``otel`` extra); else
    the silent default. The API is imported only then, and reports nothing until the application configures it."""
    if tracing:
        from ._otel import otel_instrumentation

        found = otel_instrumentation(pooled=pooled)
        if found is not None:
            return found
    return NO_INSTRUMENTATION


def _router_for(options: ClientOptions, config: ClientConfig, parent: BaseAsyncClient | None) -> Router:
    """The router of a client: its parent's when neither the endpoints nor the rate limit changed; else one
    built from the options (a single URL keeps its parent's limiter when only the URL's options changed).

    Raises:
        ConfigurationError: a bad endpoint (named), or endpoints= together with per-endpoint options.
    """
    rate_limit = options.get("rate_limit")
    if rate_limit is not None and not isinstance(rate_limit, RateLimit):
        raise ConfigurationError(f"rate_limit must be a RateLimit, got {type(rate_limit).__name__}")
    same_limit = False
    if parent is not None and rate_limit is parent._options.get("rate_limit"):
        if all(options.get(name) is parent._options.get(name) for name in _ROUTING_OPTIONS):
            return parent._pipeline.router
        same_limit = True
    common: dict[str, Any] = {
        "credential_scope": options.get("credential_scope", DEFAULT_SCOPE),
        "auth_header": options.get("auth_header", "bearer"),
        "extra_parameters": options.get("extra_parameters"),
        "allow_insecure_http": options.get("allow_insecure_http", False),
    }
    max_wait = config.retry.max_retry_after
    endpoints = options.get("endpoints")
    if endpoints is None:
        endpoint = build_endpoint(
            url=options.get("endpoint_url"),
            api_key=options.get("api_key"),
            endpoint_type=options.get("endpoint_type"),
            formatter=options.get("formatter"),
            deployment=options.get("deployment"),
            credential=options.get("credential"),
            headers=options.get("headers"),
            **common,
        )
        if same_limit and parent is not None:
            limiter = parent._pipeline.router.first.limiter  # one RateLimit is enforced once
        else:
            limiter = RateLimiter(rate_limit or RateLimit(), max_wait=max_wait)
        return Router([Member(endpoint, limiter, weight=1.0, priority=0)])
    given = [name for name in _PER_ENDPOINT if options.get(name) is not None]
    if given:
        raise ConfigurationError(
            f"pass endpoints= or {', '.join(name + '=' for name in given)}, not both: with several endpoints, "
            "give each Endpoint(url, api_key, deployment=..., formatter=...) its own"
        )
    if isinstance(endpoints, Endpoint | str) or not isinstance(endpoints, Sequence) or not endpoints:
        raise ConfigurationError(
            "endpoints must be a non-empty list of Endpoint(url, api_key, ...), "
            f"got {type(endpoints).__name__}"
        )
    members = []
    for index, spec in enumerate(endpoints):
        if not isinstance(spec, Endpoint):
            raise ConfigurationError(
                f"endpoints[{index}] must be an Endpoint(url, api_key, ...), got {type(spec).__name__}"
            )
        try:
            endpoint = build_endpoint(
                url=spec.url,
                api_key=spec.api_key,
                endpoint_type=spec.endpoint_type,
                formatter=spec.formatter,
                deployment=spec.deployment,
                credential=spec.credential,
                headers={**(options.get("headers") or {}), **(spec.headers or {})},
                name=spec.name,
                env={},  # each endpoint is spelled out; the AZUREML_* variables describe one URL
                **common,
            )
        except ConfigurationError as exc:
            raise ConfigurationError(f"endpoints[{index}] ({spec.name}): {exc}") from None
        own = spec.rate_limit or rate_limit or RateLimit()
        # A shared store keeps each endpoint's quota under a name of its own.
        key = f"{own.name}/{endpoint.name}" if own.name else None
        members.append(
            Member(
                endpoint,
                RateLimiter(own, max_wait=max_wait, key=key),
                weight=spec.weight,
                priority=spec.priority,
            )
        )
    names = [member.name for member in members]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigurationError(
            f"two endpoints are named {repeated[0]!r}: give each a name= of its own (names key "
            "endpoint_status(), logs and response.endpoint)"
        )
    return Router(members)
