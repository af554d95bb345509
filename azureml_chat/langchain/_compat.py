"""``AzureMLChatOnlineEndpoint``: LangChain's constructor on top of :class:`AzureMLChatModel`.

Moving over is an import change::

    # from langchain_community.chat_models.azureml_endpoint import (
    #     AzureMLChatOnlineEndpoint, AzureMLEndpointApiType, CustomOpenAIChatContentFormatter)
    from azureml_chat.langchain import (
        AzureMLChatOnlineEndpoint, AzureMLEndpointApiType, CustomOpenAIChatContentFormatter)

LangChain's formatter classes (``CustomOpenAIChatContentFormatter``, ``LlamaChatContentFormatter``,
``MistralChatContentFormatter`` ...) map to our families, whether they are ours (below) or still
``langchain_community``'s. What is not carried over: double escaping, ``model_kwargs`` mutation, streaming
through the OpenAI SDK, the ``/score`` streaming and URL bugs; see ``docs/migrating-from-langchain.md``.
"""

from __future__ import annotations

import enum
import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import SecretStr, model_validator

from ..formatters import ContentFormatter, LlamaFormatter, MistralFormatter
from ._model import AzureMLChatModel

__all__ = [
    "AzureMLChatOnlineEndpoint",
    "AzureMLEndpointApiType",
    "CustomOpenAIChatContentFormatter",
    "LlamaChatContentFormatter",
    "MistralChatContentFormatter",
    "family_of",
]

# LangChain's formatter class names (chat and LLM side, deprecated aliases included) -> our families. The
# LLM-side ones name text-generation schemas, which work where those families are registered.
LANGCHAIN_FORMATTERS: Mapping[str, str] = {
    "CustomOpenAIChatContentFormatter": "llama",
    "LlamaChatContentFormatter": "llama",
    "LlamaContentFormatter": "llama",
    "CustomOpenAIContentFormatter": "llama",
    "MistralChatContentFormatter": "mistral",
    "GPT2ContentFormatter": "gpt2",
    "OSSContentFormatter": "gpt2",
    "HFContentFormatter": "hf",
    "DollyContentFormatter": "dolly",
}
# LangChain's constructor names -> ours.
_RENAMES = {
    "endpoint_api_type": "endpoint_type",
    "endpoint_api_key": "api_key",
    "deployment_name": "deployment",
    "content_formatter": "formatter",
}


class AzureMLEndpointApiType(enum.StrEnum):
    """LangChain's endpoint types: ``dedicated`` (``realtime`` is its old name) and ``serverless``."""

    dedicated = "dedicated"
    realtime = "realtime"
    serverless = "serverless"


class CustomOpenAIChatContentFormatter(LlamaFormatter):
    """LangChain's name for the ``llama`` family: the chat schema on ``/score``, OpenAI on chat routes."""


class LlamaChatContentFormatter(LlamaFormatter):
    """LangChain's older name for the ``llama`` family (no deprecation warning here)."""


class MistralChatContentFormatter(MistralFormatter):
    """LangChain's name for the ``mistral`` family; unlike LangChain's, it also works on ``dedicated``."""


def family_of(formatter: Any) -> str | ContentFormatter:
    """What ``content_formatter`` means to us: a ``ContentFormatter`` as is, a LangChain formatter (class,
    instance or class name, subclasses included) as its family name, any other string as a family name.

    Raises:
        ValueError: for a formatter class we cannot map (a custom ``ContentFormatterBase`` subclass).
    """
    if isinstance(formatter, ContentFormatter):
        return formatter
    if isinstance(formatter, type) and issubclass(formatter, ContentFormatter):
        return formatter()
    if isinstance(formatter, str):
        return LANGCHAIN_FORMATTERS.get(formatter, formatter)
    cls = formatter if isinstance(formatter, type) else type(formatter)
    for base in cls.__mro__:
        if base.__name__ in LANGCHAIN_FORMATTERS:
            return LANGCHAIN_FORMATTERS[base.__name__]
    raise ValueError(
        f"content_formatter {cls.__name__} is not a LangChain formatter azureml-chat knows; write an "
        "azureml_chat.ContentFormatter for it (see azureml_chat.register_formatter) or pass a family name"
    )


