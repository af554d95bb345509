"""The GenAI client metrics (semantic conventions v1.41, ``docs/gen-ai/gen-ai-metrics.md``): the instruments,
made once per meter provider, and what one call records.

===============================================  ===========  ===================================================
``gen_ai.client.operation.duration``             ``s``        every call; ``error.type`` when it failed
``gen_ai.client.token.usage``                    ``{token}``  per answer with usage: ``gen_ai.token.type`` =
                                                              ``input`` and ``output``
``gen_ai.client.operation.time_to_first_chunk``  ``s``        streams that handed out a chunk
===============================================  ===========  ===================================================

Each carries ``gen_ai.operation.name``, ``gen_ai.provider.name``, ``gen_ai.request.model``,
``gen_ai.response.model`` (when known), ``server.address`` and ``server.port``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
from opentelemetry.metrics import Histogram, MeterProvider

from .._version import __version__
from . import _names

__all__ = ["Instruments", "record"]

# The conventions' advised bucket boundaries: seconds (0.01 s to 81.92 s, doubling) and tokens (powers of 4).
_SECONDS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
_TOKENS = [4.0**power for power in range(14)]


@attrs.frozen
class Instruments:
    """The three histograms of one meter provider."""

    duration: Histogram
    tokens: Histogram
    time_to_first_chunk: Histogram

    @classmethod
    def of(cls, provider: MeterProvider) -> Instruments:
        """The instruments of ``provider``'s ``azureml_chat`` meter."""
        meter = provider.get_meter("azureml_chat", __version__)
        return cls(
            duration=meter.create_histogram(
                _names.METRIC_DURATION,
                unit="s",
                description="GenAI operation duration.",
                explicit_bucket_boundaries_advisory=_SECONDS,
            ),
            tokens=meter.create_histogram(
                _names.METRIC_TOKENS,
                unit="{token}",
                description="Number of input and output tokens used.",
                explicit_bucket_boundaries_advisory=_TOKENS,
            ),
            time_to_first_chunk=meter.create_histogram(
                _names.METRIC_TIME_TO_FIRST_CHUNK,
                unit="s",
                description="Time to receive the first chunk of a streamed response.",
                explicit_bucket_boundaries_advisory=_SECONDS,
            ),
        )


def record(
    instruments: Instruments,
    attributes: Mapping[str, Any],
    *,
    seconds: float,
    time_to_first_chunk: float | None,
    usage: Any,
) -> None:
    """Record one call: ``attributes`` are the metric attributes (with ``error.type`` when it failed), ``usage``
    its answer's usage (``None`` when unknown)."""
    instruments.duration.record(seconds, attributes)
    if time_to_first_chunk is not None:
        instruments.time_to_first_chunk.record(time_to_first_chunk, attributes)
    if usage is not None:
        instruments.tokens.record(usage.prompt_tokens, {**attributes, _names.TOKEN_TYPE: "input"})
        instruments.tokens.record(usage.completion_tokens, {**attributes, _names.TOKEN_TYPE: "output"})
