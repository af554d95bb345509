"""Client configuration: resolved once at construction from arguments and ``AZUREML_*`` variables."""

from __future__ import annotations

import ipaddress
import math
import os
import re
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Literal, TypeAlias

import attrs

from . import _defaults
from ._errors import ConfigurationError
from ._retry import RetryPolicy
from .formatters import ContentFormatter, Route, get_formatter
from .formatters._base import ROUTE_PATHS

__all__ = ["ClientConfig", "Endpoint", "Secret", "Timeout", "build_config", "resolve_endpoint"]

EndpointType: TypeAlias = Literal["dedicated", "serverless"]
AuthHeader: TypeAlias = Literal["bearer", "api-key", "both"]
ExtraParameters: TypeAlias = Literal["pass-through", "drop", "error"]

ENV_URL = "AZUREML_ENDPOINT_URL"
ENV_KEY = "AZUREML_ENDPOINT_API_KEY"
ENV_TYPE = "AZUREML_ENDPOINT_API_TYPE"
ENV_DEPLOYMENT = "AZUREML_DEPLOYMENT_NAME"
ENV_TIMEOUT = "AZUREML_TIMEOUT"

_ENDPOINT_TYPES: dict[str, EndpointType] = {
    "dedicated": "dedicated",
    "realtime": "dedicated",
    "serverless": "serverless",
}
_DEFAULT_PATHS: dict[EndpointType, str] = {"dedicated": "/score", "serverless": "/v1/chat/completions"}
_ACCEPTED_ROUTES = (
    "/score, /v1/chat/completions, /chat/completions, /models/chat/completions, "
    "or /v1/completions or /completions for text completion"
)
# Header values must not smuggle in a line break; deployment names are letters, digits and dashes on Azure.
_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")


@attrs.frozen(repr=False)
class Secret:
    """A key that never shows itself: ``repr`` and ``str`` are masked."""

    _value: str

    def get_secret_value(self) -> str:
        """The key itself (only for putting it in a header)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __str__(self) -> str:
        return "**********"


def _check_seconds(value: float | None, name: str) -> None:
    if value is None:
        return
    # inf is refused too: aiohttp rounds deadlines with math.ceil, which raises OverflowError on it (use None).
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        what = f"timeout {name}" if name else "timeout"
        raise ConfigurationError(
            f"{what} must be a positive, finite number of seconds or None, got {value!r}"
        )


@attrs.frozen(kw_only=True, cache_hash=True)  # hashed on every call by client_timeout's lru_cache
class Timeout:
    """Timeouts of one attempt, in seconds (``None`` disables one).

    Attributes:
        connect: connecting, including the wait for a free pooled connection.
        read: for a stream, the idle time allowed between two events; for a non-streaming call, whose
            answer arrives all at once when the model is done, the whole wait (the attempt is bounded by
            ``min(read, total)``).
        total: the whole attempt, body (or stream) included.
    """

    connect: float | None = attrs.field(default=_defaults.CONNECT_TIMEOUT)
    read: float | None = attrs.field(default=_defaults.READ_TIMEOUT)
    total: float | None = attrs.field(default=_defaults.TOTAL_TIMEOUT)

    @connect.validator
    @read.validator
    @total.validator
    def _check(self, attribute: attrs.Attribute[float | None], value: float | None) -> None:
        _check_seconds(value, attribute.name)

    @classmethod
    def coerce(cls, value: float | Timeout) -> Timeout:
        """A ``Timeout`` from a number of seconds (total and read; connect is capped at its default)."""
        if isinstance(value, Timeout):
            return value
        _check_seconds(value, "")
        seconds = float(value)
        return cls(connect=min(seconds, _defaults.CONNECT_TIMEOUT), read=seconds, total=seconds)


@attrs.frozen
class Endpoint:
    """Where requests go, and in which dialect."""

    url: str
    route: Route
    endpoint_type: EndpointType
    host: str


def _endpoint_type(value: str | None) -> EndpointType | None:
    if value is None or value == "":
        return None
    found = _ENDPOINT_TYPES.get(str(value).strip().lower())
    if found is None:
        raise ConfigurationError(
            f"endpoint_type must be 'dedicated' (alias 'realtime') or 'serverless', got {value!r}"
        )
    return found


def resolve_endpoint(url: str, endpoint_type: str | None) -> Endpoint:
    """Check ``url`` (scheme, host, route) and work out its route and endpoint type.

    Only the scheme, the presence of a host and the path are checked, so documentation placeholders such as
    ``https://<your-endpoint>.<your_region>.inference.ml.azure.com/score`` construct fine.
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError(f"pass endpoint_url= or set {ENV_URL} (the endpoint's scoring URL)")
    kind = _endpoint_type(endpoint_type)
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https"):
        raise ConfigurationError(
            f"endpoint_url must start with https:// (or http:// for a local server), got {url!r}"
        )
    host = (parts.hostname or "").lower()
    if not host:
        raise ConfigurationError(f"endpoint_url has no host: {url!r}")
    path = parts.path.rstrip("/")
    if path.endswith("/score"):
        route = Route.SCORE
        if kind == "serverless":
            raise ConfigurationError(
                f"serverless endpoints have no /score route; use their chat completions URL ({url!r})"
            )
    elif path.endswith("/chat/completions"):
        route = Route.CHAT_COMPLETIONS
    elif path.endswith("/completions"):
        route = Route.COMPLETIONS
    elif path == "":
        kind = kind or ("dedicated" if host.endswith(".inference.ml.azure.com") else None)
        if kind is None:
            raise ConfigurationError(
                f"endpoint_url {url!r} has no route: add one ({_ACCEPTED_ROUTES}) or pass endpoint_type="
            )
        path = _DEFAULT_PATHS[kind]
        route = Route.SCORE if kind == "dedicated" else Route.CHAT_COMPLETIONS
    else:
        raise ConfigurationError(f"endpoint_url must end with {_ACCEPTED_ROUTES}; got path {path!r}")
    if kind is None:
        dedicated_host = host.endswith(".inference.ml.azure.com")
        kind = "dedicated" if route is Route.SCORE or dedicated_host else "serverless"
    clean = urllib.parse.urlunsplit((parts.scheme.lower(), parts.netloc, path, parts.query, ""))
    return Endpoint(url=clean, route=route, endpoint_type=kind, host=host)


