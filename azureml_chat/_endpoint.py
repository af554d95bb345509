"""Endpoints: :class:`Endpoint`, what a user writes down, and :class:`ResolvedEndpoint`, the checked value the
pipeline sends to (where requests go, the dialect they speak there, and how they are authorized).

A client over one URL resolves its arguments (and the ``AZUREML_*`` variables) into one resolved endpoint; a
client over ``endpoints=[...]`` resolves each :class:`Endpoint` with the client-wide settings. The pipeline
takes the endpoint per attempt, so routing between several is a choice on top (``_router.py``), not another
code path.
"""

from __future__ import annotations

import ipaddress
import os
import platform
import urllib.parse
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal, TypeAlias, cast

import aiohttp
import attrs

from . import _defaults
from ._auth import DEFAULT_SCOPE, TokenProvider
from ._config import Secret, check_header_token, check_headers, is_loopback, positive_number
from ._errors import ConfigurationError
from ._operations import CHAT, TEXT_COMPLETION
from ._ratelimit import RateLimit
from ._version import __version__
from .formatters import ContentFormatter, Route, get_formatter
from .formatters._base import ROUTE_PATHS

__all__ = [
    "Endpoint",
    "EndpointType",
    "ResolvedEndpoint",
    "build_endpoint",
    "default_name",
    "is_model_inference",
    "resolve_url",
]

EndpointType: TypeAlias = Literal["dedicated", "serverless"]

ENV_URL = "AZUREML_ENDPOINT_URL"
ENV_KEY = "AZUREML_ENDPOINT_API_KEY"
ENV_TYPE = "AZUREML_ENDPOINT_API_TYPE"
ENV_DEPLOYMENT = "AZUREML_DEPLOYMENT_NAME"

USER_AGENT = f"azureml-chat/{__version__} python/{platform.python_version()} aiohttp/{aiohttp.__version__}"

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


