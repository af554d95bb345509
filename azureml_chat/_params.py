"""Call parameters: checked and merged into a fresh dict per call (``model_kwargs`` is never mutated).

A call's own keywords are checked by name too: a keyword that is not a name the client knows but lies within
a typo's reach of a call keyword (``max_token``, ``temprature``, ``maxTokens``) is refused before anything is
sent (:func:`check_names`). ``model_kwargs`` is the explicit route for a parameter meant for the model as
spelled, and is never checked by name.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ._errors import InvalidRequestError

__all__ = [
    "MODEL_INFERENCE_CHAT_FIELDS",
    "MODEL_INFERENCE_TEXT_FIELDS",
    "check_completion_params",
    "check_names",
    "given",
    "merge_params",
]

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
# The request fields of the Azure AI Model Inference API, one set per operation: a body field outside its
# operation's set is an "extra parameter", refused with 400 unless the request carries ``extra-parameters``.
# Chat: ChatCompletionsOptions of azure-rest-api-specs specification/ai/data-plane/ModelInference/stable/
# 2025-04-01/openapi.json (the api-version the client adds, _defaults.MODEL_INFERENCE_API_VERSION). Text: the
# request body of azure-ai-docs reference-model-inference-completions.md (prompt, frequency_penalty,
# max_tokens, presence_penalty, seed, stop, stream, temperature, top_p). Not in either: OpenAI's
# max_completion_tokens, n, logprobs, stream_options, user, parallel_tool_calls. The emulator keeps its own
# copy, written from the same sources (emulator/_azure.py); a test holds the two equal.
_MODEL_INFERENCE_SAMPLING = frozenset(
    {
        "model",
        "frequency_penalty",
        "presence_penalty",
        "temperature",
        "top_p",
        "max_tokens",
        "stop",
        "stream",
        "seed",
    }
)
MODEL_INFERENCE_CHAT_FIELDS = _MODEL_INFERENCE_SAMPLING | {
    "messages",
    "response_format",
    "tools",
    "tool_choice",
    "modalities",
}
MODEL_INFERENCE_TEXT_FIELDS = _MODEL_INFERENCE_SAMPLING | {"prompt"}

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
    max_completion_tokens: Any = None,
) -> dict[str, Any]:
    """The common model parameters a call was given (not ``None``), by name: the keywords it actually passed.

    Spelled out rather than looped: this runs on every call, and eleven plain tests cost a fifth of a
    comprehension over eleven pairs (docs/performance.md).
    """
    common: dict[str, Any] = {}
    if temperature is not None:
        common["temperature"] = temperature
    if top_p is not None:
        common["top_p"] = top_p
    if max_tokens is not None:
        common["max_tokens"] = max_tokens
    if max_completion_tokens is not None:
        common["max_completion_tokens"] = max_completion_tokens
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
        InvalidRequestError: for a parameter of the wrong type, one the client owns, an ``extra`` keyword
            that looks like a misspelt call keyword (:func:`check_names`; ``model_kwargs`` is not checked), or
            both ``max_tokens`` and ``max_completion_tokens`` (from any layers).
    """
    if extra:
        check_names(extra)
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
    if "max_completion_tokens" in params and "max_tokens" in params:
        raise InvalidRequestError(_BOTH_LIMITS)
    return params


# OpenAI answers 400 to a body with both ("Setting 'max_tokens' and 'max_completion_tokens' at the same time is
# not supported", code invalid_parameter_combination); said here, before anything is sent, with where to look.
_BOTH_LIMITS = (
    "pass max_tokens or max_completion_tokens, not both: they are two names for the answer's length limit "
    "(o-series deployments take max_completion_tokens, most others max_tokens). Look in the call's keywords and "
    "in model_kwargs (the client's, or with_options(model_kwargs=...)) for the one to drop"
)


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
    "max_completion_tokens": _check_max_tokens,
    "seed": _check_int,
    "stop": _check_stop,
    "tools": _check_tools,
    "tool_choice": _check_tool_choice,
    "response_format": _check_response_format,
}


