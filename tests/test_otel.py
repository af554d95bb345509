"""OpenTelemetry GenAI spans and metrics (azureml_chat/_otel), read back with the SDK's in-memory exporter and
reader, against the emulator.

Providers are passed to the factory per test (the global ones can be set once per process); the global path,
the no-SDK fast path and ``tracing=False`` run in a subprocess of their own.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from typing import Any

import attrs
import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from azureml_chat import (
    AssistantMessage,
    AsyncChatClient,
    Endpoint,
    InternalServerError,
    SystemMessage,
    ToolCall,
    ToolMessage,
    UserMessage,
)
from azureml_chat._otel import otel_instrumentation
from azureml_chat._otel._content import input_messages
from azureml_chat._otel._spans import error_type, request_attributes
from azureml_chat._version import __version__
from azureml_chat.emulator import Deployment, Emulator
from azureml_chat.testing import fast_retry

KEY = "otel-secret-key-0123456789abcdef"
HI = [UserMessage("hello otel")]
CAPTURE = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"


@attrs.frozen
class Telemetry:
    """What the tests read back: the spans and the metrics of one test's providers."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def span(self) -> ReadableSpan:
        (span,) = self.spans()
        return span

    def points(self, name: str) -> list[Any]:
        """The data points of metric ``name``."""
        data = self.reader.get_metrics_data()
        if data is None:
            return []
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]

    def text(self) -> str:
        """Everything exported, as text."""
        spans = "\n".join(span.to_json() for span in self.spans())
        data = self.reader.get_metrics_data()
        return spans + ("" if data is None else data.to_json())

    def instrument(self, client: AsyncChatClient, *, pooled: bool = False) -> AsyncChatClient:
        instrumentation = otel_instrumentation(
            pooled=pooled, tracer_provider=self.tracer_provider, meter_provider=self.meter_provider
        )
        assert instrumentation is not None
        client._pipeline.instrumentation = instrumentation
        return client


@pytest.fixture
def telemetry(monkeypatch: pytest.MonkeyPatch) -> Iterator[Telemetry]:
    monkeypatch.delenv(CAPTURE, raising=False)
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Telemetry(tracer_provider, meter_provider, exporter, reader)
    tracer_provider.shutdown()
    meter_provider.shutdown()


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator(key=KEY) as emu:
        yield emu


@pytest.fixture
async def reasoning_emulator() -> AsyncIterator[Emulator]:
    async with Emulator(key=KEY, deployments=[Deployment("r", family="openai", reasoning="field")]) as emu:
        yield emu


# --- one call ---------------------------------------------------------------------------------------------


async def test_chat_span_has_the_conventions_attributes(telemetry: Telemetry, emulator: Emulator) -> None:
    """A chat call is one CLIENT span named "chat {model}" with its request, response, usage and server."""
    async with telemetry.instrument(AsyncChatClient(emulator.chat_url, KEY, tracing=False)) as client:
        answer = await client.chat(
            HI,
            model="my-model",
            max_tokens=20,
            temperature=0.5,
            top_p=0.9,
            stop="STOP",
            seed=7,
            frequency_penalty=0.1,
            presence_penalty=0.2,
        )
    span = telemetry.span()
    port = int(emulator.chat_url.split(":")[2].split("/")[0])
    assert "chat my-model" == span.name
    assert SpanKind.CLIENT == span.kind
    assert StatusCode.UNSET == span.status.status_code
    assert ("azureml_chat", __version__) == (
        span.instrumentation_scope.name,
        span.instrumentation_scope.version,
    )
    attributes = dict(span.attributes or {})
    assert {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "azure.ml",
        "gen_ai.request.model": "my-model",
        "gen_ai.request.max_tokens": 20,
        "gen_ai.request.temperature": 0.5,
        "gen_ai.request.top_p": 0.9,
        "gen_ai.request.stop_sequences": ("STOP",),
        "gen_ai.request.seed": 7,
        "gen_ai.request.frequency_penalty": 0.1,
        "gen_ai.request.presence_penalty": 0.2,
        "gen_ai.request.stream": False,
        "gen_ai.response.id": answer.id,
        "gen_ai.response.model": answer.model,
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": answer.usage.prompt_tokens,  # type: ignore[union-attr]
        "gen_ai.usage.output_tokens": answer.usage.completion_tokens,  # type: ignore[union-attr]
        "gen_ai.usage.cache_read.input_tokens": answer.usage.cached_tokens,  # type: ignore[union-attr]
        "gen_ai.usage.reasoning.output_tokens": answer.usage.reasoning_tokens,  # type: ignore[union-attr]
        "server.address": "127.0.0.1",
        "server.port": port,
        "azureml_chat.request_id": answer.request_id,
        "azureml_chat.attempts": 1,
    } == attributes
    assert ["azureml_chat.attempt"] == [event.name for event in span.events]
    attempt = dict(span.events[0].attributes or {})
    assert {"azureml_chat.attempt.number": 1, "http.response.status_code": 200} == {
        key: value
        for key, value in attempt.items()
        if key not in ("azureml_chat.attempt.wait", "azureml_chat.attempt.duration")
    }
    assert attempt["azureml_chat.attempt.wait"] >= 0
    assert attempt["azureml_chat.attempt.duration"] > 0


