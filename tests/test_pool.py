"""One client over several endpoints (``endpoints=[Endpoint(...), ...]``), through the public API and
``MockTransport``: configuration, a pool of one, routing, health, failover, what is visible (issue 16).

Each endpoint here is ``https://<name>.eastus2.inference.ml.azure.com/v1/chat/completions``, so its default
name is ``<name>``; :class:`Fleet` answers per endpoint from a script and records which endpoint saw what.
Routing that would depend on the random choice is made deterministic with priorities.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from azureml_chat import (
    APIConnectionError,
    APIStatusError,
    AsyncChatClient,
    Client,
    ConfigurationError,
    Endpoint,
    InternalServerError,
    RateLimit,
    RateLimitError,
    RetryPolicy,
    StreamError,
    UserMessage,
)
from azureml_chat._router import EndpointStatus
from azureml_chat._transport import Request
from azureml_chat.testing import MockResponse, MockTransport, fast_retry

HI = [UserMessage("hi")]
ANSWER = {"choices": [{"message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}]}
HEALTHY = EndpointStatus(healthy=True, cooling_until=None, reason=None, recent_failures=0, in_flight=0)


def url(name: str, path: str = "/v1/chat/completions") -> str:
    return f"https://{name}.eastus2.inference.ml.azure.com{path}"


def endpoint(name: str, **options: Any) -> Endpoint:
    """An endpoint named ``name`` (by default, from its URL)."""
    return Endpoint(url(name), "key", **options)


def ok(**headers: str) -> MockResponse:
    return MockResponse(200, json=ANSWER, headers=headers)


def status(code: int, **headers: str) -> MockResponse:
    return MockResponse(code, json={"error": {"message": f"status {code}"}}, headers=headers)


def sse(*texts: str) -> list[bytes]:
    """A chat-completions SSE stream of ``texts`` and its ``[DONE]``."""
    events = [
        "data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": text}}]}) + "\n\n"
        for text in texts
    ]
    return [event.encode() for event in events] + [b"data: [DONE]\n\n"]


def broken_after(pieces: list[bytes]) -> Iterator[bytes]:
    """The pieces, then a broken connection."""
    yield from pieces
    raise APIConnectionError("connection reset by the test")


class Fleet:
    """A MockTransport handler for several endpoints: each answers from its own script (then 200), and every
    request is recorded with the name of the endpoint that got it."""

    def __init__(self, **scripts: Sequence[MockResponse | Exception]) -> None:
        self.scripts = {name: list(answers) for name, answers in scripts.items()}
        self.requests: list[tuple[str, Request]] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.arrived = asyncio.Condition()

    @property
    def seen(self) -> list[str]:
        """The endpoint of each request, in order."""
        return [name for name, _ in self.requests]

    async def __call__(self, request: Request) -> MockResponse:
        name = (urllib.parse.urlsplit(request.url).hostname or "").split(".")[0]
        self.requests.append((name, request))
        async with self.arrived:
            self.arrived.notify_all()
        if name in self.gates:
            await self.gates[name].wait()
        script = self.scripts.get(name)
        answer = script.pop(0) if script else ok()
        if isinstance(answer, Exception):
            raise answer
        return answer


def pool(fleet: Fleet, *endpoints: Endpoint, **options: Any) -> AsyncChatClient:
    options.setdefault("retry", fast_retry(2))
    return AsyncChatClient(endpoints=list(endpoints), transport=MockTransport(fleet), **options)


async def until_seen(fleet: Fleet, count: int) -> None:
    """Let the event loop run until the fleet has received ``count`` requests."""
    async with fleet.arrived:
        await fleet.arrived.wait_for(lambda: len(fleet.requests) >= count)


# --- Endpoint -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("weight", [0, -1.0, float("nan"), float("inf"), True, "2"])
def test_an_endpoint_weight_must_be_a_positive_number(weight: Any) -> None:
    """A weight that is not a positive finite number is refused when the Endpoint is built."""
    with pytest.raises(ConfigurationError, match="weight must be a positive number"):
        Endpoint(url("east"), "key", weight=weight)


@pytest.mark.parametrize("priority", [1.5, True, "0", None])
def test_an_endpoint_priority_must_be_a_whole_number(priority: Any) -> None:
    """A priority that is not an int is refused when the Endpoint is built."""
    with pytest.raises(ConfigurationError, match="priority must be a whole number"):
        Endpoint(url("east"), "key", priority=priority)


@pytest.mark.parametrize("name", ["", "   ", 5])
def test_an_endpoint_name_must_be_a_non_empty_string(name: Any) -> None:
    """An empty, blank or non-string name is refused."""
    with pytest.raises(ConfigurationError, match="name must be a non-empty string"):
        Endpoint(url("east"), "key", name=name)


@pytest.mark.parametrize("bad", ["", "   ", None, 42])
def test_an_endpoint_needs_a_url(bad: Any) -> None:
    """An empty or non-string URL is refused when the Endpoint is built."""
    with pytest.raises(ConfigurationError, match="url must be the endpoint's scoring URL"):
        Endpoint(bad, "key")


@pytest.mark.parametrize(
    ("expected", "where", "deployment"),
    [
        ("llama-eastus", "https://llama-eastus.eastus2.inference.ml.azure.com/score", None),
        ("llama-eastus", "https://LLAMA-EASTUS.eastus2.inference.ml.azure.com/score", None),
        (
            "mistral-large",
            "https://mistral-large.swedencentral.models.ai.azure.com/v1/chat/completions",
            None,
        ),
        ("127.0.0.1:8001", "http://127.0.0.1:8001/score", None),
        ("localhost:8001", "http://localhost:8001/v1/chat/completions", None),
        ("llama-eastus/blue", "https://llama-eastus.eastus2.inference.ml.azure.com/score", "blue"),
        ("127.0.0.1:8001/green", "http://127.0.0.1:8001/score", "green"),
    ],
)
def test_an_endpoint_is_named_from_its_url(expected: str, where: str, deployment: str | None) -> None:
    """Without name=, an endpoint is named by its host's first label (host:port for an address or a one-label
    host), with /deployment when it has one."""
    assert expected == Endpoint(where, "key", deployment=deployment).name


def test_a_given_name_wins_over_the_derived_one() -> None:
    """name= is kept as given."""
    assert "primary" == Endpoint(url("east"), "key", name="primary").name


def test_two_endpoints_with_one_name_are_refused() -> None:
    """Two endpoints whose names collide (here derived from the same host) are refused, naming the name."""
    with pytest.raises(ConfigurationError, match="two endpoints are named 'east'"):
        AsyncChatClient(endpoints=[endpoint("east"), Endpoint(url("east", "/score"), "other-key")])


@pytest.mark.parametrize(
    "option",
    [
        {"endpoint_url": url("east")},
        {"api_key": "key"},
        {"deployment": "blue"},
        {"formatter": "openai"},
        {"endpoint_type": "serverless"},
        {"credential": object()},
    ],
)
def test_endpoints_with_a_per_endpoint_option_is_refused(option: dict[str, Any]) -> None:
    """endpoints= together with what each Endpoint says for itself is a ConfigurationError naming the option."""
    with pytest.raises(ConfigurationError, match=f"pass endpoints= or {next(iter(option))}="):
        AsyncChatClient(endpoints=[endpoint("east")], **option)


@pytest.mark.parametrize("endpoints", [[], (), endpoint("east"), url("east"), None])
def test_endpoints_must_be_a_non_empty_list(endpoints: Any) -> None:
    """An empty list, a bare Endpoint or a URL string is not a list of endpoints."""
    if endpoints is None:
        endpoints = {}
    with pytest.raises(ConfigurationError, match="endpoints must be a non-empty list"):
        AsyncChatClient(endpoints=endpoints)


def test_a_list_member_that_is_not_an_endpoint_is_refused_by_its_index() -> None:
    """A URL string in the list is refused, naming its position."""
    with pytest.raises(ConfigurationError, match=r"endpoints\[1\] must be an Endpoint"):
        AsyncChatClient(endpoints=[endpoint("east"), url("west")])  # type: ignore[list-item]


def test_a_bad_endpoint_is_named_in_the_error() -> None:
    """An endpoint that does not resolve is refused with its index and its name in front of the reason."""
    with pytest.raises(ConfigurationError) as caught:
        AsyncChatClient(
            endpoints=[endpoint("east"), Endpoint("ftp://west.example.com/score", "key", name="west")]
        )
    assert str(caught.value).startswith("endpoints[1] (west): endpoint_url must start with https://")


def test_pool_endpoints_read_no_azureml_variable(hermetic_env: pytest.MonkeyPatch) -> None:
    """A pool endpoint without a key is refused even with AZUREML_ENDPOINT_API_KEY set, and
    AZUREML_DEPLOYMENT_NAME is not sent."""
    hermetic_env.setenv("AZUREML_ENDPOINT_API_KEY", "from-env")
    hermetic_env.setenv("AZUREML_DEPLOYMENT_NAME", "from-env")
    hermetic_env.setenv("AZUREML_ENDPOINT_URL", url("elsewhere"))
    with pytest.raises(ConfigurationError, match=r"endpoints\[0\] \(east\): no key"):
        AsyncChatClient(endpoints=[Endpoint(url("east"))])


async def test_pool_requests_carry_no_deployment_from_the_environment(
    hermetic_env: pytest.MonkeyPatch,
) -> None:
    """AZUREML_DEPLOYMENT_NAME and AZUREML_ENDPOINT_URL do not change where a pool sends or what it sends."""
    hermetic_env.setenv("AZUREML_DEPLOYMENT_NAME", "from-env")
    hermetic_env.setenv("AZUREML_ENDPOINT_URL", url("elsewhere"))
    fleet = Fleet()
    async with pool(fleet, endpoint("east")) as client:
        await client.chat(HI)
    ((name, request),) = fleet.requests
    assert ("east", None) == (name, request.headers.get("azureml-model-deployment"))


# --- a pool of one ----------------------------------------------------------------------------------------------------


async def test_a_pool_of_one_sends_what_the_single_url_client_sends() -> None:
    """The same call through endpoints=[Endpoint(url, key)] and through (url, key) sends the same URL, body and
    headers (but for the per-call request id)."""
    fleet = Fleet()
    transport = MockTransport(fleet)
    async with AsyncChatClient(url("east"), "key", transport=transport) as single:
        await single.chat(HI, temperature=0.5)
    async with AsyncChatClient(endpoints=[endpoint("east")], transport=transport) as one:
        await one.chat(HI, temperature=0.5)
    (_, sent_single), (_, sent_pool) = fleet.requests

    def seen(request: Request) -> tuple[str, bytes, dict[str, str]]:
        headers = {k.lower(): v for k, v in request.headers.items() if k.lower() != "x-ms-client-request-id"}
        return request.url, request.content, headers

    assert seen(sent_single) == seen(sent_pool)


async def test_a_pool_of_one_retries_on_its_endpoint() -> None:
    """Two 503s then an answer: three requests, all to the one endpoint, and the answer names it."""
    fleet = Fleet(east=[status(503), status(503)])
    async with pool(fleet, endpoint("east")) as client:
        answer = await client.chat(HI)
    assert (["east"] * 3, "east") == (fleet.seen, answer.endpoint)


async def test_a_pool_of_one_never_sets_its_endpoint_aside() -> None:
    """However many failures in a row, the one endpoint keeps getting every call and is reported healthy."""
    fleet = Fleet(east=[status(503)] * 12)
    async with pool(fleet, endpoint("east"), retry=fast_retry(0)) as client:
        for _ in range(12):
            with pytest.raises(InternalServerError):
                await client.chat(HI)
        answer = await client.chat(HI)
        assert True is client.endpoint_status()["east"].healthy
    assert (13, "east") == (len(fleet.requests), answer.endpoint)


# --- routing --------------------------------------------------------------------------------------------------------


async def test_calls_go_to_the_lowest_priority_value() -> None:
    """With every endpoint healthy, every call goes to priority 0 whatever the other's weight."""
    fleet = Fleet()
    async with pool(fleet, endpoint("backup", priority=1, weight=50.0), endpoint("main")) as client:
        for _ in range(5):
            await client.chat(HI)
    assert ["main"] * 5 == fleet.seen


