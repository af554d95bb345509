"""The error tree and the pure mapping of a non-2xx response to a typed error (``_errors.py``)."""

from __future__ import annotations

import json

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

import azureml_chat
from azureml_chat import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    AzureMLChatError,
    BadRequestError,
    ConfigurationError,
    InternalServerError,
    InvalidRequestError,
    ModelError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestTimeoutError,
    ResponseFormatError,
    StreamError,
    UnprocessableEntityError,
)
from azureml_chat._errors import make_status_error


def headers(**values: str) -> CIMultiDictProxy[str]:
    """Response headers as aiohttp hands them over (case-insensitive), from ``name_with_underscores=value``."""
    return CIMultiDictProxy(CIMultiDict({name.replace("_", "-"): value for name, value in values.items()}))


def status_error(status: int, body: bytes = b"", **header_values: str) -> APIStatusError:
    return make_status_error(status, headers(**header_values), body)


# --- the tree -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("child", "parent"),
    [
        (ConfigurationError, ValueError),
        (InvalidRequestError, ValueError),
        (ResponseFormatError, ValueError),
        (APITimeoutError, APIConnectionError),
        (BadRequestError, APIStatusError),
        (AuthenticationError, APIStatusError),
        (PermissionDeniedError, APIStatusError),
        (NotFoundError, APIStatusError),
        (RequestTimeoutError, APIStatusError),
        (UnprocessableEntityError, APIStatusError),
        (ModelError, APIStatusError),
        (RateLimitError, APIStatusError),
        (InternalServerError, APIStatusError),
        (ConfigurationError, AzureMLChatError),
        (InvalidRequestError, AzureMLChatError),
        (APIConnectionError, AzureMLChatError),
        (APIStatusError, AzureMLChatError),
        (ResponseFormatError, AzureMLChatError),
        (StreamError, AzureMLChatError),
    ],
    ids=lambda cls: cls.__name__,
)
def test_error_tree_matches_the_design(child: type[Exception], parent: type[Exception]) -> None:
    """Each error class sits where DESIGN.md draws it (ValueError mixins included)."""
    assert issubclass(child, parent)


def test_every_error_class_is_exported() -> None:
    """Every class of the error tree is importable from the package top level and listed in ``__all__``."""
    expected = {
        "AzureMLChatError",
        "ConfigurationError",
        "InvalidRequestError",
        "APIConnectionError",
        "APITimeoutError",
        "APIStatusError",
        "BadRequestError",
        "AuthenticationError",
        "PermissionDeniedError",
        "NotFoundError",
        "RequestTimeoutError",
        "UnprocessableEntityError",
        "ModelError",
        "RateLimitError",
        "InternalServerError",
        "ResponseFormatError",
        "StreamError",
    }
    assert expected <= set(azureml_chat.__all__)


# --- status -> class --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (408, RequestTimeoutError),
        (409, APIStatusError),
        (413, APIStatusError),
        (418, APIStatusError),
        (422, UnprocessableEntityError),
        (424, ModelError),
        (429, RateLimitError),
        (500, InternalServerError),
        (502, InternalServerError),
        (503, InternalServerError),
        (504, InternalServerError),
    ],
    ids=str,
)
def test_status_maps_to_its_error_class(status: int, expected: type[APIStatusError]) -> None:
    """A non-2xx status becomes exactly the class DESIGN.md assigns it, carrying the status code."""
    error = status_error(status)
    assert expected is type(error)
    assert status == error.status_code


# --- the endpoint's message, from every body shape of azure_protocol.md 2.9 ---------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"error": "Unauthorized", "message": "Key based authentication failed", "status": 401},
            "Key based authentication failed",
        ),
        (
            {
                "status": 422,
                "code": "parameter_not_supported",
                "detail": {"loc": ["body", "response_format"], "input": "json_object"},
                "message": "One of the parameters contain invalid values.",
            },
            "One of the parameters contain invalid values.",
        ),
        (
            {
                "status": 400,
                "code": "content_filter",
                "message": "The response was filtered due to the prompt triggering a content filter.",
                "param": "messages",
                "type": None,
            },
            "The response was filtered due to the prompt triggering a content filter.",
        ),
        (
            {"error": {"code": "content_filter", "message": "Filtered by policy"}},
            "Filtered by policy",
        ),
        (
            {"error": {"code": "UserError", "message": "No valid deployments to route to."}},
            "No valid deployments to route to.",
        ),
        (
            {"message": "An unexpected error occurred in scoring script."},
            "An unexpected error occurred in scoring script.",
        ),
        ({"error": "Too many pending requests"}, "Too many pending requests"),
        ({"detail": "Not Found"}, "Not Found"),
    ],
    ids=[
        "flat-error-and-message",
        "422-detail-object-and-message",
        "400-content-filter",
        "nested-openai-style",
        "aml-platform",
        "inference-server",
        "error-string-only",
        "detail-string",
    ],
)
def test_error_message_is_read_from_each_azure_body_shape(body: object, expected: str) -> None:
    """The endpoint's own message is found in every documented error body shape and shown in the error."""
    error = status_error(400, json.dumps(body).encode())
    assert body == error.body
    assert expected in error.message
    assert expected in str(error)


@pytest.mark.parametrize(
    "detail",
    [
        {"loc": ["body", "response_format"], "input": "json_object"},
        [{"loc": ["body", "response_format"], "input": "json_object"}],
    ],
    ids=["object", "list"],
)
def test_422_detail_without_message_is_shown(detail: object) -> None:
    """A 422 whose only explanation is ``detail`` (an object or a list) still shows which parameter failed."""
    error = status_error(422, json.dumps({"status": 422, "detail": detail}).encode())
    assert "response_format" in str(error)


