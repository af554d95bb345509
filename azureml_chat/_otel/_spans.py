"""One call's span (:class:`CallSpan`, the observer the pipeline reports to) and its attributes.

The span is started when the call starts, with the caller's current context as its parent, and is not made
current (a stream may be read elsewhere); it ends once, when the call ends. Attempts are events on it, not child
spans: the hook reports an attempt when it ends, so a child span would have no true start, while an event's
timestamp is exact.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from . import _names
from ._content import input_messages, output_messages
from ._metrics import Instruments, record

if TYPE_CHECKING:
    from .._endpoint import ResolvedEndpoint

__all__ = ["CallSpan", "error_type", "request_attributes"]

logger = logging.getLogger("azureml_chat")

_DEFAULT_PORTS = {"http": 80, "https": 443}
_FLOAT_PARAMS = (
    ("temperature", _names.REQUEST_TEMPERATURE),
    ("top_p", _names.REQUEST_TOP_P),
    ("frequency_penalty", _names.REQUEST_FREQUENCY_PENALTY),
    ("presence_penalty", _names.REQUEST_PRESENCE_PENALTY),
)


class CallSpan:
    """Reports one call: its span, and its metrics when it ends. No method raises."""

    __slots__ = (
        "_attempts",
        "_capture",
        "_ended",
        "_endpoint",
        "_first_chunk",
        "_instruments",
        "_last_attempt",
        "_metric_attributes",
        "_pooled",
        "_span",
        "_started",
    )

    def __init__(
        self,
        tracer: Tracer,
        instruments: Instruments,
        operation: str,
        endpoint: ResolvedEndpoint,
        params: Mapping[str, Any],
        *,
        stream: bool,
        request_id: str,
        payload: Any,
        pooled: bool,
        capture: bool,
    ) -> None:
        self._started = time.monotonic()
        self._instruments = instruments
        self._pooled, self._capture = pooled, capture
        self._endpoint = endpoint
        self._attempts = 0
        self._last_attempt: float | None = None
        self._first_chunk: float | None = None
        self._ended = False
        model = request_model(params, endpoint)
        self._metric_attributes: dict[str, Any] = {
            _names.OPERATION: operation,
            _names.PROVIDER: provider_name(endpoint),
            _names.REQUEST_MODEL: model,
            **server_attributes(endpoint),
        }
        attributes = {
            **self._metric_attributes,
            **request_attributes(params),
            _names.REQUEST_STREAM: stream,
            _names.REQUEST_ID: request_id,
        }
        if endpoint.deployment:
            attributes[_names.DEPLOYMENT] = endpoint.deployment
        if pooled:
            attributes[_names.ENDPOINT] = endpoint.name
        if capture:
            attributes[_names.INPUT_MESSAGES] = input_messages(payload)
        self._span = tracer.start_span(f"{operation} {model}", kind=SpanKind.CLIENT, attributes=attributes)

    def attempt(
        self,
        number: int,
        endpoint: ResolvedEndpoint,
        status: int | None,
        error: BaseException | None,
        started: float,
    ) -> None:
        try:
            now = time.monotonic()
            # The wait before it: since the previous attempt ended (the backoff or Retry-After), or for the first,
            # since the call started (admission: a cooldown, a rate-limit budget, a concurrency slot).
            previous = self._started if self._last_attempt is None else self._last_attempt
            self._last_attempt, self._attempts, self._endpoint = now, number, endpoint
            attributes: dict[str, Any] = {
                _names.ATTEMPT_NUMBER: number,
                _names.ATTEMPT_WAIT: max(0.0, started - previous),
                _names.ATTEMPT_DURATION: max(0.0, now - started),
            }
            if status is not None:
                attributes[_names.HTTP_STATUS] = status
            if error is not None:
                # The HTTP conventions' error.type for an answer with an error status is the status itself.
                attributes[_names.ERROR_TYPE] = str(status) if status is not None else error_type(error)
            if self._pooled:
                attributes[_names.ENDPOINT] = endpoint.name
                attributes.update(server_attributes(endpoint))
            self._span.add_event(_names.ATTEMPT_EVENT, attributes)
        except Exception:
            logger.debug("OpenTelemetry: an attempt was not recorded", exc_info=True)

    def first_chunk(self) -> None:
        try:
            if self._first_chunk is None:
                self._first_chunk = time.monotonic() - self._started
                self._span.set_attribute(_names.RESPONSE_TIME_TO_FIRST_CHUNK, self._first_chunk)
        except Exception:
            logger.debug("OpenTelemetry: the first chunk was not recorded", exc_info=True)

    def end(self, response: Any, error: BaseException | None) -> None:
        if self._ended:
            return
        self._ended = True
        span = self._span
        try:
            seconds = time.monotonic() - self._started
            metric_attributes = self._metric_attributes
            # The endpoint that answered last (a pool may have failed over from the one the call started on).
            metric_attributes.update(server_attributes(self._endpoint))
            attributes: dict[str, Any] = {}
            usage = None
            if response is not None:
                attributes.update(response_attributes(response))
                usage = getattr(response, "usage", None)
                if response.model:
                    metric_attributes[_names.RESPONSE_MODEL] = response.model
                if self._capture:
                    attributes[_names.OUTPUT_MESSAGES] = output_messages(response)
                if self._pooled and response.endpoint:
                    attributes[_names.ENDPOINT] = response.endpoint
            attempts = self._attempts
            if error is not None:
                kind = error_type(error)
                attributes[_names.ERROR_TYPE] = metric_attributes[_names.ERROR_TYPE] = kind
                attempts = max(attempts, getattr(error, "attempts", 0) or 0)
                request_id = getattr(error, "request_id", None)
                if request_id:
                    attributes[_names.REQUEST_ID] = request_id
                if self._pooled and getattr(error, "endpoint", None):
                    attributes[_names.ENDPOINT] = error.endpoint  # type: ignore[attr-defined]
                span.set_status(Status(StatusCode.ERROR, f"{kind}: {error}"[:1000]))
            attributes[_names.ATTEMPTS] = attempts
            attributes.update(server_attributes(self._endpoint))
            span.set_attributes(attributes)
            record(
                self._instruments,
                metric_attributes,
                seconds=seconds,
                time_to_first_chunk=self._first_chunk,
                usage=usage,
            )
        except Exception:
            logger.debug("OpenTelemetry: the end of a call was not recorded", exc_info=True)
        finally:
            try:
                span.end()
            except Exception:
                logger.debug("OpenTelemetry: a span did not end", exc_info=True)


def request_model(params: Mapping[str, Any], endpoint: ResolvedEndpoint) -> str:
    """The model a call asks for: its ``model`` parameter, else the endpoint's deployment, else its host."""
    model = params.get("model")
    return model if isinstance(model, str) and model else endpoint.deployment or endpoint.host


