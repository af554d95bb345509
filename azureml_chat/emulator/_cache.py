"""Prompt caching, simply: ``usage.prompt_tokens_details.cached_tokens`` of chat answers. No I/O.

The rule: a request's cached tokens are the prompt tokens of its longest run of leading messages (never the
last one, the new turn) that an earlier chat request to the same deployment also started with. So the second
turn of a conversation reports the first turn's messages as cached, a repeated request all but its last
message, and a first request 0. Text completions report 0. Deterministic for a given order of requests;
:meth:`Emulator.reset` forgets what was seen.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from ._answers import content_text, count_tokens

__all__ = ["PromptCache"]

# Prefixes remembered, the least recently seen forgotten first: a few MB at most, whatever the load.
_MAX_PREFIXES = 20_000


class PromptCache:
    """The message prefixes each deployment has seen (thread-safe)."""

    def __init__(self, max_prefixes: int = _MAX_PREFIXES) -> None:
        self._lock = threading.Lock()
        self._seen: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._max = max_prefixes

    def cached_tokens(self, deployment: str, messages: Sequence[Mapping[str, Any]]) -> int:
        """The tokens of ``messages`` served from the cache; remembers its prefixes for the next requests."""
        keys, tokens, running = [], [0], 0
        for message in messages:
            running = hash((running, json.dumps(message, sort_keys=True, default=str)))
            keys.append((deployment, running))
            tokens.append(tokens[-1] + count_tokens(content_text(message.get("content"))))
        with self._lock:
            hits = [length for length in range(1, len(keys)) if keys[length - 1] in self._seen]
            for key in keys:
                self._seen[key] = None
                self._seen.move_to_end(key)
            while len(self._seen) > self._max:
                self._seen.popitem(last=False)
        return tokens[max(hits)] if hits else 0

    def clear(self) -> None:
        """Forget every prefix."""
        with self._lock:
            self._seen.clear()