def test_plain_text_error_body_is_the_message() -> None:
    """A non-JSON error body (a proxy's text) is kept as text and used as the message."""
    error = status_error(502, b"upstream connect error or disconnect/reset before headers")
    assert "upstream connect error or disconnect/reset before headers" == error.body
    assert "upstream connect error" in str(error)


def test_double_encoded_error_body_is_decoded() -> None:
    """An error body that is a JSON string holding JSON (a custom score.py) is decoded to the inner object."""
    inner = {"message": "model failed to load"}
    error = status_error(500, json.dumps(json.dumps(inner)).encode())
    assert inner == error.body
    assert "model failed to load" in str(error)


def test_double_encoded_plain_text_error_body() -> None:
    """An error body that is a JSON string of plain text (score.py returning a str) is that text."""
    error = status_error(500, json.dumps("model crashed: CUDA out of memory").encode())
    assert "model crashed: CUDA out of memory" == error.body
    assert "CUDA out of memory" in str(error)


@pytest.mark.parametrize(
    "body",
    [b"", b"[1, 2]", b"null", b'{"error": {"code": "E42"}}', b'{"status": 500}'],
    ids=["empty", "json-list", "json-null", "error-without-message", "no-message-field"],
)
def test_error_without_a_message_still_names_the_status(body: bytes) -> None:
    """An error body with no message in it still yields an error text that names the status."""
    assert "503" in str(status_error(503, body))


def test_empty_error_body_still_names_the_status() -> None:
    """An error with no body at all still says which status the endpoint answered."""
    error = status_error(503)
    assert "503" in str(error)


def test_huge_error_body_is_bounded() -> None:
    """A megabyte of error text is cut: neither the kept body nor the message grows with it."""
    error = status_error(500, b"x" * 1_000_000)
    assert isinstance(error.body, str)
    assert len(error.body) < 10_000
    assert len(str(error)) < 2_000


def test_non_utf8_error_body_does_not_crash() -> None:
    """Undecodable bytes in an error body are replaced, never raised."""
    error = status_error(500, b"bad \xff\xfe bytes")
    assert "bad" in str(error)


# --- request id, 424 inner status, 429 retry_after -----------------------------------------------------------


def test_request_id_is_read_from_x_request_id_case_insensitively() -> None:
    """``x-request-id`` (whatever its casing on the wire) is the error's request id and appears in its text."""
    error = make_status_error(500, CIMultiDictProxy(CIMultiDict({"X-Request-ID": "5e2f-req"})), b"")
    assert "5e2f-req" == error.request_id
    assert "5e2f-req" in str(error)


def test_request_id_falls_back_to_the_echoed_client_request_id() -> None:
    """Without ``x-request-id`` the echoed ``x-ms-client-request-id`` identifies the request."""
    error = status_error(500, x_ms_client_request_id="client-1")
    assert "client-1" == error.request_id


def test_error_keeps_the_response_headers() -> None:
    """The response headers travel with the error so a caller can read e.g. ``x-ms-error-code``."""
    error = status_error(401, x_ms_error_code="InvalidKey")
    assert "InvalidKey" == error.headers["x-ms-error-code"]


@pytest.mark.parametrize(
    ("inner", "reason", "expected_status"),
    [
        ("503", "Service Unavailable", 503),
        ("400", "model_error", 400),
        (None, None, None),
        ("abc", None, None),
    ],
    ids=["inner-503", "inner-400", "no-inner", "garbage-inner"],
)
def test_model_error_reads_the_container_status(
    inner: str | None, reason: str | None, expected_status: int | None
) -> None:
    """A 424 carries the container's own status and reason from the ``ms-azureml-model-error-*`` headers."""
    values = {}
    if inner is not None:
        values["ms_azureml_model_error_statuscode"] = inner
    if reason is not None:
        values["ms_azureml_model_error_reason"] = reason
    error = status_error(424, **values)
    assert isinstance(error, ModelError)
    assert expected_status == error.inner_status_code
    assert reason == error.inner_reason
    if expected_status is not None:
        assert str(expected_status) in str(error)


@pytest.mark.parametrize(
    ("values", "expected"),
    [({"retry_after": "7"}, 7.0), ({"retry_after_ms": "1500"}, 1.5), ({}, None)],
    ids=["seconds", "ms", "absent"],
)
def test_rate_limit_error_carries_retry_after(values: dict[str, str], expected: float | None) -> None:
    """A 429 tells the caller how long the endpoint asked it to wait, in seconds."""
    error = status_error(429, **values)
    assert isinstance(error, RateLimitError)
    assert expected == error.retry_after


@pytest.mark.parametrize(
    ("status", "needle"),
    [(401, "AZUREML_ENDPOINT_API_KEY"), (404, "deployment"), (408, "request_timeout_ms")],
    ids=str,
)
def test_status_errors_hint_at_the_fix(status: int, needle: str) -> None:
    """401, 404 and 408 tell the person what to check (key variable, deployment, endpoint timeout)."""
    assert needle in str(status_error(status))


def test_response_format_error_names_the_formatter_and_shows_an_excerpt() -> None:
    """A ResponseFormatError keeps the formatter name and the body excerpt, and shows both."""
    error = ResponseFormatError("unexpected response shape", formatter="llama", excerpt='{"choices": []}')
    assert "llama" == error.formatter
    assert "llama" in str(error)
    assert '{"choices": []}' in str(error)


def test_errors_count_one_attempt_by_default() -> None:
    """An error that was never retried reports a single attempt."""
    assert 1 == status_error(400).attempts
