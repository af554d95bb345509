"""Retry decisions, Retry-After parsing, backoff, and the retry loop (``_retry.py``): pure, no network."""

from __future__ import annotations

import email.utils
import logging
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from azureml_chat import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    InternalServerError,
    InvalidRequestError,
    ModelError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestTimeoutError,
    ResponseFormatError,
    RetryPolicy,
    UnprocessableEntityError,
)
from azureml_chat._errors import make_status_error
from azureml_chat._retry import RetryDecision, backoff, parse_retry_after, retry_decision

# The cap used by the tables below (DESIGN.md: "honoured up to a cap").
CAP = 60.0
NOW = 1_700_000_000.0  # a fixed "now" for HTTP-date Retry-After values


def headers(values: dict[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(values))


def status_error(status: int, values: dict[str, str] | None = None) -> APIStatusError:
    return make_status_error(status, headers(values or {}), b"")


# --- status (and headers) -> error class and retry decision -----------------------------------------------

INNER = "ms-azureml-model-error-statuscode"

STATUS_TABLE = [
    # (status, headers, class, retried?)  -- DESIGN.md "Retries" and azure_protocol.md 1.6
    (400, {}, BadRequestError, False),
    (401, {}, AuthenticationError, False),
    (403, {}, PermissionDeniedError, False),
    (404, {}, NotFoundError, False),
    (408, {}, RequestTimeoutError, False),
    (409, {}, APIStatusError, False),
    (413, {}, APIStatusError, False),
    (418, {}, APIStatusError, False),
    (422, {}, UnprocessableEntityError, False),
    (424, {INNER: "503"}, ModelError, True),
    (424, {INNER: "500"}, ModelError, True),
    (424, {INNER: "429"}, ModelError, True),
    (424, {INNER: "408"}, ModelError, True),
    (424, {INNER: "400"}, ModelError, False),
    (424, {INNER: "404"}, ModelError, False),
    (424, {}, ModelError, False),
    (429, {}, RateLimitError, True),
    (500, {}, InternalServerError, True),
    (502, {}, InternalServerError, True),
    (503, {}, InternalServerError, True),
    (504, {}, InternalServerError, True),
    # x-should-retry overrides the status rule, both ways.
    (400, {"x-should-retry": "true"}, BadRequestError, True),
    (503, {"x-should-retry": "false"}, InternalServerError, False),
    (429, {"X-Should-Retry": "False"}, RateLimitError, False),
    (424, {INNER: "400", "x-should-retry": "true"}, ModelError, True),
    (409, {"x-should-retry": "TRUE"}, APIStatusError, True),
    # A demanded wait over the cap is never slept through, whatever x-should-retry says.
    (429, {"retry-after": "3600"}, RateLimitError, False),
    (503, {"retry-after": "3600", "x-should-retry": "true"}, InternalServerError, False),
]


@pytest.mark.parametrize(
    ("status", "values", "expected_class", "expected_retry"),
    STATUS_TABLE,
    ids=[
        f"{status}-{'-'.join(f'{k}={v}' for k, v in values.items()) or 'plain'}"
        for status, values, _, _ in STATUS_TABLE
    ],
)
def test_status_error_class_and_retry_decision(
    status: int, values: dict[str, str], expected_class: type[APIStatusError], expected_retry: bool
) -> None:
    """Each status (with its headers) maps to its error class and to the retry decision DESIGN.md prescribes."""
    error = status_error(status, values)
    assert expected_class is type(error)
    assert expected_retry == retry_decision(error, max_retry_after=CAP).retry


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (APIConnectionError("refused"), True),
        (APITimeoutError("read timeout"), True),
        (InvalidRequestError("bad"), False),
        (ResponseFormatError("not json"), False),
        (ValueError("not ours"), False),
    ],
    ids=["connection", "timeout", "invalid-request", "response-format", "foreign"],
)
def test_non_status_errors_retry_decision(error: BaseException, expected: bool) -> None:
    """Connection failures and client timeouts are retried; our caller-side errors and foreign ones are not."""
    assert expected == retry_decision(error, max_retry_after=CAP).retry