async def test_chat_metrics(telemetry: Telemetry, emulator: Emulator) -> None:
    """A call records its duration and its input and output tokens, with the conventions' attributes."""
    async with telemetry.instrument(AsyncChatClient(emulator.chat_url, KEY, tracing=False)) as client:
        answer = await client.chat(HI)
    (duration,) = telemetry.points("gen_ai.client.operation.duration")
    port = int(emulator.chat_url.split(":")[2].split("/")[0])
    common = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "azure.ml",
        "gen_ai.request.model": "127.0.0.1",
        "gen_ai.response.model": answer.model,
        "server.address": "127.0.0.1",
        "server.port": port,
    }
    assert common == dict(duration.attributes)
    assert 1 == duration.count
    assert duration.sum > 0
    tokens = {
        point.attributes["gen_ai.token.type"]: point
        for point in telemetry.points("gen_ai.client.token.usage")
    }
    assert {"input", "output"} == set(tokens)
    assert {**common, "gen_ai.token.type": "input"} == dict(tokens["input"].attributes)
    assert answer.usage.prompt_tokens == tokens["input"].sum  # type: ignore[union-attr]
    assert answer.usage.completion_tokens == tokens["output"].sum  # type: ignore[union-attr]
    assert [] == telemetry.points("gen_ai.client.operation.time_to_first_chunk")


async def test_span_parent_is_the_callers_context(telemetry: Telemetry, emulator: Emulator) -> None:
    """The call's span is a child of the caller's current span, and does not replace it as current."""
    tracer = telemetry.tracer_provider.get_tracer("test")
    async with telemetry.instrument(AsyncChatClient(emulator.chat_url, KEY, tracing=False)) as client:
        with tracer.start_as_current_span("caller") as caller:
            await client.chat(HI)
            from opentelemetry import trace

            assert caller is trace.get_current_span()
    call, outer = telemetry.spans()
    assert "caller" == outer.name
    assert outer.context is not None
    assert call.parent is not None
    assert outer.context.span_id == call.parent.span_id
    assert outer.context.trace_id == call.context.trace_id  # type: ignore[union-attr]


async def test_model_inference_route_is_azure_ai_inference(telemetry: Telemetry, emulator: Emulator) -> None:
    """On the model-inference route the provider is azure.ai.inference; the model falls back to the deployment."""
    client = AsyncChatClient(emulator.url + "/chat/completions", KEY, deployment="default", tracing=False)
    async with telemetry.instrument(client) as client:
        await client.chat(HI, n=2)
    attributes = dict(telemetry.span().attributes or {})
    assert "azure.ai.inference" == attributes["gen_ai.provider.name"]
    assert "chat default" == telemetry.span().name
    assert "default" == attributes["azureml_chat.deployment"]
    assert 2 == attributes["gen_ai.request.choice.count"]
    assert 2 == len(attributes["gen_ai.response.finish_reasons"])  # type: ignore[arg-type]


