"""One endpoint's health in a pool (``_health.py``): the pure state machine, driven with injected times.

The numbers come from the issue (a 429 cools for its wait; a few failures in a row, 5 by default, open the
circuit with an exponential cooldown; 401/403/404 set the endpoint aside) and their defaults from
``_defaults.py``.
"""

from __future__ import annotations

import pytest

from azureml_chat import APIConnectionError, APITimeoutError
from azureml_chat._defaults import (
    CIRCUIT_COOLDOWN,
    CIRCUIT_COOLDOWN_CAP,
    FAILURES_TO_OPEN,
    POOL_THROTTLE_COOLDOWN,
    UNHEALTHY_COOLDOWN,
)
from azureml_chat._errors import APIStatusError, make_status_error
from azureml_chat._health import Health, is_endpoint_fault, is_failure

T0 = 1000.0


def status(code: int, body: bytes = b"", **headers: str) -> APIStatusError:
    """The typed error an endpoint's answer with ``code`` becomes."""
    return make_status_error(code, headers, body)


def model_error(inner: int) -> APIStatusError:
    """A 424 whose model container answered ``inner``."""
    return make_status_error(424, {"ms-azureml-model-error-statuscode": str(inner)}, b"")


def opened(health: Health, now: float) -> Health:
    """``health`` after ``FAILURES_TO_OPEN`` failures in a row at ``now``."""
    for _ in range(FAILURES_TO_OPEN):
        health.failed(status(503), now, probe=False, retry_after=None)
    return health


# --- what counts ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expected", "error"),
    [
        (True, status(500)),
        (True, status(502)),
        (True, status(503)),
        (True, status(504)),
        (True, status(408)),
        (True, APIConnectionError("reset")),
        (True, APITimeoutError("read timed out")),
        (False, status(429)),
        (False, status(400)),
        (False, status(401)),
        (False, status(404)),
        (False, status(413)),
        (False, status(422)),
    ],
)
def test_which_errors_count_toward_the_circuit(expected: bool, error: BaseException) -> None:
    """5xx, 408, connection errors and timeouts are failures; a 429 and the 4xx answers are not."""
    assert expected == is_failure(error)


def test_a_424_counts_as_a_failure_only_when_its_inner_status_is_retryable() -> None:
    """A 424 whose model answered 503 is a failure; one whose model answered 400 is not."""
    assert (True, False) == (is_failure(model_error(503)), is_failure(model_error(400)))


@pytest.mark.parametrize(
    ("expected", "code"), [(True, 401), (True, 403), (True, 404), (False, 400), (False, 429), (False, 503)]
)
def test_which_statuses_mean_the_endpoint_is_misconfigured(expected: bool, code: int) -> None:
    """401, 403 and 404 say the endpoint (its key, deployment or URL) is wrong; nothing else does."""
    assert expected == is_endpoint_fault(status(code))


# --- 429 ----------------------------------------------------------------------------------------------------------


def test_a_429_sets_the_endpoint_aside_for_its_retry_after() -> None:
    """A 429 asking for 7 s keeps calls away until 7 s later, and not a moment longer."""
    health = Health()
    assert health.failed(status(429), T0, probe=False, retry_after=7.0)
    assert (False, False, True) == (
        health.available(T0),
        health.available(T0 + 6.99),
        health.available(T0 + 7.0),
    )
    assert "throttled (429)" == health.reason


def test_a_429_without_a_wait_cools_for_the_default() -> None:
    """A 429 that gives no wait at all cools its endpoint for the pool's default throttle cooldown."""
    health = Health()
    health.failed(status(429), T0, probe=False, retry_after=None)
    assert T0 + POOL_THROTTLE_COOLDOWN == health.until


def test_a_429_never_counts_toward_the_circuit() -> None:
    """Any number of 429s in a row leave the failure count at 0: the endpoint is back after its wait."""
    health = Health()
    for i in range(3 * FAILURES_TO_OPEN):
        health.failed(status(429), T0 + i, probe=False, retry_after=1.0)
    assert (0, 0) == (health.failures, health.opened)
    assert T0 + 3 * FAILURES_TO_OPEN == health.until


def test_after_a_cooldown_exactly_one_call_is_the_probe() -> None:
    """When the cooldown ends the first call claims the probe, and the endpoint takes no other call until it
    reports."""
    health = Health()
    health.failed(status(429), T0, probe=False, retry_after=2.0)
    later = T0 + 2.0
    assert (True, True) == (health.available(later), health.claim(later))
    assert False is health.available(later)
    health.succeeded(probe=True)
    assert (True, False) == (health.available(later), health.claim(later))


def test_a_cancelled_probe_hands_the_endpoint_back() -> None:
    """A probe that never reports (cancelled) is released: the next call becomes the probe."""
    health = Health()
    health.failed(status(429), T0, probe=False, retry_after=1.0)
    assert health.claim(T0 + 1)
    health.release(True)
    assert (True, True) == (health.available(T0 + 1), health.claim(T0 + 1))


def test_a_probe_claimed_twice_is_claimed_once() -> None:
    """Two calls that wait for the same cooldown and ask at once: only the first is the probe."""
    health = Health()
    health.failed(status(429), T0, probe=False, retry_after=1.0)
    assert [True, False] == [health.claim(T0 + 1), health.claim(T0 + 1)]


def test_a_throttled_probe_cools_again_for_its_new_wait() -> None:
    """A probe answered 429 with 3 s sets the endpoint aside for 3 more seconds, without opening the circuit."""
    health = Health()
    health.failed(status(429), T0, probe=False, retry_after=1.0)
    probe = health.claim(T0 + 1)
    health.failed(status(429), T0 + 1, probe=probe, retry_after=3.0)
    assert (T0 + 4, 0, False) == (health.until, health.opened, health.available(T0 + 3.9))


