"""Client configuration: resolved once at construction from arguments and ``AZUREML_*`` variables.

What belongs to one endpoint (URL, route, formatter, key, deployment) is resolved in ``_endpoint.py``; this
module holds the client-wide settings (timeouts, retries, model parameters, pool size) and the checks both
share.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

from . import _defaults
from ._errors import ConfigurationError
from ._retry import RetryPolicy

__all__ = [
    "ENV_TIMEOUT",
    "ClientConfig",
    "Secret",
    "Timeout",
    "build_config",
    "check_header_token",
    "check_headers",
    "is_loopback",
]

ENV_TIMEOUT = "AZUREML_TIMEOUT"
# Header values must not smuggle in a line break; deployment names are letters, digits and dashes on Azure.
_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")


@attrs.frozen(repr=False)
class Secret:
    """A key that never shows itself: ``repr`` and ``str`` are masked."""

    _value: str

    def get_secret_value(self) -> str:
        """The key itself (only for putting it in a header)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __str__(self) -> str:
        return "**********"


def positive_number(value: object) -> bool:
    """Whether ``value`` is a finite number above 0 (an int or a float, not a bool): what every duration, limit
    and weight of the configuration must be."""
    return (
        not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value > 0
    )


def _check_seconds(value: float | None, name: str) -> None:
    if value is None:
        return
    # inf is refused too: aiohttp rounds deadlines with math.ceil, which raises OverflowError on it (use None).
    if not positive_number(value):
        what = f"timeout {name}" if name else "timeout"
        raise ConfigurationError(
            f"{what} must be a positive, finite number of seconds or None, got {value!r}"
        )


@attrs.frozen(kw_only=True, cache_hash=True)  # hashed on every call by client_timeout's lru_cache
class Timeout:
    """Timeouts of one attempt, in seconds (``None`` disables one).

    Attributes:
        connect: connecting, including the wait for a free pooled connection.
        read: for a stream, the idle time allowed between two events; for a non-streaming call, whose
            answer arrives all at once when the model is done, the whole wait (the attempt is bounded by
            ``min(read, total)``).
        total: the whole attempt, body (or stream) included.
    """

    connect: float | None = attrs.field(default=_defaults.CONNECT_TIMEOUT)
    read: float | None = attrs.field(default=_defaults.READ_TIMEOUT)
    total: float | None = attrs.field(default=_defaults.TOTAL_TIMEOUT)

    @connect.validator
    @read.validator
    @total.validator
    def _check(self, attribute: attrs.Attribute[float | None], value: float | None) -> None:
        _check_seconds(value, attribute.name)

    @classmethod
    def coerce(cls, value: float | Timeout) -> Timeout:
        """A ``Timeout`` from a number of seconds (total and read; connect is capped at its default)."""
        if isinstance(value, Timeout):
            return value
        _check_seconds(value, "")
        seconds = float(value)
        return cls(connect=min(seconds, _defaults.CONNECT_TIMEOUT), read=seconds, total=seconds)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_header_token(value: str, what: str) -> str:
    """``value`` when it is a safe header token (letters, digits, ``._-``), else a ``ConfigurationError``."""
    if not isinstance(value, str) or not _TOKEN.match(value):
        raise ConfigurationError(f"{what} must be letters, digits, '.', '_' or '-', got {value!r}")
    return value


def check_headers(headers: Mapping[str, str] | None, what: str) -> dict[str, str]:
    """A copy of ``headers`` with every name and value checked (strings, no line breaks)."""
    checked: dict[str, str] = {}
    if headers is not None and not isinstance(headers, Mapping):
        raise ConfigurationError(
            f"{what} must be a mapping of header names to values, got {type(headers).__name__}"
        )
    for name, value in (headers or {}).items():
        if (
            not isinstance(name, str)
            or not isinstance(value, str)
            or any(c in name + value for c in "\r\n\0")
        ):
            raise ConfigurationError(f"{what}: header names and values must be strings without line breaks")
        checked[name.lower()] = value
    return checked


@attrs.frozen(kw_only=True)
class ClientConfig:
    """The client-wide settings, resolved and checked once (what belongs to an endpoint is in ``ResolvedEndpoint``)."""

    timeout: Timeout
    retry: RetryPolicy
    model_kwargs: Mapping[str, Any]
    max_connections: int
    max_event_bytes: int


def build_config(
    *,
    timeout: float | Timeout | None,
    max_retries: int | None,
    retry: RetryPolicy | None,
    model_kwargs: Mapping[str, Any] | None,
    max_connections: int | None,
    max_event_bytes: int,
    env: Mapping[str, str] = os.environ,
) -> ClientConfig:
    """Resolve the client-wide arguments, falling back to ``AZUREML_TIMEOUT``."""
    if timeout is None:
        env_timeout = env.get(ENV_TIMEOUT)
        try:
            # Checked here (not at the final coerce) so that a bad value names the variable it came from.
            timeout = Timeout.coerce(float(env_timeout)) if env_timeout else Timeout()
        except ValueError:
            raise ConfigurationError(
                f"{ENV_TIMEOUT} must be a positive number of seconds, got {env_timeout!r}"
            ) from None
    if model_kwargs is not None and not isinstance(model_kwargs, Mapping):
        raise ConfigurationError(f"model_kwargs must be a mapping, got {type(model_kwargs).__name__}")
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise ConfigurationError(f"retry must be a RetryPolicy, got {type(retry).__name__}")
    if retry is not None and max_retries is not None:
        retry = attrs.evolve(retry, max_retries=max_retries)
    try:
        policy = retry or RetryPolicy(
            max_retries=_defaults.MAX_RETRIES if max_retries is None else max_retries
        )
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    connections = _defaults.MAX_CONNECTIONS if max_connections is None else max_connections
    if isinstance(connections, bool) or not isinstance(connections, int) or connections < 1:
        raise ConfigurationError(f"max_connections must be a whole number >= 1, got {max_connections!r}")
    if isinstance(max_event_bytes, bool) or not isinstance(max_event_bytes, int) or max_event_bytes < 1:
        raise ConfigurationError(f"max_event_bytes must be a whole number >= 1, got {max_event_bytes!r}")
    return ClientConfig(
        timeout=Timeout.coerce(timeout),
        retry=policy,
        # A private, read-only copy: neither the caller nor a call can change it afterwards.
        model_kwargs=MappingProxyType(dict(model_kwargs or {})),
        max_connections=connections,
        max_event_bytes=max_event_bytes,
    )
