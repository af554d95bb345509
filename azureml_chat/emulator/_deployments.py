"""A named deployment behind the emulated endpoint: its family, model, scripted replies, standing faults and
reasoning mode."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from ._faults import Fault, parse_faults
from ._reasoning import REASONING_MODES, ReasoningMode

__all__ = ["FAMILIES", "Deployment"]

# The families the emulator speaks on /score; every family also serves the chat and text completions routes.
FAMILIES = ("dolly", "gpt2", "hf", "llama", "mistral", "openai")
_ALIASES = {"custom-openai": "llama"}
# Catalog models typical of each family, so /info and "model" look like a real deployment's.
_MODELS = {
    "dolly": ("databricks-dolly-v2-12b", "Databricks"),
    "gpt2": ("gpt2", "OpenAI"),
    "hf": ("tiiuae-falcon-7b-instruct", "TII"),
    "llama": ("Llama-2-7b-chat", "Meta"),
    "mistral": ("Mistral-7B-Instruct-v0.2", "Mistral AI"),
    "openai": ("Meta-Llama-3.1-8B-Instruct", "Meta"),
}


def _family(value: str) -> str:
    family = _ALIASES.get(value.strip().lower(), value.strip().lower())
    if family not in FAMILIES:
        known = ", ".join([*FAMILIES, *_ALIASES])
        raise ValueError(f"unknown emulator family {value!r}; known: {known}")
    return family


def _name(_: Any, __: Any, value: str) -> None:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise ValueError(f"a deployment name must be a non-empty string without spaces, got {value!r}")


def _replies(value: str | Iterable[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    replies = (value,) if isinstance(value, str) else tuple(value)
    if not replies or not all(isinstance(reply, str) for reply in replies):
        raise ValueError("replies must be a non-empty list of strings (or None for echo)")
    return replies


def _reasoning(_: Any, __: Any, value: ReasoningMode | None) -> None:
    if value is not None and value not in REASONING_MODES:
        raise ValueError(f"reasoning must be one of {', '.join(REASONING_MODES)} (or None), got {value!r}")


def _faults(value: str | Fault | Iterable[Fault | str]) -> tuple[Fault, ...]:
    if isinstance(value, str):
        return parse_faults(value)
    if isinstance(value, Fault):
        return (value,)
    return tuple(f for item in value for f in ((item,) if isinstance(item, Fault) else parse_faults(item)))


@attrs.frozen
class Deployment:
    """One deployment of the emulated endpoint, chosen by the ``azureml-model-deployment`` header.

    Attributes:
        name: the deployment name.
        family: the ``/score`` dialect: ``llama`` (alias ``custom-openai``), ``mistral``, ``openai``,
            ``gpt2``, ``hf`` or ``dolly``.
        model: the model name in answers and ``/info`` (default: a typical catalog model of the family).
        provider: ``model_provider_name`` in ``/info`` (default: that model's provider).
        replies: scripted text answers, used in turn and cycled; ``None`` echoes the user.
        faults: faults armed from the start (``Fault`` objects or spec strings), tried in order.
        reasoning: how chat answers carry a reasoning model's thinking: ``None`` (none), ``"think"`` (a
            ``<think>...</think>`` block at the start of ``content``, as DeepSeek-R1 on Azure) or ``"field"``
            (``reasoning_content`` on the message and the stream deltas, as vLLM); see :mod:`._reasoning`.
    """

    name: str = attrs.field(validator=_name)
    family: str = attrs.field(default="llama", converter=_family, kw_only=True)
    model: str = attrs.field(
        default=attrs.Factory(lambda self: _MODELS[self.family][0], takes_self=True), kw_only=True
    )
    provider: str = attrs.field(
        default=attrs.Factory(lambda self: _MODELS[self.family][1], takes_self=True), kw_only=True
    )
    replies: tuple[str, ...] | None = attrs.field(default=None, converter=_replies, kw_only=True)
    faults: tuple[Fault, ...] = attrs.field(default=(), converter=_faults, kw_only=True)
    reasoning: ReasoningMode | None = attrs.field(default=None, validator=_reasoning, kw_only=True)