def provider_name(endpoint: ResolvedEndpoint) -> str:
    """``azure.ai.inference`` on an Azure AI Model Inference route, else ``azure.ml`` (see the package)."""
    return _names.PROVIDER_AZURE_AI_INFERENCE if endpoint.model_inference else _names.PROVIDER_AZURE_ML


def server_attributes(endpoint: ResolvedEndpoint) -> dict[str, Any]:
    """``server.address`` and ``server.port`` (the scheme's default when the URL has none)."""
    parts = urllib.parse.urlsplit(endpoint.url)
    port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 443)
    return {_names.SERVER_ADDRESS: endpoint.host, _names.SERVER_PORT: port}


def request_attributes(params: Mapping[str, Any]) -> dict[str, Any]:
    """The ``gen_ai.request.*`` attributes of the parameters a call sends (those it does not send are left
    out)."""
    attributes: dict[str, Any] = {}
    max_tokens = params.get("max_tokens", params.get("max_completion_tokens"))
    if _is_int(max_tokens):
        attributes[_names.REQUEST_MAX_TOKENS] = max_tokens
    for name, key in _FLOAT_PARAMS:
        value = params.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            attributes[key] = float(value)
    stop = params.get("stop")
    if isinstance(stop, str):
        attributes[_names.REQUEST_STOP] = [stop]
    elif isinstance(stop, (list, tuple)) and all(isinstance(s, str) for s in stop):
        attributes[_names.REQUEST_STOP] = list(stop)
    seed = params.get("seed")
    if _is_int(seed):
        attributes[_names.REQUEST_SEED] = seed
    n = params.get("n")
    if _is_int(n) and n != 1:
        attributes[_names.REQUEST_CHOICE_COUNT] = n
    return attributes


def response_attributes(response: Any) -> dict[str, Any]:
    """The ``gen_ai.response.*`` and ``gen_ai.usage.*`` attributes of an answer, and its request id (the
    server's ``x-request-id``, else ours)."""
    attributes: dict[str, Any] = {
        _names.RESPONSE_FINISH_REASONS: [choice.finish_reason or "" for choice in response.choices]
    }
    if response.id:
        attributes[_names.RESPONSE_ID] = response.id
    if response.model:
        attributes[_names.RESPONSE_MODEL] = response.model
    if response.request_id:
        attributes[_names.REQUEST_ID] = response.request_id
    usage = response.usage
    if usage is not None:
        attributes[_names.USAGE_INPUT] = usage.prompt_tokens
        attributes[_names.USAGE_OUTPUT] = usage.completion_tokens
        if usage.cached_tokens is not None:
            attributes[_names.USAGE_CACHE_READ] = usage.cached_tokens
        if usage.reasoning_tokens is not None:
            attributes[_names.USAGE_REASONING] = usage.reasoning_tokens
    return attributes


def error_type(error: BaseException) -> str:
    """The error's class, qualified (``azureml_chat.RateLimitError``, ``asyncio.exceptions.CancelledError``;
    a builtin by its bare name): low-cardinality, as ``error.type`` asks."""
    kind = type(error)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
