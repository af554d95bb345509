"""Request bodies built straight from plain-dict messages, for the package's own formatters.

``{"role": "system"|"user"|"assistant", "content": "<text>"}`` dicts are already what the OpenAI and ``/score``
chat schemas send. Turning them into message objects only to turn them back costs more than the rest of a
call's Python (docs/performance.md), so a client whose formatter is one of these builds the body from the
dicts directly; any other formatter, or any other message, takes ``build_request``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from ._base import ContentFormatter, Route
from ._openai import OpenAIFormatter, chat_completions_body
from ._score import LlamaFormatter, score_body

__all__ = ["PlainBodyBuilder", "plain_body_builder"]

# (wire messages, params, stream=) -> the request body
PlainBodyBuilder = Callable[..., dict[str, Any]]


def plain_body_builder(formatter: ContentFormatter, route: Route) -> PlainBodyBuilder | None:
    """What builds ``formatter``'s chat body on ``route`` from plain-dict messages, when it is the package's
    own code that would build the same body from message objects; ``None`` otherwise (a subclass that
    overrides how bodies are built, Mistral's system folding, a route the formatter cannot chat on)."""
    cls = type(formatter)
    if cls.build_request is OpenAIFormatter.build_request and formatter.can_chat(route):
        return chat_completions_body
    if cls.build_request is LlamaFormatter.build_request and (
        getattr(cls, "prepare_messages", None) is LlamaFormatter.prepare_messages
        and formatter.can_chat(route)
    ):
        if route is Route.CHAT_COMPLETIONS:
            return chat_completions_body
        if route is Route.SCORE:
            return functools.partial(_score, formatter)
    return None


def _score(
    formatter: ContentFormatter,
    wire_messages: list[dict[str, Any]],
    params: Mapping[str, Any],
    *,
    stream: bool,
) -> dict[str, Any]:
    return score_body(formatter, wire_messages, params)
