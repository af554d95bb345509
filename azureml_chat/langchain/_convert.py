"""LangChain messages <-> azureml-chat messages and responses. Pure functions, no I/O.

LangChain -> ours: ``HumanMessage`` -> :class:`UserMessage` (text, ``image_url`` and standard ``image``
blocks), ``AIMessage`` -> :class:`AssistantMessage` (text and ``tool_calls``), ``SystemMessage``,
``ToolMessage``, and ``ChatMessage`` with one of those roles. Ours -> LangChain: a :class:`ChatResponse` is an
``AIMessage`` with ``tool_calls``, ``usage_metadata`` and ``response_metadata``; a :class:`ChatChunk` is an
``AIMessageChunk`` with ``tool_call_chunks``. Usage and metadata go on one final chunk only, because
LangChain sums chunk usage.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    InvalidToolCall,
    ToolCall,
    ToolCallChunk,
    UsageMetadata,
)
from langchain_core.messages import SystemMessage as LCSystemMessage
from langchain_core.messages import ToolMessage as LCToolMessage
from langchain_core.messages.tool import invalid_tool_call, tool_call, tool_call_chunk

from .._errors import InvalidRequestError
from .._messages import (
    AssistantMessage,
    ContentPart,
    ImagePart,
    Message,
    SystemMessage,
    TextPart,
    ToolMessage,
    UserMessage,
)
from .._messages import ToolCall as AzureToolCall
from .._responses import ChatChunk, ChatResponse, Choice, Usage

__all__ = [
    "MODEL_PROVIDER",
    "ai_message",
    "delta_chunk",
    "final_chunk",
    "response_metadata",
    "to_messages",
    "usage_metadata",
]

# ``response_metadata["model_provider"]``: LangChain looks it up for a content-block translator and, finding
# none for this name, parses blocks best-effort, which is right for OpenAI-shaped answers.
MODEL_PROVIDER = "azureml"

# Blocks of an AI message that are not its text: tool calls travel in ``tool_calls``, and reasoning is the
# model's own scratchpad, which chat templates do not take back.
_AI_NON_TEXT_BLOCKS = frozenset(
    {"tool_call", "tool_call_chunk", "tool_use", "invalid_tool_call", "reasoning", "thinking"}
)
_ROLES = {"user": "user", "human": "user", "assistant": "assistant", "ai": "assistant", "system": "system"}


# --- LangChain -> azureml-chat --------------------------------------------------------------------------


def to_messages(messages: Sequence[BaseMessage]) -> list[Message]:
    """The conversation in azureml-chat's message classes.

    Raises:
        InvalidRequestError: for a message type, role or content block the endpoints cannot take, naming
            the message's index.
    """
    return [_to_message(message, f"messages[{index}]") for index, message in enumerate(messages)]


def _to_message(message: BaseMessage, where: str) -> Message:
    if isinstance(message, HumanMessage):
        return UserMessage(_user_content(message.content, where), name=message.name)
    if isinstance(message, AIMessage):
        return _assistant(message, where)
    if isinstance(message, LCSystemMessage):
        return SystemMessage(_text(message.content, where, "a system message"), name=message.name)
    if isinstance(message, LCToolMessage):
        return ToolMessage(_text(message.content, where, "a tool result"), tool_call_id=message.tool_call_id)
    if isinstance(message, ChatMessage):
        role = _ROLES.get(message.role.lower())
        if role == "user":
            return UserMessage(_user_content(message.content, where), name=message.name)
        if role == "assistant":
            return AssistantMessage(_text(message.content, where, "an assistant message"), name=message.name)
        if role == "system":
            return SystemMessage(_text(message.content, where, "a system message"), name=message.name)
        raise InvalidRequestError(
            f"{where}: ChatMessage role {message.role!r} is not supported; use user, assistant or system "
            "(or a ToolMessage for tool results)"
        )
    raise InvalidRequestError(
        f"{where}: {type(message).__name__} is not supported; use HumanMessage, AIMessage, SystemMessage, "
        "ToolMessage or ChatMessage"
    )


def _assistant(message: AIMessage, where: str) -> AssistantMessage:
    calls = [
        AzureToolCall(id=call["id"] or f"call_{index}", name=call["name"], arguments=json.dumps(call["args"]))
        for index, call in enumerate(message.tool_calls)
    ]
    # A call whose arguments did not parse is still part of the history a ToolMessage may answer.
    calls += [
        AzureToolCall(id=call["id"], name=call["name"] or "", arguments=call["args"] or "{}")
        for call in message.invalid_tool_calls
        if call["id"]
    ]
    text = _text(message.content, where, "an assistant message", skip=_AI_NON_TEXT_BLOCKS)
    return AssistantMessage(text if text or not calls else None, tool_calls=calls, name=message.name)


def _text(
    content: str | list[str | dict[str, Any]], where: str, what: str, *, skip: frozenset[str] = frozenset()
) -> str:
    """The text of ``content``: a string, or its text blocks joined (blocks of a type in ``skip`` ignored)."""
    if isinstance(content, str):
        return content
    pieces = []
    for index, block in enumerate(content):
        if isinstance(block, str):
            pieces.append(block)
        elif isinstance(block, Mapping) and block.get("type") == "text":
            pieces.append(_block_text(block, f"{where}.content[{index}]"))
        elif not (isinstance(block, Mapping) and block.get("type") in skip):
            kind = block.get("type") if isinstance(block, Mapping) else type(block).__name__
            raise InvalidRequestError(f"{where}.content[{index}]: {what} can only hold text, got {kind!r}")
    return "".join(pieces)


def _user_content(content: str | list[str | dict[str, Any]], where: str) -> str | tuple[ContentPart, ...]:
    if isinstance(content, str):
        return content
    parts: list[ContentPart] = []
    for index, block in enumerate(content):
        at = f"{where}.content[{index}]"
        if isinstance(block, str):
            parts.append(TextPart(block))
            continue
        kind = block.get("type") if isinstance(block, Mapping) else None
        if kind == "text":
            parts.append(TextPart(_block_text(block, at)))
        elif kind == "image_url":
            parts.append(_openai_image(block, at))
        elif kind == "image":
            parts.append(ImagePart(_standard_image_url(block, at)))
        else:
            shown = kind if kind is not None else type(block).__name__
            raise InvalidRequestError(
                f"{at}: content blocks of type {shown!r} are not supported (text, image_url and image are)"
            )
    return tuple(parts)


def _block_text(block: Mapping[str, Any], where: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise InvalidRequestError(f"{where}: a text block needs a 'text' string")
    return text


def _openai_image(block: Mapping[str, Any], where: str) -> ImagePart:
    image = block.get("image_url")
    if isinstance(image, str):
        return ImagePart(image)
    url = image.get("url") if isinstance(image, Mapping) else None
    if not isinstance(url, str):
        raise InvalidRequestError(f'{where}: an image_url block needs {{"image_url": {{"url": "..."}}}}')
    detail = image.get("detail")  # type: ignore[union-attr]
    if detail not in (None, "auto", "low", "high"):
        raise InvalidRequestError(f"{where}: image detail must be auto, low or high, got {detail!r}")
    return ImagePart(url, detail=detail)


def _standard_image_url(block: Mapping[str, Any], where: str) -> str:
    """The URL of a standard ``image`` block: v1 (``url`` / ``base64``), v0 (``source_type``), or Anthropic's
    ``source``; base64 data becomes a ``data:`` URL, which is what the chat-completions image part takes."""
    source = block.get("source")
    if isinstance(source, Mapping):  # Anthropic's shape: {"source": {"type", "media_type", "data" | "url"}}
        block = {
            "url": source.get("url"),
            "base64": source.get("data"),
            "mime_type": source.get("media_type"),
        }
    if isinstance(block.get("url"), str):
        return str(block["url"])
    data = block.get("base64")
    if data is None and block.get("source_type") == "base64":
        data = block.get("data")
    if isinstance(data, str):
        mime_type = block.get("mime_type")
        if not isinstance(mime_type, str) or not mime_type.startswith("image/"):
            raise InvalidRequestError(f"{where}: a base64 image block needs a mime_type such as 'image/png'")
        return f"data:{mime_type};base64,{data}"
    raise InvalidRequestError(
        f"{where}: an image block needs a 'url' or 'base64' data "
        "(file ids are not supported by these endpoints)"
    )


# --- azureml-chat -> LangChain --------------------------------------------------------------------------


def usage_metadata(usage: Usage | None) -> UsageMetadata | None:
    """LangChain's token counts, with the cached and reasoning counts as its ``cache_read`` and ``reasoning``
    details when the endpoint gave them; ``None`` when the endpoint reported none (never invented zeros)."""
    if usage is None:
        return None
    metadata = UsageMetadata(
        input_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )
    if usage.cached_tokens is not None:
        metadata["input_token_details"] = {"cache_read": usage.cached_tokens}
    if usage.reasoning_tokens is not None:
        metadata["output_token_details"] = {"reasoning": usage.reasoning_tokens}
    return metadata


def response_metadata(
    response: ChatResponse, *, request_id: str | None, model_name: str | None
) -> dict[str, Any]:
    """``finish_reason``, ``model_name`` (the endpoint's, else the configured one), ``request_id``, the
    provider and the ``endpoint`` that answered (its name); plus ``system_fingerprint`` when the endpoint sent
    one."""
    metadata: dict[str, Any] = {
        "finish_reason": response.finish_reason,
        "request_id": request_id,
        "model_provider": MODEL_PROVIDER,
    }
    if response.endpoint is not None:
        metadata["endpoint"] = response.endpoint
    model = response.model or model_name
    if model:
        metadata["model_name"] = model
    fingerprint = response.raw.get("system_fingerprint") if isinstance(response.raw, Mapping) else None
    if isinstance(fingerprint, str):
        metadata["system_fingerprint"] = fingerprint
    return metadata


def ai_message(response: ChatResponse, *, model_name: str | None, choice: Choice | None = None) -> AIMessage:
    """One choice of the answer (the first by default) as an ``AIMessage``. Its reasoning goes in
    ``additional_kwargs["reasoning_content"]``, where LangChain looks for it (``content_blocks`` shows it as a
    ``reasoning`` block) and which it never sends back to a model. Tool calls whose arguments are not a JSON
    object become ``invalid_tool_calls`` (as LangChain's own parsers do) instead of failing the call; so does a
    call of a custom tool, whose free-form input LangChain's tool calls cannot hold (it is kept as ``args``)."""
    choice = response.choices[0] if choice is None else choice
    calls: list[ToolCall] = []
    invalid: list[InvalidToolCall] = []
    for call in choice.message.tool_calls:
        if call.type == "custom":
            error = "a custom tool call: its input is free-form text, not JSON arguments"
            invalid.append(invalid_tool_call(name=call.name, args=call.input, id=call.id, error=error))
            continue
        try:
            args = call.parsed_arguments()
        except ValueError as exc:
            invalid.append(invalid_tool_call(name=call.name, args=call.arguments, id=call.id, error=str(exc)))
            continue
        if isinstance(args, dict):
            calls.append(tool_call(name=call.name, args=args, id=call.id))
        else:
            error = f"the arguments are JSON {type(args).__name__}, not an object"
            invalid.append(invalid_tool_call(name=call.name, args=call.arguments, id=call.id, error=error))
    metadata = response_metadata(response, request_id=response.request_id, model_name=model_name)
    metadata["finish_reason"] = choice.finish_reason
    return AIMessage(
        content=choice.message.content or "",
        additional_kwargs={} if choice.reasoning is None else {"reasoning_content": choice.reasoning},
        tool_calls=calls,
        invalid_tool_calls=invalid,
        usage_metadata=usage_metadata(response.usage),
        response_metadata=metadata,
        id=response.id,
    )


def delta_chunk(chunk: ChatChunk) -> AIMessageChunk | None:
    """The new text, reasoning (``additional_kwargs["reasoning_content"]``, which LangChain joins across
    chunks) and tool-call pieces of one stream event; ``None`` when it has none (a role-only or usage-only
    event). Usage and metadata are left to :func:`final_chunk`."""
    pieces: list[ToolCallChunk] = [
        tool_call_chunk(name=delta.name, args=delta.input or delta.arguments, id=delta.id, index=delta.index)
        for delta in chunk.tool_calls
    ]
    if not chunk.content and not pieces and not chunk.reasoning:
        return None
    return AIMessageChunk(
        content=chunk.content or "",
        additional_kwargs={"reasoning_content": chunk.reasoning} if chunk.reasoning else {},
        tool_call_chunks=pieces,
        id=chunk.id,
    )


def final_chunk(response: ChatResponse, *, request_id: str | None, model_name: str | None) -> AIMessageChunk:
    """The chunk that ends a stream: no text, the usage (once for the whole stream) and the metadata."""
    return AIMessageChunk(
        content="",
        usage_metadata=usage_metadata(response.usage),
        response_metadata=response_metadata(response, request_id=request_id, model_name=model_name),
        chunk_position="last",
        id=response.id,
    )
