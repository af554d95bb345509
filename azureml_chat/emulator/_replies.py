"""From a routed request to the answer the emulator sends: screen the body's fields, parse it in the route's
dialect, answer, shape it as a JSON body or SSE events, and count its tokens. The server decides ids and time
here; what the answer says is in the pure dialect modules.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import attrs

from ._azure import (
    AZURE_CHAT_FIELDS,
    AZURE_COMPLETION_FIELDS,
    MODEL_INFERENCE_PATHS,
    ExtraParameters,
    screen_extras,
)
from ._cache import PromptCache
from ._chat import OPENAI_CHAT_FIELDS, answer_chat, parse_chat_request, prompt_tokens
from ._chat_body import completion_body, stream_chunks
from ._completions import (
    OPENAI_COMPLETION_FIELDS,
    answer_completion,
    completion_chunks,
    completion_usage,
    parse_completion_request,
    text_body,
)
from ._deployments import Deployment
from ._openai import usage_object
from ._score import answer_score, parse_score_request

__all__ = ["Reply", "chat_reply", "completion_reply", "score_reply"]


@attrs.frozen
class Reply:
    """An answer ready for the wire: a JSON ``body``, or the SSE ``events`` (JSON texts) of a stream, and the
    tokens a quota charges for it (the usage total)."""

    body: Any
    tokens: int
    events: list[str] | None = None


def chat_reply(
    body: Any,
    *,
    path: str,
    policy: ExtraParameters,
    deployment: Deployment,
    reply: Callable[[], str | None],
    cache: PromptCache,
) -> Reply:
    """Answer a chat-completions request (on a chat route, or ``/score`` of an ``openai`` deployment).

    Raises:
        BadRequest: unknown fields the policy refuses, or a malformed body.
    """
    known = AZURE_CHAT_FIELDS if path in MODEL_INFERENCE_PATHS else OPENAI_CHAT_FIELDS
    chat = parse_chat_request(screen_extras(body, known, policy))
    answers = answer_chat(
        chat,
        reply=reply,
        call_id=lambda: f"call_{uuid.uuid4().hex[:24]}",
        reasoning=deployment.reasoning,
    )
    usage = usage_object(
        prompt_tokens=prompt_tokens(chat),
        completion_tokens=sum(answer.completion_tokens for answer in answers),
        cached_tokens=cache.cached_tokens(deployment.name, chat.messages),
        reasoning_tokens=sum(answer.reasoning_tokens for answer in answers),
    )
    completion_id, created, model = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), deployment.model
    if not chat.stream:
        answer = completion_body(answers, usage, completion_id=completion_id, created=created, model=model)
        return Reply(answer, usage["total_tokens"])
    chunks = stream_chunks(answers, usage, completion_id=completion_id, created=created, model=model)
    return Reply(None, usage["total_tokens"], [json.dumps(chunk) for chunk in chunks])


def completion_reply(
    body: Any, *, path: str, policy: ExtraParameters, deployment: Deployment, reply: Callable[[], str | None]
) -> Reply:
    """Answer a text-completions request.

    Raises:
        BadRequest: unknown fields the policy refuses, or a malformed body.
    """
    known = AZURE_COMPLETION_FIELDS if path in MODEL_INFERENCE_PATHS else OPENAI_COMPLETION_FIELDS
    completion = parse_completion_request(screen_extras(body, known, policy))
    answers = answer_completion(completion, reply=reply)
    usage = completion_usage(completion, answers)
    completion_id, created, model = f"cmpl-{uuid.uuid4().hex}", int(time.time()), deployment.model
    if not completion.stream:
        answer = text_body(answers, usage, completion_id=completion_id, created=created, model=model)
        return Reply(answer, usage["total_tokens"])
    chunks = completion_chunks(answers, usage, completion_id=completion_id, created=created, model=model)
    return Reply(None, usage["total_tokens"], [json.dumps(chunk) for chunk in chunks])


def score_reply(body: Any, *, deployment: Deployment, reply: Callable[[], str | None]) -> Reply:
    """Answer ``/score`` in a non-OpenAI family's shape.

    Raises:
        BadRequest: a body not in the family's shape.
    """
    answer, tokens = answer_score(
        deployment.family, parse_score_request(deployment.family, body), reply=reply
    )
    return Reply(answer, tokens)
