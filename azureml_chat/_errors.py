"""The one error tree of azureml-chat.

::

    AzureMLChatError
     +-- ConfigurationError (also ValueError)    bad URL, missing key, unknown formatter, formatter/route mismatch
     +-- InvalidRequestError (also ValueError)   bad messages or parameters, caught before any request is sent
     +-- APIConnectionError                      could not reach the endpoint
     |    +-- APITimeoutError                    client-side timeout
     +-- APIStatusError                          any non-2xx: .status_code .request_id .body .headers .message
     |    +-- BadRequestError 400, AuthenticationError 401, PermissionDeniedError 403, NotFoundError 404,
     |        RequestTimeoutError 408, UnprocessableEntityError 422,
     |        ModelError 424 (.inner_status_code, .inner_reason), RateLimitError 429 (.retry_after),
     |        InternalServerError 5xx
     +-- ResponseFormatError (also ValueError)   2xx body that is not JSON or not the formatter's shape
     +-- StreamError                             an error event or a broken connection mid-stream
     +-- ClientClosedError (also RuntimeError)   a call on a client (or stream) after it was closed

Every error carries what a person needs to act on it (status, request id, a bounded excerpt of the body,
a hint) and never a secret: request headers are not kept, and bodies come from the server. An error raised
after more than one attempt says so at the end of its message: ``(after 3 attempts over 7.0 s)``.

The public classes say ``azureml_chat`` as their module, so a traceback names them as users import them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from multidict import CIMultiDict

from . import _defaults
from ._retry_after import throttle_wait

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "AzureMLChatError",
    "BadRequestError",
    "ClientClosedError",
    "ConfigurationError",
    "InternalServerError",
    "InvalidRequestError",
    "ModelError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTimeoutError",
    "ResponseFormatError",
    "StreamError",
    "UnprocessableEntityError",
    "make_status_error",
    "note_attempts",
]


class AzureMLChatError(Exception):
    """Base class of every error this package raises.

    Attributes:
        attempts: how many HTTP attempts the call made before giving up (1 when it was not retried).
        endpoint: the name of the endpoint the last attempt went to (``Endpoint.name``), when one was sent.
    """

    attempts: int = 1
    endpoint: str | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt without __init__ (whose keyword arguments are not in args), then given back every attribute.
        # Response headers become a CIMultiDict: aiohttp's read-only proxy cannot be pickled.
        state = dict(vars(self))
        headers = state.get("headers")
        if headers is not None and not isinstance(headers, dict | CIMultiDict):
            state["headers"] = CIMultiDict(headers)
        return (_rebuilt, (type(self), self.args, state))


class ClientClosedError(AzureMLChatError, RuntimeError):
    """The client was used after ``aclose()`` / ``close()`` (or after its ``with`` block ended).

    Also a ``RuntimeError``, which is what using a closed client raised before this class existed.
    """

    def __init__(
        self,
        message: str = (
            "this client is closed (close()/aclose() was called, or its with block ended); create a new "
            "client, and close it only when you are done with it"
        ),
    ) -> None:
        super().__init__(message)


class ConfigurationError(AzureMLChatError, ValueError):
    """The client cannot be built or used as configured (URL, key, formatter, route)."""


class InvalidRequestError(AzureMLChatError, ValueError):
    """The messages or parameters of a call are invalid; nothing was sent."""


class APIConnectionError(AzureMLChatError):
    """The endpoint could not be reached, or the connection broke before a response arrived."""

    def __init__(self, message: str = "Connection error.", *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class APITimeoutError(APIConnectionError):
    """The client gave up waiting (connect, read-idle or total timeout)."""

    def __init__(self, message: str = "Request timed out.", *, url: str | None = None) -> None:
        super().__init__(message, url=url)


class APIStatusError(AzureMLChatError):
    """The endpoint answered with a non-2xx status.

    Attributes:
        status_code: the HTTP status.
        request_id: the server's ``x-request-id`` (quote it in support tickets), else the echoed
            ``x-ms-client-request-id``.
        body: the parsed JSON body, or the text when it is not JSON (bounded).
        headers: the response headers.
        message: the endpoint's own error message when it gave one.
    """

    status_code: int

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        request_id: str | None = None,
        body: object = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.request_id = request_id
        self.body = body
        self.headers: Mapping[str, str] = headers if headers is not None else {}

    def __str__(self) -> str:
        text = f"Error code: {self.status_code} - {self.message}"
        if self.request_id:
            text += f" (request id: {self.request_id})"
        return text


class BadRequestError(APIStatusError):
    """400: the endpoint rejected the request (wrong schema for this model, content filter, ...)."""


class AuthenticationError(APIStatusError):
    """401: the key or token is missing, wrong or expired."""


class PermissionDeniedError(APIStatusError):
    """403: the identity may not score this endpoint."""


class NotFoundError(APIStatusError):
    """404: wrong URL, unknown deployment, or no deployment with traffic."""


class RequestTimeoutError(APIStatusError):
    """408: the model ran past the deployment's ``request_timeout_ms`` (the endpoint's timeout, not ours)."""


class UnprocessableEntityError(APIStatusError):
    """422: the model does not support a parameter or value that was sent."""


class ModelError(APIStatusError):
    """424: the model container failed; its own status is in ``inner_status_code``."""

    @property
    def inner_status_code(self) -> int | None:
        """``ms-azureml-model-error-statuscode``: the status the model container really answered."""
        raw = self.headers.get("ms-azureml-model-error-statuscode")
        return int(raw) if raw is not None and raw.strip().isdigit() else None

    @property
    def inner_reason(self) -> str | None:
        """``ms-azureml-model-error-reason``."""
        return self.headers.get("ms-azureml-model-error-reason")


class RateLimitError(APIStatusError):
    """429: too many requests in flight or per second."""

    @property
    def retry_after(self) -> float | None:
        """Seconds the endpoint asked us to wait, when it said: ``retry-after-ms``, ``Retry-After`` ..., else
        until its spent quota resets (``x-ratelimit-reset-requests`` / ``-tokens``)."""
        return throttle_wait(self.headers)


class InternalServerError(APIStatusError):
    """5xx: the endpoint or its infrastructure failed."""


class ResponseFormatError(AzureMLChatError, ValueError):
    """A 2xx body that is not JSON, or not the shape the formatter expects.

    Attributes:
        formatter: the family whose parser rejected the body.
        excerpt: the start of the body, bounded.
    """

    def __init__(self, message: str, *, formatter: str | None = None, excerpt: str | None = None) -> None:
        text = message
        if formatter:
            text = f"{text} [formatter: {formatter}]"
        if excerpt:
            text = f"{text}; body starts: {excerpt!r}"
        super().__init__(text)
        self.formatter = formatter
        self.excerpt = excerpt


class StreamError(AzureMLChatError):
    """The stream broke after it started: an error event, a dropped connection, or a missing ``[DONE]``."""


_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    408: RequestTimeoutError,
    422: UnprocessableEntityError,
    424: ModelError,
    429: RateLimitError,
}

_HINTS: dict[int, str] = {
    401: "check the key (AZUREML_ENDPOINT_API_KEY) or the credential; keys are per endpoint",
    403: "the identity needs the onlineEndpoints/score/action permission on this endpoint",
    404: "check the URL and the deployment name; without a deployment, some deployment must have traffic",
    408: "the model ran past the deployment's request_timeout_ms; raise it or ask for fewer tokens",
}


def _rebuilt(cls: type[AzureMLChatError], args: tuple[Any, ...], state: dict[str, Any]) -> AzureMLChatError:
    """An unpickled error: made without ``__init__``, then given its attributes back."""
    error = cls.__new__(cls, *args)
    error.__dict__.update(state)
    return error


def note_attempts(error: AzureMLChatError, attempts: int, seconds: float) -> None:
    """Record on ``error`` the attempts its call made; after more than one, its message says how many and
    over how long (``.message``, ``args`` and ``str()`` alike)."""
    error.attempts = attempts
    if attempts > 1:
        error.message = f"{error.message} (after {attempts} attempts over {seconds:.1f} s)"
        error.args = (error.message, *error.args[1:])


def excerpt(text: str, limit: int = _defaults.ERROR_BODY_EXCERPT) -> str:
    """Return ``text`` cut to ``limit`` characters, marked when cut."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"... [{len(text) - limit} more characters]"


