"""The ``/score`` dialects of the non-OpenAI families: validate a request, shape the answer. No I/O.

- ``llama``: ``{"input_data": {"input_string": [messages], "parameters": {...}}}`` -> ``{"output": text}``
- ``mistral``: as ``llama``, but a ``system`` message is refused (the Mistral template has no system role)
- ``gpt2``: ``{"inputs": {"input_string": [prompts]}, "parameters": {...}}`` -> ``[{"0": text}, ...]``
- ``hf``: ``{"inputs": [prompts], "parameters": {...}}`` -> ``[{"0": {"generated_text": text}}, ...]``
- ``dolly``: ``{"input_data": {"input_string": [prompts]}, "parameters": {...}}`` -> ``[text, ...]``

(``openai`` deployments take a chat-completions body on ``/score``; that is :mod:`._chat`.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from ._answers import ECHO_PREFIX, apply_limits, content_text, control_faults, count_tokens, echo
from ._chat import check_message, parse_stop
from ._errors import BadRequest

__all__ = ["CHAT_FAMILIES", "TEXT_FAMILIES", "ScoreRequest", "answer_score", "parse_score_request"]

CHAT_FAMILIES = frozenset({"llama", "mistral"})
TEXT_FAMILIES = frozenset({"gpt2", "hf", "dolly"})


@attrs.frozen
class ScoreRequest:
    """A validated ``/score`` request: chat ``messages`` or text-generation ``prompts``, and the limits."""

    messages: tuple[Mapping[str, Any], ...] = ()
    prompts: tuple[str, ...] = ()
    max_new_tokens: int | None = None
    stop: tuple[str, ...] = ()


def parse_score_request(family: str, body: Any) -> ScoreRequest:
    """Validate a ``/score`` body in ``family``'s shape.

    Raises:
        BadRequest: the body is not that shape; the message shows the shape expected.
    """
    if family in CHAT_FAMILIES:
        return _parse_chat(family, body)
    if family == "gpt2":
        inputs = body.get("inputs") if isinstance(body, Mapping) else None
        prompts = inputs.get("input_string") if isinstance(inputs, Mapping) else None
        where, expected = "inputs.input_string", '{"inputs": {"input_string": ["..."]}, "parameters": {...}}'
    elif family == "hf":
        prompts = body.get("inputs") if isinstance(body, Mapping) else None
        prompts = [prompts] if isinstance(prompts, str) else prompts
        where, expected = "inputs", '{"inputs": ["..."], "parameters": {...}}'
    else:
        data = body.get("input_data") if isinstance(body, Mapping) else None
        prompts = data.get("input_string") if isinstance(data, Mapping) else None
        where, expected = (
            "input_data.input_string",
            '{"input_data": {"input_string": ["..."]}, "parameters": {...}}',
        )
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise BadRequest(f"expected {where} to be a non-empty list of strings: {expected}")
    assert isinstance(body, Mapping)
    return _with_parameters(ScoreRequest(prompts=tuple(prompts)), body.get("parameters"))


def _parse_chat(family: str, body: Any) -> ScoreRequest:
    expected = '{"input_data": {"input_string": [{"role": "user", "content": "..."}], "parameters": {...}}}'
    data = body.get("input_data") if isinstance(body, Mapping) else None
    messages = data.get("input_string") if isinstance(data, Mapping) else None
    if not isinstance(messages, list) or not messages:
        raise BadRequest(f"expected input_data.input_string to be a non-empty list of messages: {expected}")
    for index, message in enumerate(messages):
        check_message(index, message, field="input_data.input_string")
        if family == "mistral" and message["role"] == "system":
            # Mistral's chat template raises on a system role; clients must fold it into the first user turn.
            raise BadRequest(
                "Conversation roles must alternate user/assistant/user/assistant/... "
                "(the Mistral chat template has no system role)"
            )
    assert isinstance(data, Mapping)
    return _with_parameters(ScoreRequest(messages=tuple(messages)), data.get("parameters"))


def _with_parameters(request: ScoreRequest, parameters: Any) -> ScoreRequest:
    if parameters is None:
        return request
    if not isinstance(parameters, Mapping):
        raise BadRequest("expected 'parameters' to be an object")
    limit = parameters.get("max_new_tokens", parameters.get("max_tokens"))
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise BadRequest(f"expected max_new_tokens to be a non-negative integer, got {limit!r}")
    return attrs.evolve(request, max_new_tokens=limit, stop=parse_stop(parameters.get("stop")))


def answer_score(family: str, request: ScoreRequest, *, reply: Callable[[], str | None]) -> tuple[Any, int]:
    """The ``/score`` response body (scripted replies or echoes, cut by ``stop`` and ``max_new_tokens``), and
    its tokens: the words of the prompt and of the answer, which a ``/score`` body does not report but a
    quota still counts."""

    def limited(text: str) -> str:
        return apply_limits(text, stop=request.stop, max_tokens=request.max_new_tokens)[0]

    if family in CHAT_FAMILIES:
        scripted = reply()
        output = limited(echo(request.messages) if scripted is None else scripted)
        prompt = sum(count_tokens(content_text(message.get("content"))) for message in request.messages)
        return {"output": output}, prompt + count_tokens(output)
    texts = []
    for prompt_text in request.prompts:
        scripted = reply()
        texts.append(limited(ECHO_PREFIX + control_faults(prompt_text)[0] if scripted is None else scripted))
    tokens = sum(count_tokens(text) for text in (*request.prompts, *texts))
    if family == "gpt2":
        return [{"0": text} for text in texts], tokens
    if family == "hf":
        return [{"0": {"generated_text": text}} for text in texts], tokens
    return texts, tokens
