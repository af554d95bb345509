"""The server's demanded wait: ``retry-after-ms``, ``x-ms-retry-after-ms`` and ``Retry-After``, and when a spent
quota resets (``x-ratelimit-reset-requests`` / ``-tokens``) (pure).

Its own module because both the error tree (``RateLimitError.retry_after``) and the retry rules read it.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Mapping

__all__ = ["parse_retry_after", "reset_after"]

# A duration as OpenAI writes it: "1s", "6m0s", "1200ms", "1h2m3.5s".
_DURATION = re.compile(
    r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+(?:\.\d+)?)ms)?"
)


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


def reset_after(headers: Mapping[str, str]) -> float | None:
    """Seconds until a spent quota resets, from ``x-ratelimit-reset-requests`` / ``-tokens`` (the later of the
    two), or ``None`` when neither says. Both forms are read: a duration as OpenAI writes it (``1s``, ``6m0s``,
    ``1200ms``) and a bare number of seconds as Azure OpenAI sends it (``55``)."""
    waits = [
        wait
        for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")
        if (raw := headers.get(name)) is not None and (wait := _duration(raw)) is not None
    ]
    return max(waits) if waits else None


def _duration(raw: str) -> float | None:
    text = raw.strip()
    seconds = _finite_float(text)
    if seconds is not None:
        return seconds if seconds >= 0 else None
    match = _DURATION.fullmatch(text)
    if match is None or not any(match.groups()):
        return None
    hours, minutes, secs, millis = (float(part) if part else 0.0 for part in match.groups())
    return hours * 3600 + minutes * 60 + secs + millis / 1000
