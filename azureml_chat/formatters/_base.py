"""The formatter contract: pure translation between a call and one model family's JSON.

A formatter never does I/O. For ``chat()`` the client hands it the route, the messages and the merged
parameters; it returns a JSON-ready dict. The client hands it the parsed JSON of a response (or of one
stream event); it returns a :class:`~azureml_chat.ChatResponse` (or :class:`~azureml_chat.ChatChunk`).
``complete()`` does the same with a prompt and :class:`~azureml_chat.CompletionResponse` /
:class:`~azureml_chat.CompletionChunk`, on the routes listed in ``completion_routes``.

The client calls three hooks that work on the wire's own data: :meth:`ContentFormatter.build_chat` (messages
as OpenAI-shaped dicts), :meth:`ContentFormatter.read_chat` and :meth:`ContentFormatter.read_completion`
(which also take the request id, so an answer is built once, complete). The built-in families implement
them directly. A family written against message objects overrides the classic hooks instead
(``build_request``, ``parse_response``, ``parse_completion``); the wire-level hooks of the base class then
convert and call them, so both kinds of subclass take the same path through the client.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import attrs

from .. import _defaults
from .._errors import InvalidRequestError, ResponseFormatError
from .._messages import Message
from .._responses import ChatChunk, ChatResponse, CompletionChunk, CompletionResponse
from .._serialization import messages_from_input

__all__ = ["ContentFormatter", "Route"]


class Route(enum.Enum):
    """The request dialects an Azure ML endpoint speaks; the URL's path picks one."""

    SCORE = "score"
    """A dedicated endpoint's ``/score``: the body depends on the deployed model family."""
    CHAT_COMPLETIONS = "chat/completions"
    """OpenAI-compatible chat completions: ``/v1/chat/completions``, ``/chat/completions``,
    ``/models/chat/completions``."""
    COMPLETIONS = "completions"
    """OpenAI-compatible text completions: ``/v1/completions``, ``/completions`` (a prompt in, text out)."""

    # Members are singletons compared by identity, so the identity hash is a valid one, and C-level: Enum's own
    # __hash__ is a Python call, paid on every request (route sets are tested per call).
    __hash__ = object.__hash__


# The wire-level hooks the client calls, each with the classic hooks a subclass may override instead: a class
# that overrides one of those but not the wire-level hook gets the base class's, which converts and calls it.
_WIRE_HOOKS = {
    "build_chat": ("build_request",),
    "read_chat": ("parse_response",),
    "read_completion": ("parse_completion",),
}

# How each route's URL usually ends, for error messages.
ROUTE_PATHS = {
    Route.SCORE: "/score",
    Route.CHAT_COMPLETIONS: "/v1/chat/completions",
    Route.COMPLETIONS: "/v1/completions",
}


