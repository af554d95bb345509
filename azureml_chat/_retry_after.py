"""The server's demanded wait: ``retry-after-ms``, ``x-ms-retry-after-ms`` and ``Retry-After`` (pure).

Its own module because both the error tree (``RateLimitError.retry_after``) and the retry rules read it.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping

__all__ = ["parse_retry_after"]


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