async def test_text_completion_span(telemetry: Telemetry, emulator: Emulator) -> None:
    """A text completion is a "text_completion" span with its finish reasons and usage."""
    async with telemetry.instrument(AsyncChatClient(emulator.completions_url, KEY, tracing=False)) as client:
        answer = await client.complete("Once upon a time", max_tokens=5)
    span = telemetry.span()
    attributes = dict(span.attributes or {})
    assert "text_completion 127.0.0.1" == span.name
    assert "text_completion" == attributes["gen_ai.operation.name"]
    assert 5 == attributes["gen_ai.request.max_tokens"]
    assert (answer.choices[0].finish_reason,) == attributes["gen_ai.response.finish_reasons"]
    assert answer.usage.completion_tokens == attributes["gen_ai.usage.output_tokens"]  # type: ignore[union-attr]


# --- streams ----------------------------------------------------------------------------------------------


async def test_stream_read_to_its_end(telemetry: Telemetry, emulator: Emulator) -> None:
    """A stream's span ends when it is exhausted, with the answer, and records its time to first chunk."""
    client = telemetry.instrument(AsyncChatClient(emulator.chat_url, KEY, tracing=False))
    async with client, client.stream(HI) as stream:
        async for _ in stream:
            assert [] == telemetry.spans()  # still open while it is read
        answer = stream.final_response()
    attributes = dict(telemetry.span().attributes or {})
    assert True is attributes["gen_ai.request.stream"]
    assert answer.id == attributes["gen_ai.response.id"]
    assert answer.usage.completion_tokens == attributes["gen_ai.usage.output_tokens"]  # type: ignore[union-attr]
    ttfc = attributes["gen_ai.response.time_to_first_chunk"]
    assert isinstance(ttfc, float)
    assert ttfc > 0
    (point,) = telemetry.points("gen_ai.client.operation.time_to_first_chunk")
    assert 1 == point.count
    assert ttfc == point.sum
    (duration,) = telemetry.points("gen_ai.client.operation.duration")
    assert duration.sum >= ttfc


async def test_stream_closed_early(telemetry: Telemetry, emulator: Emulator) -> None:
    """A stream closed after its first chunk ends its span without a response or an error."""
    client = telemetry.instrument(AsyncChatClient(emulator.chat_url, KEY, tracing=False))
    async with client, client.stream([UserMessage("one two three four five six")]) as stream:
        await stream.__anext__()
    span = telemetry.span()
    attributes = dict(span.attributes or {})
    assert StatusCode.UNSET == span.status.status_code
    assert "gen_ai.response.time_to_first_chunk" in attributes
    assert "gen_ai.response.id" not in attributes
    assert "error.type" not in attributes
    assert 1 == len(telemetry.points("gen_ai.client.operation.time_to_first_chunk"))


async def test_stream_cancelled(telemetry: Telemetry, emulator: Emulator) -> None:
    """A stream whose reader is cancelled mid-read ends its span with the cancellation as its error."""
    emulator.add_fault("slow_stream=5,times=1")  # after the first chunk, the next is far away
    async with telemetry.instrument(AsyncChatClient(emulator.chat_url, KEY, tracing=False)) as client:
        first = asyncio.Event()

        async def read() -> None:
            async with client.stream([UserMessage("one two three four")]) as stream:
                async for _ in stream:
                    first.set()

        task = asyncio.create_task(read())
        await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    span = telemetry.span()
    attributes = dict(span.attributes or {})
    assert StatusCode.ERROR == span.status.status_code
    assert "asyncio.exceptions.CancelledError" == attributes["error.type"]
    assert "gen_ai.response.time_to_first_chunk" in attributes


# --- retries and failures -----------------------------------------------------------------------------------


