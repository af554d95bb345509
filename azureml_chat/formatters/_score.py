"""The classic foundation-model chat schema on ``/score`` (``llama``), and Mistral's system-message folding.

``/score`` request: ``{"input_data": {"input_string": [messages], "parameters": {...}}}``; response
``{"output": "..."}``. On a chat-completions route these families speak plain OpenAI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from .._messages import AssistantMessage, Message
from .._responses import ChatChunk, ChatResponse, Choice, chat_response
from .._serialization import messages_to_wire
from ._base import ContentFormatter, Route
from ._openai import chat_completions_body, parse_chat_chunk, parse_chat_completion

__all__ = ["LlamaFormatter", "MistralFormatter", "score_body"]

# Parameters the /score chat schema has no place for: sending them would be a silent drop or a 424.
_UNSUPPORTED_ON_SCORE = ("tools", "tool_choice", "response_format", "stream_options", "n")
# The /score schema's names for OpenAI's parameters.
_SCORE_RENAMES = {"max_tokens": "max_new_tokens"}


class LlamaFormatter(ContentFormatter):
    """Llama-2-chat style catalog models: ``input_data`` on ``/score``, OpenAI on chat completions."""

    name: ClassVar[str] = "llama"
    streaming_routes: ClassVar[frozenset[Route]] = frozenset({Route.CHAT_COMPLETIONS})

    def build_chat(
        self, route: Route, messages: list[dict[str, Any]], params: Mapping[str, Any], *, stream: bool
    ) -> dict[str, Any]:
        messages = self.prepare_messages(messages)
        if route is Route.CHAT_COMPLETIONS:
            return chat_completions_body(messages, params, stream=stream)
        for message in messages:
            if message["role"] == "tool" or (message["role"] == "assistant" and message.get("tool_calls")):
                raise self.reject(route, "a tool-calling conversation")
            content = message.get("content")
            if type(content) is list and any(part.get("type") == "image_url" for part in content):
                raise self.reject(route, "an image part")
        return score_body(self, _flatten_text(messages), params)

    def build_request(
        self, route: Route, messages: Sequence[Message], params: Mapping[str, Any], *, stream: bool
    ) -> dict[str, Any]:
        return self.build_chat(route, messages_to_wire(messages), params, stream=stream)

    def read_chat(self, route: Route, body: Any, *, request_id: str | None) -> ChatResponse:
        if route is Route.CHAT_COMPLETIONS:
            return parse_chat_completion(self, body, request_id=request_id)
        if not isinstance(body, dict) or not isinstance(body.get("output"), str):
            raise self.shape_error("expected a JSON object with an 'output' string", body)
        return chat_response(
            (Choice(message=AssistantMessage(body["output"])),), None, None, None, request_id, body
        )

    def parse_response(self, route: Route, body: Any) -> ChatResponse:
        return self.read_chat(route, body, request_id=None)

    def parse_chunk(self, route: Route, data: Any) -> ChatChunk | tuple[ChatChunk, ...] | None:
        return parse_chat_chunk(self, data)

    def prepare_messages(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Adjust the OpenAI-shaped conversation for the family's chat template (nothing to do for Llama).

        Return a new list (and new dicts for what changes): ``messages`` may be the caller's own.
        """
        return messages


class MistralFormatter(LlamaFormatter):
    """Mistral OSS models: as ``llama``, but the template has no system role, so a leading system message
    is folded into the first user message (``system + "\\n\\n" + user``)."""

    name: ClassVar[str] = "mistral"

    def prepare_messages(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not messages or messages[0]["role"] != "system":
            return messages
        system, rest = messages[0]["content"], messages[1:]
        if rest and rest[0]["role"] == "user":
            user = rest[0]
            content = user["content"]
            if isinstance(content, str):
                merged = {**user, "content": f"{system}\n\n{content}"}
            else:
                merged = {**user, "content": [{"type": "text", "text": f"{system}\n\n"}, *content]}
            return [merged, *rest[1:]]
        # No user turn to fold into: the instructions become the user turn rather than being lost.
        return [{"role": "user", "content": system}, *rest]


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


def _flatten_text(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # /score chat templates take strings; text-only part lists are joined rather than rejected.
    if all(type(message.get("content")) is not list for message in messages):
        return messages
    return [
        {**m, "content": "".join(p["text"] for p in m["content"] if p.get("type") == "text")}
        if type(m.get("content")) is list
        else m
        for m in messages
    ]