def decode_error_body(raw: bytes) -> object:
    """Parse an error body leniently: JSON (double-encoded too) when possible, else bounded text."""
    text = raw.decode("utf-8", errors="replace")
    try:
        value: object = json.loads(text)
    except ValueError:
        return excerpt(text)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return excerpt(value)
    return value


def error_message(body: object) -> str | None:
    """Find the human message in the error body shapes Azure uses.

    Shapes seen (azure_protocol.md 2.9): ``{"error": {"code", "message"}}``, ``{"error": "..", "message": ".."}``,
    ``{"message": ".."}``, ``{"detail": ...}``, and plain text.
    """
    if isinstance(body, str):
        return body.strip() or None
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if isinstance(error, dict):
        found = error_message(error)
        if found:
            return found
    for key in ("message", "detail", "error", "title"):
        value = body.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    detail = body.get("detail")
    if isinstance(detail, (dict, list)):
        return excerpt(json.dumps(detail), _defaults.ERROR_MESSAGE_EXCERPT)
    return None


def make_status_error(
    status: int, headers: Mapping[str, str], raw_body: bytes, *, sent_request_id: str | None = None
) -> APIStatusError:
    """Build the typed error for a non-2xx response (pure: no I/O).

    ``request_id`` is the server's ``x-request-id``, else its echo of our ``x-ms-client-request-id``, else
    ``sent_request_id`` (the id we sent), so every error can be traced.
    """
    body = decode_error_body(raw_body)
    request_id = headers.get("x-request-id") or headers.get("x-ms-client-request-id") or sent_request_id
    found = error_message(body)
    message = excerpt(found, _defaults.ERROR_MESSAGE_EXCERPT) if found else f"HTTP {status}"
    if status == 424:
        inner = headers.get("ms-azureml-model-error-statuscode")
        reason = headers.get("ms-azureml-model-error-reason")
        if inner:
            message = (
                f"model container returned {inner}" + (f" ({reason})" if reason else "") + f": {message}"
            )
    hint = _HINTS.get(status)
    if 300 <= status < 400:
        hint = (
            f"the endpoint redirected to {headers.get('location')!r}; use that URL "
            "(redirects are not followed, so the key is never sent elsewhere)"
        )
    if hint:
        message = f"{message} -- {hint}"
    cls = _STATUS_CLASSES.get(status, InternalServerError if status >= 500 else APIStatusError)
    return cls(message, status_code=status, request_id=request_id, body=body, headers=headers)


# Tracebacks show azureml_chat.AuthenticationError, the name users import (pickle finds the classes there too).
for _name in __all__:
    if isinstance(_public := globals()[_name], type):
        _public.__module__ = "azureml_chat"