async def test_retried_call_shows_every_attempt(telemetry: Telemetry, emulator: Emulator) -> None:
    """A call retried twice shows three attempt events, with their statuses and waits, and 3 attempts."""
    emulator.add_fault("status=503,times=2")
    client = AsyncChatClient(emulator.chat_url, KEY, retry=fast_retry(2), tracing=False)
    async with telemetry.instrument(client) as client:
        await client.chat(HI)
    span = telemetry.span()
    events = [dict(event.attributes or {}) for event in span.events]
    assert [1, 2, 3] == [event["azureml_chat.attempt.number"] for event in events]
    assert [503, 503, 200] == [event["http.response.status_code"] for event in events]
    assert ["503", "503", None] == [event.get("error.type") for event in events]
    # fast_retry's backoff is a jittered sleep of up to milliseconds: a retry's wait is positive (nothing timed).
    waits = [event["azureml_chat.attempt.wait"] for event in events]
    assert all(wait > 0 for wait in waits[1:])
    assert all(event["azureml_chat.attempt.duration"] > 0 for event in events)
    assert 3 == dict(span.attributes or {})["azureml_chat.attempts"]
    assert StatusCode.UNSET == span.status.status_code


async def test_failed_call(telemetry: Telemetry, emulator: Emulator) -> None:
    """A failed call's span has error.type and status ERROR, and its duration metric has error.type."""
    emulator.add_fault("status=500")
    client = AsyncChatClient(emulator.chat_url, KEY, retry=fast_retry(1), tracing=False)
    async with telemetry.instrument(client) as client:
        with pytest.raises(InternalServerError) as raised:
            await client.chat(HI)
    span = telemetry.span()
    attributes = dict(span.attributes or {})
    assert StatusCode.ERROR == span.status.status_code
    assert (span.status.description or "").startswith("azureml_chat.InternalServerError: ")
    assert "azureml_chat.InternalServerError" == attributes["error.type"]
    assert 2 == attributes["azureml_chat.attempts"]
    assert raised.value.request_id == attributes["azureml_chat.request_id"]
    assert "gen_ai.response.id" not in attributes
    (duration,) = telemetry.points("gen_ai.client.operation.duration")
    assert "azureml_chat.InternalServerError" == duration.attributes["error.type"]
    assert [] == telemetry.points("gen_ai.client.token.usage")


async def test_pool_names_the_endpoints(telemetry: Telemetry, emulator: Emulator) -> None:
    """On a client over several endpoints, the span and each attempt name the endpoint they went to."""
    emulator.add_fault("status=503,times=1")
    endpoints = [Endpoint(emulator.chat_url, KEY, name="only", priority=0)]
    client = AsyncChatClient(endpoints=endpoints, retry=fast_retry(1), tracing=False)
    async with telemetry.instrument(client, pooled=True) as client:
        await client.chat(HI)
    span = telemetry.span()
    assert "only" == dict(span.attributes or {})["azureml_chat.endpoint"]
    assert ["only", "only"] == [
        dict(event.attributes or {})["azureml_chat.endpoint"] for event in span.events
    ]
    assert all("server.port" in dict(event.attributes or {}) for event in span.events)


async def test_connection_failure_attempts_name_the_error(telemetry: Telemetry) -> None:
    """An attempt that got no answer has no status code, and its error class as error.type."""
    client = AsyncChatClient("http://127.0.0.1:9/score", KEY, retry=fast_retry(0), tracing=False)
    async with telemetry.instrument(client) as client:
        with pytest.raises(Exception):  # noqa: B017 - whichever connection error the platform gives
            await client.chat(HI)
    (event,) = telemetry.span().events
    attributes = dict(event.attributes or {})
    assert "http.response.status_code" not in attributes
    assert str(attributes["error.type"]).startswith("azureml_chat.")


# --- content ------------------------------------------------------------------------------------------------

