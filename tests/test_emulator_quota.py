"""The emulator's rate quota and the ``x-ratelimit-*`` headers of every metered answer (:mod:`._quota`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest
from test_cli_emulator import Served, run, score

from azureml_chat.emulator import Deployment, Emulator, Quota, QuotaUsage
from azureml_chat.emulator._quota import UNBOUNDED_REQUESTS, UNBOUNDED_TOKENS, QuotaWindow

KEY = "quota-key"
AUTH = {"api-key": KEY}
CHAT_BODY = {"messages": [{"role": "user", "content": "hello big world"}]}  # 3 + 5 = 8 tokens
SCORE_BODY = {"input_data": {"input_string": CHAT_BODY["messages"], "parameters": {}}}
RATE_HEADERS = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session, closed at teardown."""
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    http: aiohttp.ClientSession, url: str, body: Any = CHAT_BODY, *, stream: bool = False
) -> tuple[int, Mapping[str, str], Any]:
    """POST ``body`` with the key; the status, the headers and the body (JSON, or the text of a stream)."""
    async with http.post(url, json={**body, "stream": True} if stream else body, headers=AUTH) as response:
        text = await response.text()
        return response.status, response.headers, text if stream else json.loads(text)


class Clock:
    """A hand-moved clock for :class:`QuotaWindow`: the window rules without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the headers without a quota ------------------------------------------------------------------------------


async def test_every_metered_route_sends_the_rate_limit_headers(http: aiohttp.ClientSession) -> None:
    """Chat, text, /score and streamed answers all carry the six x-ratelimit headers; the limits never bind."""
    async with Emulator(KEY) as emu:
        answers = [
            await post(http, emu.chat_url),
            await post(http, emu.chat_url, stream=True),
            await post(http, emu.completions_url, {"prompt": "a b"}),
            await post(http, emu.score_url, SCORE_BODY),
        ]
    for status, headers, _ in answers:
        assert 200 == status
        assert set(RATE_HEADERS) <= {name.lower() for name in headers}
        assert (str(UNBOUNDED_REQUESTS), str(UNBOUNDED_TOKENS)) == (
            headers["x-ratelimit-limit-requests"],
            headers["x-ratelimit-limit-tokens"],
        )
        assert 1 <= int(headers["x-ratelimit-reset-requests"]) <= 60


async def test_default_headers_count_truthfully(http: aiohttp.ClientSession) -> None:
    """Without a quota, remaining requests drop by one per request and remaining tokens by each usage total."""
    async with Emulator(KEY) as emu:
        remaining = [(await post(http, emu.chat_url))[1] for _ in range(3)]
        usage = emu.quota_usage
    assert [str(UNBOUNDED_REQUESTS - n) for n in (1, 2, 3)] == [
        headers["x-ratelimit-remaining-requests"] for headers in remaining
    ]
    assert [str(UNBOUNDED_TOKENS - 8 * n) for n in (1, 2, 3)] == [
        headers["x-ratelimit-remaining-tokens"] for headers in remaining
    ]
    assert QuotaUsage(admitted=3, refused=0, requests=3, tokens=24) == usage


async def test_info_is_not_metered(http: aiohttp.ClientSession) -> None:
    """GET /info neither counts against the quota nor carries rate-limit headers."""
    async with Emulator(KEY) as emu, http.get(emu.info_url, headers=AUTH) as response:
        assert (200, None) == (response.status, response.headers.get("x-ratelimit-remaining-requests"))
        assert 0 == emu.quota_usage.admitted


# -- a configured quota ---------------------------------------------------------------------------------------


async def test_requests_past_the_quota_get_429s_with_azures_headers(http: aiohttp.ClientSession) -> None:
    """With requests=N, N+3 quick requests in a long window: exactly N admitted, 3 refused with Azure's 429."""
    async with Emulator(KEY, quota=Quota(requests=4, window=600)) as emu:
        answers = [await post(http, emu.chat_url) for _ in range(7)]
        statuses = [record.status for record in emu.requests]
        usage = emu.quota_usage
    assert [200] * 4 + [429] * 3 == [status for status, _, _ in answers] == statuses
    assert ["3", "2", "1", "0"] == [
        headers["x-ratelimit-remaining-requests"] for _, headers, _ in answers[:4]
    ]
    for _, headers, body in answers[4:]:
        assert ("0", "TooManyRequests", "429") == (
            headers["x-ratelimit-remaining-requests"],
            headers["x-ms-error-code"],
            body["error"]["code"],
        )
        wait = int(headers["Retry-After"])
        assert 1 <= wait <= 600
        assert wait * 1000 - 1000 < int(headers["retry-after-ms"]) <= wait * 1000
        assert headers["x-ratelimit-reset-requests"] == headers["Retry-After"]
        assert "4 requests per 600 seconds" in body["error"]["message"]
    assert QuotaUsage(admitted=4, refused=3, requests=4, tokens=32) == usage


