"""``AsyncChatClient``: configuration, headers and retries around one formatter and one transport."""

from __future__ import annotations

import itertools
import json
import platform
import re
import uuid
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Self

import aiohttp
import attrs
from yarl import URL

from ._config import ClientConfig, Secret, Timeout, build_config, check_headers, check_header_token
from ._errors import ConfigurationError, InvalidRequestError, ResponseFormatError
from ._messages import Message
from ._params import merge_params
from ._responses import ChatResponse
from ._retry import RetryPolicy
from ._serialization import messages_from_input
from ._transport import RawResponse, Transport
from ._version import __version__
from .formatters import ContentFormatter

__all__ = ["AsyncChatClient"]

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
        credential: an Entra ID credential instead of (or as well as) a key.
        headers: extra headers for every request.
        session: an ``aiohttp.ClientSession`` you own; the client then never closes it.
        retry: a full :class:`RetryPolicy` (backoff, caps); ``max_retries`` overrides its count.
        auth_header: ``"bearer"`` (``Authorization: Bearer``), ``"api-key"``, or ``"both"``.
        extra_parameters: send ``extra-parameters: pass-through|drop|error`` (serverless unknown-parameter rule).
        max_connections: the connection pool size.
        allow_insecure_http: allow sending the key over ``http://`` to a host that is not this machine.
    """

    def __init__(
        self,
        endpoint_url: str | None = None,
        api_key: str | None = None,
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
        if credential is not None:
            raise ConfigurationError("credential= (Entra ID) is not supported yet; pass api_key=")
        config = self._config
        self._url = URL(config.endpoint.url)
        self._transport = Transport(max_connections=config.max_connections, proxy=config.proxy, session=session)
        self._headers = _base_headers(config)
        # One id per call: a per-client random prefix plus a counter (cheaper than uuid4 per call), <= 40 chars.
        self._id_prefix = uuid.uuid4().hex[:24]
        self._ids = itertools.count(1)
        self._describe = f"POST {self._url.with_query(None)}"

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
        common = {
            "temperature": temperature,
            "top_p": top_p,
            "max_tokens": max_tokens,
            "stop": stop,
            "seed": seed,
            "tools": tools,
            "tool_choice": tool_choice,
            "response_format": response_format,
            "presence_penalty": presence_penalty,
            "frequency_penalty": frequency_penalty,
        }
        config = self._config
        route = config.endpoint.route
        formatter = config.formatter
        checked = messages_from_input(messages)
        params = merge_params(config.model_kwargs, common, model_params)
        body = _encode(formatter.build_request(route, checked, params, stream=False))
        headers = self._request_headers(deployment, extra_headers)
        call_timeout = self._call_timeout(timeout)
        transport = self._transport

        async def attempt() -> RawResponse:
            return await transport.post(self._url, body, headers, call_timeout)

        raw = await config.retry.call(attempt, describe=self._describe)
        response = formatter.parse_response(route, decode_json(raw.body, formatter.name))
        request_id = raw.headers.get("x-request-id") or headers["x-ms-client-request-id"]
        return _with_request_id(response, request_id)

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

    def _request_headers(self, deployment: str | None, extra_headers: Mapping[str, str] | None) -> dict[str, str]:
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

    def _call_timeout(self, timeout: float | Timeout | None) -> Timeout:
        if timeout is None:
            return self._config.timeout
        try:
            return Timeout.coerce(timeout)
        except ConfigurationError as exc:
            raise InvalidRequestError(str(exc)) from None


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


def _encode(body: Mapping[str, Any]) -> bytes:
    # Built as data and encoded once: text arrives exactly as given (no hand escaping, unlike LangChain).
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(f"the request cannot be encoded as JSON: {exc}") from None


def decode_json(raw: bytes, formatter: str) -> Any:
    """Parse a 2xx body; a JSON string that itself holds JSON (custom ``score.py``) is decoded twice."""
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        text = raw[:300].decode("utf-8", errors="replace")
        hint = "the endpoint returned HTML; check the URL" if text.lstrip().startswith("<") else "not valid JSON"
        raise ResponseFormatError(f"2xx response body is {hint}", formatter=formatter, excerpt=text) from None
    if isinstance(value, str):
        stripped = value.lstrip()
        if stripped.startswith(("{", "[")):
            try:
                return json.loads(value)
            except ValueError:
                pass
    return value


def _with_request_id(response: ChatResponse, request_id: str) -> ChatResponse:
    return attrs.evolve(response, request_id=request_id)
