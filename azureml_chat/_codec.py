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
    """Parse a 2xx body; a JSON string that itself holds JSON (custom ``score.py``) is decoded twice."""
    try:
        value = orjson.loads(raw) if orjson is not None else json.loads(raw)
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
    """Parse JSON text (one stream event, or a body) with the fastest codec available; ``ValueError`` when invalid."""
    return orjson.loads(text) if orjson is not None else json.loads(text)
