"""LangChain integration (the ``langchain`` extra): ``pip install "azureml-chat[langchain]"``.

::

    from azureml_chat.langchain import AzureMLChatModel

    llm = AzureMLChatModel(endpoint_url="https://<ep>.<region>.inference.ml.azure.com/score", api_key=key)
    llm.invoke("Hello!")
    llm = client.to_langchain(temperature=0.2)   # from an AsyncChatClient or a Client you already have

- :class:`AzureMLChatModel`: a ``BaseChatModel`` with native async, streaming on every route, tools,
  structured output, multimodal input, usage metadata.
- :class:`AzureMLChatOnlineEndpoint`: LangChain's ``AzureMLChatOnlineEndpoint`` constructor on top of it, plus
  LangChain's formatter names and :class:`AzureMLEndpointApiType`, so moving over is an import change.

Importing this module is the opt-in: ``import azureml_chat`` never imports langchain-core.
"""

from __future__ import annotations

try:
    import langchain_core  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        'azureml_chat.langchain needs langchain-core: pip install "azureml-chat[langchain]"', name=exc.name
    ) from exc

from ._compat import (
    AzureMLChatOnlineEndpoint,
    AzureMLEndpointApiType,
    CustomOpenAIChatContentFormatter,
    LlamaChatContentFormatter,
    MistralChatContentFormatter,
)
from ._model import AzureMLChatModel

__all__ = [
    "AzureMLChatModel",
    "AzureMLChatOnlineEndpoint",
    "AzureMLEndpointApiType",
    "CustomOpenAIChatContentFormatter",
    "LlamaChatContentFormatter",
    "MistralChatContentFormatter",
]
