"""Rate limits: how a client paces itself (``RateLimit``), the waiting (``RateLimiter``), and where the shared
state lives (``RateLimitStore``: in this process, or in Redis for every process that names the same limit).

- ``_config.py``: ``RateLimit``, the user's settings (plain data, picklable).
- ``_limiter.py``: ``RateLimiter``, admission and the waiting; ``Ticket``.
- ``_store.py``: the ``RateLimitStore`` protocol and ``InProcessStore``.
- ``_redis.py`` and ``_lua.py``: ``RedisStore``, the same state in Redis, changed by Lua scripts.
"""

from ._config import RateLimit
from ._limiter import RateLimiter, Ticket
from ._store import Grant, InProcessStore, RateLimitStore

__all__ = ["Grant", "InProcessStore", "RateLimit", "RateLimitStore", "RateLimiter", "Ticket"]