class ContentFormatter:
    """Base class for a model family's formatter. Subclass it and :func:`register_formatter` it.

    A chat family overrides :meth:`build_request` and :meth:`parse_response`, plus :meth:`parse_chunk`
    with the route in ``streaming_routes`` when it can stream there. A text-generation family lists its
    routes in ``completion_routes`` and overrides :meth:`build_completion_request` and
    :meth:`parse_completion` (and :meth:`parse_completion_chunk` when it streams). The route decides the
    operation: on a route in ``completion_routes`` the family completes text, on its other routes it chats.

    Attributes:
        name: the family name used in error messages.
        routes: the routes this family can speak at all (a client on another route is refused at
            construction). Default: ``/score`` and chat completions.
        completion_routes: the routes (among ``routes``) on which this family completes text instead of
            chatting. Default: none.
        streaming_routes: the routes on which this family streams server-sent events.
    """

    name: ClassVar[str] = "custom"
    routes: ClassVar[frozenset[Route]] = frozenset({Route.SCORE, Route.CHAT_COMPLETIONS})
    completion_routes: ClassVar[frozenset[Route]] = frozenset()
    streaming_routes: ClassVar[frozenset[Route]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for hook, classic in _WIRE_HOOKS.items():
            if hook not in vars(cls) and any(name in vars(cls) for name in classic):
                setattr(cls, hook, getattr(ContentFormatter, hook))

    def can_chat(self, route: Route) -> bool:
        """Whether ``chat()`` works on ``route`` with this family."""
        return route in self.routes and route not in self.completion_routes

    def can_complete(self, route: Route) -> bool:
        """Whether ``complete()`` works on ``route`` with this family."""
        return route in self.routes and route in self.completion_routes

    # --- what the client calls --------------------------------------------------------------------------

    def build_chat(
        self, route: Route, messages: list[dict[str, Any]], params: Mapping[str, Any], *, stream: bool
    ) -> dict[str, Any]:
        """Return the JSON body for checked, OpenAI-shaped ``messages`` and ``params`` on ``route``.

        ``messages`` may be the caller's own list: read it, never change it. The default turns the dicts
        into message objects and calls :meth:`build_request`.
        """
        if not self.can_chat(route):
            raise self.cannot_chat(route)
        return self.build_request(route, messages_from_input(messages), params, stream=stream)

    def read_chat(self, route: Route, body: Any, *, request_id: str | None) -> ChatResponse:
        """The :class:`ChatResponse` for a parsed 2xx body, carrying ``request_id``. The default calls
        :meth:`parse_response` and stamps a copy (a subclass's answer may be shared)."""
        response = self.parse_response(route, body)
        return attrs.evolve(response, request_id=request_id)

    def read_completion(self, route: Route, body: Any, *, request_id: str | None) -> CompletionResponse:
        """The :class:`CompletionResponse` for a parsed 2xx body, carrying ``request_id``. The default calls
        :meth:`parse_completion` and stamps a copy."""
        response = self.parse_completion(route, body)
        return attrs.evolve(response, request_id=request_id)

    # --- chat -----------------------------------------------------------------------------------------

    def build_request(
        self, route: Route, messages: Sequence[Message], params: Mapping[str, Any], *, stream: bool
    ) -> dict[str, Any]:
        """Return the JSON body for ``messages`` and ``params`` on ``route``.

        Raises:
            InvalidRequestError: when the route's schema cannot carry something the call asked for, or when
                this family completes text on ``route`` instead of chatting.
        """
        if not self.can_chat(route):
            raise self.cannot_chat(route)
        raise NotImplementedError

    def parse_response(self, route: Route, body: Any) -> ChatResponse:
        """Turn a parsed 2xx JSON body into a :class:`ChatResponse`.

        Raises:
            ResponseFormatError: when the body is not this family's shape.
        """
        raise NotImplementedError

    def parse_chunk(self, route: Route, data: Any) -> ChatChunk | tuple[ChatChunk, ...] | None:
        """Turn the parsed ``data`` of one stream event into a :class:`ChatChunk` (a tuple of them when the
        event carries several choices, each with its ``index``; ``None`` to skip the event)."""
        raise NotImplementedError(f"the {self.name!r} formatter cannot stream on {route.value}")

    # --- text completion --------------------------------------------------------------------------------

    def build_completion_request(
        self, route: Route, prompt: str, params: Mapping[str, Any], *, stream: bool
    ) -> dict[str, Any]:
        """Return the JSON body that asks ``route`` to continue ``prompt`` with ``params``.

        The prompt goes in as given: the body is encoded once, so nothing is escaped or quoted by hand.

        Raises:
            InvalidRequestError: by default (this family cannot complete), or when the route's schema cannot
                carry something the call asked for.
        """
        raise self._completion_hook_missing(route, "build_completion_request")

    def parse_completion(self, route: Route, body: Any) -> CompletionResponse:
        """Turn a parsed 2xx JSON body into a :class:`CompletionResponse`.

        Raises:
            ResponseFormatError: when the body is not this family's shape.
            InvalidRequestError: by default (this family cannot complete).
        """
        raise self._completion_hook_missing(route, "parse_completion")

    def parse_completion_chunk(
        self, route: Route, data: Any
    ) -> CompletionChunk | tuple[CompletionChunk, ...] | None:
        """Turn the parsed ``data`` of one stream event into a :class:`CompletionChunk` (a tuple of them when
        the event carries several choices; ``None`` to skip the event).

        Raises:
            StreamError: when the event reports an error or is not this family's shape.
            InvalidRequestError: by default (this family cannot complete).
        """
        raise self._completion_hook_missing(route, "parse_completion_chunk")

    def _completion_hook_missing(self, route: Route, hook: str) -> Exception:
        if self.can_complete(route):
            # The subclass lists the route in completion_routes but forgot the hook: a bug, not a bad call.
            return NotImplementedError(
                f"{type(self).__name__} completes text on {route.value} but has no {hook}()"
            )
        return self.cannot_complete(route)

    # --- helpers for subclasses ---------------------------------------------------------------------

    def shape_error(self, what: str, body: Any, *, completion: bool = False) -> ResponseFormatError:
        """A :class:`ResponseFormatError` for ``body``, with a hint at the family (and call) its shape suggests.

        Args:
            what: what was wrong, for the message.
            body: the parsed body, excerpted in the message.
            completion: whether the body answered ``complete()`` (else ``chat()``).
        """
        message = f"unexpected response shape: {what}"
        guess = guess_family(body)
        if guess is not None and guess[1] is None:
            guess = (guess[0], completion)
        if guess is not None and guess != (self.name, completion):
            # guess_family only names built-in families, which are always registered.
            family, completes = guess
            if completes == completion:
                message += f"; this looks like a {family!r} response, try formatter={family!r}"
            elif completes:
                message += f"; this looks like {family!r} text-generation output, which chat() cannot read"
                message += f": call complete() with formatter={family!r}"
            else:
                message += f"; this looks like a {family!r} chat response, which complete() cannot read"
                message += f": call chat() with formatter={family!r}"
        return ResponseFormatError(message, formatter=self.name, excerpt=_excerpt(body))

    def reject(self, route: Route, feature: str) -> InvalidRequestError:
        """An :class:`InvalidRequestError` for a feature this family cannot carry on ``route``."""
        other = (
            "an OpenAI-compatible route (/v1/chat/completions)" if route is Route.SCORE else "another route"
        )
        return InvalidRequestError(
            f"{feature} cannot be sent to the {self.name!r} formatter's {route.value} schema; use {other}"
        )

    def cannot_chat(self, route: Route) -> InvalidRequestError:
        """The :class:`InvalidRequestError` of ``chat()`` on a route where this family completes text."""
        if route is Route.COMPLETIONS:
            return InvalidRequestError(
                "this URL is the text completion route (/v1/completions), not chat: call complete(prompt), "
                "or point the client at the chat completions URL (/v1/chat/completions) to chat"
            )
        return InvalidRequestError(
            f"the {self.name!r} formatter is a text-generation family, not chat: call complete(prompt) "
            f"instead of chat() on {ROUTE_PATHS[route]} (chat there needs a chat family, such as "
            "formatter='llama')"
        )

    def cannot_complete(self, route: Route) -> InvalidRequestError:
        """The :class:`InvalidRequestError` of ``complete()`` where this family cannot complete text."""
        if self.completion_routes:
            where = " or ".join(sorted(ROUTE_PATHS[r] for r in self.completion_routes))
            return InvalidRequestError(
                f"the {self.name!r} formatter completes text only on {where}, and this client's URL is the "
                f"{route.value} route: point a client at the {where} URL to complete text"
            )
        return InvalidRequestError(
            f"the {self.name!r} formatter is a chat family and cannot complete text: call chat(), or use a "
            "text-generation family (formatter='gpt2', 'hf' or 'dolly' on /score, or formatter='openai' "
            "on a /v1/completions URL)"
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def guess_family(body: Any) -> tuple[str, bool | None] | None:
    """Guess which family produced ``body``, and whether it answered a text completion (``None``: cannot tell),
    for error hints."""
    if isinstance(body, dict):
        if "choices" in body:
            choices = body["choices"]
            first = choices[0] if isinstance(choices, list) and choices else None
            if not isinstance(first, dict) or ("text" in first) == ("message" in first):
                return "openai", None
            return "openai", "text" in first
        if "output" in body:
            return "llama", False
    if isinstance(body, list) and body:
        first = body[0]
        if isinstance(first, str):
            return "dolly", True
        if isinstance(first, list):
            return "hf", True  # [[{"generated_text": ...}]], an early HF shape
        if isinstance(first, dict) and (
            isinstance(first.get("0"), dict) or "generated_text" in first or "summary_text" in first
        ):
            return "hf", True
        if isinstance(first, dict) and "0" in first:
            return "gpt2", True
    return None


def _excerpt(body: Any, limit: int = _defaults.RESPONSE_EXCERPT) -> str:
    try:
        text = json.dumps(body, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(body)
    return text if len(text) <= limit else text[:limit] + "..."
