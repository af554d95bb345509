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


# --- integers beyond 64 bits: orjson keeps -2**63 .. 2**64-1, the stdlib every one ------------------------------

INTEGERS = [
    2**64 - 1,  # the largest orjson keeps
    2**64,  # the smallest it would turn into a float
    -(2**63),  # the smallest orjson keeps
    -(2**63) - 1,  # the largest negative it would turn into a float
    100000000000000000001,  # the example: 1e+20 from orjson
    9999999999999999999,  # 19 digits, kept by orjson
    -9999999999999999999,  # 19 digits, below -2**63
    10**40,
]


@pytest.mark.parametrize("number", INTEGERS, ids=str)
def test_a_body_keeps_every_integer_exactly(codec: str, number: int) -> None:
    """decode_json gives the very integer the body holds, at and beyond orjson's 64-bit bounds, with either codec."""
    value = _codec.decode_json(f'{{"seed": {number}, "n": [1, {number}]}}'.encode(), "openai")
    assert {"seed": number, "n": [1, number]} == value
    assert int is type(value["seed"])


@pytest.mark.parametrize("number", INTEGERS, ids=str)
@pytest.mark.parametrize("kind", [str, bytes], ids=["str", "bytes"])
def test_a_stream_event_keeps_every_integer_exactly(codec: str, number: int, kind: type) -> None:
    """loads (stream events are str, request bodies bytes) gives the exact integer too."""
    text = f'{{"id": {number}, "text": "ü"}}'
    value = _codec.loads(text if kind is str else text.encode())
    assert ({"id": number, "text": "ü"}, int) == (value, type(value["id"]))


def test_a_long_run_of_digits_elsewhere_parses_the_same(codec: str) -> None:
    """19 digits in a string or a fraction take the exact path too, and read as the stdlib reads them."""
    raw = b'{"id": "chatcmpl-1234567890123456789012", "p": 0.12345678901234567890123}'
    assert json.loads(raw) == _codec.decode_json(raw, "openai")


def test_orjson_keeps_integers_within_64_bits_without_the_stdlib(monkeypatch: pytest.MonkeyPatch) -> None:
    """A body whose integers all fit (18 digits and fewer) is parsed by orjson alone: the common path stays fast."""
    if _codec.orjson is None:
        pytest.skip("orjson is not installed (the `fast` extra)")

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the stdlib parser ran")

    monkeypatch.setattr(_codec.json, "loads", refuse)
    raw = b'{"created": 1760000000, "usage": {"total_tokens": 123456789012345678}, "id": "a-000000000000000001"}'
    assert 123456789012345678 == _codec.decode_json(raw, "openai")["usage"]["total_tokens"]
    assert 1760000000 == _codec.loads(raw.decode())["created"]


@pytest.mark.parametrize("number", INTEGERS, ids=str)
def test_encode_writes_every_integer_exactly(codec: str, number: int) -> None:
    """Integers beyond orjson's 64 bits go out as their digits (the stdlib writes them), never as a float."""
    assert f'{{"seed":{number}}}'.encode() == _codec.encode_json({"seed": number})
