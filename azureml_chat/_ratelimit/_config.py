"""``RateLimit``: how a client paces itself, and with whom it shares that pace (a store)."""

from __future__ import annotations

from typing import Any

import attrs

from .. import _defaults
from .._config import positive_number
from .._errors import ConfigurationError

__all__ = ["RateLimit"]

_STORE_SCHEMES = ("redis://", "rediss://", "unix://")


def _positive_or_none(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not positive_number(value):
        raise ConfigurationError(f"{attribute.name} must be a positive number or None, got {value!r}")


def _store_url(_: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not value.startswith(_STORE_SCHEMES):
        raise ConfigurationError(
            f"store must be a Redis URL such as 'redis://host:6379/0' (or rediss://, unix://), got {value!r}"
        )


def _key_name(_: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is None:
        return
    # Braces would break the key's hash tag (every key of one name lives in one Redis Cluster slot).
    if not isinstance(value, str) or not value or "{" in value or "}" in value:
        raise ConfigurationError(f"name must be a non-empty string without braces, got {value!r}")


@attrs.frozen(kw_only=True)
class RateLimit:
    """How one client paces itself. Pass as ``rate_limit=`` (the default is ``RateLimit()``).

    A ``RateLimit`` is plain data (it pickles), so a worker process can build its own client from it.

    Attributes:
        shared_cooldown: after a 429 that says how long to wait (or an answer that says the quota is spent until
            a reset), every call on the client waits; then one probe request goes first, and the others follow
            in doubling stages as answers come back. ``False`` lets each call retry on its own.
        max_concurrency: requests (and open streams) in flight at once; ``None`` is the pool size. Always this
            process's own, even with a ``store``.
        requests_per_minute: a request budget, spread evenly (serverless deployments allow 1,000 RPM).
        tokens_per_minute: a token budget charged with each answer's usage (serverless: 200,000 TPM); a
            request waits while the budget is spent.
        store: where the cooldown, the release after it and both budgets live. ``None`` (the default): in this
            process. A Redis URL (``"redis://host:6379/0"``; needs the ``redis`` extra): shared by every client,
            in any process on any machine, with the same store and ``name``. If the store cannot be reached,
            calls go on under this process's own limits, one WARNING is logged, and the store is tried again
            every few seconds.
        name: the shared limit's name, required with ``store``: one endpoint's quota (``"llama-eastus"``). On a
            client over several endpoints, each endpoint has its own: ``"<name>/<endpoint name>"``.
        store_timeout: how long one store operation may take before the local limits take over (seconds).
    """

    shared_cooldown: bool = True
    max_concurrency: int | None = attrs.field(default=None, validator=_positive_or_none)
    requests_per_minute: float | None = attrs.field(default=None, validator=_positive_or_none)
    tokens_per_minute: float | None = attrs.field(default=None, validator=_positive_or_none)
    store: str | None = attrs.field(default=None, validator=_store_url)
    name: str | None = attrs.field(default=None, validator=_key_name)
    store_timeout: float = attrs.field(default=_defaults.STORE_TIMEOUT, validator=_positive_or_none)

    def __attrs_post_init__(self) -> None:
        if self.store is not None and self.name is None:
            raise ConfigurationError(
                "a RateLimit with a store needs a name: the quota it shares, e.g. "
                "RateLimit(store='redis://host:6379/0', name='llama-eastus')"
            )
        if self.name is not None and self.store is None:
            raise ConfigurationError(
                "name= names a limit shared through a store: pass store='redis://host:6379/0' too"
            )