# --- misspelt keywords --------------------------------------------------------------------------------------

# The keywords chat() and stream() take by name (complete() takes a subset): the names a typo is measured from.
CALL_KEYWORDS = (*_CHECKS, "timeout", "deployment", "extra_headers")

# Model parameters the client knows by name (OpenAI, vLLM, Hugging Face, Mistral): always passed through, never
# taken for a typo. Listed are the real ones within a typo's reach of a call keyword (top_k, top_a, top_n from
# top_p; min_tokens from max_tokens) and the usual neighbours of the common ones; tests/test_params.py holds a
# wider table of real parameter names that must pass.
MODEL_PARAMETERS = frozenset(
    {
        "best_of",
        "logit_bias",
        "logprobs",
        "max_new_tokens",
        "min_p",
        "min_tokens",
        "n",
        "repetition_penalty",
        "safe_prompt",
        "top_a",
        "top_k",
        "top_logprobs",
        "top_n",
        "user",
    }
)
_KNOWN = frozenset(CALL_KEYWORDS) | MODEL_PARAMETERS
# The order suggestions are tried in: of two known names as near, the first wins, and a call keyword is the
# likelier meaning.
_SUGGESTIONS = (*CALL_KEYWORDS, *sorted(MODEL_PARAMETERS))


def check_names(params: Iterable[str], keywords: tuple[str, ...] = ()) -> None:
    """Refuse a name that looks like a misspelt call keyword (or one of ``keywords``, a batch's own).

    The rule: a name the client knows (:data:`CALL_KEYWORDS`, ``keywords``, :data:`MODEL_PARAMETERS`) passes.
    Any other name is compared with each call keyword after lower-casing and dropping underscores (so
    ``maxTokens`` is ``max_tokens``), by edit distance (insertions, deletions, substitutions and swaps of two
    neighbours, one edit each); within reach of one (1 edit for a keyword of fewer than 8 letters, 2 for a
    longer one), it is refused with the nearest known name as the suggestion. Everything else is a model
    parameter, passed through as given.

    Raises:
        InvalidRequestError: "did you mean ...?", and how to send the name as spelled (``model_kwargs=``).
    """
    for name in params:
        if name in _KNOWN or name in keywords:
            continue
        suggestion = _near_miss(name, keywords)
        if suggestion is not None:
            raise InvalidRequestError(
                f"unknown keyword {name!r}: did you mean {suggestion}? Nothing was sent. To send {name!r} to the "
                "model as spelled, put it in model_kwargs=, which is not checked: "
                f"AsyncChatClient(..., model_kwargs={{{name!r}: ...}}) or client.with_options(model_kwargs=...)"
            )


@functools.lru_cache(maxsize=512)
def _near_miss(name: str, keywords: tuple[str, ...]) -> str | None:
    """The known name nearest ``name`` when ``name`` is within reach of a call keyword, else ``None``."""
    folded = _fold(name)
    if not any(
        _distance(folded, _fold(keyword)) <= _reach(keyword) for keyword in (*CALL_KEYWORDS, *keywords)
    ):
        return None
    return min((*keywords, *_SUGGESTIONS), key=lambda known: _distance(folded, _fold(known)))


def _fold(name: str) -> str:
    return name.lower().replace("_", "")


def _reach(keyword: str) -> int:
    """How many edits away from ``keyword`` a name is still taken for a typo of it."""
    return 1 if len(_fold(keyword)) < 8 else 2


def _distance(a: str, b: str) -> int:
    """Edits (insert, delete, substitute, swap two neighbours) that turn ``a`` into ``b``: the optimal string
    alignment distance."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            cost = min(
                previous[j] + 1,
                current[j - 1] + 1,
                previous[j - 1] + (char_a != char_b),
            )
            if i > 1 and j > 1 and char_a == b[j - 2] and a[i - 2] == char_b:
                cost = min(cost, previous2[j - 2] + 1)
            current.append(cost)
        previous2, previous = previous, current
    return previous[-1]