def test_over_cap_demand_is_reported_with_its_wait() -> None:
    """A 429 demanding more than the cap is not retried, and both the decision and the error carry the wait."""
    error = status_error(429, {"Retry-After": "3600"})
    decision = retry_decision(error, max_retry_after=CAP)
    assert (False, 3600.0) == (decision.retry, decision.retry_after)
    assert isinstance(error, RateLimitError)
    assert 3600.0 == error.retry_after


def test_within_cap_demand_is_passed_on() -> None:
    """A 503 with ``Retry-After: 2`` is retried and the decision carries the 2 seconds to wait."""
    decision = retry_decision(status_error(503, {"Retry-After": "2"}), max_retry_after=CAP)
    assert (True, 2.0) == (decision.retry, decision.retry_after)


# --- Retry-After parsing ----------------------------------------------------------------------------------


def http_date(at: float) -> str:
    return email.utils.formatdate(at, usegmt=True)


RETRY_AFTER_TABLE = [
    ("retry-after-ms", {"retry-after-ms": "1500"}, 1.5),
    ("x-ms-retry-after-ms", {"x-ms-retry-after-ms": "250"}, 0.25),
    ("fractional-ms", {"retry-after-ms": "12.5"}, 0.0125),
    ("seconds", {"Retry-After": "3"}, 3.0),
    ("zero", {"Retry-After": "0"}, 0.0),
    ("fractional-seconds", {"Retry-After": "0.5"}, 0.5),
    ("padded", {"Retry-After": " 4 "}, 4.0),
    ("http-date-future", {"Retry-After": http_date(NOW + 30)}, 30.0),
    ("http-date-past", {"Retry-After": http_date(NOW - 30)}, 0.0),
    ("http-date-far-future", {"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"}, 253402300799.0 - NOW),
    ("http-date-year-1", {"Retry-After": "Mon, 01 Jan 0001 00:00:00 GMT"}, 0.0),
    ("http-date-invalid-day", {"Retry-After": "Wed, 32 Oct 2015 07:28:00 GMT"}, None),
    ("http-date-unknown-zone", {"Retry-After": "Wed, 21 Oct 2015 07:28:00 -0000"}, None),
    ("garbage", {"Retry-After": "soon"}, None),
    ("empty", {"Retry-After": ""}, None),
    ("negative", {"Retry-After": "-5"}, None),
    ("negative-ms", {"retry-after-ms": "-5"}, None),
    ("inf", {"Retry-After": "inf"}, None),
    ("nan", {"Retry-After": "nan"}, None),
    ("inf-ms", {"retry-after-ms": "inf"}, None),
    ("overflow", {"Retry-After": "1e400"}, None),
    ("too-long-is-still-parsed", {"Retry-After": "86400"}, 86400.0),
    ("absent", {}, None),
    ("ms-beats-seconds", {"retry-after-ms": "100", "Retry-After": "5"}, 0.1),
    ("bad-ms-falls-back", {"retry-after-ms": "x", "Retry-After": "2"}, 2.0),
    ("bad-seconds-no-fallback", {"x-ms-retry-after-ms": "nan", "Retry-After": "nan"}, None),
]


@pytest.mark.parametrize(
    ("values", "expected"), [row[1:] for row in RETRY_AFTER_TABLE], ids=[row[0] for row in RETRY_AFTER_TABLE]
)
def test_parse_retry_after(values: dict[str, str], expected: float | None) -> None:
    """The wait demanded by ``retry-after-ms`` / ``x-ms-retry-after-ms`` / ``Retry-After`` (seconds or HTTP date)."""
    actual = parse_retry_after(headers(values), now=NOW)
    if expected is None:
        assert actual is None
    else:
        assert pytest.approx(expected) == actual


