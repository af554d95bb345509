"""``--trace``: print the OpenTelemetry spans of the command's calls, with no configuration.

The client reports through OpenTelemetry's global providers (``azureml_chat._otel``); this sets the global tracer
provider to one whose console exporter writes each span, as JSON, to standard error as it ends, so standard output
keeps only the answers (``--json`` stays parseable). It needs the OpenTelemetry SDK, which the package does not
install: the error says how to get it.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from ._options import UsageError

__all__ = ["add_trace_option", "trace_to"]

_NEEDS_SDK = "--trace needs the OpenTelemetry SDK: pip install opentelemetry-sdk (or leave out --trace)"


def add_trace_option(parser: argparse.ArgumentParser) -> None:
    """``--trace``: the calls' spans on standard error."""
    parser.add_argument(
        "--trace",
        action="store_true",
        help="print each call's OpenTelemetry spans (GenAI conventions) to stderr as JSON; needs opentelemetry-sdk",
    )


def trace_to(out: TextIO = sys.stderr) -> None:
    """Send every span this process ends to ``out``, through the SDK's console exporter.

    Raises:
        UsageError: the SDK (or the API) is not installed.
    """
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
    except ImportError:
        raise UsageError(_NEEDS_SDK) from None
    provider = TracerProvider(resource=Resource.create({"service.name": "azureml-chat"}))
    # Simple, not batched: a span is printed when it ends, so a short command loses none at exit.
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=out)))
    trace.set_tracer_provider(provider)
