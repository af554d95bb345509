"""The formatter contract: pure translation between messages + parameters and one model family's JSON.

A formatter never does I/O. The client hands it the route, the messages and the merged parameters; it
returns a JSON-ready dict. The client hands it the parsed JSON of a response (or of one stream event);
it returns a :class:`~azureml_chat.ChatResponse` (or :class:`~azureml_chat.ChatChunk`).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from .._errors import InvalidRequestError, ResponseFormatError
from .._messages import Message
from .._responses import ChatChunk, ChatResponse

__all__ = ["ContentFormatter", "Route"]


class Route(enum.Enum):
    """The two request dialects an Azure ML endpoint speaks."""

    SCORE = "score"
    """A dedicated endpoint's ``/score``: the body depends on the deployed model family."""
    CHAT_COMPLETIONS = "chat/completions"
    """OpenAI-compatible chat completions: ``/v1/chat/completions``, ``/chat/completions``,
    ``/models/chat/completions``."""


class ContentFormatter:
    """Base class for a model family's formatter. Subclass it and :func:`register_formatter` it.

    Override :meth:`build_request` and :meth:`parse_response`; override :meth:`parse_chunk` and list
    the route in ``streaming_routes`` when the family can stream there.

    Attributes:
        name: the family name used in error messages.
        routes: the routes this family can speak.
        streaming_routes: the routes on which this family streams server-sent events.
    """

    name: ClassVar[str] = "custom"
    routes: ClassVar[frozenset[Route]] = frozenset(Route)
    streaming_routes: ClassVar[frozenset[Route]] = frozenset()

    def build_request(
        self, route: Route, messages: Sequence[Message], params: Mapping[str, Any], *, stream: bool
    ) -> dict[str, Any]:
        """Return the JSON body for ``messages`` and ``params`` on ``route``.

        Raises:
            InvalidRequestError: when the route's schema cannot carry something the call asked for.
        """
        raise NotImplementedError

    def parse_response(self, route: Route, body: Any) -> ChatResponse:
        """Turn a parsed 2xx JSON body into a :class:`ChatResponse`.

        Raises:
            ResponseFormatError: when the body is not this family's shape.
        """
        raise NotImplementedError

    def parse_chunk(self, route: Route, data: Any) -> ChatChunk | None:
        """Turn the parsed ``data`` of one stream event into a :class:`ChatChunk` (``None`` to skip it)."""
        raise NotImplementedError(f"the {self.name!r} formatter cannot stream on {route.value}")

    # --- helpers for subclasses ---------------------------------------------------------------------

    def shape_error(self, what: str, body: Any) -> ResponseFormatError:
        """A :class:`ResponseFormatError` for ``body``, with a hint at the family its shape suggests."""
        from . import available_formatters  # the registry imports this module

        hint = suggest_family(body)
        message = f"unexpected response shape: {what}"
        if hint and hint != self.name:
            if hint in available_formatters():
                message += f"; this looks like a {hint!r} response, try formatter={hint!r}"
            else:
                message += (
                    f"; this looks like {hint!r} text-generation output, which a chat formatter cannot read"
                )
        return ResponseFormatError(message, formatter=self.name, excerpt=_excerpt(body))

    def reject(self, route: Route, feature: str) -> InvalidRequestError:
        """An :class:`InvalidRequestError` for a feature this family cannot carry on ``route``."""
        other = (
            "an OpenAI-compatible route (/v1/chat/completions)" if route is Route.SCORE else "another route"
        )
        return InvalidRequestError(
            f"{feature} cannot be sent to the {self.name!r} formatter's {route.value} schema; use {other}"
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def suggest_family(body: Any) -> str | None:
    """Guess which family produced ``body`` (for error hints only)."""
    if isinstance(body, dict):
        if "choices" in body:
            return "openai"
        if "output" in body:
            return "llama"
    if isinstance(body, list) and body:
        first = body[0]
        if isinstance(first, str):
            return "dolly"
        if isinstance(first, dict) and isinstance(first.get("0"), dict):
            return "hf"
        if isinstance(first, dict) and "0" in first:
            return "gpt2"
    return None


def _excerpt(body: Any, limit: int = 300) -> str:
    try:
        text = json.dumps(body, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(body)
    return text if len(text) <= limit else text[:limit] + "..."
