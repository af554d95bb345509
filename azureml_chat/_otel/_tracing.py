"""The OpenTelemetry :class:`~azureml_chat._instrument.Instrumentation`: a span per call through the global
tracer provider, metrics through the global meter provider, and next to nothing while neither is configured."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from opentelemetry import metrics, trace
from opentelemetry.environment_variables import OTEL_PYTHON_METER_PROVIDER, OTEL_PYTHON_TRACER_PROVIDER
from opentelemetry.metrics import _internal as _metrics_internal

from .._instrument import NO_INSTRUMENTATION, CallObserver
from .._version import __version__
from . import _names
from ._metrics import Instruments
from ._spans import CallSpan

if TYPE_CHECKING:
    from .._endpoint import ResolvedEndpoint

__all__ = ["SILENT", "OtelInstrumentation", "is_configured"]

logger = logging.getLogger("azureml_chat")

SILENT = cast(CallObserver, NO_INSTRUMENTATION)
"""The shared observer that reports nothing: what a call gets while OpenTelemetry is not configured."""

_SILENT_TRACER_PROVIDERS = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
try:
    # The API exports no name for the placeholder meter provider it hands out before one is set.
    from opentelemetry.metrics._internal import _ProxyMeterProvider

    _SILENT_METER_PROVIDERS: tuple[type, ...] = (_ProxyMeterProvider, metrics.NoOpMeterProvider)
except ImportError:  # pragma: no cover - another API release
    _SILENT_METER_PROVIDERS = (type(metrics.get_meter_provider()), metrics.NoOpMeterProvider)

# The public getters cost about 0.65 us each when no provider is set (each looks its environment variable up
# in os.environ), twice the whole no-op hook. The API keeps the providers set in these module globals (None
# until set), which cost a load each to read; when an API release names them otherwise, the getters are used.
_CAN_PEEK = hasattr(trace, "_TRACER_PROVIDER") and hasattr(_metrics_internal, "_METER_PROVIDER")


def is_configured(tracer_provider: trace.TracerProvider, meter_provider: metrics.MeterProvider) -> bool:
    """Whether either provider is a real one (an SDK's, or another implementation's), not the API's
    placeholders."""
    return not (
        isinstance(tracer_provider, _SILENT_TRACER_PROVIDERS)
        and isinstance(meter_provider, _SILENT_METER_PROVIDERS)
    )


class OtelInstrumentation:
    """Starts a :class:`~azureml_chat._otel._spans.CallSpan` per call while a provider is configured.

    The providers are looked up per call (a provider the application sets after the client was made is used
    from its next call on); the tracer and the instruments are made once per provider and kept.
    """

    def __init__(
        self,
        *,
        pooled: bool,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self._pooled = pooled
        # Peek at the API's globals only when the getters have nothing else to read: a provider named by its
        # environment variable is loaded by the getters themselves (the variable is read here, once).
        self._peek = (
            _CAN_PEEK
            and tracer_provider is None
            and meter_provider is None
            and OTEL_PYTHON_TRACER_PROVIDER not in os.environ
            and OTEL_PYTHON_METER_PROVIDER not in os.environ
        )
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._tracer: tuple[trace.TracerProvider, trace.Tracer] | None = None
        self._instruments: tuple[metrics.MeterProvider, Instruments] | None = None

    def start_call(
        self,
        operation: str,
        endpoint: ResolvedEndpoint,
        params: Mapping[str, Any],
        *,
        stream: bool,
        request_id: str,
        payload: Any,
    ) -> CallObserver:
        if self._peek and trace._TRACER_PROVIDER is None and _metrics_internal._METER_PROVIDER is None:
            return SILENT  # the fast path: OpenTelemetry is installed and not configured
        tracer_provider = self._tracer_provider or trace.get_tracer_provider()
        meter_provider = self._meter_provider or metrics.get_meter_provider()
        if isinstance(tracer_provider, _SILENT_TRACER_PROVIDERS) and isinstance(
            meter_provider, _SILENT_METER_PROVIDERS
        ):
            return SILENT
        try:
            return CallSpan(
                self._tracer_of(tracer_provider),
                self._instruments_of(meter_provider),
                operation,
                endpoint,
                params,
                stream=stream,
                request_id=request_id,
                payload=payload,
                pooled=self._pooled,
                capture=captures_content(),
            )
        except Exception:
            logger.debug("OpenTelemetry: a call was not instrumented", exc_info=True)
            return SILENT

    def _tracer_of(self, provider: trace.TracerProvider) -> trace.Tracer:
        kept = self._tracer
        if kept is None or kept[0] is not provider:
            kept = self._tracer = (provider, provider.get_tracer("azureml_chat", __version__))
        return kept[1]

    def _instruments_of(self, provider: metrics.MeterProvider) -> Instruments:
        kept = self._instruments
        if kept is None or kept[0] is not provider:
            kept = self._instruments = (provider, Instruments.of(provider))
        return kept[1]


def captures_content() -> bool:
    """Whether message content is recorded: ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` is ``true``
    (any case), read per call."""
    return os.environ.get(_names.CAPTURE_CONTENT_ENV, "").strip().lower() == "true"
