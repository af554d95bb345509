"""Message content for ``gen_ai.input.messages`` / ``gen_ai.output.messages``: the conventions' JSON shape
(``docs/gen-ai/gen-ai-input-messages.json`` and ``gen-ai-output-messages.json``: a list of ``{"role", "parts"}``
messages, output messages with their ``finish_reason``), from the wire messages and the parsed answer. No I/O.

Parts: ``text`` (``content``), ``tool_call`` (``id``, ``name``, ``arguments``: parsed JSON when it parses, else
the text; a custom tool's free-form ``input`` as the arguments), ``tool_call_response`` (``id``, ``response``),
``reasoning`` (``content``: the answer's reasoning, when the model gave one), ``uri`` (an image by URL). Any
other content part is kept as a generic part with its own ``type``. System messages stay in the list with the
role ``system`` (the wire has them there; ``gen_ai.system_instructions`` is for APIs that take them apart).
A text completion's prompt is one user message; each of its choices one assistant message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["input_messages", "output_messages"]

Part = dict[str, Any]


def input_messages(payload: Any) -> str:
    """The JSON of a call's input: ``payload`` is the wire messages (OpenAI-shaped dicts) or a prompt."""
    if isinstance(payload, str):
        return _dumps([{"role": "user", "parts": [_text(payload)]}])
    return _dumps([_input_message(message) for message in payload if isinstance(message, Mapping)])


def output_messages(response: Any) -> str:
    """The JSON of an answer's choices (a ``ChatResponse`` or a ``CompletionResponse``), one message each."""
    messages = []
    for choice in response.choices:
        parts: list[Part] = []
        message = getattr(choice, "message", None)
        if message is None:  # a text completion
            parts.append(_text(choice.text))
        else:
            if getattr(choice, "reasoning", None):
                parts.append({"type": "reasoning", "content": choice.reasoning})
            if message.content:
                parts.append(_text(message.content))
            for call in message.tool_calls:
                arguments = call.input if call.type == "custom" else _arguments(call.arguments)
                parts.append({"type": "tool_call", "id": call.id, "name": call.name, "arguments": arguments})
        messages.append({"role": "assistant", "parts": parts, "finish_reason": choice.finish_reason or ""})
    return _dumps(messages)


def _input_message(message: Mapping[str, Any]) -> dict[str, Any]:
    role = str(message.get("role", "user"))
    parts: list[Part] = []
    content = message.get("content")
    if role == "tool":
        parts.append({"type": "tool_call_response", "id": message.get("tool_call_id"), "response": content})
        return {"role": role, "parts": parts}
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        parts.append({"type": "reasoning", "content": reasoning})
    if isinstance(content, str):
        parts.append(_text(content))
    elif isinstance(content, Sequence):
        parts.extend(_content_part(item) for item in content if isinstance(item, Mapping))
    for call in message.get("tool_calls") or ():
        parts.append(_tool_call(call))
    return {"role": role, "parts": parts}


def _content_part(item: Mapping[str, Any]) -> Part:
    kind = item.get("type")
    if kind == "text":
        return _text(item.get("text", ""))
    if kind == "image_url":
        image = item.get("image_url")
        url = image.get("url") if isinstance(image, Mapping) else image
        return {"type": "uri", "modality": "image", "uri": url}
    return dict(item)


def _tool_call(call: Mapping[str, Any]) -> Part:
    if call.get("type") == "custom":
        custom = call.get("custom") or {}
        return {
            "type": "tool_call",
            "id": call.get("id"),
            "name": custom.get("name"),
            "arguments": custom.get("input"),
        }
    function = call.get("function") or {}
    return {
        "type": "tool_call",
        "id": call.get("id"),
        "name": function.get("name"),
        "arguments": _arguments(function.get("arguments")),
    }


def _arguments(text: Any) -> Any:
    """A function call's arguments as the object they encode; as written when they are not JSON."""
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def _text(content: str) -> Part:
    return {"type": "text", "content": content}


def _dumps(value: Any) -> str:
    # default=str: an unusual value in a message (a custom part's object) never fails the call's telemetry.
    return json.dumps(value, ensure_ascii=False, default=str)
