"""JSON in and out: built as data and encoded once, so text arrives exactly as given (no hand escaping)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from . import _defaults
from ._errors import InvalidRequestError, ResponseFormatError

try:  # the `fast` extra: 3-8x faster than the stdlib on these payloads (docs/performance.md)
    import orjson
except ImportError:  # pragma: no cover - exercised by the stdlib-only CI job
    orjson = None  # type: ignore[assignment]

__all__ = ["decode_json", "encode_json", "loads"]

# Built once: json.dumps() with non-default options constructs a new encoder on every call (docs/performance.md).
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

# orjson keeps an integer exactly from -2**63 to 2**64-1 and turns any other into a float
# (100000000000000000001 -> 1e+20); the stdlib keeps them all. Outside that range an integer has 19 digits or
# more, so a text with a run of 19 digits is left to the stdlib: every digit becomes "0" and the run is one
# search. A run inside a string or a fraction costs only the slower parse (the two codecs agree there). The
# search is partition(): `in` and find() on bytes parse their argument the slow way (an int is tried first, or a
# format string is built), which costs more than the search itself on a small body (docs/performance.md).
_ZEROED = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN = b"0" * 19


def encode_json(body: Mapping[str, Any]) -> bytes:
    """The request body as compact UTF-8 JSON."""
    try:
        if orjson is not None:
            try:
                return orjson.dumps(body)
            except TypeError:
                pass  # what orjson refuses (non-str keys, ints over 64 bits) goes to the stdlib to decide
        return _ENCODER.encode(body).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(f"the request cannot be encoded as JSON: {exc}") from None


def decode_json(raw: bytes, formatter: str) -> Any:
    """Parse a 2xx body; a JSON string that itself holds JSON (custom ``score.py``) is decoded twice. Every
    integer is kept exactly, whichever codec runs."""
    try:
        if orjson is not None and not raw.translate(_ZEROED).partition(_LONG_RUN)[1]:
            value = orjson.loads(raw)
        else:
            value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        text = raw[: _defaults.RESPONSE_EXCERPT].decode("utf-8", errors="replace")
        hint = (
            "the endpoint returned HTML; check the URL" if text.lstrip().startswith("<") else "not valid JSON"
        )
        raise ResponseFormatError(f"2xx response body is {hint}", formatter=formatter, excerpt=text) from None
    if isinstance(value, str):
        stripped = value.lstrip()
        if stripped.startswith(("{", "[")):
            try:
                return json.loads(value)
            except ValueError:
                pass
    return value


def loads(text: str | bytes) -> Any:
    """Parse JSON text (one stream event, or a body) with the fastest codec that keeps every integer exactly;
    ``ValueError`` when invalid."""
    if orjson is not None:
        probe = text.encode() if isinstance(text, str) else text
        if not probe.translate(_ZEROED).partition(_LONG_RUN)[1]:
            return orjson.loads(text)
    return json.loads(text)
