"""Reasoning kept apart from the answer: a ``<think>...</think>`` block opening a chat answer's content (as
DeepSeek-R1 on Azure serverless writes it) becomes the choice's ``reasoning``, the text after it its content.

Only a block at the very start counts (spaces, tabs and line breaks before it aside): the same tags later in the text are the
answer's own words. The reasoning is the text between the tags without its surrounding whitespace; the
content is the text after ``</think>`` without its leading whitespace. A block never closed (the answer was
cut at ``max_tokens``) is all reasoning. A stream splits the same way whatever its chunking, so the joined
deltas of a stream equal the whole answer's split (the tags may be cut anywhere, even inside themselves).
"""

from __future__ import annotations

import attrs

from ._responses import ChatChunk, ChatResponse, Choice

__all__ = ["MAY_OPEN_THINK", "ThinkSplitter", "split_reasoning", "split_think"]

OPEN, CLOSE = "<think>", "</think>"
# The whitespace allowed before an opening <think>, and how such a content may start (a tuple for one
# str.startswith call, which is how the client tests every answer).
_SPACE = " \n\r\t"
MAY_OPEN_THINK = (OPEN, *_SPACE)


def split_think(text: str) -> tuple[str | None, str] | None:
    """``(reasoning, content)`` when ``text`` opens with a ``<think>`` block, else ``None``."""
    body = text.lstrip(_SPACE)
    if not body.startswith(OPEN):
        return None
    inner, closed, rest = body[len(OPEN) :].partition(CLOSE)
    return inner.strip() or None, rest.lstrip() if closed else ""


def split_reasoning(response: ChatResponse) -> ChatResponse:
    """``response`` with each choice's opening ``<think>`` block moved to its ``reasoning`` (the same object
    when no choice has one: the common case costs one test per choice)."""
    choices = response.choices
    split = [_split_choice(choice) for choice in choices]
    if all(new is old for new, old in zip(split, choices, strict=True)):
        return response
    return attrs.evolve(response, choices=split)


def _split_choice(choice: Choice) -> Choice:
    content = choice.message.content
    if content is None or choice.reasoning is not None or not content.startswith(MAY_OPEN_THINK):
        return choice
    parts = split_think(content)
    if parts is None:
        return choice
    reasoning, answer = parts
    return attrs.evolve(choice, message=attrs.evolve(choice.message, content=answer), reasoning=reasoning)


# The states of one choice's text in a stream.
_START, _THINK_START, _THINK, _AFTER, _ANSWER = range(5)


class ThinkSplitter:
    """Splits the content deltas of one stream choice the way :func:`split_think` splits a whole answer.

    Text that may still turn out to be a tag (or whitespace the split drops) is held back and handed out with
    a later chunk, or by :meth:`flush` when the choice ends.
    """

    __slots__ = ("_held", "_state")

    def __init__(self) -> None:
        self._state = _START
        self._held = ""

    def feed(self, chunk: ChatChunk) -> ChatChunk:
        """The chunk with its content split into content and reasoning (the same chunk once past the start)."""
        if self._state == _ANSWER or (chunk.content is None and chunk.finish_reason is None):
            return chunk
        reasoning, content = self._split(chunk.content or "")
        if chunk.finish_reason is not None:
            more_reasoning, more_content = self.flush()
            reasoning, content = reasoning + more_reasoning, content + more_content
        if chunk.reasoning:
            reasoning = chunk.reasoning + reasoning
        return attrs.evolve(chunk, content=content or None, reasoning=reasoning or None)

    def flush(self) -> tuple[str, str]:
        """``(reasoning, content)`` still held, once the choice has ended."""
        held, self._held = self._held, ""
        state, self._state = self._state, _ANSWER
        if state == _START:
            return "", held  # it never became "<think>": it is the answer's text, as sent
        if state == _THINK:
            return held.rstrip(), ""
        return "", ""

    def _split(self, text: str) -> tuple[str, str]:
        reasoning = ""
        while text:
            state = self._state
            if state == _START:
                held = self._held + text
                body = held.lstrip(_SPACE)
                if body.startswith(OPEN):
                    self._state, self._held, text = _THINK_START, "", body[len(OPEN) :]
                elif OPEN.startswith(body):
                    self._held = held  # whitespace, or a tag cut short: wait for more
                    return reasoning, ""
                else:
                    self._state, self._held = _ANSWER, ""
                    return reasoning, held
            elif state == _THINK_START:
                text = text.lstrip()
                if text:
                    self._state = _THINK
            elif state == _THINK:
                held = self._held + text
                inner, closed, rest = held.partition(CLOSE)
                if closed:
                    self._state, self._held, text = _AFTER, "", rest
                    reasoning += inner.rstrip()
                    continue
                # Keep back what may be the start of "</think>", and trailing whitespace (dropped if the
                # block ends after it).
                keep = _tag_prefix_length(held)
                body, tail = held[: len(held) - keep], held[len(held) - keep :]
                stripped = body.rstrip()
                reasoning += stripped
                self._held = body[len(stripped) :] + tail
                return reasoning, ""
            elif state == _AFTER:
                text = text.lstrip()
                if text:
                    self._state = _ANSWER
                    return reasoning, text
            else:
                return reasoning, text
        return reasoning, ""


def _tag_prefix_length(text: str) -> int:
    """The length of the longest end of ``text`` that is a proper start of ``</think>``."""
    for size in range(min(len(CLOSE) - 1, len(text)), 0, -1):
        if CLOSE.startswith(text[-size:]):
            return size
    return 0
