"""Text completion: ``complete(prompt)`` and ``stream_complete(prompt)`` on text-generation endpoints.

The same pipeline as chat (parameters merged per call, one body encoded once, the client's headers, auth,
rate limiter, retries and transport), with a prompt instead of messages and the formatter's completion hooks.
The family and the URL's route decide whether a client completes text (``gpt2``/``hf``/``dolly`` on
``/score``, ``openai`` on ``/v1/completions``); anything else is an :class:`InvalidRequestError` before a
request is sent.

These are functions of an :class:`~azureml_chat.AsyncChatClient`; its ``complete`` and ``stream_complete``
methods delegate here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._codec import encode_json
from ._completion_stream import AsyncCompletionStream
from ._config import Timeout
from ._errors import InvalidRequestError
from ._params import merge_params
from ._responses import CompletionResponse

if TYPE_CHECKING:
    from ._client import AsyncChatClient

__all__ = ["COMMON_PARAMS", "complete", "stream_complete"]

# Keys the client sets itself; passing them as model parameters would break the call's contract.
_RESERVED = {
    "prompt": "pass the prompt as the first argument",
    "messages": "complete() takes a prompt; call chat() for messages",
    "stream": "call stream_complete(...) to stream",
}


async def complete(
    client: AsyncChatClient,
    prompt: str,
    common: Mapping[str, Any],
    model_params: Mapping[str, Any],
    timeout: float | Timeout | None,
    deployment: str | None,
    extra_headers: Mapping[str, str] | None,
) -> CompletionResponse:
    """Send ``prompt`` through ``client`` and return the whole completion (see ``AsyncChatClient.complete``;
    ``common`` holds the common keywords that were given, as :func:`~azureml_chat._params.given` makes it)."""
    body, headers, call_timeout = _prepare(
        client, prompt, common, model_params, timeout, deployment, extra_headers, stream=False
    )
    return await client._send(body, headers, call_timeout, client._config.formatter.parse_completion)


def stream_complete(
    client: AsyncChatClient,
    prompt: str,
    common: Mapping[str, Any],
    model_params: Mapping[str, Any],
    timeout: float | Timeout | None,
    deployment: str | None,
    extra_headers: Mapping[str, str] | None,
) -> AsyncCompletionStream:
    """Send ``prompt`` through ``client`` and stream the completion (see ``AsyncChatClient.stream_complete``).

    Invalid arguments raise here, before anything is sent; the request goes out on the first iteration.
    """
    config = client._config
    streams = config.endpoint.route in config.formatter.streaming_routes
    body, headers, call_timeout = _prepare(
        client, prompt, common, model_params, timeout, deployment, extra_headers, stream=streams
    )
    return client._streamed(
        AsyncCompletionStream,
        body,
        headers,
        call_timeout,
        streams=streams,
        parse=config.formatter.parse_completion,
    )


# The common keywords of complete() and stream_complete(), in the order the client passes their values.
COMMON_PARAMS = ("max_tokens", "temperature", "top_p", "stop", "seed")


def _prepare(
    client: AsyncChatClient,
    prompt: str,
    common: Mapping[str, Any],
    model_params: Mapping[str, Any],
    timeout: float | Timeout | None,
    deployment: str | None,
    extra_headers: Mapping[str, str] | None,
    *,
    stream: bool,
) -> tuple[bytes, dict[str, str], Timeout]:
    """Check everything a completion call was given and build its body, headers and timeout (nothing is sent)."""
    config = client._config
    route, formatter = config.endpoint.route, config.formatter
    if not formatter.can_complete(route):
        raise formatter.cannot_complete(route)
    if not isinstance(prompt, str):
        raise InvalidRequestError(f"prompt must be a string, got {type(prompt).__name__}")
    for name in sorted((model_params.keys() | config.model_kwargs.keys()) & _RESERVED.keys()):
        raise InvalidRequestError(f"{name!r} is not a model parameter: {_RESERVED[name]}")
    params = merge_params(config.model_kwargs, common, model_params)
    body = encode_json(formatter.build_completion_request(route, prompt, params, stream=stream))
    return body, client._request_headers(deployment, extra_headers), client._call_timeout(timeout)
