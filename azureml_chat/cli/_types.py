"""Argument types: a bad flag value is refused while parsing, so it exits 2 naming the flag.

Each type is a callable ``text -> value`` that raises ``argparse.ArgumentTypeError``; argparse prefixes the
message with ``argument --flag:``. The family lists come from the formatter registry, so a family registered
in the process is offered too.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from ..formatters import available_formatters, get_formatter

__all__ = ["chat_families", "chat_family", "family", "finite", "port", "seconds", "whole"]

# The highest TCP port number.
_MAX_PORT = 65535


def whole(minimum: int) -> Callable[[str], int]:
    """A whole number >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {minimum}, got {text!r}")
        return value

    return parse


def finite(text: str) -> float:
    """A finite number (not nan or inf)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}")
    return value


def seconds(text: str) -> float:
    """A positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def port(text: str) -> int:
    """A TCP port number, or 0 for a free one."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= _MAX_PORT:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to {_MAX_PORT}, got {text!r}")
    return value


def family(text: str) -> str:
    """A registered model family (or alias), lower-cased."""
    name = text.strip().lower()
    if name not in available_formatters():
        raise argparse.ArgumentTypeError(
            f"unknown family {text!r}; known families: {', '.join(available_formatters())}"
        )
    return name


def chat_families() -> tuple[str, ...]:
    """The registered families (and aliases) that can chat on some route; the others only complete text."""
    return tuple(
        name
        for name in available_formatters()
        if any(get_formatter(name).can_chat(route) for route in get_formatter(name).routes)
    )


def chat_family(text: str) -> str:
    """A registered family that can chat: ``chat`` and ``batch`` send conversations."""
    name = family(text)
    if name not in chat_families():
        raise argparse.ArgumentTypeError(
            f"{text!r} is a text-generation family and cannot chat; chat families: {', '.join(chat_families())}"
        )
    return name
