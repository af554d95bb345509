"""The client's options by name and type: what ``with_options(**changes)`` accepts.

The constructors of ``AsyncChatClient`` and ``Client`` spell the same options out (with their defaults and
documentation); a test holds the three against each other, so none can drift.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import aiohttp

from ._config import Secret, Timeout
from ._endpoint import Endpoint
from ._ratelimit import RateLimit
from ._retry import RetryPolicy
from ._transport import AsyncTransport
from .formatters import ContentFormatter

__all__ = ["ClientOptions"]


class ClientOptions(TypedDict, total=False):
    """Every constructor option of the clients (see ``AsyncChatClient`` for what each means)."""

    endpoint_url: str | None
    api_key: str | Secret | None
    endpoints: Sequence[Endpoint] | None
    endpoint_type: str | None
    formatter: str | ContentFormatter | None
    deployment: str | None
    timeout: float | Timeout | None
    max_retries: int | None
    model_kwargs: Mapping[str, Any] | None
    credential: Any
    headers: Mapping[str, str] | None
    session: aiohttp.ClientSession | None
    retry: RetryPolicy | None
    auth_header: str
    extra_parameters: str | None
    max_connections: int | None
    allow_insecure_http: bool
    max_event_bytes: int
    credential_scope: str
    rate_limit: RateLimit | None
    transport: AsyncTransport | None
    split_reasoning: bool
    tracing: bool
