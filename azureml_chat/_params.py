"""Call parameters: checked and merged into a fresh dict per call (``model_kwargs`` is never mutated)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from ._errors import InvalidRequestError

__all__ = ["check_completion_params", "given", "merge_params"]

# Parameters the client sets itself; a caller passing them would break the call's contract.
_RESERVED = {
    "messages": "pass messages as the first argument",
    "stream": "call client.stream(...) to stream",
}
# The same for text completion, which takes a prompt.
_COMPLETION_RESERVED = {
    "prompt": "pass the prompt as the first argument",
    "messages": "complete() takes a prompt; call chat() for messages",
    "stream": "call stream_complete(...) to stream",
}
_TOOL_CHOICES = ("none", "auto", "required")
_RESPONSE_FORMATS = ("text", "json_object", "json_schema")


def given(
    temperature: Any = None,
    top_p: Any = None,
    max_tokens: Any = None,
    stop: Any = None,
    seed: Any = None,
    tools: Any = None,
    tool_choice: Any = None,
    response_format: Any = None,
    presence_penalty: Any = None,
    frequency_penalty: Any = None,
) -> dict[str, Any]:
    """The common model parameters a call was given (not ``None``), by name: the keywords it actually passed.

    Spelled out rather than looped: this runs on every call, and ten plain tests cost a fifth of a
    comprehension over ten pairs (docs/performance.md).
    """
    common: dict[str, Any] = {}
    if temperature is not None:
        common["temperature"] = temperature
    if top_p is not None:
        common["top_p"] = top_p
    if max_tokens is not None:
        common["max_tokens"] = max_tokens
    if stop is not None:
        common["stop"] = stop
    if seed is not None:
        common["seed"] = seed
    if tools is not None:
        common["tools"] = tools
    if tool_choice is not None:
        common["tool_choice"] = tool_choice
    if response_format is not None:
        common["response_format"] = response_format
    if presence_penalty is not None:
        common["presence_penalty"] = presence_penalty
    if frequency_penalty is not None:
        common["frequency_penalty"] = frequency_penalty
    return common


def check_completion_params(model_kwargs: Mapping[str, Any], model_params: Mapping[str, Any]) -> None:
    """Refuse the keys a text completion sets itself, wherever they were passed.

    Raises:
        InvalidRequestError: naming the key and what to do instead.
    """
    for name in sorted((model_params.keys() | model_kwargs.keys()) & _COMPLETION_RESERVED.keys()):
        raise InvalidRequestError(f"{name!r} is not a model parameter: {_COMPLETION_RESERVED[name]}")


def merge_params(
    model_kwargs: Mapping[str, Any], common: Mapping[str, Any], extra: Mapping[str, Any]
) -> dict[str, Any]:
    """``model_kwargs``, overridden by the ``common`` keywords that were given (see :func:`given`: no
    ``None`` values), overridden by other keywords.

    Returns a new dict every call, so nothing a call passes can leak into the next one. A key set by a later
    layer is moved to the end, so the dict's order says which layer set it last: a formatter that maps two
    names onto one (``max_tokens`` and ``max_new_tokens`` on ``/score``) keeps the later one.

    Raises:
        InvalidRequestError: for a parameter of the wrong type, or one the client owns.
    """
    if not model_kwargs:
        # Named keywords and **extra can never share a name, so this keeps "the last layer last" too.
        params = {**common, **extra}
    else:
        params = dict(model_kwargs)
        for layer in (common, extra):
            for name, value in layer.items():
                params.pop(name, None)
                params[name] = value
    # One lookup per key actually passed (usually two or three), rather than one test per known name.
    for name, value in params.items():
        check = _CHECKS.get(name)
        if check is not None:
            params[name] = check(name, value)  # replaces a value, never adds a key: safe while iterating
    return params


def _reserved(name: str, value: Any) -> Any:
    raise InvalidRequestError(f"{name!r} is not a model parameter: {_RESERVED[name]}")


def _check_number(name: str, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidRequestError(f"{name} must be a finite number, got {value!r}")
    return value


def _check_int(name: str, value: Any, *, minimum: int | None = None) -> Any:
    whole = type(value) is int or (isinstance(value, int) and not isinstance(value, bool))
    if not whole or (minimum is not None and value < minimum):
        floor = f" >= {minimum}" if minimum is not None else ""
        raise InvalidRequestError(f"{name} must be a whole number{floor}, got {value!r}")
    return value


def _check_max_tokens(name: str, value: Any) -> Any:
    return _check_int(name, value, minimum=1)


def _check_stop(name: str, value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return list(value)
    raise InvalidRequestError(f"stop must be a string or a list of strings, got {value!r}")


def _check_tools(name: str, value: Any) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise InvalidRequestError(f"tools must be a list of tool definitions, got {type(value).__name__}")
    for index, tool in enumerate(value):
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if (
            not isinstance(tool, Mapping)
            or tool.get("type") != "function"
            or not isinstance(function, Mapping)
            or not isinstance(function.get("name"), str)
        ):
            raise InvalidRequestError(
                f"tools[{index}] must look like "
                '{"type": "function", "function": {"name": "...", "description": "...", "parameters": {...}}}'
            )
    return list(value)


def _check_tool_choice(name: str, value: Any) -> Any:
    if isinstance(value, str) and value in _TOOL_CHOICES:
        return value
    function = value.get("function") if isinstance(value, Mapping) else None
    if isinstance(function, Mapping) and isinstance(function.get("name"), str):
        return value
    raise InvalidRequestError(
        f"tool_choice must be one of {', '.join(_TOOL_CHOICES)} or "
        f'{{"type": "function", "function": {{"name": "..."}}}}, got {value!r}'
    )


def _check_response_format(name: str, value: Any) -> Any:
    if not isinstance(value, Mapping) or value.get("type") not in _RESPONSE_FORMATS:
        raise InvalidRequestError(
            f'response_format must be {{"type": "text" | "json_object" | "json_schema", ...}}, got {value!r}'
        )
    if value["type"] == "json_schema" and not isinstance(value.get("json_schema"), Mapping):
        raise InvalidRequestError(
            'response_format json_schema needs {"json_schema": {"name": ..., "schema": {...}}}'
        )
    return value


# What each known parameter must be; a checker returns the value to send (``stop`` and ``tools`` as lists).
_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "messages": _reserved,
    "stream": _reserved,
    "temperature": _check_number,
    "top_p": _check_number,
    "presence_penalty": _check_number,
    "frequency_penalty": _check_number,
    "max_tokens": _check_max_tokens,
    "seed": _check_int,
    "stop": _check_stop,
    "tools": _check_tools,
    "tool_choice": _check_tool_choice,
    "response_format": _check_response_format,
}
