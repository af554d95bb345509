"""The text-generation schemas on ``/score``: ``gpt2``, ``hf`` and ``dolly`` (a prompt in, generated text out).

Requests (reference ``langchain_azureml.md`` section 4.2; the prompt goes in as given, never escaped or
wrapped in quotes as LangChain does):

- ``gpt2`` (AML "standard contract", GPT-2, Falcon, most HF catalog models):
  ``{"inputs": {"input_string": [prompt]}, "parameters": {...}}``
- ``hf`` (HF inference toolkit): ``{"inputs": [prompt], "parameters": {...}}``
- ``dolly`` (Dolly v2): ``{"input_data": {"input_string": [prompt]}, "parameters": {...}}``, with
  ``parameters`` beside ``input_data``, not inside it

``max_tokens`` is sent as ``max_new_tokens``, the name these schemas use. Responses are lists with one output
per prompt. Their shape depends on the serving container's version more than on the model family, so every
family reads every documented variant of the first output: ``"text"`` (Dolly), ``{"0": "text"}`` (GPT-2),
``{"0": {"generated_text": "text"}}``, ``{"generated_text": "text"}`` and ``[{"generated_text": "text"}]``
(HF, newest to oldest), and ``{"summary_text": "text"}`` (HF summarisation). The text is returned as
received, not stripped. These families cannot chat and ``/score`` cannot stream.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from .._errors import InvalidRequestError, ResponseFormatError, StreamError
from .._messages import Message
from .._responses import ChatChunk, ChatResponse, CompletionChunk, CompletionResponse
from ._base import ContentFormatter, Route

__all__ = [
    "DollyFormatter",
    "GPT2Formatter",
    "HFFormatter",
    "TextGenerationFormatter",
    "read_generated_text",
]

# The schemas' names for the common parameters.
_RENAMES = {"max_tokens": "max_new_tokens"}
# Parameters a text-generation schema has no place for: sending them would be a silent drop or a 424.
_UNSUPPORTED = ("tools", "tool_choice", "response_format", "stream_options")
# The keys an output object keeps its text under (generation, then summarisation models).
_TEXT_KEYS = ("generated_text", "summary_text")


def read_generated_text(body: Any) -> str | None:
    """The first output's text from any documented text-generation response, ``None`` if there is none."""
    if not isinstance(body, list) or not body:
        return None
    output = body[0]
    if isinstance(output, list):
        # [[{"generated_text": ...}, ...]]: the first prompt's sequences; the first sequence is the answer.
        output = output[0] if output else None
    if isinstance(output, str):
        return output
    if not isinstance(output, Mapping):
        return None
    if "0" in output:
        inner = output["0"]
        if isinstance(inner, str):
            return inner
        output = inner if isinstance(inner, Mapping) else {}
    for key in _TEXT_KEYS:
        text = output.get(key)
        if isinstance(text, str):
            return text
    return None


class TextGenerationFormatter(ContentFormatter):
    """Base of the ``/score`` text-generation families; a subclass only says where the prompt goes.

    Attributes:
        response_shape: the family's documented response, for error messages.
    """

    routes: ClassVar[frozenset[Route]] = frozenset({Route.SCORE})
    completion_routes: ClassVar[frozenset[Route]] = frozenset({Route.SCORE})
    response_shape: ClassVar[str] = '["<text>"]'

    def wrap(self, prompt: str, parameters: dict[str, Any]) -> dict[str, Any]:
        """The request body holding ``prompt`` and the (renamed) ``parameters``."""
        raise NotImplementedError

    def build_completion_request(
        self, route: Route, prompt: str, params: Mapping[str, Any], *, stream: bool
    ) -> dict[str, Any]:
        if route not in self.completion_routes:
            raise self.cannot_complete(route)
        for name in _UNSUPPORTED:
            if name in params:
                raise InvalidRequestError(
                    f"the {name!r} parameter cannot be sent to the {self.name!r} text-generation schema"
                )
        # When both max_tokens and max_new_tokens are given the later one wins: merge_params orders keys by
        # the layer that set them, so a call's max_tokens beats a max_new_tokens left in model_kwargs.
        parameters = {_RENAMES.get(key, key): value for key, value in params.items()}
        return self.wrap(prompt, parameters)

    def read_completion(self, route: Route, body: Any, *, request_id: str | None) -> CompletionResponse:
        text = read_generated_text(body)
        if text is None:
            raise self.shape_error(
                f"expected a list of generated texts such as {self.response_shape}", body, completion=True
            )
        return CompletionResponse(text=text, request_id=request_id, raw=body)

    def parse_completion(self, route: Route, body: Any) -> CompletionResponse:
        return self.read_completion(route, body, request_id=None)

    def parse_completion_chunk(self, route: Route, data: Any) -> CompletionChunk | None:
        raise StreamError(f"the {self.name!r} text-generation schema does not stream on {route.value}")

    # A text-generation family cannot chat: the chat hooks say so instead of failing as unimplemented.

    def build_request(
        self, route: Route, messages: Sequence[Message], params: Mapping[str, Any], *, stream: bool
    ) -> dict[str, Any]:
        raise self.cannot_chat(route)

    def parse_response(self, route: Route, body: Any) -> ChatResponse:
        raise ResponseFormatError(
            "a text-generation family does not read chat answers: call complete(prompt)", formatter=self.name
        )

    def parse_chunk(self, route: Route, data: Any) -> ChatChunk | None:
        raise StreamError(f"the {self.name!r} text-generation schema does not stream chat answers")


class GPT2Formatter(TextGenerationFormatter):
    """GPT-2 and the AML text-generation "standard contract": ``{"inputs": {"input_string": [prompt]}}``."""

    name: ClassVar[str] = "gpt2"
    response_shape: ClassVar[str] = '[{"0": "<text>"}]'

    def wrap(self, prompt: str, parameters: dict[str, Any]) -> dict[str, Any]:
        return {"inputs": {"input_string": [prompt]}, "parameters": parameters}


class HFFormatter(TextGenerationFormatter):
    """Hugging Face inference-toolkit models: ``{"inputs": [prompt], "parameters": {...}}``."""

    name: ClassVar[str] = "hf"
    response_shape: ClassVar[str] = '[{"0": {"generated_text": "<text>"}}]'

    def wrap(self, prompt: str, parameters: dict[str, Any]) -> dict[str, Any]:
        return {"inputs": [prompt], "parameters": parameters}


class DollyFormatter(TextGenerationFormatter):
    """Dolly v2: ``{"input_data": {"input_string": [prompt]}, "parameters": {...}}`` -> ``["<text>"]``."""

    name: ClassVar[str] = "dolly"
    response_shape: ClassVar[str] = '["<text>"]'

    def wrap(self, prompt: str, parameters: dict[str, Any]) -> dict[str, Any]:
        return {"input_data": {"input_string": [prompt]}, "parameters": parameters}