CONVERSATION = [
    SystemMessage("Be brief."),
    UserMessage("Weather in Paris?"),
    AssistantMessage(tool_calls=[ToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}')]),
    ToolMessage("rainy, 57F", tool_call_id="call_1"),
]


async def test_content_captured_when_opted_in(
    telemetry: Telemetry, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the variable set to "TRUE", input and output messages are recorded in the conventions' shape."""
    monkeypatch.setenv(CAPTURE, "TRUE")
    async with telemetry.instrument(AsyncChatClient(emulator.chat_url, KEY, tracing=False)) as client:
        answer = await client.chat(CONVERSATION)
    attributes = dict(telemetry.span().attributes or {})
    assert [
        {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
        {"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]},
        {
            "role": "assistant",
            "parts": [
                {"type": "tool_call", "id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}
            ],
        },
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1", "response": "rainy, 57F"}]},
    ] == json.loads(str(attributes["gen_ai.input.messages"]))
    assert [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": answer.choices[0].message.content}],
            "finish_reason": answer.choices[0].finish_reason,
        }
    ] == json.loads(str(attributes["gen_ai.output.messages"]))


async def test_content_not_captured_by_default(telemetry: Telemetry, emulator: Emulator) -> None:
    """Without the opt-in (or with another value), no message content is recorded."""
    async with telemetry.instrument(AsyncChatClient(emulator.chat_url, KEY, tracing=False)) as client:
        await client.chat(CONVERSATION)
    attributes = dict(telemetry.span().attributes or {})
    assert set() == {"gen_ai.input.messages", "gen_ai.output.messages"} & set(attributes)
    assert "Weather in Paris" not in telemetry.text()


async def test_reasoning_is_a_reasoning_part(
    telemetry: Telemetry, reasoning_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reasoning model's thinking is captured as a "reasoning" part before the text."""
    monkeypatch.setenv(CAPTURE, "true")
    async with telemetry.instrument(
        AsyncChatClient(reasoning_emulator.chat_url, KEY, tracing=False)
    ) as client:
        answer = await client.chat(HI)
    (message,) = json.loads(str(dict(telemetry.span().attributes or {})["gen_ai.output.messages"]))
    assert answer.choices[0].reasoning
    assert {"type": "reasoning", "content": answer.choices[0].reasoning} == message["parts"][0]


def test_prompt_is_one_user_message() -> None:
    """A text completion's prompt is captured as one user message with one text part."""
    assert [{"role": "user", "parts": [{"type": "text", "content": "Once"}]}] == json.loads(
        input_messages("Once")
    )


@pytest.mark.parametrize(
    ("message", "parts"),
    [
        (
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/cat.png"}}]},
            [{"type": "uri", "modality": "image", "uri": "https://x/cat.png"}],
        ),
        ({"role": "user", "content": [{"type": "input_audio", "x": 1}]}, [{"type": "input_audio", "x": 1}]),
        (
            {"role": "assistant", "reasoning_content": "hmm", "content": "ok"},
            [{"type": "reasoning", "content": "hmm"}, {"type": "text", "content": "ok"}],
        ),
        (
            {
                "role": "assistant",
                "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "not json"}}],
            },
            [{"type": "tool_call", "id": "c", "name": "f", "arguments": "not json"}],
        ),
        (
            {
                "role": "assistant",
                "tool_calls": [{"id": "c", "type": "custom", "custom": {"name": "g", "input": "x"}}],
            },
            [{"type": "tool_call", "id": "c", "name": "g", "arguments": "x"}],
        ),
    ],
)
def test_input_parts(message: dict[str, Any], parts: list[dict[str, Any]]) -> None:
    """Each wire content part and tool call becomes the conventions' part (an unknown one is kept as is)."""
    assert [{"role": message["role"], "parts": parts}] == json.loads(input_messages([message]))


async def test_key_never_exported(
    telemetry: Telemetry, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key appears in no span, event, attribute or metric, even with content capture and failures."""
    monkeypatch.setenv(CAPTURE, "true")
    emulator.add_fault("status=503,times=1")
    client = AsyncChatClient(emulator.chat_url, KEY, retry=fast_retry(1), tracing=False)
    async with telemetry.instrument(client) as client:
        await client.chat(CONVERSATION)
        async with client.stream(HI) as stream:
            async for _ in stream:
                pass
    text = telemetry.text()
    assert "gen_ai.input.messages" in text
    assert KEY not in text
    assert KEY[:12] not in text


# --- pure parts ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, {}),
        ({"max_completion_tokens": 9}, {"gen_ai.request.max_tokens": 9}),
        ({"stop": ["a", "b"]}, {"gen_ai.request.stop_sequences": ["a", "b"]}),
        ({"n": 1, "temperature": 1}, {"gen_ai.request.temperature": 1.0}),
        ({"seed": True, "top_p": None}, {}),
    ],
)
def test_request_attributes(params: dict[str, Any], expected: dict[str, Any]) -> None:
    """Only the parameters a call sends become attributes; stop is always a list, floats are floats."""
    assert expected == request_attributes(params)


def test_error_type_is_the_qualified_class() -> None:
    """error.type is the class qualified by its public module; a builtin by its bare name."""
    assert ("azureml_chat.InternalServerError", "TimeoutError") == (
        error_type(InternalServerError("x", status_code=500)),
        error_type(TimeoutError()),
    )


class _Broken:
    """A span whose every method raises."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("broken")


async def test_observer_never_raises(telemetry: Telemetry, emulator: Emulator) -> None:
    """A broken span does not break the call: the observer's methods swallow what it raises."""
    instrumentation = otel_instrumentation(
        pooled=False, tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )
    assert instrumentation is not None
    async with AsyncChatClient(emulator.chat_url, KEY, tracing=False) as client:
        endpoint = client._pipeline.endpoint
        observer = instrumentation.start_call("chat", endpoint, {}, stream=True, request_id="r", payload=[])
        observer._span = _Broken()  # type: ignore[attr-defined]
        observer.attempt(1, endpoint, 200, None, 0.0)
        observer.first_chunk()
        observer.end(None, RuntimeError("x"))


def test_instruments_made_once_per_provider(telemetry: Telemetry) -> None:
    """The tracer and instruments are made once per provider and reused by later calls."""
    instrumentation: Any = otel_instrumentation(
        pooled=False, tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )
    first = instrumentation._instruments_of(telemetry.meter_provider)
    assert first is instrumentation._instruments_of(telemetry.meter_provider)
    assert instrumentation._tracer_of(telemetry.tracer_provider) is instrumentation._tracer_of(
        telemetry.tracer_provider
    )


# --- the global providers (a process of its own) ------------------------------------------------------------

_GLOBAL_SCRIPT = """
import asyncio, json, sys
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from azureml_chat import AsyncChatClient, UserMessage
from azureml_chat._instrument import NO_INSTRUMENTATION
from azureml_chat.emulator import Emulator

async def main():
    out = {}
    async with Emulator(key="k") as emu:
        async with AsyncChatClient(emu.chat_url, "k") as traced, AsyncChatClient(
            emu.chat_url, "k", tracing=False
        ) as quiet:
            instrumentation = traced._pipeline.instrumentation
            endpoint = traced._pipeline.endpoint
            start = lambda: instrumentation.start_call(
                "chat", endpoint, {}, stream=False, request_id="r", payload=[]
            )
            out["instrumented"] = instrumentation is not NO_INSTRUMENTATION
            out["silent_before"] = start() is NO_INSTRUMENTATION
            await traced.chat([UserMessage("before")])
            exporter = InMemorySpanExporter()
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            trace.set_tracer_provider(provider)
            reader = InMemoryMetricReader()
            metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
            out["silent_after"] = start() is NO_INSTRUMENTATION
            await traced.chat([UserMessage("after")])
            await quiet.chat([UserMessage("quiet")])
            out["spans"] = [span.name for span in exporter.get_finished_spans()]  # start() above never ends
            out["durations"] = sum(
                point.count
                for rm in reader.get_metrics_data().resource_metrics
                for sm in rm.scope_metrics
                for m in sm.metrics
                if m.name == "gen_ai.client.operation.duration"
                for point in m.data.data_points
            )
    print(json.dumps(out))

asyncio.run(main())
"""


def test_global_providers_fast_path_and_tracing_false() -> None:
    """Before a provider is set a call gets the shared silent observer; one set later is used from the next
    call; a client with tracing=False reports nothing."""
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", textwrap.dedent(_GLOBAL_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert 0 == done.returncode, done.stderr
    assert {
        "instrumented": True,
        "silent_before": True,
        "silent_after": False,
        "spans": ["chat 127.0.0.1"],
        "durations": 1,
    } == json.loads(done.stdout)
