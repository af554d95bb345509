"""Fuzzing with hypothesis: whatever comes back, only the documented errors come out.

Arbitrary JSON and bytes as response bodies for every formatter, arbitrary stream events, and arbitrary
message dicts into chat(): the only exceptions are ResponseFormatError / StreamError / InvalidRequestError,
never KeyError, TypeError, IndexError, AttributeError or UnicodeDecodeError.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from azureml_chat import (
    AsyncChatClient,
    ChatChunk,
    ChatResponse,
    InvalidRequestError,
    ResponseFormatError,
    Route,
    StreamError,
    available_formatters,
    get_formatter,
)
from azureml_chat._codec import decode_json, encode_json
from azureml_chat._params import merge_params
from azureml_chat._serialization import messages_from_input
from azureml_chat._transport import Request
from azureml_chat.testing import MockResponse, MockTransport

FAMILIES = sorted(available_formatters())
ROUTES = list(Route)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)
# Bodies shaped *almost* like the real thing find more than uniform noise: real keys, wrong values.
near_openai = st.fixed_dictionaries(
    {
        "choices": st.lists(
            st.fixed_dictionaries({"message": json_values, "finish_reason": json_values}), max_size=2
        )
    },
    optional={"usage": json_values, "model": json_values, "id": json_values},
)
near_score = st.fixed_dictionaries({"output": json_values})
near_chunk = st.fixed_dictionaries(
    {
        "choices": st.lists(
            st.fixed_dictionaries({"delta": json_values, "finish_reason": json_values}), max_size=2
        )
    },
    optional={"usage": json_values, "error": json_values},
)
tool_call_like = st.fixed_dictionaries(
    {"id": json_values, "function": st.fixed_dictionaries({"name": json_values, "arguments": json_values})}
)
near_tool_calls = st.fixed_dictionaries(
    {
        "choices": st.lists(
            st.fixed_dictionaries(
                {
                    "message": st.fixed_dictionaries(
                        {"content": json_values, "tool_calls": st.lists(tool_call_like)}
                    )
                }
            ),
            min_size=1,
            max_size=1,
        )
    }
)

# The default run keeps CI short; FUZZ_EXAMPLES=2000 (docs/reliability.md) runs the long version.
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("route", ROUTES, ids=[route.name for route in ROUTES])
@FUZZ
@given(body=json_values | near_openai | near_score | near_tool_calls)
def test_parse_response_raises_only_response_format_error(family: str, route: Route, body: Any) -> None:
    """Any JSON body parses into a ChatResponse or raises ResponseFormatError, nothing else."""
    formatter = get_formatter(family)
    if route not in formatter.routes:
        return
    try:
        response = formatter.parse_response(route, body)
    except ResponseFormatError:
        return
    assert isinstance(response, ChatResponse)
    assert response.content is None or isinstance(response.content, str)


@pytest.mark.parametrize("family", FAMILIES)
@FUZZ
@given(data=json_values | near_chunk)
def test_parse_chunk_raises_only_stream_error(family: str, data: Any) -> None:
    """Any stream event parses into a ChatChunk, one per choice for several (or is skipped), or raises StreamError,
    nothing else; each chunk's content is text or None and its index a whole number."""
    formatter = get_formatter(family)
    route = Route.CHAT_COMPLETIONS
    try:
        chunk = formatter.parse_chunk(route, data)
    except StreamError:
        return
    chunks = chunk if isinstance(chunk, tuple) else () if chunk is None else (chunk,)
    assert all(isinstance(one, ChatChunk) for one in chunks)
    assert all(one.content is None or isinstance(one.content, str) for one in chunks)
    assert all(type(one.index) is int for one in chunks)
    if isinstance(chunk, tuple):
        assert len(chunk) > 1


@FUZZ
@given(raw=st.binary(max_size=200) | json_values.map(lambda value: encode_json({"v": value})[5:-1]))
def test_decode_json_raises_only_response_format_error(raw: bytes) -> None:
    """Arbitrary bytes as a 2xx body decode or raise ResponseFormatError (never UnicodeDecodeError)."""
    try:
        decode_json(raw, "openai")
    except ResponseFormatError as exc:
        message = str(exc)
    else:
        return
    assert "openai" in message


message_like = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "tool", "developer"]) | json_values},
    optional={
        "content": json_values
        | st.lists(
            st.fixed_dictionaries(
                {"type": st.sampled_from(["text", "image_url"]) | json_values},
                optional={"text": json_values, "image_url": json_values},
            )
        ),
        "name": json_values,
        "tool_call_id": json_values,
        "tool_calls": st.lists(tool_call_like, max_size=2) | json_values,
    },
)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("route", ROUTES, ids=[route.name for route in ROUTES])
@FUZZ
@given(
    messages=st.lists(message_like | json_values, max_size=4),
    params=st.dictionaries(
        st.sampled_from(
            ["temperature", "max_tokens", "stop", "seed", "tools", "tool_choice", "response_format", "x"]
        ),
        json_values,
        max_size=3,
    ),
)
def test_any_messages_and_params_build_a_body_or_raise_invalid_request(
    family: str, route: Route, messages: list[Any], params: dict[str, Any]
) -> None:
    """Arbitrary message dicts and parameters become a JSON body or raise InvalidRequestError."""
    formatter = get_formatter(family)
    if route not in formatter.routes:
        return
    try:
        checked = messages_from_input(messages)
        merged = merge_params({}, {}, params)
        body = encode_json(formatter.build_request(route, checked, merged, stream=False))
    except InvalidRequestError:
        return
    assert body.startswith(b"{")


@FUZZ
@given(messages=st.lists(message_like, min_size=1, max_size=3))
async def test_invalid_messages_never_reach_the_transport(messages: list[Any]) -> None:
    """chat() with bad messages raises InvalidRequestError before the transport is touched."""
    sent: list[bytes] = []

    def handler(request: Request) -> MockResponse:
        sent.append(request.content)
        raise AssertionError("a request was sent")

    client = AsyncChatClient(
        "http://127.0.0.1:9/v1/chat/completions", "key", transport=MockTransport(handler)
    )
    try:
        await client.chat(messages)
    except InvalidRequestError:
        assert [] == sent
    except AssertionError:
        # Valid input: it did reach the transport, as it should.
        assert 1 == len(sent)
    finally:
        await client.aclose()
