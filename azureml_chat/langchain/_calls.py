"""One LangChain call in the client's terms: the parameters it sends (and whether the route can carry them),
what identifies it for caches and LangSmith, and the client's answer as LangChain's ``ChatResult`` or
``ChatGenerationChunk``s. Pure functions over the model's call fields, no I/O.

:class:`AzureMLChatModel` owns the fields, the clients and the LangChain hooks; what a call sends and gets
back is decided here.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any, Protocol

from langchain_core.language_models import LangSmithParams
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from .._messages import UserMessage
from .._responses import ChatChunk, ChatResponse
from ..formatters import ContentFormatter, Route
from ._convert import ai_message, delta_chunk, final_chunk

__all__ = [
    "CallFields",
    "call_params",
    "chat_result",
    "check_route_takes",
    "generation_chunk",
    "identifying_params",
    "last_generation_chunk",
    "ls_params",
]

# The fields sent as default parameters of every call (``stop`` and ``model_kwargs`` are handled apart).
_CALL_DEFAULTS = ("temperature", "max_tokens", "max_completion_tokens", "top_p", "seed")
# Keywords LangChain itself passes down to ``_generate``/``_stream`` that are not model parameters.
_NOT_PARAMETERS = ("stream", "ls_structured_output_format", "structured_output_format")


class CallFields(Protocol):
    """The fields of an :class:`AzureMLChatModel` that a call reads."""

    endpoint_url: str | None
    endpoint_type: str | None
    deployment: str | None
    model_name: str | None
    temperature: float | None
    max_tokens: int | None
    max_completion_tokens: int | None
    top_p: float | None
    seed: int | None
    stop: list[str] | None
    model_kwargs: dict[str, Any]
    stream_usage: bool


def call_params(
    fields: CallFields, stop: list[str] | None, kwargs: Mapping[str, Any], *, can_stream_usage: bool
) -> dict[str, Any]:
    """This call's parameters: ``model_kwargs`` < the call fields < the call's keywords < ``stop``; a fresh
    dict every call.

    Args:
        fields: the model's call fields.
        stop: the call's ``stop`` argument.
        kwargs: the call's keywords (LangChain's own are left out).
        can_stream_usage: whether the call streams on a route that takes ``stream_options``; the usage event
            is then asked for, unless ``stream_usage`` (the call's, else the field) is off.
    """
    params = dict(fields.model_kwargs)
    params.update({name: value for name in _CALL_DEFAULTS if (value := getattr(fields, name)) is not None})
    if fields.stop:
        params["stop"] = list(fields.stop)
    call = {name: value for name, value in kwargs.items() if name not in _NOT_PARAMETERS}
    stream_usage = call.pop("stream_usage", fields.stream_usage)
    params.update(call)
    if stop is not None:
        params["stop"] = stop
    if not params.get("stop"):
        params.pop("stop", None)  # [] and None both mean "no stop sequences"
    if can_stream_usage and stream_usage:
        params.setdefault("stream_options", {"include_usage": True})
    return params


def check_route_takes(formatter: ContentFormatter, route: Route, params: Mapping[str, Any]) -> None:
    """Raise now, with the formatter's own message, if the endpoint's route cannot carry ``params``.

    Raises:
        InvalidRequestError: from the formatter (it knows what its family's schema can carry).
    """
    formatter.build_request(route, [UserMessage("check")], params, stream=False)


def identifying_params(fields: CallFields, *, formatter: str) -> dict[str, Any]:
    """What LangChain keys caches and traces on: everything that changes the answer, never the key."""
    return {
        "endpoint_url": fields.endpoint_url,
        "endpoint_type": fields.endpoint_type,
        "formatter": formatter,
        "deployment": fields.deployment,
        "model_name": fields.model_name,
        **{name: getattr(fields, name) for name in _CALL_DEFAULTS},
        "stop": fields.stop,
        "model_kwargs": dict(fields.model_kwargs),
    }


def ls_params(fields: CallFields, stop: list[str] | None, kwargs: Mapping[str, Any]) -> LangSmithParams:
    """What LangSmith records of a call: the provider, a model name, and the temperature, ``max_tokens`` and
    stop sequences the call uses (a call's keywords over the fields)."""
    model = kwargs.get("model")
    params = LangSmithParams(
        ls_provider="azureml",
        ls_model_name=model if isinstance(model, str) else _model_label(fields),
        ls_model_type="chat",
    )
    temperature = kwargs.get("temperature", fields.temperature)
    if isinstance(temperature, int | float) and not isinstance(temperature, bool):
        params["ls_temperature"] = temperature
    max_tokens = kwargs.get("max_tokens", fields.max_tokens)
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
        params["ls_max_tokens"] = max_tokens
    stops = stop if stop is not None else kwargs.get("stop", fields.stop)
    if stops:
        params["ls_stop"] = [stops] if isinstance(stops, str) else list(stops)
    return params


def chat_result(response: ChatResponse, *, model_name: str | None) -> ChatResult:
    """The whole answer as LangChain's ``ChatResult``: one generation per choice (``n``), the token counts as
    ``llm_output``."""
    llm_output: dict[str, Any] = {}
    if response.usage is not None:
        usage = response.usage
        llm_output["token_usage"] = {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        }
    generations = [
        ChatGeneration(message=ai_message(response, model_name=model_name, choice=choice))
        for choice in response.choices
    ]
    return ChatResult(generations=generations, llm_output=llm_output or None)


def generation_chunk(event: ChatChunk) -> ChatGenerationChunk | None:
    """One stream event's new text, reasoning and tool-call pieces (see :func:`delta_chunk`); ``None`` when it
    has none, or belongs to another choice than the first (a LangChain stream is one message)."""
    if event.index:
        return None
    piece = delta_chunk(event)
    return None if piece is None else ChatGenerationChunk(message=piece)


def last_generation_chunk(
    final: ChatResponse, *, request_id: str | None, model_name: str | None
) -> ChatGenerationChunk:
    """The chunk that ends a stream (see :func:`final_chunk`): the usage and metadata of the whole answer."""
    return ChatGenerationChunk(message=final_chunk(final, request_id=request_id, model_name=model_name))


def _model_label(fields: CallFields) -> str:
    """A name for traces: the model's, else the deployment's, else the endpoint's host."""
    if fields.model_name:
        return fields.model_name
    if fields.deployment:
        return fields.deployment
    return urllib.parse.urlsplit(fields.endpoint_url or "").hostname or "azureml-endpoint"