def _route_hint(family: ContentFormatter, route: Route) -> str:
    """Why a family cannot speak a route, when the reason is chat versus text completion."""
    if route is Route.COMPLETIONS and not family.completion_routes:
        return (
            f": {family.name!r} is a chat family and that URL is the text completion route; "
            "use the chat completions URL (/v1/chat/completions), or formatter='openai' to complete text"
        )
    if family.completion_routes and not any(family.can_chat(r) for r in family.routes):
        where = " or ".join(sorted(ROUTE_PATHS[r] for r in family.completion_routes))
        return f": {family.name!r} is a text-generation family; use its {where} URL and call complete()"
    return ""


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _proxy_for(endpoint: Endpoint) -> str | None:
    # Read once here instead of trust_env=True, which costs two thread hops per request (performance-anchors.md).
    scheme = urllib.parse.urlsplit(endpoint.url).scheme
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(scheme)
    bypass: Callable[[str, dict[str, str]], bool] = getattr(urllib.request, "proxy_bypass_environment")  # noqa: B009 (missing from typeshed)
    if proxy and not bypass(endpoint.host, proxies):
        return proxy
    return None


def check_header_token(value: str, what: str) -> str:
    """``value`` when it is a safe header token (letters, digits, ``._-``), else a ``ConfigurationError``."""
    if not isinstance(value, str) or not _TOKEN.match(value):
        raise ConfigurationError(f"{what} must be letters, digits, '.', '_' or '-', got {value!r}")
    return value


def check_headers(headers: Mapping[str, str] | None, what: str) -> dict[str, str]:
    """A copy of ``headers`` with every name and value checked (strings, no line breaks)."""
    checked: dict[str, str] = {}
    if headers is not None and not isinstance(headers, Mapping):
        raise ConfigurationError(
            f"{what} must be a mapping of header names to values, got {type(headers).__name__}"
        )
    for name, value in (headers or {}).items():
        if (
            not isinstance(name, str)
            or not isinstance(value, str)
            or any(c in name + value for c in "\r\n\0")
        ):
            raise ConfigurationError(f"{what}: header names and values must be strings without line breaks")
        checked[name.lower()] = value
    return checked


@attrs.frozen(kw_only=True)
class ClientConfig:
    """Everything a client needs, resolved and checked once."""

    endpoint: Endpoint
    api_key: Secret | None
    credential: Any
    formatter: ContentFormatter
    deployment: str | None
    timeout: Timeout
    retry: RetryPolicy
    model_kwargs: Mapping[str, Any]
    headers: Mapping[str, str]
    auth_header: AuthHeader
    max_connections: int
    proxy: str | None


