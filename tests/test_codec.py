"""JSON in and out, with orjson (the `fast` extra) and with the stdlib: the same bytes on the wire, parsed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from azureml_chat import InvalidRequestError, ResponseFormatError, _codec

BODY = {
    "messages": [{"role": "user", "content": 'a "quote"\nnew line, é 世 🎉'}],
    "max_tokens": 5,
    "big": 2**70,
}


@pytest.fixture(params=["orjson", "stdlib"])
def codec(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test runs once with orjson (when installed) and once with the stdlib codec."""
    if request.param == "stdlib":
        monkeypatch.setattr(_codec, "orjson", None)
    elif _codec.orjson is None:
        pytest.skip("orjson is not installed (the `fast` extra)")
    return str(request.param)


def test_encode_round_trips_exact_text(codec: str) -> None:
    """Quotes, newlines and non-ASCII arrive as exactly those characters (no hand escaping), as UTF-8."""
    encoded = _codec.encode_json(BODY)
    assert BODY == json.loads(encoded)
    assert "é 世 🎉".encode() in encoded


@pytest.mark.parametrize("bad", [{"x": object()}, {"x": {1, 2}}], ids=["object", "set"])
def test_unencodable_bodies_are_invalid_requests(codec: str, bad: dict[str, Any]) -> None:
    """A parameter that is not JSON is an InvalidRequestError, with either codec."""
    with pytest.raises(InvalidRequestError, match="cannot be encoded as JSON"):
        _codec.encode_json(bad)


def test_non_string_keys_fall_back_to_the_stdlib(codec: str) -> None:
    """Integer keys (refused by orjson) are written as the stdlib writes them."""
    assert {"1": "a"} == json.loads(_codec.encode_json({1: "a"}))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"a": 1}', {"a": 1}),
        (json.dumps(json.dumps({"output": "x"})).encode(), {"output": "x"}),
        (b'"plain text"', "plain text"),
    ],
    ids=["object", "double-encoded", "string"],
)
def test_decode(codec: str, raw: bytes, expected: Any) -> None:
    """2xx bodies decode, double-encoded JSON included."""
    assert expected == _codec.decode_json(raw, "llama")


@pytest.mark.parametrize(
    "raw", [b"<html>oops</html>", b'{"a": ', b"\xff\xfe"], ids=["html", "truncated", "bytes"]
)
def test_decode_garbage_is_a_response_format_error(codec: str, raw: bytes) -> None:
    """A body that is not JSON raises ResponseFormatError naming the formatter."""
    with pytest.raises(ResponseFormatError, match="llama"):
        _codec.decode_json(raw, "llama")
