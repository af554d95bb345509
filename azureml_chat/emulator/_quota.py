"""An endpoint's rate quota, as Azure meters a serverless deployment's: requests and tokens per fixed window,
and the rate-limit headers of every answer. No I/O; the clock is injected, so the rules are tested without
waiting. Each emulator has one quota, which all its deployments share (a serverless endpoint is one deployment).

Windows are fixed, not sliding: a window opens at the first request the quota sees and lasts ``window``
seconds; the first request after it closes opens the next one, with nothing used. Within a window at most
``requests`` requests are admitted, and a request is refused once the tokens charged in the window (each
answer's usage total, charged when the answer is made) have reached ``tokens``; the last admitted answer may
take the window past it, as Azure's own token meter does. A refused request (429) counts against nothing.

Every metered answer carries ``x-ratelimit-limit-requests``, ``x-ratelimit-remaining-requests``,
``x-ratelimit-limit-tokens``, ``x-ratelimit-remaining-tokens``, ``x-ratelimit-reset-requests`` and
``x-ratelimit-reset-tokens``; the resets are whole seconds until the window closes, rounded up, a bare number
as Azure OpenAI sends it (``55``; a 0.4 s window shows ``1``). A limit left out (``None``, and the default
quota of an emulator given none) shows :data:`UNBOUNDED_REQUESTS` / :data:`UNBOUNDED_TOKENS` per window: the
counts stay truthful, and no load a machine can send spends them, so a client that pauses when "remaining"
reaches 0 never pauses against an emulator without a quota.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import attrs

from ._faults import spec_items

__all__ = [
    "UNBOUNDED_REQUESTS",
    "UNBOUNDED_TOKENS",
    "Admission",
    "Quota",
    "QuotaUsage",
    "QuotaWindow",
    "refusal",
]

# A billion requests or a trillion tokens a window: far past what any benchmark on one machine sends (hundreds of
# thousands a minute), so the headers a quota-less emulator sends never make a client wait.
UNBOUNDED_REQUESTS = 1_000_000_000
UNBOUNDED_TOKENS = 1_000_000_000_000
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _limit(instance: Any, attribute: Any, value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"Quota {attribute.name} must be a whole number >= 1 (or None: no limit), got {value!r}"
        )


def _window(instance: Any, attribute: Any, value: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"Quota window must be a positive number of seconds, got {value!r}")


def _flag(instance: Any, attribute: Any, value: bool) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"Quota retry_after must be True or False, got {value!r}")


@attrs.frozen(kw_only=True)
class Quota:
    """An emulator's rate quota: at most ``requests`` requests and ``tokens`` tokens per ``window`` seconds.

    Windows are fixed and open at the first request (see the module docstring). A request past the quota gets a
    429 with Azure's body and the rate-limit headers at 0, plus ``Retry-After`` (whole seconds, rounded up) and
    ``retry-after-ms`` when ``retry_after`` is true; Azure's token-quota 429s send only the reset headers, which
    ``retry_after=False`` imitates.

    Attributes:
        requests: requests admitted per window (``None``: no limit).
        tokens: tokens (usage totals) per window (``None``: no limit).
        window: the window's length in seconds (fractions allowed, for fast tests).
        retry_after: whether a 429 carries ``Retry-After`` and ``retry-after-ms``.

    Raises:
        ValueError: a limit that is not a whole number >= 1, a window that is not a positive number.

    Example::

        Emulator(quota=Quota(requests=60, tokens=20_000))       # Azure's usual per-minute shape
        Quota.parse("requests=2,window=0.5,retry_after=no")      # the --quota spec
    """

    requests: int | None = attrs.field(default=None, validator=_limit)
    tokens: int | None = attrs.field(default=None, validator=_limit)
    window: float = attrs.field(default=60.0, validator=_window)
    retry_after: bool = attrs.field(default=True, validator=_flag)

    @classmethod
    def parse(cls, spec: str) -> Quota:
        """Parse ``azureml-chat emulator --quota``'s spec: ``key=value`` items joined by ``,``.

        Keys are ``requests``, ``tokens``, ``window`` (seconds) and ``retry_after`` (``yes``/``no``, ``true``/
        ``false``, ``on``/``off``, ``1``/``0``), case-insensitive, ``-`` standing for ``_``, as in fault specs.

        Raises:
            ValueError: an unknown or repeated key, a bad value, or an empty spec.
        """
        values: dict[str, Any] = {}
        for item, key, sep, text in spec_items(spec):
            if not sep or key not in ("requests", "tokens", "window", "retry_after"):
                raise ValueError(
                    f"unknown quota item {item!r} in {spec!r}; keys: requests=N, tokens=N, window=SECONDS, "
                    "retry_after=yes|no"
                )
            if key in values:
                raise ValueError(f"{key} given twice in quota {spec!r}")
            values[key] = _value(key, text, spec)
        if not values:
            raise ValueError(f"empty quota spec {spec!r}; e.g. 'requests=60,tokens=20000'")
        return cls(**values)

    def __str__(self) -> str:
        """The canonical spec, which :meth:`parse` turns back into an equal quota."""
        items = [
            f"{name}={value}" for name in ("requests", "tokens") if (value := getattr(self, name)) is not None
        ]
        window = str(int(self.window)) if float(self.window).is_integer() else f"{self.window:g}"
        return ",".join([*items, f"window={window}", f"retry_after={'yes' if self.retry_after else 'no'}"])


def _value(key: str, text: str, spec: str) -> Any:
    try:
        if key in ("requests", "tokens"):
            return int(text)
        if key == "window":
            return float(text)
    except ValueError:
        raise ValueError(f"bad value for {key} in quota {spec!r}: {text!r}") from None
    if text.lower() not in _TRUE | _FALSE:
        raise ValueError(f"retry_after must be yes or no in quota {spec!r}, got {text!r}")
    return text.lower() in _TRUE


@attrs.frozen
class QuotaUsage:
    """What a quota has seen since the emulator started (or was reset).

    Attributes:
        admitted: requests the quota let through.
        refused: requests it answered with 429.
        requests: requests admitted in the current window.
        tokens: tokens charged in the current window.
    """

    admitted: int
    refused: int
    requests: int
    tokens: int


@attrs.frozen
class Admission:
    """The quota's verdict on one request, and the window as it stood then (for a refusal's headers)."""

    admitted: bool
    window: int  # which window admitted it: a charge for an earlier window is not taken into a later one
    headers: dict[str, str]
    seconds_left: float


class QuotaWindow:
    """A quota's running count (thread-safe: the server admits and charges, tests read from any thread).

    Args:
        quota: the limits.
        clock: seconds from any fixed origin (default :func:`time.monotonic`).
    """

    def __init__(self, quota: Quota, clock: Callable[[], float] = time.monotonic) -> None:
        self.quota = quota
        self._clock = clock
        self._lock = threading.Lock()
        self._serial = 0
        self._opened: float | None = None
        self._requests = self._tokens = self._admitted = self._refused = 0

    def reset(self) -> None:
        """Forget every count: no window open, nothing admitted or refused."""
        with self._lock:
            self._opened = None
            self._requests = self._tokens = self._admitted = self._refused = 0

    def _roll(self, now: float) -> None:
        if self._opened is not None and now >= self._opened + self.quota.window:
            self._opened = None
            self._requests = self._tokens = 0

    def admit(self) -> Admission:
        """Count one request in the current window (opening one if none is open), or refuse it."""
        with self._lock:
            now = self._clock()
            self._roll(now)
            if self._opened is None:
                self._opened, self._serial = now, self._serial + 1
            limits = self.quota
            spent = (limits.requests is not None and self._requests >= limits.requests) or (
                limits.tokens is not None and self._tokens >= limits.tokens
            )
            if spent:
                self._refused += 1
            else:
                self._requests += 1
                self._admitted += 1
            left = self._left()
            return Admission(not spent, self._serial, self._headers(left), left)

    def charge(self, admission: Admission, tokens: int) -> None:
        """Charge an admitted request's answer (its usage total) to the window that admitted it, if still open."""
        with self._lock:
            self._roll(self._clock())
            if admission.window == self._serial and self._opened is not None:
                self._tokens += tokens

    def _left(self) -> float:
        now = self._clock()
        self._roll(now)
        return self.quota.window if self._opened is None else self._opened + self.quota.window - now

    def headers(self) -> dict[str, str]:
        """The ``x-ratelimit-*`` headers as of now."""
        with self._lock:
            return self._headers(self._left())

    def _headers(self, left: float) -> dict[str, str]:
        limit_requests = UNBOUNDED_REQUESTS if self.quota.requests is None else self.quota.requests
        limit_tokens = UNBOUNDED_TOKENS if self.quota.tokens is None else self.quota.tokens
        reset = str(max(1, math.ceil(left)))
        return {
            "x-ratelimit-limit-requests": str(limit_requests),
            "x-ratelimit-remaining-requests": str(max(0, limit_requests - self._requests)),
            "x-ratelimit-limit-tokens": str(limit_tokens),
            "x-ratelimit-remaining-tokens": str(max(0, limit_tokens - self._tokens)),
            "x-ratelimit-reset-requests": reset,
            "x-ratelimit-reset-tokens": reset,
        }

    def usage(self) -> QuotaUsage:
        """The counts so far."""
        with self._lock:
            self._roll(self._clock())
            return QuotaUsage(self._admitted, self._refused, self._requests, self._tokens)


def refusal(quota: Quota, admission: Admission) -> tuple[dict[str, str], dict[str, Any]]:
    """The headers and the body of a 429 for a spent quota: the rate-limit headers as the refusal saw them,
    and ``Retry-After`` / ``retry-after-ms`` when the quota sends them."""
    wait = max(1, math.ceil(admission.seconds_left))
    headers = {**admission.headers, "x-ms-error-code": "TooManyRequests"}
    if quota.retry_after:
        headers["Retry-After"] = str(wait)
        headers["retry-after-ms"] = str(max(1, math.ceil(admission.seconds_left * 1000)))
    limits = [f"{quota.requests} requests" if quota.requests is not None else ""]
    limits.append(f"{quota.tokens} tokens" if quota.tokens is not None else "")
    message = (
        f"Requests to this deployment have exceeded its rate limit of {' and '.join(x for x in limits if x)} "
        f"per {quota.window:g} seconds. Please retry after {wait} seconds. (azureml-chat emulator quota)"
    )
    return headers, {"error": {"code": "429", "message": message}}