async def test_a_spent_token_quota_refuses_until_the_window_ends(http: aiohttp.ClientSession) -> None:
    """With tokens=10, a request is refused once the window's usage totals reached 10, requests left or not."""
    async with Emulator(KEY, quota=Quota(tokens=10, window=600)) as emu:
        answers = [await post(http, emu.chat_url) for _ in range(3)]
        usage = emu.quota_usage
    assert [200, 200, 429] == [status for status, _, _ in answers]
    assert ["2", "0", "0"] == [headers["x-ratelimit-remaining-tokens"] for _, headers, _ in answers]
    assert str(UNBOUNDED_REQUESTS - 2) == answers[2][1]["x-ratelimit-remaining-requests"]
    assert QuotaUsage(admitted=2, refused=1, requests=2, tokens=16) == usage


async def test_retry_after_no_sends_only_the_reset_headers(http: aiohttp.ClientSession) -> None:
    """retry_after=False: a 429 without Retry-After or retry-after-ms, as Azure's token-quota 429s."""
    async with Emulator(KEY, quota=Quota(requests=1, window=600, retry_after=False)) as emu:
        await post(http, emu.chat_url)
        status, headers, _ = await post(http, emu.chat_url)
    assert (429, None, None) == (status, headers.get("Retry-After"), headers.get("retry-after-ms"))
    assert int(headers["x-ratelimit-reset-tokens"]) >= 1


async def test_the_quota_admits_again_after_the_advertised_wait(http: aiohttp.ClientSession) -> None:
    """In a 0.5 s window a refused client that waits retry-after-ms is admitted again."""
    async with Emulator(KEY, quota=Quota(requests=1, window=0.5)) as emu:
        refused = None
        for _ in range(50):  # on a loaded machine a window may close between two requests: try again
            status, headers, _ = await post(http, emu.chat_url)
            if status == 429:
                refused = headers
                break
        assert refused is not None
        await asyncio.sleep(int(refused["retry-after-ms"]) / 1000)
        assert 200 == (await post(http, emu.chat_url))[0]


async def test_reset_forgets_the_quota(http: aiohttp.ClientSession) -> None:
    """Emulator.reset() clears the counts: a spent quota admits again at once."""
    async with Emulator(KEY, quota=Quota(requests=1, window=600)) as emu:
        await post(http, emu.chat_url)
        assert 429 == (await post(http, emu.chat_url))[0]
        emu.reset()
        assert QuotaUsage(0, 0, 0, 0) == emu.quota_usage
        assert 200 == (await post(http, emu.chat_url))[0]


async def test_a_429_from_the_quota_skips_faults(http: aiohttp.ClientSession) -> None:
    """A refused request does not use up an armed fault: the fault applies to the next admitted request."""
    async with Emulator(KEY, quota=Quota(requests=1, window=600)) as emu:
        await post(http, emu.chat_url)
        emu.add_fault("status=503,times=1")
        await post(http, emu.chat_url)
        assert 1 == len(emu.faults())


def test_emulator_takes_only_a_quota_object() -> None:
    """Emulator(quota=...) refuses a spec string with a TypeError saying what it wants."""
    with pytest.raises(TypeError, match="quota must be a Quota"):
        Emulator(quota="requests=1")  # type: ignore[arg-type]


# -- the window rules (a hand-moved clock) -------------------------------------------------------------------