@given(st.text(max_size=40))
def test_parse_retry_after_never_raises(value: str) -> None:
    """Whatever a server puts in ``Retry-After``, parsing yields a wait >= 0 or None, never an exception."""
    actual = parse_retry_after({"retry-after": value}, now=NOW)
    assert actual is None or actual >= 0


# --- backoff ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retries_taken", "ceiling"),
    [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0), (50, 8.0), (10_000, 8.0)],
    ids=lambda value: str(value),
)
def test_backoff_full_jitter_bounds(retries_taken: int, ceiling: float) -> None:
    """The wait is drawn from [0, min(cap, initial * 2**n)]: the injected rng's 0 gives 0, its 1 the ceiling."""
    assert 0.0 == backoff(retries_taken, initial=0.5, cap=8.0, rng=lambda: 0.0)
    assert ceiling == backoff(retries_taken, initial=0.5, cap=8.0, rng=lambda: 1.0)
    assert ceiling / 2 == backoff(retries_taken, initial=0.5, cap=8.0, rng=lambda: 0.5)


@given(
    retries_taken=st.integers(min_value=0, max_value=100_000),
    draw=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
    initial=st.floats(min_value=0.001, max_value=10.0),
    cap=st.floats(min_value=0.001, max_value=100.0),
)
def test_backoff_stays_within_full_jitter_window(
    retries_taken: int, draw: float, initial: float, cap: float
) -> None:
    """For any retry count, base and cap, the wait lies in [0, min(cap, initial * 2**n)] and never overflows."""
    ceiling = min(cap, initial * 2.0 ** min(retries_taken, 1000))
    wait = backoff(retries_taken, initial=initial, cap=cap, rng=lambda: draw)
    assert 0.0 <= wait <= ceiling


def test_wait_honours_the_servers_demand() -> None:
    """After a response that demanded a wait within the cap, the policy waits exactly that long."""
    policy = RetryPolicy(initial_delay=0.5, max_delay=8.0)
    assert 1.25 == policy.wait_for(status_error(503, {"retry-after-ms": "1250"}), 0)


def test_wait_without_demand_is_backoff() -> None:
    """Without a demanded wait, the policy's wait lies in the backoff window of that retry."""
    policy = RetryPolicy(initial_delay=0.5, max_delay=8.0)
    for retries_taken, ceiling in [(0, 0.5), (3, 4.0), (9, 8.0)]:
        assert 0.0 <= policy.wait_for(status_error(503), retries_taken) <= ceiling


@pytest.mark.parametrize("value", [-1, 1.5, True, "2", None], ids=repr)
def test_retry_policy_rejects_bad_max_retries(value: object) -> None:
    """``max_retries`` must be a whole number >= 0."""
    with pytest.raises(ValueError, match="max_retries"):
        RetryPolicy(max_retries=value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("initial_delay", -0.5),
        ("initial_delay", math.inf),
        ("max_delay", math.nan),
        ("max_delay", "8"),
        ("max_retry_after", -1.0),
        ("max_retry_after", math.nan),
        ("max_retry_after", True),
    ],
    ids=lambda value: repr(value),
)
def test_retry_policy_rejects_bad_delays(field: str, value: object) -> None:
    """Delays and the Retry-After cap must be numbers of seconds >= 0 (a NaN cap would silently change every decision)."""
    with pytest.raises(ValueError, match=field):
        RetryPolicy(**{field: value})  # type: ignore[arg-type]


def test_retry_after_cap_may_be_infinite() -> None:
    """``max_retry_after=inf`` honours any demanded wait instead of raising."""
    policy = RetryPolicy(max_retry_after=math.inf)
    error = status_error(429, {"Retry-After": "86400"})
    assert RetryDecision(True, 86400.0) == retry_decision(error, max_retry_after=policy.max_retry_after)
    assert 86400.0 == policy.wait_for(error, 0)


# --- the retry loop ---------------------------------------------------------------------------------------

FAST = RetryPolicy(initial_delay=0.001, max_delay=0.01)


class Script:
    """An attempt function that raises (or returns) the scripted outcomes in order and counts its calls."""

    def __init__(self, *outcomes: object) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    async def __call__(self) -> object:
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


