"""Tools and structured output in the chat-completions shapes: definitions, ``tool_choice``,
``response_format`` and the output parsers ``with_structured_output`` puts behind the model. No I/O."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any, Literal, TypeAlias

from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.base import OutputParserLike
from langchain_core.output_parsers.openai_tools import JsonOutputKeyToolsParser, PydanticToolsParser
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass

__all__ = [
    "StructuredMethod",
    "ToolLike",
    "json_schema_format",
    "output_parser",
    "tool_choice_param",
    "tool_definitions",
    "with_parser",
]

ToolLike: TypeAlias = Mapping[str, Any] | type | Callable[..., Any] | BaseTool
StructuredMethod: TypeAlias = Literal["json_schema", "function_calling", "json_mode"]

_CHOICES = {"any": "required", "required": "required", "auto": "auto", "none": "none"}
# OpenAI's rule for json_schema names; a schema title such as "My Answer" is made to fit.
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def tool_definitions(tools: Sequence[ToolLike], *, strict: bool | None) -> list[dict[str, Any]]:
    """Each tool (pydantic class, TypedDict, function, ``BaseTool`` or dict) as an OpenAI tool definition."""
    return [convert_to_openai_tool(tool, strict=strict) for tool in tools]


def tool_choice_param(choice: str | bool | Mapping[str, Any], names: Sequence[str]) -> str | dict[str, Any]:
    """LangChain's ``tool_choice`` in the chat-completions form.

    ``"any"`` and ``True`` become ``"required"``; ``"auto"``, ``"none"`` and ``"required"`` stay; a tool name
    becomes ``{"type": "function", "function": {"name": ...}}``; a dict is sent as it is.

    Raises:
        ValueError: for a name that is not among the bound tools.
    """
    if choice is True:
        return "required"
    if isinstance(choice, Mapping):
        return dict(choice)
    if isinstance(choice, str):
        if choice in _CHOICES:
            return _CHOICES[choice]
        if choice in names:
            return {"type": "function", "function": {"name": choice}}
    known = ", ".join(names) or "none bound"
    raise ValueError(
        f"tool_choice must be 'any', 'auto', 'none', 'required' or the name of a bound tool ({known}), "
        f"got {choice!r}"
    )


def json_schema_format(schema: Mapping[str, Any] | type, *, strict: bool | None) -> dict[str, Any]:
    """The ``response_format`` that asks for JSON matching ``schema``."""
    function = convert_to_openai_tool(schema, strict=strict)["function"]
    spec: dict[str, Any] = {
        "name": _NAME_UNSAFE.sub("_", function["name"])[:64] or "output",
        "schema": function["parameters"],
    }
    if function.get("description"):
        spec["description"] = function["description"]
    if strict is not None:
        spec["strict"] = strict
    return {"type": "json_schema", "json_schema": spec}


def output_parser(schema: Mapping[str, Any] | type, method: StructuredMethod) -> OutputParserLike[Any]:
    """The parser for an answer produced with ``method``: pydantic classes give instances, anything else a
    dict; tool calls are read for ``function_calling``, the text for the JSON methods."""
    pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
    if method == "function_calling":
        if pydantic:
            return PydanticToolsParser(tools=[schema], first_tool_only=True)  # type: ignore[list-item]
        name = convert_to_openai_tool(schema)["function"]["name"]
        return JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
    if pydantic:
        return PydanticOutputParser(pydantic_object=schema)  # type: ignore[arg-type]
    return JsonOutputParser()


def with_parser(
    llm: Runnable[LanguageModelInput, AIMessage], parser: OutputParserLike[Any], *, include_raw: bool
) -> Runnable[LanguageModelInput, Any]:
    """``llm | parser``, or with ``include_raw`` a ``{"raw", "parsed", "parsing_error"}`` dict that keeps the
    raw message even when parsing fails (as ``BaseChatModel.with_structured_output`` does)."""
    if not include_raw:
        return llm | parser
    parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
    unparsed = RunnablePassthrough.assign(parsed=lambda _: None)
    return RunnableMap(raw=llm) | parsed.with_fallbacks([unparsed], exception_key="parsing_error")
