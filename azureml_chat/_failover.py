"""Failover between the endpoints of a pool: where a call's first attempt goes, where it goes after a failure,
when it waits for an endpoint to come back, and what each attempt tells the endpoint's health.

Only a client over several endpoints comes here (``Pipeline._routed`` and the ``decide`` rule it gives the
retry policy); the rules themselves are ``Router.choose`` (``_router.py``) and ``Health`` (``_health.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from . import _defaults
from ._call import Call
from ._errors import APIConnectionError, APIStatusError, AzureMLChatError, InvalidRequestError, RateLimitError
from ._health import is_endpoint_fault
from ._retry import RetryPolicy, retry_decision
from ._retry_after import REMAINING_REQUESTS, REMAINING_TOKENS, spent_wait
from ._router import Member, Router

__all__ = ["aim_anywhere", "fail_over", "note_headroom", "outcome", "record_failure", "wait_for_turn"]

logger = logging.getLogger("azureml_chat")

# Points a call at a member: the body in its family's shape, its headers (Pipeline.aim).
Aim = Callable[[Call[Any, Any], Member], None]


def aim_anywhere(call: Call[Any, Any], router: Router, aim: Aim) -> None:
    """Aim a call at the best member that can carry it; when none can, raise the first one's reason."""
    refused: list[Member] = []
    first_error: InvalidRequestError | None = None
    while True:
        member, _ = router.choose(refused)
        if member in refused:
            assert first_error is not None
            raise first_error
        try:
            aim(call, member)
            return
        except InvalidRequestError as exc:
            first_error = first_error or exc
            refused.append(member)


def fail_over(
    call: Call[Any, Any], error: BaseException, router: Router, retry: RetryPolicy, aim: Aim
) -> bool:
    """Whether a pool's call goes on after ``error``, and where: re-aims the call and sets ``call.wait``.

    What the retry rule retries goes to an untried member at once, else to a tried one after the usual
    backoff, else (none available) to the one back first, after its cooldown if that is within
    ``max_retry_after``. A 401/403/404, or a 429 asking more than ``max_retry_after``, goes to an untried
    member only. Nothing else is retried (400, 413, 422 are the request's fault).
    """
    decision = retry_decision(error, max_retry_after=retry.max_retry_after)
    if not (decision.retry or is_endpoint_fault(error) or isinstance(error, RateLimitError)):
        return False
    refused: list[Member] = []
    while True:
        member, wait = router.choose([*call.tried, *refused])
        if member in refused:
            return False
        fresh = wait == 0.0 and member not in call.tried
        if not fresh and not decision.retry:
            return False  # only somewhere it already failed: what the rule does not retry stops here
        if wait > retry.max_retry_after:
            return False
        if member is not call.member:
            try:
                aim(call, member)
            except InvalidRequestError:
                refused.append(member)  # its family cannot carry this call
                continue
        call.wait = None if wait < 0 else wait
        return True  # the retry's INFO line says where it goes (Pipeline: "Failing over from a to b ...")


async def wait_for_turn(member: Member, max_retry_after: float) -> bool:
    """Wait until ``member`` takes calls (its cooldown over, and no other call's probe out there), up to
    ``max_retry_after``; returns whether this call is its probe.

    Raises:
        APIConnectionError: the member stays set aside longer than that (retried elsewhere, or raised).
    """
    health = member.health
    deadline = time.monotonic() + max_retry_after
    while True:
        now = time.monotonic()
        if health.until > deadline:
            error = APIConnectionError(
                f"every endpoint is set aside; {member.name} ({health.reason}) is back in "
                f"{health.until - now:.1f} s, beyond max_retry_after ({max_retry_after} s)",
                url=member.endpoint.url,
            )
            error.endpoint = member.name
            raise error
        if health.until > now:
            await asyncio.sleep(health.until - now)
            continue
        if health.claim(now):
            return True
        if not health.probing or now >= deadline:
            return False
        # Another call's probe is out: its verdict says whether to go (a herd at half-open is what the
        # single probe is for). Health is plain data shared across loops and threads, so look again soon.
        await asyncio.sleep(_defaults.PROBE_POLL)


def note_headroom(member: Member, headers: Mapping[str, str]) -> None:
    """Remember until when ``member``'s answer says its quota is spent (``x-ratelimit-remaining-*`` at 0, until
    its reset: ``spent_wait``); meanwhile routing prefers the other members of its priority.

    Routing, not a pause: a spent member with the lowest priority value may still be chosen, and its call then
    meets the 429 that sets it aside and fails over, where pausing its limiter would hold the call there. (A
    client over one URL pauses instead: ``RateLimiter.note_answer``.)
    """
    # Every answer of a pool comes here: the usual one (room left, or no such headers) costs two lookups.
    if headers.get(REMAINING_REQUESTS) != "0" and headers.get(REMAINING_TOKENS) != "0":
        return
    wait = spent_wait(headers)
    if wait is not None:
        member.spent_until = time.monotonic() + wait


def outcome(error: BaseException) -> str:
    return f"HTTP {error.status_code}" if isinstance(error, APIStatusError) else type(error).__name__


def _cooldown_of(error: AzureMLChatError) -> float | None:
    """How long a 429 asked its endpoint to be left alone (``Retry-After``, else its quota's reset)."""
    return error.retry_after if isinstance(error, RateLimitError) else None


def record_failure(member: Member, error: AzureMLChatError, *, probe: bool) -> None:
    """Tell ``member``'s health what an attempt there met; log when that sets it aside anew."""
    if not member.health.failed(error, time.monotonic(), probe=probe, retry_after=_cooldown_of(error)):
        return
    if is_endpoint_fault(error):
        # Once per episode: the endpoint is set aside for minutes, so this does not repeat per call.
        logger.warning(
            "Endpoint %s answered %s: set aside as unhealthy (check its key, deployment and URL); calls go to "
            "the other endpoints",
            member.name,
            outcome(error),
        )
    else:
        logger.info("Endpoint %s set aside: %s", member.name, member.health.reason)
