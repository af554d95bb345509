"""The classic foundation-model chat schema on ``/score`` (``llama``), and Mistral's system-message folding.

``/score`` request: ``{"input_data": {"input_string": [messages], "parameters": {...}}}``; response
``{"output": "..."}``. On a chat-completions route these families speak plain OpenAI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from .._messages import (
    AssistantMessage,
    ImagePart,
    Message,
    SystemMessage,
    TextPart,
    ToolMessage,
    UserMessage,
)
from .._responses import ChatChunk, ChatResponse
from .._serialization import messages_to_wire
from ._base import ContentFormatter, Route
from ._openai import build_chat_completions, parse_chat_chunk, parse_chat_completion

__all__ = ["LlamaFormatter", "MistralFormatter", "score_body"]

# Parameters the /score chat schema has no place for: sending them would be a silent drop or a 424.
_UNSUPPORTED_ON_SCORE = ("tools", "tool_choice", "response_format", "stream_options", "n")
# The /score schema's names for OpenAI's parameters.
_SCORE_RENAMES = {"max_tokens": "max_new_tokens"}


class LlamaFormatter(ContentFormatter):
    """Llama-2-chat style catalog models: ``input_data`` on ``/score``, OpenAI on chat completions."""

    name: ClassVar[str] = "llama"
    streaming_routes: ClassVar[frozenset[Route]] = frozenset({Route.CHAT_COMPLETIONS})

    def build_request(
        self, route: Route, messages: Sequence[Message], params: Mapping[str, Any], *, stream: bool
    ) -> dict[str, Any]:
        messages = self.prepare_messages(messages)
        if route is Route.CHAT_COMPLETIONS:
            return build_chat_completions(messages, params, stream=stream)
        for message in messages:
            if isinstance(message, ToolMessage) or (
                isinstance(message, AssistantMessage) and message.tool_calls
            ):
                raise self.reject(route, "a tool-calling conversation")
            if isinstance(message, UserMessage) and any(isinstance(p, ImagePart) for p in message.content):
                raise self.reject(route, "an image part")
        return score_body(self, messages_to_wire(_flatten_text(messages)), params)

    def parse_response(self, route: Route, body: Any) -> ChatResponse:
        if route is Route.CHAT_COMPLETIONS:
            return parse_chat_completion(self, body)
        if not isinstance(body, dict) or not isinstance(body.get("output"), str):
            raise self.shape_error("expected a JSON object with an 'output' string", body)
        return ChatResponse(message=AssistantMessage(body["output"]), raw=body)

    def parse_chunk(self, route: Route, data: Any) -> ChatChunk | None:
        return parse_chat_chunk(self, data)

    def prepare_messages(self, messages: Sequence[Message]) -> Sequence[Message]:
        """Adjust the conversation for the family's chat template (nothing to do for Llama)."""
        return messages


class MistralFormatter(LlamaFormatter):
    """Mistral OSS models: as ``llama``, but the template has no system role, so a leading system message
    is folded into the first user message (``system + "\\n\\n" + user``)."""

    name: ClassVar[str] = "mistral"

    def prepare_messages(self, messages: Sequence[Message]) -> Sequence[Message]:
        if not messages or not isinstance(messages[0], SystemMessage):
            return messages
        system, rest = messages[0], list(messages[1:])
        if rest and isinstance(rest[0], UserMessage):
            user = rest[0]
            if isinstance(user.content, str):
                merged = UserMessage(f"{system.content}\n\n{user.content}", name=user.name)
            else:
                merged = UserMessage((TextPart(f"{system.content}\n\n"), *user.content), name=user.name)
            return [merged, *rest[1:]]
        # No user turn to fold into: the instructions become the user turn rather than being lost.
        return [UserMessage(system.content), *rest]


def score_body(
    formatter: ContentFormatter, wire_messages: list[dict[str, Any]], params: Mapping[str, Any]
) -> dict[str, Any]:
    """The ``/score`` chat body for messages already in the wire shape (checked for the schema by the caller).

    Raises:
        InvalidRequestError: for a parameter the schema has no place for.
    """
    for name in _UNSUPPORTED_ON_SCORE:
        if name in params:
            raise formatter.reject(Route.SCORE, f"the {name!r} parameter")
    # When both max_tokens and max_new_tokens are given, the later one wins: merge_params orders keys by
    # the layer that set them, so a call's max_tokens beats a max_new_tokens left in model_kwargs.
    parameters = {_SCORE_RENAMES.get(key, key): value for key, value in params.items()}
    return {"input_data": {"input_string": wire_messages, "parameters": parameters}}


def _flatten_text(messages: Sequence[Message]) -> Sequence[Message]:
    # /score chat templates take strings; text-only part lists are joined rather than rejected.
    if not any(isinstance(m, UserMessage) and not isinstance(m.content, str) for m in messages):
        return messages
    return [
        UserMessage("".join(p.text for p in m.content if isinstance(p, TextPart)), name=m.name)
        if isinstance(m, UserMessage) and not isinstance(m.content, str)
        else m
        for m in messages
    ]
