"""How long a rate-limited endpoint asks us to wait (pure): the one rule the retry wait, the shared cooldown and
a pool's health all use.

* A **429** asks for :func:`throttle_wait`: ``retry-after-ms``, ``x-ms-retry-after-ms``, ``Retry-After`` first
  (:func:`parse_retry_after`), else when the spent quota resets (:func:`reset_after`). Azure's token-quota 429s
  often give only the reset headers. ``None`` (neither, or a 429 whose quotas have room): the caller backs off.
* An **answer** whose ``x-ratelimit-remaining-requests`` or ``-tokens`` is ``0`` asks for :func:`spent_wait`:
  until that quota resets, so the next calls wait instead of collecting 429s.

The reset headers come in two forms, both read: a duration as OpenAI writes it (``1s``, ``6m0s``, ``1200ms``)
and a bare number of seconds as Azure OpenAI sends it (``55``). A reset of 0 or less, like an unparseable
one, says nothing (``-1``/``0`` mean "unknown" on some Azure APIs, fleet.md 5.1).

Its own module because both the error tree (``RateLimitError.retry_after``) and the retry rules read it.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Mapping

from multidict import istr

from . import _defaults

__all__ = [
    "REMAINING_REQUESTS",
    "REMAINING_TOKENS",
    "parse_retry_after",
    "reset_after",
    "spent_wait",
    "throttle_wait",
]

# The headers an answer says its quota is spent with. ``istr`` names: a case-insensitive lookup in a response's
# CIMultiDictProxy then skips folding the name, so reading them on every answer costs next to nothing.
REMAINING_REQUESTS = istr("x-ratelimit-remaining-requests")
REMAINING_TOKENS = istr("x-ratelimit-remaining-tokens")
# Each quota's remaining count with the header that says when it resets.
_QUOTAS = (
    (REMAINING_REQUESTS, istr("x-ratelimit-reset-requests")),
    (REMAINING_TOKENS, istr("x-ratelimit-reset-tokens")),
)

# A duration as OpenAI writes it: "1s", "6m0s", "1200ms", "1h2m3.5s".
_DURATION = re.compile(
    r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+(?:\.\d+)?)ms)?"
)


def throttle_wait(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds a 429 asks us to wait: the Retry-After family first, else the reset headers; ``None`` when it
    says neither (then back off)."""
    wait = parse_retry_after(headers, now=now)
    return wait if wait is not None else reset_after(headers)


def spent_wait(headers: Mapping[str, str]) -> float | None:
    """Seconds until the quota an answer says is spent resets, or ``None`` when it says none is.

    A quota is spent when its ``x-ratelimit-remaining-*`` is ``0``; it resets after its own reset header, else
    after ``SPENT_QUOTA_PAUSE``.
    """
    if headers.get(REMAINING_REQUESTS) != "0" and headers.get(REMAINING_TOKENS) != "0":
        return None
    wait = reset_after(headers)
    return _defaults.SPENT_QUOTA_PAUSE if wait is None else wait


def reset_after(headers: Mapping[str, str]) -> float | None:
    """Seconds until the spent quota resets, from ``x-ratelimit-reset-requests`` / ``-tokens``, or ``None`` when
    the headers do not say.

    A quota is spent when its ``x-ratelimit-remaining-*`` is ``0``: its own reset counts (a spent request quota
    resetting in 1 s is not held up by a token quota with room that resets in 50 s), the later one when both are
    spent. Without any remaining count (a 429 that sends only the resets) the later reset counts. With counts
    and none at 0, no quota is spent (a 429 for too many pending requests carries them too): ``None``.
    """
    counts = [(headers.get(remaining), reset) for remaining, reset in _QUOTAS]
    spent = [reset for count, reset in counts if count == "0"]
    if not spent and all(count is None for count, _ in counts):
        spent = [reset for _, reset in counts]
    waits = [
        wait
        for name in spent
        if (raw := headers.get(name)) is not None and (wait := _duration(raw)) is not None
    ]
    return max(waits) if waits else None


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds the server asks us to wait, or ``None`` when it did not say (or said nonsense).

    Checked in order: ``retry-after-ms`` and ``x-ms-retry-after-ms`` (milliseconds), then ``Retry-After``
    as seconds, then ``Retry-After`` as an HTTP date. Negative, infinite and unparseable values are ignored.
    """
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        raw = headers.get(name)
        if raw is not None:
            ms = _finite_float(raw)
            if ms is not None and ms >= 0:
                return ms / 1000.0
    raw = headers.get("retry-after")
    if raw is None:
        return None
    seconds = _finite_float(raw)
    if seconds is not None:
        return seconds if seconds >= 0 else None
    try:
        parsed = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        return None
    delay = parsed.timestamp() - (time.time() if now is None else now)
    return max(delay, 0.0)


def _finite_float(raw: str) -> float | None:
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _duration(raw: str) -> float | None:
    """A reset header's seconds (a bare number, or a duration such as ``6m0s``); ``None`` for 0, a negative
    value or nonsense."""
    text = raw.strip()
    seconds = _finite_float(text)
    if seconds is None:
        match = _DURATION.fullmatch(text)
        if match is None or not any(match.groups()):
            return None
        hours, minutes, secs, millis = (float(part) if part else 0.0 for part in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs + millis / 1000
    return seconds if seconds > 0 else None
