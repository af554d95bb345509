"""Reasoning models, as Azure serves them: the thinking in ``<think>`` tags or in ``reasoning_content``. No I/O.

Two modes, chosen per deployment (``Deployment(reasoning=...)``, ``azureml-chat emulator --reasoning``):

- ``think``, as DeepSeek-R1 on Azure serverless: ``content`` starts with ``<think>\\n{reasoning}\\n</think>\\n\\n``
  and then holds the answer. Streamed, the tags themselves arrive split across chunks (``<th`` + ``ink>``,
  ``\\n</`` + ``think>``), so a client that strips them must join deltas first.
- ``field``, as vLLM's reasoning parsers: the message (and each stream delta) carries ``reasoning_content``, and
  ``content`` holds only the answer.

The reasoning is :data:`REASONING` (deterministic). It applies to text answers only, not to tool calls;
``max_tokens`` and ``stop`` cut the answer, not the reasoning. Usage counts the reasoning words (with the two
tags, in ``think`` mode) in ``completion_tokens`` and reports them as
``completion_tokens_details.reasoning_tokens``.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

from ._answers import count_tokens, split_for_stream

__all__ = ["REASONING", "REASONING_MODES", "ReasoningMode", "stream_pieces", "think"]

ReasoningMode: TypeAlias = Literal["think", "field"]
REASONING_MODES: tuple[ReasoningMode, ...] = ("think", "field")
REASONING = "The user wants a reply. I will answer briefly and plainly."
_OPEN, _CLOSE = "<think>\n", "\n</think>\n\n"
# Where the tags break across deltas: mid-word, as a tokenizer cuts them.
_OPEN_PIECES, _CLOSE_PIECES = ("<th", "ink>\n"), ("\n</", "think>\n\n")


def think(answer: str, reasoning: str = REASONING) -> tuple[str, int]:
    """``content`` in ``think`` mode, and its reasoning tokens (the reasoning's words and the two tags)."""
    block = _OPEN + reasoning + _CLOSE
    return block + answer, count_tokens(block)


def stream_pieces(content: str) -> list[str]:
    """The content deltas of a streamed answer: a word each, with a leading ``<think>`` block's tags split in two.

    The pieces join back to ``content`` exactly.
    """
    if content.startswith(_OPEN) and (end := content.find(_CLOSE, len(_OPEN))) >= 0:
        reasoning, answer = content[len(_OPEN) : end], content[end + len(_CLOSE) :]
        return [*_OPEN_PIECES, *split_for_stream(reasoning), *_CLOSE_PIECES, *split_for_stream(answer)]
    return split_for_stream(content)
