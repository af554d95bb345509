"""What the OpenAI-shaped answers (chat and text completions) share: the usage object, ``n``, and the order of
a stream's chunks when it carries several choices. No I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from ._errors import BadRequest

__all__ = ["MAX_CHOICES", "interleave", "parse_n", "usage_object"]

T = TypeVar("T")
# OpenAI's own upper bound for n.
MAX_CHOICES = 128


def usage_object(
    *, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0, reasoning_tokens: int = 0
) -> dict[str, Any]:
    """The ``usage`` object: counts, their total, and the details (``cached_tokens``, ``reasoning_tokens``,
    and ``audio_tokens``, always 0, which OpenAI and Azure's 2025-04-01 schema both carry)."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning_tokens, "audio_tokens": 0},
    }


def interleave(streams: Sequence[Sequence[T]]) -> list[T]:
    """The items of several choices' chunk lists taken in turn (the first of each, then the second ...), as a
    server generating choices in parallel sends them."""
    longest = max((len(stream) for stream in streams), default=0)
    return [stream[i] for i in range(longest) for stream in streams if i < len(stream)]


def parse_n(value: Any) -> int:
    """``n``, the number of choices (1 when absent).

    Raises:
        BadRequest: not a whole number from 1 to :data:`MAX_CHOICES`.
    """
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CHOICES:
        raise BadRequest(f"'n' must be a whole number from 1 to {MAX_CHOICES}, got {value!r}", param="n")
    return value