async def test_success_first_time_makes_one_attempt() -> None:
    """A first attempt that succeeds is returned as is, with no retry."""
    attempt = Script("ok")
    assert "ok" == await FAST.call(attempt, describe="POST x")
    assert 1 == attempt.calls


async def test_retryable_failures_then_success() -> None:
    """Two 503s then a success: the call succeeds after three attempts."""
    attempt = Script(status_error(503), status_error(503), "ok")
    assert "ok" == await FAST.call(attempt, describe="POST x")
    assert 3 == attempt.calls


async def test_connection_errors_are_retried() -> None:
    """A refused connection followed by a success is retried into a success."""
    attempt = Script(APIConnectionError("refused"), "ok")
    assert "ok" == await FAST.call(attempt, describe="POST x")
    assert 2 == attempt.calls


async def test_non_retryable_failure_is_raised_after_one_attempt() -> None:
    """A 400 is raised at once; the error reports one attempt."""
    error = status_error(400)
    attempt = Script(error, "never")
    with pytest.raises(BadRequestError) as caught:
        await FAST.call(attempt, describe="POST x")
    assert error is caught.value
    assert 1 == attempt.calls
    assert 1 == caught.value.attempts


async def test_exhausted_retries_raise_the_last_error() -> None:
    """When every attempt fails, the last failure is raised and knows it took max_retries + 1 attempts."""
    last = status_error(500)
    attempt = Script(status_error(503), status_error(502), last)
    with pytest.raises(InternalServerError) as caught:
        await FAST.call(attempt, describe="POST x")
    assert last is caught.value
    assert 3 == caught.value.attempts
    assert 3 == attempt.calls


async def test_retry_stops_at_a_non_retryable_failure() -> None:
    """A 503 then a 401: the 401 ends the call after two attempts."""
    attempt = Script(status_error(503), status_error(401), "never")
    with pytest.raises(AuthenticationError) as caught:
        await FAST.call(attempt, describe="POST x")
    assert 2 == caught.value.attempts
    assert 2 == attempt.calls


async def test_max_retries_zero_disables_retrying() -> None:
    """With ``max_retries=0`` a retryable failure is raised after the single attempt."""
    attempt = Script(status_error(503), "never")
    with pytest.raises(InternalServerError):
        await RetryPolicy(max_retries=0).call(attempt, describe="POST x")
    assert 1 == attempt.calls


async def test_foreign_exceptions_are_not_retried() -> None:
    """An exception that is not ours (a bug, a cancellation) propagates from the first attempt."""
    attempt = Script(RuntimeError("bug"), "never")
    with pytest.raises(RuntimeError, match="bug"):
        await FAST.call(attempt, describe="POST x")
    assert 1 == attempt.calls


async def test_each_retry_logs_one_info_line_with_status_and_wait(caplog: pytest.LogCaptureFixture) -> None:
    """A retried 503 that demanded 20 ms logs exactly one INFO line naming the status and the 0.02 s wait."""
    caplog.set_level(logging.DEBUG, logger="azureml_chat")
    attempt = Script(status_error(503, {"retry-after-ms": "20"}), "ok")
    assert "ok" == await FAST.call(attempt, describe="POST http://127.0.0.1/score")
    retries = [record for record in caplog.records if record.name == "azureml_chat"]
    assert 1 == len(retries)
    assert logging.INFO == retries[0].levelno
    assert "503" in retries[0].getMessage()
    assert "0.02" in retries[0].getMessage()


async def test_a_call_that_is_not_retried_logs_no_retry(caplog: pytest.LogCaptureFixture) -> None:
    """A call that fails without retrying logs no retry line."""
    caplog.set_level(logging.DEBUG, logger="azureml_chat")
    with pytest.raises(BadRequestError):
        await FAST.call(Script(status_error(400)), describe="POST x")
    assert [] == [record for record in caplog.records if record.name == "azureml_chat"]