def build_config(
    *,
    endpoint_url: str | None,
    api_key: str | Secret | None,
    endpoint_type: str | None,
    formatter: str | ContentFormatter | None,
    deployment: str | None,
    timeout: float | Timeout | None,
    max_retries: int | None,
    retry: RetryPolicy | None,
    model_kwargs: Mapping[str, Any] | None,
    credential: Any,
    headers: Mapping[str, str] | None,
    auth_header: str,
    extra_parameters: str | None,
    max_connections: int | None,
    allow_insecure_http: bool,
    env: Mapping[str, str] = os.environ,
) -> ClientConfig:
    """Resolve the constructor's arguments, falling back to the ``AZUREML_*`` variables."""
    endpoint = resolve_endpoint(endpoint_url or env.get(ENV_URL, ""), endpoint_type or env.get(ENV_TYPE))

    key = api_key if api_key is not None else env.get(ENV_KEY) or None
    secret = key if isinstance(key, Secret) or key is None else Secret(key)
    if secret is not None and not isinstance(secret.get_secret_value(), str):
        raise ConfigurationError("api_key must be a string")
    if secret is not None and not secret.get_secret_value().strip():
        secret = None
    if secret is None and credential is None:
        raise ConfigurationError(f"no key: pass api_key= or set {ENV_KEY} (or pass credential= for Entra ID)")
    if endpoint.url.startswith("http://") and not is_loopback(endpoint.host) and not allow_insecure_http:
        raise ConfigurationError(
            f"refusing to send a key over plain http:// to {endpoint.host}; use https:// "
            "(or pass allow_insecure_http=True if you really mean it)"
        )

    family = (
        formatter
        if isinstance(formatter, ContentFormatter)
        else get_formatter(formatter or ("llama" if endpoint.route is Route.SCORE else "openai"))
    )
    if endpoint.route not in family.routes:
        raise ConfigurationError(
            f"formatter {family.name!r} cannot speak the {endpoint.route.value} route of {endpoint.url!r}"
            + _route_hint(family, endpoint.route)
        )

    deployment = deployment if deployment is not None else env.get(ENV_DEPLOYMENT) or None
    if deployment is not None:
        check_header_token(deployment, "deployment")

    if timeout is None:
        env_timeout = env.get(ENV_TIMEOUT)
        try:
            # Checked here (not at the final coerce) so that a bad value names the variable it came from.
            timeout = Timeout.coerce(float(env_timeout)) if env_timeout else Timeout()
        except ValueError:
            raise ConfigurationError(
                f"{ENV_TIMEOUT} must be a positive number of seconds, got {env_timeout!r}"
            ) from None
    if auth_header not in ("bearer", "api-key", "both"):
        raise ConfigurationError(f"auth_header must be 'bearer', 'api-key' or 'both', got {auth_header!r}")
    extra = check_headers(headers, "headers")
    if extra_parameters is not None:
        if extra_parameters not in ("pass-through", "drop", "error"):
            raise ConfigurationError(
                f"extra_parameters must be 'pass-through', 'drop' or 'error', got {extra_parameters!r}"
            )
        extra["extra-parameters"] = extra_parameters
    if model_kwargs is not None and not isinstance(model_kwargs, Mapping):
        raise ConfigurationError(f"model_kwargs must be a mapping, got {type(model_kwargs).__name__}")
    if retry is not None and max_retries is not None:
        retry = attrs.evolve(retry, max_retries=max_retries)
    try:
        policy = retry or RetryPolicy(
            max_retries=_defaults.MAX_RETRIES if max_retries is None else max_retries
        )
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    connections = _defaults.MAX_CONNECTIONS if max_connections is None else max_connections
    if isinstance(connections, bool) or not isinstance(connections, int) or connections < 1:
        raise ConfigurationError(f"max_connections must be a whole number >= 1, got {max_connections!r}")

    return ClientConfig(
        endpoint=endpoint,
        api_key=secret,
        credential=credential,
        formatter=family,
        deployment=deployment,
        timeout=Timeout.coerce(timeout),
        retry=policy,
        # A private, read-only copy: neither the caller nor a call can change it afterwards.
        model_kwargs=MappingProxyType(dict(model_kwargs or {})),
        headers=MappingProxyType(extra),
        auth_header=auth_header,  # type: ignore[arg-type]
        max_connections=connections,
        proxy=_proxy_for(endpoint),
    )
