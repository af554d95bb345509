"""The health of one endpoint in a pool: what its failures say about routing calls there.

::

    healthy --429--> cooling (its Retry-After) --time--> probe due --probe ok--> healthy
       |                                                    |
       +--N failures in a row--> open (exponential) --time--+--probe fails--> open again, twice as long
       +--401/403/404----------> unhealthy (long, fixed) ---+

* A 429 is the endpoint's quota speaking, not a fault: it cools the endpoint for the wait the answer gives and
  never counts toward the circuit, so the endpoint returns as soon as its wait is over and one probe got
  through.
* 5xx, 408, retryable 424s, connection errors and timeouts are failures. ``FAILURES_TO_OPEN`` in a row open the
  circuit for ``CIRCUIT_COOLDOWN`` seconds, doubling each time a probe fails, up to ``CIRCUIT_COOLDOWN_CAP``.
* A 401, 403 or 404 means the endpoint is misconfigured (a wrong key, a deleted deployment): it is set aside
  for ``UNHEALTHY_COOLDOWN`` seconds, then probed, so a fixed key brings it back without a restart.
* After any cooldown exactly one call, the probe, goes there; the others keep going elsewhere until it
  succeeds. A probe that never reports (its call was cancelled) is handed back by :meth:`Health.release`.

Pure bookkeeping: the caller passes the time (``time.monotonic()``), so every rule is testable with a table.
"""

from __future__ import annotations

from . import _defaults
from ._errors import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    ModelError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
)
from ._retry import RETRYABLE_INNER_STATUSES

__all__ = ["Health", "is_endpoint_fault", "is_failure"]


def is_endpoint_fault(error: BaseException) -> bool:
    """401, 403, 404: this endpoint is misconfigured; another endpoint may well answer."""
    return isinstance(error, AuthenticationError | PermissionDeniedError | NotFoundError)


def is_failure(error: BaseException) -> bool:
    """Counts toward the circuit breaker: 5xx, 408, a retryable 424, a connection error or a timeout."""
    if isinstance(error, APIConnectionError):
        return True
    if isinstance(error, ModelError):
        inner = error.inner_status_code
        return inner is not None and inner in RETRYABLE_INNER_STATUSES
    return isinstance(error, APIStatusError) and (error.status_code >= 500 or error.status_code == 408)


class Health:
    """One endpoint's standing: cooldowns, the circuit, the single probe, and its calls in flight."""

    __slots__ = ("failures", "in_flight", "opened", "probe_due", "probing", "reason", "until")

    def __init__(self) -> None:
        self.failures = 0  # failures in a row since the last success
        self.opened = 0  # times the circuit opened in a row (the exponent of its cooldown)
        self.until = 0.0  # no call is routed here before this time
        self.probe_due = False  # after a cooldown, one call goes first
        self.probing = False  # that call is under way
        self.reason: str | None = None  # why it is set aside, for endpoint_status() and logs
        self.in_flight = 0

    def available(self, now: float) -> bool:
        """Whether a call may be routed here now (a due probe not yet claimed counts)."""
        return now >= self.until and not self.probing

    def claim(self, now: float) -> bool:
        """Route a call here: returns whether it is the probe (which then holds the endpoint until it reports).

        Call only when :meth:`available`.
        """
        if self.probe_due and not self.probing and now >= self.until:
            self.probing = True
            return True
        return False

    def release(self, probe: bool) -> None:
        """A call routed here ended without a verdict (cancelled, or refused before it was sent)."""
        if probe:
            self.probing = False

    def succeeded(self, *, probe: bool) -> None:
        """An answer came back: the endpoint is healthy again, its counters reset.

        Once the endpoint is set aside only its probe brings it back: an answer to a call sent before then
        (a 429's neighbours in flight) says nothing about the quota or the fault that set it aside.
        """
        if self.probe_due and not probe:
            return
        self.failures = self.opened = 0
        self.until = 0.0
        self.probe_due = self.probing = False
        self.reason = None

    def failed(self, error: BaseException, now: float, *, probe: bool, retry_after: float | None) -> bool:
        """Record what an attempt here met; returns whether it set the endpoint aside anew (for the one log line
        per episode: not when calls already in flight meet what set it aside).

        ``probe``: the attempt was this endpoint's probe. ``retry_after``: the wait a 429 asked for, if any.
        """
        if probe:
            self.probing = False
        if isinstance(error, RateLimitError):
            wait = retry_after if retry_after is not None else _defaults.POOL_THROTTLE_COOLDOWN
            return self._set_aside(now + wait, "throttled (429)", probe)
        if isinstance(error, APIStatusError) and is_endpoint_fault(error):
            return self._set_aside(
                now + _defaults.UNHEALTHY_COOLDOWN, f"unhealthy ({error.status_code})", probe
            )
        if not is_failure(error):
            return False  # the request's fault (400, 413, 422 ...): says nothing about the endpoint
        self.failures += 1
        if self.probe_due and not probe:
            return False  # sent before it was set aside: only its probe's failure reopens (and doubles)
        if self.failures < _defaults.FAILURES_TO_OPEN and not probe:
            return False
        cooldown = min(_defaults.CIRCUIT_COOLDOWN * 2.0**self.opened, _defaults.CIRCUIT_COOLDOWN_CAP)
        self.opened += 1
        return self._set_aside(now + cooldown, f"circuit open after {self.failures} failures", probe)

    def _set_aside(self, until: float, reason: str, probe: bool) -> bool:
        anew = probe or not self.probe_due or reason != self.reason
        self.until = max(self.until, until)
        self.probe_due = True
        self.reason = reason
        return anew