async def test_a_fallback_priority_takes_calls_only_while_the_first_has_no_healthy_endpoint() -> None:
    """While main is set aside (a 429 asking 30 s) the calls go to backup; main is not asked again meanwhile."""
    fleet = Fleet(main=[status(429, **{"retry-after": "30"})])
    async with pool(fleet, endpoint("main"), endpoint("backup", priority=1)) as client:
        answers = [(await client.chat(HI)).endpoint for _ in range(3)]
    assert (["backup"] * 3, ["main", "backup", "backup", "backup"]) == (answers, fleet.seen)


async def test_an_endpoint_that_said_its_quota_is_spent_is_avoided_while_others_have_room() -> None:
    """After an answer with x-ratelimit-remaining-requests: 0, calls go to the other endpoint of the same
    priority, even one with a tiny weight."""
    spent = ok(**{"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "60"})
    fleet = Fleet(heavy=[spent])
    async with pool(fleet, endpoint("heavy", weight=1e12), endpoint("light")) as client:
        for _ in range(6):
            await client.chat(HI)
    assert ["heavy"] + ["light"] * 5 == fleet.seen


# --- health ---------------------------------------------------------------------------------------------------------


async def test_a_429_sets_its_endpoint_aside_for_its_retry_after() -> None:
    """A 429 with Retry-After: 30 is reported as throttled until about 30 s from now (not the 1 s default), and
    the call goes on to the other endpoint."""
    fleet = Fleet(main=[status(429, **{"retry-after": "30"})])
    async with pool(fleet, endpoint("main"), endpoint("backup", priority=1)) as client:
        answer = await client.chat(HI)
        report = client.endpoint_status()["main"]
    assert ("backup", False, "throttled (429)") == (answer.endpoint, report.healthy, report.reason)
    assert report.cooling_until is not None
    assert report.cooling_until > time.time() + 20


async def test_a_429_without_retry_after_cools_for_its_reset_header() -> None:
    """A 429 that gives only x-ratelimit-reset-requests (Azure OpenAI's seconds) cools its endpoint that long."""
    fleet = Fleet(main=[status(429, **{"x-ratelimit-reset-requests": "45"})])
    async with pool(fleet, endpoint("main"), endpoint("backup", priority=1)) as client:
        await client.chat(HI)
        report = client.endpoint_status()["main"]
    assert report.cooling_until is not None
    assert report.cooling_until > time.time() + 40


async def test_after_a_429_one_probe_goes_there_while_the_others_go_elsewhere() -> None:
    """When a 429's wait (0 s) is over, the next call probes the endpoint; calls made while the probe is under
    way go to the other endpoint; once the probe got its answer, calls return."""
    fleet = Fleet(main=[status(429, **{"retry-after": "0"})])
    async with pool(fleet, endpoint("main"), endpoint("backup", priority=1)) as client:
        await client.chat(HI)  # main 429, answered by backup
        fleet.gates["main"] = gate = asyncio.Event()
        probe = asyncio.ensure_future(client.chat(HI))
        await until_seen(fleet, 3)
        during = [(await client.chat(HI)).endpoint for _ in range(3)]
        gate.set()
        answer = await probe
        after = (await client.chat(HI)).endpoint
    assert ("main", ["backup"] * 3, "main") == (answer.endpoint, during, after)
    assert ["main", "backup", "main", "backup", "backup", "backup", "main"] == fleet.seen


async def test_an_answer_to_a_call_sent_before_a_429_does_not_end_its_cooldown() -> None:
    """Two calls in flight on main: one is answered 429 (30 s), the other 200 after it; main stays set aside and
    the next call goes to backup."""
    fleet = Fleet(main=[status(429, **{"retry-after": "30"}), ok()])
    fleet.gates["main"] = gate = asyncio.Event()
    async with pool(fleet, endpoint("main"), endpoint("backup", priority=1)) as client:
        calls = [asyncio.ensure_future(client.chat(HI)) for _ in range(2)]
        await until_seen(fleet, 2)
        gate.set()
        answers = sorted([str((await call).endpoint) for call in calls])
        following = (await client.chat(HI)).endpoint
        report = client.endpoint_status()["main"]
    assert (["backup", "main"], "backup", False) == (answers, following, report.healthy)


async def test_429s_never_open_the_circuit() -> None:
    """An endpoint answering 429 call after call is only ever throttled: its failure count stays 0."""
    fleet = Fleet(main=[status(429, **{"retry-after": "0"})] * 8)
    async with pool(fleet, endpoint("main"), endpoint("backup", priority=1)) as client:
        for _ in range(8):
            await client.chat(HI)
        report = client.endpoint_status()["main"]
    assert (0, "throttled (429)", 8) == (report.recent_failures, report.reason, fleet.seen.count("main"))


async def test_five_failures_in_a_row_open_the_circuit() -> None:
    """Five calls failing with 503 on main (no retries) open its circuit: the sixth call goes to backup."""
    fleet = Fleet(main=[status(503)] * 5)
    async with pool(fleet, endpoint("main"), endpoint("backup", priority=1), retry=fast_retry(0)) as client:
        for _ in range(5):
            with pytest.raises(InternalServerError):
                await client.chat(HI)
        answer = await client.chat(HI)
        report = client.endpoint_status()["main"]
    assert ("backup", ["main"] * 5 + ["backup"]) == (answer.endpoint, fleet.seen)
    assert (False, "circuit open after 5 failures", 5) == (
        report.healthy,
        report.reason,
        report.recent_failures,
    )


@pytest.mark.parametrize("code", [401, 403, 404])
async def test_a_misconfigured_endpoint_is_set_aside_with_one_warning(
    code: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A 401/403/404 sets the endpoint aside with one WARNING naming it, and the call is answered by another."""
    fleet = Fleet(main=[status(code)])
    with caplog.at_level(logging.INFO, logger="azureml_chat"):
        async with pool(fleet, endpoint("main"), endpoint("backup", priority=1)) as client:
            answers = [(await client.chat(HI)).endpoint for _ in range(3)]
            report = client.endpoint_status()["main"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert (["backup"] * 3, f"unhealthy ({code})", False) == (answers, report.reason, report.healthy)
    assert 1 == len(warnings)
    assert warnings[0].startswith(f"Endpoint main answered HTTP {code}: set aside as unhealthy")


async def test_calls_in_flight_that_meet_the_same_401_log_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Three calls already sent to an endpoint that answers them all 401 give one WARNING, not three."""
    fleet = Fleet(main=[status(401)] * 3)
    fleet.gates["main"] = gate = asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="azureml_chat"):
        async with pool(fleet, endpoint("main"), endpoint("backup", priority=1)) as client:
            calls = [asyncio.ensure_future(client.chat(HI)) for _ in range(3)]
            await until_seen(fleet, 3)
            gate.set()
            answers = [(await call).endpoint for call in calls]
    assert (["backup"] * 3, 1) == (answers, len([r for r in caplog.records if r.levelno == logging.WARNING]))


@pytest.mark.parametrize("code", [400, 413, 422])
async def test_the_requests_own_fault_is_raised_and_not_retried_elsewhere(code: int) -> None:
    """A 400, 413 or 422 is raised at once: the pool sends exactly one request, and the endpoint stays healthy."""
    fleet = Fleet(main=[status(code)])
    async with pool(fleet, endpoint("main"), endpoint("backup", priority=1)) as client:
        with pytest.raises(APIStatusError) as caught:
            await client.chat(HI)
        healthy = client.endpoint_status()["main"].healthy
    assert (code, ["main"], "main", True) == (
        caught.value.status_code,
        fleet.seen,
        caught.value.endpoint,
        healthy,
    )


# --- failover -------------------------------------------------------------------------------------------------------


async def test_a_retryable_failure_goes_to_another_endpoint_at_once(caplog: pytest.LogCaptureFixture) -> None:
    """A 503 on main is retried on backup with no wait, even under a backoff of a minute."""
    fleet = Fleet(main=[status(503)])
    slow = RetryPolicy(max_retries=2, initial_delay=60.0, max_delay=60.0)
    with caplog.at_level(logging.INFO, logger="azureml_chat"):
        async with pool(fleet, endpoint("main"), endpoint("backup", priority=1), retry=slow) as client:
            answer = await client.chat(HI)
    retries = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Failing over")]
    assert ("backup", ["main", "backup"]) == (answer.endpoint, fleet.seen)
    assert [" in 0.00 s (attempt 2 of 3)"] == [line[line.index(" in ") :] for line in retries]


async def test_one_info_line_per_failover(caplog: pytest.LogCaptureFixture) -> None:
    """Each failover logs one INFO line naming both endpoints and the reason."""
    fleet = Fleet(main=[status(503)], backup=[APIConnectionError("refused")])
    with caplog.at_level(logging.INFO, logger="azureml_chat"):
        async with pool(
            fleet, endpoint("main"), endpoint("backup", priority=1), endpoint("last", priority=2)
        ) as client:
            await client.chat(HI)
    lines = [
        r.getMessage() for r in caplog.records if r.levelno == logging.INFO and "attempt" in r.getMessage()
    ]
    assert [
        "Failing over from main to backup after HTTP 503 in 0.00 s (attempt 2 of 3)",
        "Failing over from backup to last after APIConnectionError in 0.00 s (attempt 3 of 3)",
    ] == lines


async def test_failover_stays_within_the_retry_budget() -> None:
    """With max_retries=1 and three failing endpoints, two requests are sent; the error says 2 attempts and
    names the last endpoint."""
    fleet = Fleet(**{name: [status(503)] for name in ("a", "b", "c")})
    endpoints = [endpoint("a"), endpoint("b", priority=1), endpoint("c", priority=2)]
    async with pool(fleet, *endpoints, retry=fast_retry(1)) as client:
        with pytest.raises(InternalServerError) as caught:
            await client.chat(HI)
    assert (["a", "b"], 2, "b") == (fleet.seen, caught.value.attempts, caught.value.endpoint)


async def test_failover_tries_every_endpoint_before_any_twice() -> None:
    """Three endpoints of one priority failing once each: the three attempts go to three different endpoints."""
    fleet = Fleet(**{name: [status(503)] for name in ("a", "b", "c")})
    async with pool(fleet, endpoint("a"), endpoint("b"), endpoint("c")) as client:
        with pytest.raises(InternalServerError) as caught:
            await client.chat(HI)
    assert (["a", "b", "c"], 3) == (sorted(fleet.seen), caught.value.attempts)


async def test_when_every_endpoint_is_cooling_the_call_waits_for_the_first_back() -> None:
    """Both endpoints answer 429 asking a short wait: the third attempt goes, after it, to one of them and is
    answered."""
    throttled = status(429, **{"retry-after-ms": "20"})
    fleet = Fleet(main=[throttled], backup=[status(429, **{"retry-after-ms": "20"})])
    async with pool(fleet, endpoint("main"), endpoint("backup", priority=1)) as client:
        answer = await client.chat(HI)
    assert (["main", "backup"], 3, answer.endpoint) == (fleet.seen[:2], len(fleet.seen), fleet.seen[2])


async def test_when_every_endpoint_is_cooling_too_long_the_last_error_is_raised() -> None:
    """Both endpoints answer 429 asking more than max_retry_after: the last 429 is raised after two requests,
    naming the endpoint it came from."""
    fleet = Fleet(main=[status(429, **{"retry-after": "30"})], backup=[status(429, **{"retry-after": "30"})])
    async with pool(fleet, endpoint("main"), endpoint("backup", priority=1)) as client:
        with pytest.raises(RateLimitError) as caught:
            await client.chat(HI)
    assert (["main", "backup"], 2, "backup") == (fleet.seen, caught.value.attempts, caught.value.endpoint)


# --- what is visible ------------------------------------------------------------------------------------------------


async def test_chat_complete_and_stream_answers_name_their_endpoint() -> None:
    """response.endpoint, stream.endpoint and final_response().endpoint name the endpoint that answered."""

    async def handler(request: Request) -> MockResponse:
        if request.url.endswith("/v1/completions"):
            return MockResponse(200, json={"choices": [{"text": "Paris", "finish_reason": "stop"}]})
        if request.json().get("stream"):
            return MockResponse(200, content=sse("hel", "lo"))
        return ok()

    endpoints = [Endpoint(url("texts", "/v1/completions"), "key"), endpoint("chats", priority=1)]
    async with AsyncChatClient(endpoints=endpoints, transport=MockTransport(handler)) as client:
        chat = await client.chat(HI)
        completion = await client.complete("The capital of France is")
        async with client.stream(HI) as stream:
            text = "".join([chunk.content or "" async for chunk in stream])
        final = stream.final_response()
    assert ("chats", "texts", "hello") == (chat.endpoint, completion.endpoint, text)
    assert ("chats", "chats") == (stream.endpoint, final.endpoint)


async def test_a_stream_that_breaks_before_its_first_chunk_fails_over() -> None:
    """A 200 whose stream breaks before any event is a connection failure: the stream opens on backup."""
    fleet = Fleet(main=[MockResponse(200, content=broken_after([]))])
    fleet.scripts["backup"] = [MockResponse(200, content=sse("hel", "lo"))]
    async with (
        pool(fleet, endpoint("main"), endpoint("backup", priority=1)) as client,
        client.stream(HI) as stream,
    ):
        text = "".join([chunk.content or "" async for chunk in stream])
    assert ("hello", "backup", "backup", ["main", "backup"]) == (
        text,
        stream.endpoint,
        stream.final_response().endpoint,
        fleet.seen,
    )


async def test_a_stream_that_breaks_after_its_first_chunk_raises_naming_its_endpoint() -> None:
    """After the first chunk reached the caller, a broken stream is a StreamError carrying the endpoint; nothing
    is sent elsewhere."""
    fleet = Fleet(main=[MockResponse(200, content=broken_after(sse("hel")[:1]))])
    async with pool(fleet, endpoint("main"), endpoint("backup", priority=1)) as client:
        with pytest.raises(StreamError) as caught:
            async with client.stream(HI) as stream:
                async for _ in stream:
                    pass
    assert ("main", ["main"]) == (caught.value.endpoint, fleet.seen)


async def test_endpoint_status_of_a_fresh_pool_is_all_healthy() -> None:
    """Before any call every endpoint is healthy, with nothing cooling, failing or in flight."""
    async with pool(Fleet(), endpoint("main"), endpoint("backup", priority=1)) as client:
        assert {"main": HEALTHY, "backup": HEALTHY} == client.endpoint_status()


async def test_endpoint_status_counts_failures_in_a_row() -> None:
    """Two failures in a row (below the circuit's threshold) are reported, the endpoint still healthy; an
    answer resets the count."""
    fleet = Fleet(main=[status(503), status(503)])
    async with pool(fleet, endpoint("main"), endpoint("backup", priority=1), retry=fast_retry(0)) as client:
        for _ in range(2):
            with pytest.raises(InternalServerError):
                await client.chat(HI)
        failing = client.endpoint_status()["main"]
        await client.chat(HI)
        answered = client.endpoint_status()["main"]
    assert (True, 2, None) == (failing.healthy, failing.recent_failures, failing.cooling_until)
    assert HEALTHY == answered


async def test_endpoint_status_counts_calls_in_flight() -> None:
    """A call waiting for its answer counts in its endpoint's in_flight, and no longer once answered."""
    fleet = Fleet()
    fleet.gates["main"] = gate = asyncio.Event()
    async with pool(fleet, endpoint("main"), endpoint("backup", priority=1)) as client:
        call = asyncio.ensure_future(client.chat(HI))
        await until_seen(fleet, 1)
        during = client.endpoint_status()["main"].in_flight
        gate.set()
        await call
        after = client.endpoint_status()["main"].in_flight
    assert (1, 0) == (during, after)


async def test_an_open_stream_counts_in_flight() -> None:
    """A stream being read counts in its endpoint's in_flight until it is closed."""
    fleet = Fleet(main=[MockResponse(200, content=sse("a", "b", "c"))])
    async with pool(fleet, endpoint("main"), endpoint("backup", priority=1)) as client:
        async with client.stream(HI) as stream:
            await stream.__anext__()
            during = client.endpoint_status()["main"].in_flight
        after = client.endpoint_status()["main"].in_flight
    assert (1, 0) == (during, after)


async def test_siblings_with_other_options_share_the_pools_health() -> None:
    """A with_options(timeout=...) sibling routes over the same endpoints: what it meets, its parent sees."""
    fleet = Fleet(main=[status(429, **{"retry-after": "30"})])
    async with pool(fleet, endpoint("main"), endpoint("backup", priority=1)) as client:
        await client.with_options(timeout=5).chat(HI)
        answer = await client.chat(HI)
        report = client.endpoint_status()["main"]
    assert ("backup", False, ["main", "backup", "backup"]) == (answer.endpoint, report.healthy, fleet.seen)


async def test_a_sibling_with_other_endpoints_has_its_own_health() -> None:
    """with_options(endpoints=[...]) builds its own pool: its endpoints' health is not its parent's."""
    fleet = Fleet(main=[status(429, **{"retry-after": "30"})])
    async with pool(fleet, endpoint("main"), endpoint("backup", priority=1)) as client:
        await client.chat(HI)
        other = client.with_options(endpoints=[endpoint("main"), endpoint("spare", priority=1)])
        assert (["main", "spare"], True) == (
            list(other.endpoint_status()),
            other.endpoint_status()["main"].healthy,
        )
        answer = await other.chat(HI)
    assert ("main", False) == (answer.endpoint, client.endpoint_status()["main"].healthy)


# --- the sync client and batches ------------------------------------------------------------------------------------


def test_the_sync_client_fails_over_and_reports_status() -> None:
    """Client(endpoints=...) fails over like the async client and reports each endpoint's standing."""
    fleet = Fleet(main=[status(429, **{"retry-after": "30"})])
    with Client(
        endpoints=[endpoint("main"), endpoint("backup", priority=1)],
        transport=MockTransport(fleet),
        retry=fast_retry(2),
    ) as client:
        answer = client.chat(HI)
        report = client.endpoint_status()
    assert ("backup", False, True) == (answer.endpoint, report["main"].healthy, report["backup"].healthy)


async def test_chat_many_over_a_pool_spreads_over_the_endpoints_that_answer() -> None:
    """A batch over a pool whose first endpoint is misconfigured is answered in full by the other one."""
    fleet = Fleet(main=[status(401)] * 8)
    async with pool(fleet, endpoint("main"), endpoint("backup", priority=1)) as client:
        answers = await client.chat_many([HI] * 10, concurrency=4, return_exceptions=False)
    assert ["backup"] * 10 == [answer.endpoint for answer in answers]
    assert 10 == fleet.seen.count("backup")


def test_sync_chat_many_over_a_pool() -> None:
    """The sync client's chat_many over a pool answers every conversation, naming the endpoint."""
    fleet = Fleet(main=[status(503)])
    with Client(
        endpoints=[endpoint("main"), endpoint("backup", priority=1)],
        transport=MockTransport(fleet),
        retry=fast_retry(2),
    ) as client:
        answers = client.chat_many([HI] * 3, concurrency=1, return_exceptions=False)
    assert ["backup", "main", "main"] == [answer.endpoint for answer in answers]


async def test_an_endpoint_whose_limiter_is_full_is_passed_over_while_another_has_room() -> None:
    """With main's one concurrency slot held by an open stream, the next calls go to its peer of the same
    priority, which weight alone would almost never pick."""
    fleet = Fleet(main=[MockResponse(200, content=sse("a", "b"))])
    full = endpoint("main", rate_limit=RateLimit(max_concurrency=1))
    state = random.getstate()
    # Seeded so that the stream's own choice (weights 1 : 0.001) lands on main, as 99.9 % of choices do.
    random.seed(0)
    try:
        async with (
            pool(fleet, full, endpoint("peer", weight=0.001)) as client,
            client.stream(HI) as stream,
        ):
            await stream.__anext__()
            answers = [(await client.chat(HI)).endpoint for _ in range(5)]
    finally:
        random.setstate(state)
    assert ["main"] + ["peer"] * 5 == [name for name, _ in fleet.requests]
    assert ["peer"] * 5 == answers


def unavailable(times: int) -> list[MockResponse]:
    return [MockResponse(503, json={"error": {"message": "busy"}}) for _ in range(times)]


async def test_a_call_when_every_endpoint_is_set_aside_too_long_sends_nothing_and_says_why() -> None:
    """With both circuits open longer than max_retry_after, a new call raises at once, naming the reason."""
    fleet = Fleet(a=unavailable(5), b=unavailable(5))
    retry = RetryPolicy(max_retries=0, max_retry_after=0.0)
    async with pool(fleet, endpoint("a"), endpoint("b"), retry=retry) as client:
        for _ in range(10):  # five failures in a row open each circuit (5 s)
            with pytest.raises(InternalServerError):
                await client.chat(HI)
        sent = len(fleet.requests)
        with pytest.raises(APIConnectionError, match=r"every endpoint is set aside; [ab] \(circuit open"):
            await client.chat(HI)
    assert (10, 10) == (sent, len(fleet.requests))


async def test_calls_waiting_for_the_same_endpoint_let_its_probe_go_alone() -> None:
    """Calls that all wait for one set-aside endpoint send nothing while its probe is out, then all get through."""
    retry = RetryPolicy(max_retries=0, max_retry_after=60.0)
    fleet = Fleet(a=unavailable(5), b=unavailable(5))
    async with pool(fleet, endpoint("a"), endpoint("b"), retry=retry) as client:
        for _ in range(10):
            with pytest.raises(InternalServerError):
                await client.chat(HI)
        for member in client._pipeline.router.members:  # the circuits' 5 s, shortened for the test
            member.health.until = time.monotonic() + 0.1
        fleet.gates = {"a": asyncio.Event(), "b": asyncio.Event()}
        calls = [asyncio.create_task(client.chat(HI)) for _ in range(6)]
        await until_seen(fleet, 11)
        probe = fleet.seen[10]
        await asyncio.sleep(10 * 0.05)  # ten looks at the probe's verdict by each waiting call
        during = len(fleet.requests)
        fleet.gates[probe].set()
        answers = await asyncio.gather(*calls)
    assert 11 == during
    assert [probe] * 6 == [answer.endpoint for answer in answers]


async def test_an_endpoint_takes_calls_again_once_its_429_wait_is_over() -> None:
    """After a 429's short wait, the endpoint's limiter probe is due, which counts as room: calls return there."""
    throttled = MockResponse(429, json={"error": {"message": "slow down"}}, headers={"retry-after-ms": "20"})
    fleet = Fleet(a=[throttled])
    async with pool(fleet, endpoint("a", weight=1000.0), endpoint("b", weight=0.001)) as client:
        first = await client.chat(HI)
        await asyncio.sleep(0.1)  # well past the 20 ms the 429 asked for
        later = [(await client.chat(HI)).endpoint for _ in range(3)]
    assert ("b", ["a", "a", "a"]) == (first.endpoint, later)
    assert ["a", "b", "a", "a", "a"] == fleet.seen