def _check_weight(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not positive_number(value):
        raise ConfigurationError(f"Endpoint weight must be a positive number, got {value!r}")


def _check_priority(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"Endpoint priority must be a whole number (0 first), got {value!r}")


def _check_url(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"Endpoint url must be the endpoint's scoring URL, got {value!r}")


@attrs.frozen
class Endpoint:
    """One endpoint of a client that spreads its calls over several (``endpoints=[...]``).

    Calls go to the lowest ``priority`` value that has a healthy endpoint (later priorities are fallbacks), and
    within a priority by weighted random choice. Settings not given here are the client's (timeouts, retries,
    ``model_kwargs``, ``headers`` under this endpoint's own, ``auth_header``, ``credential_scope``,
    ``extra_parameters``); ``rate_limit`` defaults to the client's ``rate_limit``, applied to each endpoint on its
    own (Azure's quotas are per deployment). Nothing is read from the ``AZUREML_*`` variables.

    Args:
        url: the scoring URL (``.../score``, ``.../v1/chat/completions`` ...).
        api_key: the endpoint's key (held masked), or ``None`` with ``credential``.
        name: how logs, errors, ``response.endpoint`` and ``client.endpoint_status()`` name it; default
            derived from the URL (the host's first label, or ``host:port`` for an address, plus
            ``/deployment`` when one is given). Names are unique within a client.
        weight: its share of the calls within its priority (``2.0`` gets twice the calls of ``1.0``).
        priority: ``0`` first; a higher value is used only while no lower one has a healthy endpoint.
        deployment: sent as ``azureml-model-deployment``.
        formatter: the model family (default by route, as for a single URL).
        endpoint_type: ``"dedicated"`` or ``"serverless"`` (default: from the URL).
        credential: an Entra ID credential instead of ``api_key`` (see ``AsyncChatClient``).
        headers: extra headers for this endpoint's requests (over the client's).
        rate_limit: this endpoint's own :class:`RateLimit` (its cooldown and budgets).

    Raises:
        ConfigurationError: a bad weight, priority or URL (the rest is checked when a client resolves it).
    """

    url: str = attrs.field(validator=_check_url)
    api_key: str | Secret | None = attrs.field(default=None, repr=False)
    name: str = attrs.field(default=None, kw_only=True)
    weight: float = attrs.field(default=1.0, kw_only=True, validator=_check_weight)
    priority: int = attrs.field(default=0, kw_only=True, validator=_check_priority)
    deployment: str | None = attrs.field(default=None, kw_only=True)
    formatter: str | ContentFormatter | None = attrs.field(default=None, kw_only=True)
    endpoint_type: str | None = attrs.field(default=None, kw_only=True)
    credential: Any = attrs.field(default=None, kw_only=True, repr=False)
    headers: Mapping[str, str] | None = attrs.field(default=None, kw_only=True, repr=False)
    rate_limit: RateLimit | None = attrs.field(default=None, kw_only=True)

    def __attrs_post_init__(self) -> None:
        if cast("str | None", self.name) is None:
            object.__setattr__(self, "name", default_name(self.url, self.deployment))
        elif not isinstance(self.name, str) or not self.name.strip():
            raise ConfigurationError(f"Endpoint name must be a non-empty string, got {self.name!r}")
        if self.rate_limit is not None and not isinstance(self.rate_limit, RateLimit):
            raise ConfigurationError(f"rate_limit must be a RateLimit, got {type(self.rate_limit).__name__}")


def default_name(url: str, deployment: str | None) -> str:
    """A readable name for an endpoint: the host's first label (``llama-eastus`` of
    ``llama-eastus.eastus2.inference.ml.azure.com``), or ``host:port`` for an address or a single-label host,
    plus ``/deployment`` when one is given."""
    parts = urllib.parse.urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    try:
        is_address = bool(host) and ipaddress.ip_address(host) is not None
    except ValueError:
        is_address = False
    if is_address or "." not in host:
        label = f"{host}:{parts.port}" if parts.port else host
    else:
        label = host.split(".", 1)[0]
    return f"{label}/{deployment}" if deployment else label or url


@attrs.frozen(kw_only=True, eq=False)
class ResolvedEndpoint:
    """One endpoint, resolved and checked: everything an attempt needs to address and authorize a request.

    Attributes:
        url: the URL requests are posted to (a user's ``?api-version=`` kept; the current GA one added on an
            Azure AI Model Inference route that has none).
        route: the dialect the URL speaks.
        endpoint_type: ``"dedicated"`` or ``"serverless"``.
        host: the URL's host, lower-cased.
        formatter: the model family's formatter.
        deployment: sent as ``azureml-model-deployment`` unless a call names another.
        api_key: the key, masked, when one was given.
        auth: the token source, when a credential was given (a token is fetched per attempt).
        headers: what every request to this endpoint carries: content type, user agent, the key's
            header(s) and the client's extra headers. Read-only.
        name: the endpoint's name (``Endpoint.name``; for a single URL, derived from it the same way).
        model_inference: whether the URL is an Azure AI Model Inference route (:func:`is_model_inference`):
            read per call, so worked out once from the URL.
        operations: the names of the operations (``"chat"``, ``"text_completion"``) its family does on its
            route: asked per call, so worked out once (a formatter's routes are class constants).
    """

    url: str
    route: Route
    endpoint_type: EndpointType
    host: str
    formatter: ContentFormatter
    deployment: str | None
    api_key: Secret | None = attrs.field(repr=False)
    auth: TokenProvider | None = attrs.field(repr=False)
    headers: Mapping[str, str] = attrs.field(repr=False)
    name: str
    model_inference: bool = False
    operations: frozenset[str] = attrs.field(
        default=attrs.Factory(
            lambda self: frozenset(
                operation.name
                for operation in (CHAT, TEXT_COMPLETION)
                if getattr(self.formatter, operation.able)(self.route)
            ),
            takes_self=True,
        )
    )

    @property
    def streams(self) -> bool:
        """Whether the formatter streams server-sent events on this route (else a stream is one chunk)."""
        return self.route in self.formatter.streaming_routes

    @property
    def where(self) -> str:
        """The URL without its query, for log lines (a URL never holds credentials: :func:`resolve_url`
        refuses them)."""
        return self.url.split("?", 1)[0]


def _endpoint_type(value: str | None) -> EndpointType | None:
    if value is None or value == "":
        return None
    found = _ENDPOINT_TYPES.get(str(value).strip().lower())
    if found is None:
        raise ConfigurationError(
            f"endpoint_type must be 'dedicated' (alias 'realtime') or 'serverless', got {value!r}"
        )
    return found


def resolve_url(url: str, endpoint_type: str | None) -> tuple[str, Route, EndpointType, str]:
    """Check ``url`` (scheme, host, route) and work out ``(clean url, route, endpoint type, host)``.

    Only the scheme, the presence of a host and the path are checked, so documentation placeholders such as
    ``https://<your-endpoint>.<your_region>.inference.ml.azure.com/score`` construct fine. The clean URL of an
    Azure AI Model Inference route (:func:`is_model_inference`) without ``api-version`` in its query gets
    ``_defaults.MODEL_INFERENCE_API_VERSION``; any other query is kept as written.
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError(f"pass endpoint_url= or set {ENV_URL} (the endpoint's scoring URL)")
    kind = _endpoint_type(endpoint_type)
    parts = urllib.parse.urlsplit(url.strip())
    if "@" in parts.netloc:
        # Checked first, and the URL never quoted: every other message here repeats it, password and all.
        raise ConfigurationError(
            "endpoint_url holds credentials (user:password@host): Azure ML endpoints take a key or a token. "
            "Remove them from the URL and pass api_key= or credential= (or headers= for a gateway of your own)"
        )
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
                f"{url!r} is a /score URL, which only dedicated endpoints have, but endpoint_type is "
                "'serverless'. For a serverless endpoint, use its chat completions URL: "
                "https://<deployment>.<region>.models.ai.azure.com/v1/chat/completions (or .../chat/completions, "
                ".../models/chat/completions). For this /score URL, pass endpoint_type='dedicated' "
                f"(or leave endpoint_type and {ENV_TYPE} unset)"
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
    query = parts.query
    if route is not Route.SCORE and is_model_inference(path) and not _has_api_version(query):
        # The service answers 400 without one; a version the user wrote is theirs to keep.
        version = f"api-version={_defaults.MODEL_INFERENCE_API_VERSION}"
        query = f"{query}&{version}" if query else version
    clean = urllib.parse.urlunsplit((parts.scheme.lower(), parts.netloc, path, query, ""))
    return clean, route, kind, host


def is_model_inference(path: str) -> bool:
    """Whether a chat or text completions path is the Azure AI Model Inference API's (``/chat/completions``,
    ``/models/chat/completions``, ``/completions``, under any prefix a gateway adds).

    Those routes take ``?api-version=`` (required) and the ``extra-parameters`` header. Two kinds of path that
    end the same way are not: the provider-native ``/v1/`` routes (``/v1/chat/completions``, vLLM's, Azure
    OpenAI's ``/openai/v1/``), which are OpenAI's API, take no ``api-version`` and pass unknown fields to the
    model anyway; and Azure OpenAI's ``/openai/deployments/...``, whose ``api-version`` values are its own.
    """
    head = path.removesuffix("/completions").removesuffix("/chat")
    return not head.endswith("/v1") and "/openai/" not in f"{head}/"


def _has_api_version(query: str) -> bool:
    return any(
        name.lower() == "api-version" for name, _ in urllib.parse.parse_qsl(query, keep_blank_values=True)
    )


def build_endpoint(
    *,
    url: str | None,
    api_key: str | Secret | None,
    endpoint_type: str | None,
    formatter: str | ContentFormatter | None,
    deployment: str | None,
    credential: Any,
    credential_scope: str = DEFAULT_SCOPE,
    headers: Mapping[str, str] | None,
    auth_header: str,
    extra_parameters: str | None,
    allow_insecure_http: bool,
    name: str | None = None,
    env: Mapping[str, str] = os.environ,
) -> ResolvedEndpoint:
    """Resolve one endpoint's arguments, falling back to the ``AZUREML_*`` variables.

    Raises:
        ConfigurationError: naming what is wrong and what to pass instead.
    """
    clean, route, kind, host = resolve_url(url or env.get(ENV_URL, ""), endpoint_type or env.get(ENV_TYPE))

    # A credential given explicitly wins over a key from the environment; an explicit key never falls back.
    key = api_key if api_key is not None or credential is not None else env.get(ENV_KEY) or None
    secret = key if isinstance(key, Secret) or key is None else Secret(key)
    if secret is not None and not isinstance(secret.get_secret_value(), str):
        raise ConfigurationError("api_key must be a string")
    if secret is not None and not secret.get_secret_value().strip():
        secret = None
    if secret is not None and credential is not None:
        raise ConfigurationError(
            "pass api_key= or credential=, not both: a key and an Entra ID credential are two ways to authorize "
            "(with with_options(), set the one you are replacing to None)"
        )
    if secret is None and credential is None:
        raise ConfigurationError(f"no key: pass api_key= or set {ENV_KEY} (or pass credential= for Entra ID)")
    if clean.startswith("http://") and not is_loopback(host) and not allow_insecure_http:
        raise ConfigurationError(
            f"refusing to send a key over plain http:// to {host}; use https:// "
            "(or pass allow_insecure_http=True if you really mean it)"
        )

    family = (
        formatter
        if isinstance(formatter, ContentFormatter)
        else get_formatter(formatter or ("llama" if route is Route.SCORE else "openai"))
    )
    if route not in family.routes:
        raise ConfigurationError(
            f"formatter {family.name!r} cannot speak the {route.value} route of {clean!r}"
            + _route_hint(family, route)
        )

    deployment = deployment if deployment is not None else env.get(ENV_DEPLOYMENT) or None
    if deployment is not None:
        check_header_token(deployment, "deployment")
    if auth_header not in ("bearer", "api-key", "both"):
        raise ConfigurationError(f"auth_header must be 'bearer', 'api-key' or 'both', got {auth_header!r}")
    extra = check_headers(headers, "headers")
    if extra_parameters is not None:
        if extra_parameters not in ("pass-through", "drop", "error"):
            raise ConfigurationError(
                f"extra_parameters must be 'pass-through', 'drop' or 'error', got {extra_parameters!r}"
            )
        extra["extra-parameters"] = extra_parameters

    sent = {"content-type": "application/json", "user-agent": USER_AGENT}
    if secret is not None:
        sent.update(_key_headers(secret, auth_header))
    sent.update(extra)
    return ResolvedEndpoint(
        url=clean,
        route=route,
        endpoint_type=kind,
        host=host,
        formatter=family,
        deployment=deployment,
        api_key=secret,
        auth=TokenProvider(credential, credential_scope) if credential is not None else None,
        headers=MappingProxyType(sent),
        name=name or default_name(clean, deployment),
        model_inference=route is not Route.SCORE and is_model_inference(urllib.parse.urlsplit(clean).path),
    )


def _key_headers(key: Secret, mode: str) -> dict[str, str]:
    value = key.get_secret_value()
    headers = {}
    if mode in ("bearer", "both"):
        headers["authorization"] = f"Bearer {value}"
    if mode in ("api-key", "both"):
        headers["api-key"] = value
    return headers


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
