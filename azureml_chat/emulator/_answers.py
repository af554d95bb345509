"""What the emulated model "says": echo text, token counts, limits, tool-call arguments and JSON. No I/O.

Everything here is deterministic: the same request gives the same answer, so tests can assert on it. A
"token" is a whitespace-separated word, which is all the precision a test of ``max_tokens`` or usage needs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "ECHO_PREFIX",
    "NO_PROMPT_ANSWER",
    "TOOL_RESULT_PREFIX",
    "apply_limits",
    "content_text",
    "control_faults",
    "control_text",
    "count_tokens",
    "echo",
    "example_for_schema",
    "json_answer",
    "split_for_stream",
]

ECHO_PREFIX = "You said: "
TOOL_RESULT_PREFIX = "The tool returned: "
NO_PROMPT_ANSWER = "Hello from the azureml-chat emulator."

# The whitespace before a control word goes with it, so "hi [[fault:429]] there" echoes as "hi there".
_CONTROL_WORD = re.compile(r"\s*\[\[fault:([^\]]*)\]\]", re.IGNORECASE)
_WORD = re.compile(r"\S+")
# A word and the whitespace after it (or leading whitespace alone), so the pieces join back exactly.
_STREAM_PIECE = re.compile(r"\S+\s*|\s+")
# Deep enough for real tool schemas, shallow enough that a self-referencing $ref cannot recurse forever.
_MAX_SCHEMA_DEPTH = 8


def content_text(content: Any) -> str:
    """The text of a message ``content``: a string, or the ``text`` parts of a list joined by spaces."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [part["text"] for part in content if isinstance(part, Mapping) and part.get("type") == "text"]
        return " ".join(text for text in texts if isinstance(text, str))
    return ""


def control_faults(text: str) -> tuple[str, list[str]]:
    """Split ``[[fault:SPEC]]`` control words out of a prompt: the remaining text and the specs, in order."""
    specs = _CONTROL_WORD.findall(text)
    return (_CONTROL_WORD.sub("", text).strip(), specs) if specs else (text, [])


def control_text(body: Any) -> str:
    """The text that may hold control words: the last message when it is the user's, or the last prompt
    (of ``/score`` text generation or of text completions).

    Only the *last* message counts, so a tool loop that follows a ``[[fault:...]]`` prompt is not faulted again.
    """
    if not isinstance(body, Mapping):
        return ""
    items = body.get("messages")
    for outer, inner in (("input_data", "input_string"), ("inputs", "input_string")):
        holder = body.get(outer)
        if items is None and isinstance(holder, Mapping):
            items = holder.get(inner)
    if items is None:
        items = body.get("inputs")
    if items is None:
        items = body.get("prompt")
        items = [items] if isinstance(items, str) else items
    if not isinstance(items, list) or not items:
        return ""
    last = items[-1]
    if isinstance(last, str):
        return last
    if isinstance(last, Mapping) and last.get("role") == "user":
        return content_text(last.get("content"))
    return ""


def count_tokens(text: str) -> int:
    """The emulator's token count: whitespace-separated words."""
    return len(text.split())


def echo(messages: Sequence[Mapping[str, Any]]) -> str:
    """The default answer: the last user message's text (without control words) after ``"You said: "``."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return ECHO_PREFIX + control_faults(content_text(message.get("content")))[0]
    return NO_PROMPT_ANSWER


def apply_limits(text: str, *, stop: Sequence[str] = (), max_tokens: int | None = None) -> tuple[str, str]:
    """Cut ``text`` at the first stop sequence and after ``max_tokens`` words; return it and the finish reason.

    The reason is ``"length"`` only when words were cut off, as a real model reports it.
    """
    cuts = [index for index in (text.find(s) for s in stop if s) if index >= 0]
    if cuts:
        text = text[: min(cuts)]
    if max_tokens is not None:
        words = list(_WORD.finditer(text))
        if len(words) > max_tokens:
            return (text[: words[max_tokens - 1].end()] if max_tokens > 0 else ""), "length"
    return text, "stop"


_INTEGER = re.compile(r"(?<![\d.])-?\d+(?![\d.])")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def split_for_stream(text: str) -> list[str]:
    """The content deltas of a streamed answer: one word (with its trailing whitespace) each."""
    return _STREAM_PIECE.findall(text)


def example_for_schema(schema: Any, text: str) -> Any:
    """A value that satisfies a simple JSON schema: strings are ``text``, numbers the first number in ``text``
    (else 1, raised to ``minimum``), booleans true.

    Objects get their ``required`` properties (all properties when ``required`` is absent); ``const``,
    ``enum`` and ``default`` win over the type; ``anyOf``/``oneOf``/``allOf`` use their first branch;
    local ``$ref`` to ``#/$defs/...`` or ``#/definitions/...`` (as pydantic writes them) are followed.
    """
    return _example(schema, text, schema, 0)


def _example(schema: Any, text: str, root: Any, depth: int) -> Any:
    if not isinstance(schema, Mapping) or depth > _MAX_SCHEMA_DEPTH:
        return text
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return _example(_resolve(ref, root), text, root, depth + 1)
    for key in ("const", "default"):
        if key in schema:
            return schema[key]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        branches = [
            b for b in schema.get(key) or () if not (isinstance(b, Mapping) and b.get("type") == "null")
        ]
        if branches:
            return _example(branches[0], text, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        properties = schema.get("properties")
        properties = properties if isinstance(properties, Mapping) else {}
        required = schema.get("required")
        names = (
            [n for n in required if isinstance(n, str)] if isinstance(required, list) else list(properties)
        )
        return {name: _example(properties.get(name, {}), text, root, depth + 1) for name in names}
    if kind == "array":
        count = schema.get("minItems")
        count = count if isinstance(count, int) and count > 1 else 1
        return [_example(schema.get("items", {}), text, root, depth + 1) for _ in range(count)]
    if kind in ("integer", "number"):
        # The prompt's first number, so "what is magic_function(3)?" calls the tool with 3; else 1.
        found = (_INTEGER if kind == "integer" else _NUMBER).search(text)
        value: int | float = 1 if found is None else (int if kind == "integer" else float)(found.group())
        minimum = schema.get("minimum")
        if isinstance(minimum, int | float) and not isinstance(minimum, bool) and minimum > value:
            return minimum
        return value
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return text


def _resolve(ref: str, root: Any) -> Any:
    node = root
    for name in ref.removeprefix("#/").split("/") if ref.startswith("#/") else ["\0"]:
        node = node.get(name) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else {}


def json_answer(text: str, response_format: Any) -> str:
    """``text`` as JSON when ``response_format`` asks for ``json_object`` or ``json_schema``, else unchanged.

    A reply that already is JSON (a scripted one, say) is kept as it is; otherwise ``json_object`` gives
    ``{"answer": text}`` and ``json_schema`` an example of the schema filled with ``text``.
    """
    kind = response_format.get("type") if isinstance(response_format, Mapping) else None
    if kind not in ("json_object", "json_schema"):
        return text
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        return text
    if kind == "json_object":
        return json.dumps({"answer": text})
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, Mapping) else None
    return json.dumps(example_for_schema(schema if isinstance(schema, Mapping) else {"type": "object"}, text))
