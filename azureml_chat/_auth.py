"""Bearer tokens from an Entra ID credential (or any callable), cached and refreshed ahead of expiry."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

from . import _defaults
from ._errors import ConfigurationError

__all__ = ["DEFAULT_SCOPE", "TokenProvider"]

# The audience of Azure ML online endpoints (azure_protocol.md 1.2).
DEFAULT_SCOPE = "https://ml.azure.com/.default"


class TokenProvider:
    """Turns a credential into bearer tokens.

    The credential's contract (what ``credential=`` accepts):

    - an object with ``get_token``: azure-identity's ``AsyncTokenCredential`` (``await get_token(scope)``) or
      ``TokenCredential`` (``get_token(scope)``, called in a worker thread, off the loop);
    - a callable, called with the scope (one positional string) when it takes a positional argument
      (``def cred(scope)``, ``def cred(*scopes)``, a bound ``get_token``), else with no arguments. An
      ``async def`` is awaited; anything else is called in a worker thread, and an awaitable it returns is
      awaited on the loop.

    Either returns a token string, or an object with ``token`` and ``expires_on`` (epoch seconds), such as
    azure-identity's ``AccessToken``. Tokens with an expiry are reused until five minutes before it; a bare
    string is reused until :meth:`invalidate` (the client calls it after a 401). Concurrent callers share one
    refresh.
    """

    def __init__(self, credential: Any, scope: str = DEFAULT_SCOPE) -> None:
        get_token = getattr(credential, "get_token", None)
        if callable(get_token):
            self._fetcher: Callable[..., Any] = get_token
            self._arguments: tuple[str, ...] = (scope,)
        elif callable(credential):
            self._fetcher = credential
            self._arguments = (scope,) if _takes_scope(credential) else ()
        else:
            raise ConfigurationError(
                "credential must be an azure-identity credential (with get_token) or a callable returning a token, "
                f"got {type(credential).__name__}"
            )
        self._token: str | None = None
        self._refresh_at = 0.0
        self._lock: asyncio.Lock | None = None

    async def token(self) -> str:
        """A valid token, fetched only when the cached one is missing or near its expiry."""
        if self._token is not None and time.time() < self._refresh_at:
            return self._token
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._token is None or time.time() >= self._refresh_at:
                self._token, self._refresh_at = await self._fetch()
            return self._token

    def invalidate(self) -> None:
        """Forget the cached token (after the endpoint rejected it)."""
        self._token = None
        self._refresh_at = 0.0

    async def _fetch(self) -> tuple[str, float]:
        if inspect.iscoroutinefunction(self._fetcher):
            result = await self._fetcher(*self._arguments)
        else:
            result = await asyncio.to_thread(self._fetcher, *self._arguments)
            if inspect.isawaitable(result):
                result = await result
        return _parse_token(result)


def _takes_scope(function: Callable[..., Any]) -> bool:
    """Whether a credential callable takes a positional argument (then it is given the scope)."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # no signature to read (some builtins): called without arguments
        return False
    return any(parameter.kind in _POSITIONAL for parameter in parameters)


_POSITIONAL = (
    inspect.Parameter.POSITIONAL_ONLY,
    inspect.Parameter.POSITIONAL_OR_KEYWORD,
    inspect.Parameter.VAR_POSITIONAL,
)


def _parse_token(result: Any) -> tuple[str, float]:
    if isinstance(result, str) and result:
        return result, float("inf")
    token = getattr(result, "token", None)
    if isinstance(token, str) and token:
        expires_on = getattr(result, "expires_on", None)
        if isinstance(expires_on, (int, float)) and not isinstance(expires_on, bool):
            return token, float(expires_on) - _defaults.TOKEN_REFRESH_MARGIN
        return token, float("inf")
    raise ConfigurationError(
        f"the credential returned {type(result).__name__}, not a token string or an object with .token"
    )
