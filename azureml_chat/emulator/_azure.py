"""The rules of Azure's model-inference routes that provider-native routes do not have: ``api-version`` and
``extra-parameters``. No I/O.

The Azure AI Model Inference routes (:data:`MODEL_INFERENCE_PATHS`: ``/chat/completions``,
``/models/chat/completions``, ``/completions``, ``/models/completions``) require ``?api-version=YYYY-MM-DD`` or
``YYYY-MM-DD-preview`` (400 ``MissingApiVersionParameter`` without one, ``InvalidApiVersionParameter`` for
another form), and validate the body against the API's schema: a field outside it is a 400 unless the
``extra-parameters`` header says ``pass-through`` (forwarded to the model) or ``drop`` (removed first); no
header means ``error``, the service default (reference section 2.3). The provider-native ``/v1/...`` routes
and ``/score`` forward every field, as Azure does, unless the request itself sends ``extra-parameters: error``
or ``drop``; they are checked against OpenAI's (and vLLM's) schema then.

Which fields are in Azure's schema: chat takes the properties of ``ChatCompletionsOptions`` in the API's
2025-04-01 OpenAPI spec (azure-rest-api-specs ``specification/ai/data-plane/ModelInference``; the
2024-05-01-preview one, which ``azure-ai-inference`` sends, is the same without ``modalities``; reference
section 2.4): ``messages``, ``model``, ``frequency_penalty``, ``presence_penalty``, ``temperature``,
``top_p``, ``max_tokens``, ``seed``, ``stop``, ``stream``, ``response_format``, ``tools``, ``tool_choice``,
``modalities``. Text completions take ``prompt`` and the sampling fields (``model``, ``frequency_penalty``,
``presence_penalty``, ``temperature``, ``top_p``, ``max_tokens``, ``seed``, ``stop``, ``stream``).

Decided, for the parameters the SDK types (``azureml_chat._params.given``): all are in the chat schema, so a
plain call needs no header, except ``max_completion_tokens``, which is OpenAI's and truly outside it (the
client must send it with ``pass-through``). Also extras here, because Azure's schema lacks them: ``n``,
``stream_options`` (Azure AI Foundry refuses it in the words this module uses), ``logprobs``,
``top_logprobs``, ``logit_bias``, ``user``, ``parallel_tool_calls``, and every vLLM or provider field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal, TypeAlias

from ._errors import BadRequest

__all__ = [
    "AZURE_CHAT_FIELDS",
    "AZURE_COMPLETION_FIELDS",
    "EXTRA_PARAMETERS_HEADER",
    "MODEL_INFERENCE_PATHS",
    "ExtraParameters",
    "api_version_problem",
    "extra_parameters",
    "screen_extras",
]

MODEL_INFERENCE_PATHS = frozenset(
    {"/chat/completions", "/models/chat/completions", "/completions", "/models/completions"}
)
EXTRA_PARAMETERS_HEADER = "extra-parameters"
ExtraParameters: TypeAlias = Literal["error", "drop", "pass-through"]
_POLICIES: tuple[ExtraParameters, ...] = ("error", "drop", "pass-through")

_SAMPLING = frozenset(
    {
        "model",
        "frequency_penalty",
        "presence_penalty",
        "temperature",
        "top_p",
        "max_tokens",
        "seed",
        "stop",
        "stream",
    }
)
AZURE_CHAT_FIELDS = _SAMPLING | {"messages", "response_format", "tools", "tool_choice", "modalities"}
AZURE_COMPLETION_FIELDS = _SAMPLING | {"prompt"}
_API_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}(?:-preview)?")


def api_version_problem(path: str, query: Mapping[str, str]) -> tuple[str, str] | None:
    """The error code and message for a model-inference request without a valid ``api-version``, else ``None``."""
    if path not in MODEL_INFERENCE_PATHS:
        return None
    version = query.get("api-version")
    if version is None:
        return (
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )
    if not _API_VERSION.fullmatch(version):
        return (
            "InvalidApiVersionParameter",
            f"The api-version '{version}' is invalid. The supported format is 'YYYY-MM-DD' or 'YYYY-MM-DD-preview'.",
        )
    return None


def extra_parameters(header: str | None, *, path: str) -> ExtraParameters:
    """The policy for fields outside the schema: the header's, else ``error`` on the model-inference routes
    and ``pass-through`` on the others.

    Raises:
        BadRequest: the header holds another value.
    """
    if header is None:
        return "error" if path in MODEL_INFERENCE_PATHS else "pass-through"
    value = header.strip().lower()
    for policy in _POLICIES:
        if value == policy:
            return policy
    raise BadRequest(
        f"Invalid value {header!r} for the '{EXTRA_PARAMETERS_HEADER}' header; expected one of {', '.join(_POLICIES)}",
        param=EXTRA_PARAMETERS_HEADER,
    )


def screen_extras(body: Any, known: frozenset[str], policy: ExtraParameters) -> Any:
    """``body`` as the model gets it: unchanged (``pass-through``, or nothing unknown), without its unknown
    fields (``drop``), or refused (``error``).

    Raises:
        BadRequest: with ``error``, naming the unknown fields and the header that lets them through.
    """
    if policy == "pass-through" or not isinstance(body, Mapping):
        return body
    extras = sorted(set(body) - known)
    if not extras:
        return body
    if policy == "drop":
        return {name: value for name, value in body.items() if name in known}
    raise BadRequest(
        f"Extra parameters {extras} are not allowed when extra-parameters is not set or set to be 'error'. "
        f"Send the header '{EXTRA_PARAMETERS_HEADER}: pass-through' to pass them to the model "
        "(or 'drop' to ignore them).",
        param=extras[0],
    )
