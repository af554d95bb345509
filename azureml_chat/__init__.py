"""azureml-chat: an async-first client for chat models on Azure Machine Learning online endpoints.

::

    async with AsyncChatClient(endpoint_url, api_key) as client:
        response = await client.chat([UserMessage("hi")])
        print(response.content)
"""

from ._batch import BatchResults
from ._client import AsyncChatClient
from ._config import Secret, Timeout
from ._endpoint import Endpoint
from ._errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    AzureMLChatError,
    BadRequestError,
    ClientClosedError,
    ConfigurationError,
    InternalServerError,
    InvalidRequestError,
    ModelError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestTimeoutError,
    ResponseFormatError,
    StreamError,
    UnprocessableEntityError,
)
from ._messages import (
    AssistantMessage,
    ContentPart,
    ImagePart,
    Message,
    SystemMessage,
    TextPart,
    ToolCall,
    ToolMessage,
    UserMessage,
)
from ._ratelimit import RateLimit
from ._responses import (
    ChatChunk,
    ChatResponse,
    Choice,
    CompletionChoice,
    CompletionChunk,
    CompletionResponse,
    ToolCallDelta,
    Usage,
)
from ._retry import RetryPolicy
from ._router import EndpointStatus
from ._stream import AsyncChatStream, AsyncCompletionStream
from ._sync import ChatStream, Client, CompletionStream, SyncBatchResults
from ._version import __version__
from .formatters import ContentFormatter, Route, available_formatters, get_formatter, register_formatter

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AssistantMessage",
    "AsyncChatClient",
    "AsyncChatStream",
    "AsyncCompletionStream",
    "AuthenticationError",
    "AzureMLChatError",
    "BadRequestError",
    "BatchResults",
    "ChatChunk",
    "ChatResponse",
    "ChatStream",
    "Choice",
    "Client",
    "ClientClosedError",
    "CompletionChoice",
    "CompletionChunk",
    "CompletionResponse",
    "CompletionStream",
    "ConfigurationError",
    "ContentFormatter",
    "ContentPart",
    "Endpoint",
    "EndpointStatus",
    "ImagePart",
    "InternalServerError",
    "InvalidRequestError",
    "Message",
    "ModelError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimit",
    "RateLimitError",
    "RequestTimeoutError",
    "ResponseFormatError",
    "RetryPolicy",
    "Route",
    "Secret",
    "StreamError",
    "SyncBatchResults",
    "SystemMessage",
    "TextPart",
    "Timeout",
    "ToolCall",
    "ToolCallDelta",
    "ToolMessage",
    "UnprocessableEntityError",
    "Usage",
    "UserMessage",
    "__version__",
    "available_formatters",
    "get_formatter",
    "register_formatter",
]