def test_windows_are_fixed_and_open_at_the_first_request() -> None:
    """The window opens at the first request; once it closes, the next request opens a fresh one."""
    clock = Clock()
    window = QuotaWindow(Quota(requests=2, window=10), clock)
    assert "10" == window.headers()["x-ratelimit-reset-requests"]  # none open yet: a whole window
    clock.now += 100
    assert [True, True, False] == [window.admit().admitted for _ in range(3)]
    clock.now += 9.5
    assert not window.admit().admitted
    assert "1" == window.headers()["x-ratelimit-reset-requests"]  # 0.5 s left, rounded up
    clock.now += 0.5
    assert window.admit().admitted
    assert QuotaUsage(admitted=3, refused=2, requests=1, tokens=0) == window.usage()


def test_a_charge_counts_only_in_the_window_that_admitted_it() -> None:
    """Tokens of an answer that ends after its window closed are not charged to the next window."""
    clock = Clock()
    window = QuotaWindow(Quota(tokens=100, window=10), clock)
    early = window.admit()
    window.charge(early, 30)
    clock.now += 11
    late = window.admit()
    window.charge(early, 50)
    window.charge(late, 7)
    assert (7, "93") == (window.usage().tokens, window.headers()["x-ratelimit-remaining-tokens"])


# -- Quota: values and specs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"requests": 0}, "requests must be a whole number >= 1"),
        ({"tokens": 2.5}, "tokens must be a whole number >= 1"),
        ({"requests": True}, "requests must be a whole number >= 1"),
        ({"window": 0}, "window must be a positive number"),
        ({"window": float("inf")}, "window must be a positive number"),
        ({"retry_after": "no"}, "retry_after must be True or False"),
    ],
)
def test_bad_quotas_are_refused(kwargs: dict[str, Any], message: str) -> None:
    """A quota that makes no sense is a ValueError naming the field."""
    with pytest.raises(ValueError, match=message):
        Quota(**kwargs)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "requests=60,tokens=20000,window=60,retry_after=no",
            Quota(requests=60, tokens=20000, retry_after=False),
        ),
        ("Tokens=5, WINDOW=0.25", Quota(tokens=5, window=0.25)),
        ("requests=1,retry-after=yes", Quota(requests=1)),
    ],
)
def test_quota_specs_parse_and_print_back(spec: str, expected: Quota) -> None:
    """Quota.parse reads the --quota grammar; str() is a canonical spec that parses to an equal quota."""
    assert expected == Quota.parse(spec) == Quota.parse(str(expected))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty quota spec"),
        ("rpm=5", "unknown quota item 'rpm=5'"),
        ("requests", "unknown quota item 'requests'"),
        ("requests=1,requests=2", "requests given twice"),
        ("tokens=lots", "bad value for tokens"),
        ("retry_after=maybe", "retry_after must be yes or no"),
        ("window=-1", "window must be a positive number"),
    ],
)
def test_bad_quota_specs_are_refused(spec: str, message: str) -> None:
    """A spec that does not parse is a ValueError saying what is wrong."""
    with pytest.raises(ValueError, match=message):
        Quota.parse(spec)


# -- the command line -----------------------------------------------------------------------------------------


def test_each_instance_has_its_own_quota() -> None:
    """--instances 2 --quota requests=1: each instance admits one request, then refuses with 429."""
    served = Served("--instances", "2", "--quota", "requests=1,window=600")
    try:
        assert any("quota: requests=1,window=600,retry_after=yes" in line for line in served.banner)
        urls = [served.instances[number]["score"] for number in (1, 2)]
        statuses = [score(url) for url in (urls[0], urls[1], urls[0], urls[1])]
    finally:
        served.stop()
    assert [200, 200, 429, 429] == statuses


def test_a_bad_quota_spec_exits_2() -> None:
    """--quota with a spec that does not parse exits 2 with one line naming the flag."""
    done = run("--quota", "requests=0")
    assert 2 == done.returncode
    assert "argument --quota: Quota requests must be a whole number >= 1" in done.stderr


async def test_deployments_share_the_endpoints_quota(http: aiohttp.ClientSession) -> None:
    """The quota is the endpoint's: requests to two deployments count against the same window."""
    deployments = [Deployment("a"), Deployment("b")]
    async with Emulator(KEY, deployments=deployments, quota=Quota(requests=1, window=600)) as emu:
        await post(http, emu.chat_url)
        async with http.post(
            emu.chat_url, json=CHAT_BODY, headers={**AUTH, "azureml-model-deployment": "b"}
        ) as r:
            assert 429 == r.status