def test_an_answer_sent_before_a_429_does_not_end_its_cooldown() -> None:
    """A call that was already in flight when its endpoint answered 429 succeeds afterwards: the 429's wait
    still holds, and the probe still goes first."""
    health = Health()
    health.failed(status(429), T0, probe=False, retry_after=5.0)
    health.succeeded(probe=False)  # sent before the 429
    assert (False, True) == (health.available(T0 + 1), health.claim(T0 + 5))


# --- the circuit --------------------------------------------------------------------------------------------------


def test_failures_below_the_threshold_keep_the_endpoint() -> None:
    """One failure fewer than the threshold leaves the endpoint available, its failures counted."""
    health = Health()
    for _ in range(FAILURES_TO_OPEN - 1):
        assert not health.failed(status(503), T0, probe=False, retry_after=None)
    assert (True, FAILURES_TO_OPEN - 1) == (health.available(T0), health.failures)


def test_failures_in_a_row_open_the_circuit() -> None:
    """The threshold's failure in a row opens the circuit for the base cooldown."""
    health = opened(Health(), T0)
    assert (T0 + CIRCUIT_COOLDOWN, f"circuit open after {FAILURES_TO_OPEN} failures") == (
        health.until,
        health.reason,
    )
    assert (False, True) == (
        health.available(T0 + CIRCUIT_COOLDOWN - 0.01),
        health.available(T0 + CIRCUIT_COOLDOWN),
    )


def test_an_answer_between_failures_resets_the_count() -> None:
    """Failures broken by one answer never open the circuit: they are not in a row."""
    health = Health()
    for _ in range(3):
        for _ in range(FAILURES_TO_OPEN - 1):
            health.failed(status(503), T0, probe=False, retry_after=None)
        health.succeeded(probe=False)
    assert (True, 0) == (health.available(T0), health.failures)


def test_a_failed_probe_doubles_the_cooldown_up_to_the_cap() -> None:
    """Each failed half-open probe reopens the circuit for twice as long as the last time, never longer than
    the cap."""
    health = opened(Health(), T0)
    now, cooldowns = T0 + CIRCUIT_COOLDOWN, []
    for _ in range(10):
        probe = health.claim(now)
        assert probe
        health.failed(APIConnectionError("refused"), now, probe=probe, retry_after=None)
        cooldowns.append(health.until - now)
        now = health.until
    expected = [min(CIRCUIT_COOLDOWN * 2.0**n, CIRCUIT_COOLDOWN_CAP) for n in range(1, 11)]
    assert expected == cooldowns


def test_a_successful_probe_closes_the_circuit_and_resets_its_cooldown() -> None:
    """After a probe gets an answer, the next opening starts from the base cooldown again."""
    health = opened(Health(), T0)
    now = T0 + CIRCUIT_COOLDOWN
    health.failed(status(503), now, probe=health.claim(now), retry_after=None)  # reopened for 2x
    now = health.until
    assert health.claim(now)
    health.succeeded(probe=True)
    assert (True, None, 0) == (health.available(now), health.reason, health.failures)
    opened(health, now)
    assert now + CIRCUIT_COOLDOWN == health.until


def test_failures_of_calls_already_in_flight_do_not_reopen_an_open_circuit() -> None:
    """Calls sent before the circuit opened and failing after it do not lengthen its cooldown: only a failed
    probe doubles it."""
    health = opened(Health(), T0)
    for _ in range(10):
        health.failed(status(503), T0 + 1, probe=False, retry_after=None)
    assert T0 + CIRCUIT_COOLDOWN == health.until
    now = T0 + CIRCUIT_COOLDOWN
    health.failed(status(503), now, probe=health.claim(now), retry_after=None)
    assert now + 2 * CIRCUIT_COOLDOWN == health.until


# --- misconfigured endpoints and the request's own faults ---------------------------------------------------------


@pytest.mark.parametrize("code", [401, 403, 404])
def test_a_misconfigured_endpoint_is_set_aside_then_probed(code: int) -> None:
    """A 401/403/404 sets the endpoint aside for the unhealthy cooldown, then one probe may bring it back."""
    health = Health()
    assert health.failed(status(code), T0, probe=False, retry_after=None)
    assert (f"unhealthy ({code})", False) == (health.reason, health.available(T0 + UNHEALTHY_COOLDOWN - 1))
    assert health.claim(T0 + UNHEALTHY_COOLDOWN)


@pytest.mark.parametrize("code", [400, 413, 422])
def test_the_requests_own_fault_says_nothing_about_the_endpoint(code: int) -> None:
    """A 400, 413 or 422 neither sets the endpoint aside nor counts as a failure."""
    health = Health()
    assert not health.failed(status(code), T0, probe=False, retry_after=None)
    assert (True, 0, None) == (health.available(T0), health.failures, health.reason)


def test_only_the_first_failure_of_an_episode_reports_setting_the_endpoint_aside() -> None:
    """Calls that meet a 401 on an endpoint already set aside by one do not report it again (one WARNING per
    episode); its failed probe does."""
    health = Health()
    verdicts = [health.failed(status(401), T0, probe=False, retry_after=None) for _ in range(3)]
    probe = health.claim(T0 + UNHEALTHY_COOLDOWN)
    verdicts.append(health.failed(status(401), T0 + UNHEALTHY_COOLDOWN, probe=probe, retry_after=None))
    assert [True, False, False, True] == verdicts