def _plain(value: Any) -> Any:
    """``value`` without its wrapper (an enum member, a ``SecretStr``), to compare two spellings of it."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return value


class AzureMLChatOnlineEndpoint(AzureMLChatModel):
    """A drop-in for ``langchain_community``'s ``AzureMLChatOnlineEndpoint``, built on azureml-chat.

    Takes LangChain's constructor (``endpoint_url``, ``endpoint_api_type``, ``endpoint_api_key``,
    ``deployment_name``, ``timeout``, ``content_formatter``, ``model_kwargs``, ``max_retries``) and the same
    ``AZUREML_*`` variables, and exposes those names as attributes (``endpoint_api_key`` is a masked
    ``SecretStr``). It is an :class:`AzureMLChatModel`, so everything else (tools, structured output, native
    async, streaming on every route, usage) comes with it. Differences from LangChain's:

    - ``content_formatter`` is optional: the family is inferred from the route (``llama`` on ``/score``,
      ``openai`` on chat completions).
    - ``endpoint_api_type`` is optional: inferred from the URL; ``/v1/chat/completions`` and
      ``/chat/completions`` URLs are accepted again.
    - ``timeout`` defaults to azureml-chat's (connect 10 s, idle read 300 s, total 600 s), not 50 s.
    - ``temperature=``, ``max_tokens=`` and the other call fields are honoured (LangChain's class dropped
      them); unknown arguments are ignored with a ``UserWarning`` (LangChain's ignored them silently).
    """

    _compat_llm_type: ClassVar[str] = "azureml_chat_endpoint"

    def __init__(
        self,
        *,
        endpoint_url: str | None = None,
        endpoint_api_type: AzureMLEndpointApiType | str | None = None,
        endpoint_api_key: SecretStr | str | None = None,
        deployment_name: str | None = None,
        timeout: float | str | None = None,
        content_formatter: Any = None,
        model_kwargs: dict[str, Any] | None = None,
        max_retries: int | None = None,
        **kwargs: Any,
    ) -> None:
        # Spelled out so that type checkers and editors know LangChain's names; the renaming itself happens
        # in the validator below, which model_validate() goes through too.
        given = {
            "endpoint_url": endpoint_url,
            "endpoint_api_type": endpoint_api_type,
            "endpoint_api_key": endpoint_api_key,
            "deployment_name": deployment_name,
            "timeout": timeout,
            "content_formatter": content_formatter,
            "model_kwargs": model_kwargs,
            "max_retries": max_retries,
        }
        super().__init__(**{name: value for name, value in given.items() if value is not None}, **kwargs)

    @model_validator(mode="before")
    @classmethod
    def _from_langchain_names(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        for theirs, ours in _RENAMES.items():
            if theirs in data:
                value = data.pop(theirs)
                if ours in data and _plain(data[ours]) != _plain(value):
                    raise ValueError(f"{theirs}= and {ours}= disagree; pass one of them")
                data[ours] = value
        known = {*cls.model_fields, *(f.alias for f in cls.model_fields.values() if f.alias)}
        ignored = sorted(name for name in data if name not in known)
        if ignored:
            # LangChain's class silently ignored unknown arguments, and code written for it passes some
            # (``handle_parsing_errors=True`` is common); say so instead of failing the one-line migration.
            warnings.warn(
                f"AzureMLChatOnlineEndpoint ignores {', '.join(ignored)} "
                "(LangChain's class ignored them too)",
                UserWarning,
                stacklevel=2,
            )
            for name in ignored:
                del data[name]
        for name in ("endpoint_url", "api_key", "deployment", "endpoint_type"):
            # LangChain treats an empty value as missing and falls back to the environment; so do we.
            value = data.get(name)
            if value == "" or (isinstance(value, SecretStr) and not value.get_secret_value()):
                data[name] = None
        if isinstance(data.get("endpoint_type"), enum.Enum):
            data["endpoint_type"] = data["endpoint_type"].value
        if data.get("formatter") is not None:
            data["formatter"] = family_of(data["formatter"])
        if isinstance(data.get("timeout"), str):
            data["timeout"] = float(data["timeout"])
        return data

    @property
    def _llm_type(self) -> str:
        return self._compat_llm_type

    @property
    def endpoint_api_key(self) -> SecretStr:
        """The key, masked (LangChain's name); an empty ``SecretStr`` when a credential is used instead."""
        return self.api_key if self.api_key is not None else SecretStr("")

    @property
    def endpoint_api_type(self) -> AzureMLEndpointApiType:
        """``dedicated`` or ``serverless`` (LangChain's name)."""
        return AzureMLEndpointApiType(self.endpoint_type or "dedicated")

    @property
    def deployment_name(self) -> str:
        """The deployment, ``""`` for none (LangChain's name)."""
        return self.deployment or ""

    @property
    def content_formatter(self) -> ContentFormatter:
        """The family's formatter in use (LangChain's name)."""
        return self._formatter
