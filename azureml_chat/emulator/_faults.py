"""Fault specs: parse, validate, render, schedule, and the error responses they produce. No I/O.

Grammar (the same everywhere: ``Fault.parse``, the ``x-emulator-fault`` header, ``[[fault:...]]`` in the last
user message, ``azureml-chat emulator --fault``)::

    faults := fault (";" fault)*          several faults, tried in order
    fault  := item ("," item)*            one fault; its items combine
    item   := key "=" value | flag | status-code

    status=429            answer with this 4xx/5xx (a bare ``429`` means the same)
    retry_after=1         with status: a ``Retry-After`` header, seconds (fractions allowed, for fast tests)
    retry_after_ms=250    with status: a ``retry-after-ms`` header
    x_ms_retry_after_ms=250   with status: an ``x-ms-retry-after-ms`` header
    should_retry=false    with status: an ``x-should-retry`` header
    inner=503             a 424 whose ``ms-azureml-model-error-statuscode`` is 503 (implies status=424)
    reason=text           with 424: the ``ms-azureml-model-error-reason`` header (default: the inner phrase)
    latency=0.5           seconds to wait before answering (combines with anything)
    slow_stream=0.05      seconds between SSE events (streams only)
    drop_after=3          close the connection after 3 SSE events, without the terminating chunk (streams only)
    no_done               end the stream cleanly but without ``data: [DONE]`` (streams only)
    malformed             a 200 whose JSON body (or first SSE event) is cut in half
    html                  a 200 with an HTML page, as a misrouted proxy sends
    double_encoded        a 200 whose body is a JSON string holding the JSON answer (non-streams only)
    disconnect            close the connection without any response
    times=2               apply to the next 2 matching requests only, then disarm (default: every request)

Keys are case-insensitive, ``-`` may stand for ``_`` (``retry-after=1``), and a value cannot contain ``,`` or
``;``. Examples: ``status=503,times=2`` (two 503s, then normal answers); ``429,retry_after=1,times=1;latency=0.2``
(one 429, then every answer 0.2 s late). Order matters: a fault without ``times`` that matches every request
hides the faults after it.

A request uses at most one fault: the first armed fault that *matches* it (stream-only faults match only
streaming requests, ``double_encoded`` only non-streaming ones); a fault with ``times`` uses one up. A fault
asked for by the request itself (header or control word) applies to that request only, instead of the
armed ones, which stay armed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator
from http import HTTPStatus
from typing import Any, Literal

import attrs

from ._errors import FaultSpecError, platform_error

__all__ = [
    "BodyFault",
    "Fault",
    "FaultSchedule",
    "broken_body",
    "error_response",
    "first_match",
    "parse_faults",
]

BodyFault = Literal["malformed", "html", "double_encoded"]

_BODY_FLAGS: tuple[BodyFault, ...] = ("malformed", "html", "double_encoded")
_INT_KEYS = frozenset({"status", "inner", "retry_after_ms", "x_ms_retry_after_ms", "drop_after", "times"})
_FLOAT_KEYS = frozenset({"retry_after", "latency", "slow_stream"})
_BOOL_KEYS = frozenset({"should_retry", "no_done", "disconnect"})
_BARE_FLAGS = frozenset({"no_done", "disconnect"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})

# Codes and messages after the Azure ML docs' status table (reference section 1.6).
_STATUS_TEXT = {
    408: ("RequestTimeout", "The request timed out: the model ran longer than request_timeout_ms."),
    424: ("ModelError", "The model container returned an error; see ms-azureml-model-error-statuscode."),
    429: ("TooManyRequests", "Too many pending requests; retry with exponential backoff."),
    500: ("InternalServerError", "An internal server error occurred."),
    502: ("BadGateway", "The model container crashed or returned an invalid response."),
    503: ("ServiceUnavailable", "The service is unavailable; the deployment is scaling up."),
    504: ("GatewayTimeout", "The request timed out at the gateway."),
}

_HTML_PAGE = (
    "<html><head><title>502 Bad Gateway</title></head>"
    "<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>\n"
)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise FaultSpecError(message)


@attrs.frozen(kw_only=True)
class Fault:
    """One injected misbehaviour; see the module docstring for the spec grammar.

    Attributes:
        status: answer with this 4xx/5xx status instead of the model's answer.
        inner: for a 424, the model container's status (``ms-azureml-model-error-statuscode``).
        reason: for a 424, ``ms-azureml-model-error-reason`` (default: the inner status phrase).
        retry_after: seconds for a ``Retry-After`` header on the error response.
        retry_after_ms: milliseconds for a ``retry-after-ms`` header on the error response.
        x_ms_retry_after_ms: milliseconds for an ``x-ms-retry-after-ms`` header on the error response.
        should_retry: the value of an ``x-should-retry`` header on the error response.
        latency: seconds to wait before answering.
        slow_stream: seconds to wait between SSE events.
        drop_after: close the connection after this many SSE events.
        no_done: end the stream without ``data: [DONE]``.
        disconnect: close the connection without answering.
        body: a broken 200 body: ``"malformed"``, ``"html"`` or ``"double_encoded"``.
        times: apply to this many matching requests, then disarm (``None``: every request).
    """

    status: int | None = None
    inner: int | None = None
    reason: str | None = None
    retry_after: float | None = None
    retry_after_ms: int | None = None
    x_ms_retry_after_ms: int | None = None
    should_retry: bool | None = None
    latency: float = 0.0
    slow_stream: float = 0.0
    drop_after: int | None = None
    no_done: bool = False
    disconnect: bool = False
    body: BodyFault | None = None
    times: int | None = None

    def __attrs_post_init__(self) -> None:
        status = self.status
        _check(status is None or 400 <= status <= 599, f"status must be a 4xx or 5xx code, got {status}")
        _check(self.inner is None or status == 424, "inner= needs status=424 (or leave status out)")
        _check(
            self.inner is None or 100 <= self.inner <= 599, f"inner must be an HTTP status, got {self.inner}"
        )
        _check(self.reason is None or status == 424, "reason= only applies to status=424")
        for name in ("retry_after", "retry_after_ms", "x_ms_retry_after_ms", "should_retry"):
            _check(getattr(self, name) is None or status is not None, f"{name}= needs a status=")
        for name in ("retry_after", "retry_after_ms", "x_ms_retry_after_ms", "latency", "slow_stream"):
            value = getattr(self, name)
            _check(value is None or value >= 0, f"{name} must not be negative, got {value}")
        _check(self.drop_after is None or self.drop_after >= 0, "drop_after must not be negative")
        _check(self.times is None or self.times >= 1, f"times must be at least 1, got {self.times}")
        _check(self.body is None or self.body in _BODY_FLAGS, f"body must be one of {_BODY_FLAGS}")
        streamed = self.streaming_only
        _check(
            status is None or not (streamed or self.body or self.disconnect),
            "status= cannot combine with a broken body, a stream fault or disconnect",
        )
        _check(
            not self.disconnect or not (streamed or self.body),
            "disconnect cannot combine with a broken body or a stream fault",
        )
        _check(self.body is None or not streamed, f"{self.body} cannot combine with a stream fault")

    @property
    def streaming_only(self) -> bool:
        """Whether this fault only makes sense for (and so only matches) streaming requests."""
        return bool(self.slow_stream) or self.drop_after is not None or self.no_done

    def matches(self, *, stream: bool) -> bool:
        """Whether this fault applies to a request that asked (or not) for a stream."""
        if self.streaming_only:
            return stream
        if self.body == "double_encoded":
            return not stream
        return True

    @classmethod
    def parse(cls, spec: str) -> Fault:
        """Parse one fault, e.g. ``"status=503,times=2"`` or ``"429"``.

        Raises:
            FaultSpecError: the spec does not parse, holds several faults, or makes no sense.
        """
        faults = parse_faults(spec)
        _check(
            len(faults) == 1, f"expected exactly one fault, got {len(faults)} in {spec!r} (see parse_faults)"
        )
        return faults[0]

    def __str__(self) -> str:
        """The canonical spec, which :meth:`parse` turns back into an equal fault."""
        items: list[str] = []
        for field in attrs.fields(Fault):
            value = getattr(self, field.name)
            if value is None or (not value and field.name in _BARE_FLAGS | _FLOAT_KEYS):
                continue
            if field.name == "body" or (field.name in _BARE_FLAGS and value is True):
                items.append(str(value) if field.name == "body" else field.name)
            elif isinstance(value, bool):
                items.append(f"{field.name}={str(value).lower()}")
            elif isinstance(value, float):
                items.append(f"{field.name}={_number(value)}")
            else:
                items.append(f"{field.name}={value}")
        return ",".join(items)


def parse_faults(spec: str) -> tuple[Fault, ...]:
    """Parse ``fault;fault;...`` into faults, in order (an empty spec gives none).

    Raises:
        FaultSpecError: the spec does not parse or a fault makes no sense.
    """
    return tuple(_parse_one(part) for part in spec.split(";") if part.strip())


def spec_items(spec: str) -> Iterator[tuple[str, str, bool, str]]:
    """The ``key[=value]`` items of a comma-separated spec (a fault's, a quota's), blanks skipped: each as
    ``(item, key, has_value, value)``, the key lower-cased with ``-`` standing for ``_``, both stripped."""
    for raw in spec.split(","):
        item = raw.strip()
        if item:
            key, sep, text = item.partition("=")
            yield item, key.strip().lower().replace("-", "_"), bool(sep), text.strip()


def _parse_one(spec: str) -> Fault:
    values: dict[str, Any] = {}

    def put(key: str, value: object) -> None:
        _check(key not in values, f"{key} given twice in fault {spec.strip()!r}")
        values[key] = value

    for item, key, sep, text in spec_items(spec):
        if not sep:
            if key.isdigit():
                put("status", int(key))
            elif key in _BODY_FLAGS:
                put("body", key)
            elif key in _BARE_FLAGS:
                put(key, True)
            else:
                raise FaultSpecError(f"unknown fault {item!r} in {spec.strip()!r}")
            continue
        try:
            if key in _INT_KEYS:
                put(key, int(text))
            elif key in _FLOAT_KEYS:
                put(key, float(text))
            elif key in _BOOL_KEYS:
                _check(text.lower() in _TRUE | _FALSE, f"{key} must be true or false, got {text!r}")
                put(key, text.lower() in _TRUE)
            elif key == "reason":
                _check(bool(text), "reason must not be empty")
                put(key, text)
            else:
                raise FaultSpecError(f"unknown fault key {key!r} in {spec.strip()!r}")
        except ValueError as exc:
            if isinstance(exc, FaultSpecError):
                raise
            raise FaultSpecError(f"bad value for {key} in {spec.strip()!r}: {text!r}") from None
    _check(bool(values), f"empty fault in {spec!r}")
    if "inner" in values:
        values.setdefault("status", 424)
    return Fault(**values)


def first_match(faults: Iterable[Fault], *, stream: bool) -> Fault | None:
    """The first fault that applies to a request, or ``None``."""
    return next((fault for fault in faults if fault.matches(stream=stream)), None)


class FaultSchedule:
    """The faults armed on one deployment, tried in order. Thread-safe: tests arm faults from another thread."""

    def __init__(self, faults: Iterable[Fault] = ()) -> None:
        self._lock = threading.Lock()
        self._armed: list[tuple[Fault, int | None]] = [(fault, fault.times) for fault in faults]

    def add(self, fault: Fault) -> None:
        """Arm ``fault`` after the ones already armed."""
        with self._lock:
            self._armed.append((fault, fault.times))

    def clear(self) -> None:
        """Disarm every fault."""
        with self._lock:
            self._armed.clear()

    def take(self, *, stream: bool) -> Fault | None:
        """The fault for the next request (using one of its ``times`` up), or ``None``."""
        with self._lock:
            for position, (fault, left) in enumerate(self._armed):
                if not fault.matches(stream=stream):
                    continue
                if left is not None:
                    if left <= 1:
                        del self._armed[position]
                    else:
                        self._armed[position] = (fault, left - 1)
                return fault
            return None

    def pending(self) -> tuple[Fault, ...]:
        """The armed faults, each with ``times`` set to the uses it has left."""
        with self._lock:
            return tuple(attrs.evolve(fault, times=left) for fault, left in self._armed)


def error_response(fault: Fault) -> tuple[int, dict[str, str], dict[str, Any]]:
    """The status, headers and JSON body that a fault with ``status`` sends."""
    assert fault.status is not None
    status = fault.status
    headers: dict[str, str] = {}
    if fault.retry_after is not None:
        headers["Retry-After"] = _number(fault.retry_after)
    if fault.retry_after_ms is not None:
        headers["retry-after-ms"] = str(fault.retry_after_ms)
    if fault.x_ms_retry_after_ms is not None:
        headers["x-ms-retry-after-ms"] = str(fault.x_ms_retry_after_ms)
    if fault.should_retry is not None:
        headers["x-should-retry"] = str(fault.should_retry).lower()
    default_code = "".join(_phrase(status, f"Status{status}").split())
    code, message = _STATUS_TEXT.get(status, (default_code, f"The request failed with status {status}."))
    if status == 424:
        inner = 500 if fault.inner is None else fault.inner
        reason = fault.reason or _phrase(inner, "Model Error")
        headers["ms-azureml-model-error-statuscode"] = str(inner)
        headers["ms-azureml-model-error-reason"] = reason
        message = f"{message} Inner status {inner}: {reason}."
    headers["x-ms-error-code"] = code
    return status, headers, platform_error(code, f"{message} (injected by the azureml-chat emulator)")


def broken_body(fault: BodyFault, answer: Any) -> tuple[str, str]:
    """The text and content type of a broken 200 body that stands in for ``answer``."""
    if fault == "html":
        return _HTML_PAGE, "text/html"
    encoded = json.dumps(answer)
    if fault == "double_encoded":
        # What azureml-inference-server-http sends when score.py's run() returns a str of JSON.
        return json.dumps(encoded), "application/json"
    return encoded[: max(1, len(encoded) // 2)], "application/json"


def _phrase(status: int, default: str) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return default


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
