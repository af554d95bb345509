"""OpenTelemetry GenAI spans and metrics for every call (semantic conventions v1.41, ``docs/gen-ai/``), when the
``opentelemetry-api`` package is installed (the ``otel`` extra).

Reports go to the *global* tracer and meter providers under the instrumentation scope ``azureml_chat`` (with
the package's version), so they appear as soon as the application configures OpenTelemetry. Until then (the
API's placeholder providers, or its no-op ones) a call costs two provider look-ups and gets a shared observer
that does nothing; the look-up is per call, so a provider configured after the client was made is used from
the next call on. Nothing here raises into a call: a failure to report is logged at DEBUG and the call goes on.

**Span** (kind ``CLIENT``, named ``{gen_ai.operation.name} {gen_ai.request.model}``; its parent is the
caller's current context; it is never made current, as a stream may be read elsewhere). It lives from the call's
start to its end (for a stream: exhausted, closed, cancelled or failed) and carries:

- ``gen_ai.operation.name`` (``chat`` / ``text_completion``), ``gen_ai.provider.name`` (below),
  ``gen_ai.request.model`` (the ``model`` parameter, else the deployment, else the endpoint's host),
  ``gen_ai.request.max_tokens`` (``max_tokens`` or ``max_completion_tokens``), ``.temperature``, ``.top_p``,
  ``.stop_sequences`` (a list), ``.seed``, ``.frequency_penalty``, ``.presence_penalty``,
  ``gen_ai.request.choice.count`` (when ``n`` is not 1), ``gen_ai.request.stream``;
- ``gen_ai.response.id``, ``gen_ai.response.model``, ``gen_ai.response.finish_reasons`` (one per choice,
  ``""`` when the model gave none), ``gen_ai.usage.input_tokens``, ``gen_ai.usage.output_tokens``,
  ``gen_ai.usage.cache_read.input_tokens`` and ``gen_ai.usage.reasoning.output_tokens`` (when the answer
  reports them), ``gen_ai.response.time_to_first_chunk`` (streams, seconds from the call's start);
- ``server.address``, ``server.port`` (the scheme's default when the URL has none): the endpoint that answered
  last;
- on failure ``error.type`` (the error class, qualified: ``azureml_chat.RateLimitError``,
  ``asyncio.exceptions.CancelledError``) and the status ``ERROR`` with ``"{error.type}: {message}"``;
- ours: ``azureml_chat.request_id`` (the server's ``x-request-id`` when known, else the
  ``x-ms-client-request-id`` we sent), ``azureml_chat.deployment`` (when one is set), ``azureml_chat.attempts``
  (HTTP attempts made), ``azureml_chat.endpoint`` (the endpoint's name, on a client over several endpoints).

**Attempts** are events named ``azureml_chat.attempt`` on the call's span, stamped when the attempt ended
(cheaper than a child span per attempt, and as exact), with ``azureml_chat.attempt.number`` (1 first),
``http.response.status_code`` (when an answer came), ``error.type`` (a failed attempt: the status code as a
string when an answer came, else the error class), ``azureml_chat.attempt.wait`` (seconds waited before it:
since the previous attempt ended, the backoff or ``Retry-After``; for the first, since the call started, the
admission), ``azureml_chat.attempt.duration`` (seconds from its start to its end) and, on a pool,
``azureml_chat.endpoint``, ``server.address`` and ``server.port``.

**Provider name**: ``azure.ai.inference`` on an Azure AI Model Inference route (``/chat/completions``,
``/models/chat/completions``, ``/completions`` with ``api-version``), the conventions' value for that API
(``docs/gen-ai/azure-ai-inference.md``). The conventions have no value for the other two Azure ML routes, so
both get ``azure.ml``: a dedicated endpoint's ``/score`` (its own wire format) and a serverless endpoint's
provider-native ``/v1/...`` (OpenAI's wire format, but not the OpenAI service: ``openai`` would tell a backend
to expect ``openai.*`` attributes and OpenAI's models).

**Metrics** (``_metrics.py``): ``gen_ai.client.operation.duration`` (s), ``gen_ai.client.token.usage``
(``{token}``, ``gen_ai.token.type`` ``input`` / ``output``) and ``gen_ai.client.operation.time_to_first_chunk``
(s), made once per meter provider.

**Content** is recorded only while ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` is ``true`` (any
case; read per call): ``gen_ai.input.messages`` and ``gen_ai.output.messages`` as JSON strings in the
conventions' shape (``_content.py``). Headers are never recorded, so neither is a key or a token, and URLs
(which never hold credentials) appear only as ``server.address`` / ``server.port``.

This package is the only place that imports ``opentelemetry``, and only from :func:`otel_instrumentation`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._instrument import Instrumentation

__all__ = ["otel_instrumentation"]


def otel_instrumentation(
    *, pooled: bool, tracer_provider: Any = None, meter_provider: Any = None
) -> Instrumentation | None:
    """The OpenTelemetry instrumentation of a client, or ``None`` when ``opentelemetry-api`` is not installed.

    Args:
        pooled: whether the client has several endpoints (its spans then name the endpoint).
        tracer_provider: report to this provider instead of the global one (tests).
        meter_provider: likewise for metrics.
    """
    try:
        from ._tracing import OtelInstrumentation
    except ImportError:
        return None
    return OtelInstrumentation(pooled=pooled, tracer_provider=tracer_provider, meter_provider=meter_provider)
