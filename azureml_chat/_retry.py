"""When to retry and how long to wait: pure decisions, plus the tenacity policy built from them.

A call makes its first attempt outside tenacity (building an ``AsyncRetrying`` per call costs 20-50 % of
throughput, performance-anchors.md); only a retryable failure enters :func:`RetryPolicy.retrying`.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import attrs
import tenacity

from . import _defaults
from ._errors import APIConnectionError, APIStatusError, AzureMLChatError, ModelError, RateLimitError
from ._retry_after import parse_retry_after

__all__ = ["RetryPolicy", "backoff", "parse_retry_after", "retry_decision"]

logger = logging.getLogger("azureml_chat")

T = TypeVar("T")

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# 424 means the model container failed; its own status decides (azure_protocol.md 1.6).
RETRYABLE_INNER_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))


def backoff(
    retries_taken: int, *, initial: float, cap: float, rng: Callable[[], float] = random.random
) -> float:
    """Exponential backoff with full jitter.

    The wait before retry number ``n + 1`` (``n`` = ``retries_taken``, 0 for the first retry) is drawn
    uniformly from ``[0, min(cap, initial * 2**n)]`` ("full jitter", which spreads a herd of clients best).
    """
    ceiling = min(cap, initial * 2.0 ** min(retries_taken, 60))
    return ceiling * rng()


@attrs.frozen
class RetryDecision:
    """Whether to retry one failure, and the server's demanded wait when it gave one."""

    retry: bool
    retry_after: float | None = None


def retry_decision(exc: BaseException, *, max_retry_after: float) -> RetryDecision:
    """Decide whether ``exc`` may be retried (pure; the table in DESIGN.md "Retries").

    Connection errors and client timeouts are retried (a stream never gets here after its first chunk).
    Statuses 429, 500, 502, 503, 504, and 424 whose inner status is 408/429/5xx, are retried; every other
    status is not. ``x-should-retry: true|false`` overrides the status rule. The wait is the server's demand:
    ``Retry-After`` and its kin, and for a 429 without them its quota's reset headers. A server that demands a
    wait longer than ``max_retry_after`` is not retried: the error is raised at once, carrying that wait.
    """
    if isinstance(exc, APIConnectionError):
        return RetryDecision(True)
    if not isinstance(exc, APIStatusError):
        return RetryDecision(False)
    # A 429 without Retry-After asks for its quota's reset (_retry_after.py); other statuses only say Retry-After.
    retry_after = exc.retry_after if isinstance(exc, RateLimitError) else parse_retry_after(exc.headers)
    if retry_after is not None and retry_after > max_retry_after:
        return RetryDecision(False, retry_after)
    should = exc.headers.get("x-should-retry", "").strip().lower()
    if should == "true":
        return RetryDecision(True, retry_after)
    if should == "false":
        return RetryDecision(False, retry_after)
    if isinstance(exc, ModelError):
        inner = exc.inner_status_code
        return RetryDecision(inner is not None and inner in RETRYABLE_INNER_STATUSES, retry_after)
    return RetryDecision(exc.status_code in RETRYABLE_STATUSES, retry_after)


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How a client retries. Build one and pass it as ``retry=`` to change more than ``max_retries``.

    Attributes:
        max_retries: retries after the first attempt (0 disables retrying).
        initial_delay: the first backoff ceiling, doubled per retry (see :func:`backoff`).
        max_delay: the backoff cap.
        max_retry_after: the longest server-demanded wait we honour; a longer one is raised at once.
    """

    max_retries: int = attrs.field(default=_defaults.MAX_RETRIES)
    initial_delay: float = attrs.field(default=_defaults.INITIAL_RETRY_DELAY)
    max_delay: float = attrs.field(default=_defaults.MAX_RETRY_DELAY)
    max_retry_after: float = attrs.field(default=_defaults.MAX_RETRY_AFTER)

    @max_retries.validator
    def _check_max_retries(self, _: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"max_retries must be a whole number >= 0, got {value!r}")

    @initial_delay.validator
    @max_delay.validator
    @max_retry_after.validator
    def _check_seconds(self, attribute: attrs.Attribute[float], value: float) -> None:
        # A NaN or negative cap would silently turn every server-demanded wait into "raise at once" or
        # "always honour"; inf is allowed only for max_retry_after ("honour any demand").
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
        if not ok or (attribute.name != "max_retry_after" and not math.isfinite(value)):
            raise ValueError(f"{attribute.name} must be a number of seconds >= 0, got {value!r}")

    def wait_for(self, exc: BaseException, retries_taken: int) -> float:
        """Seconds to sleep before the next attempt after ``exc``."""
        decision = retry_decision(exc, max_retry_after=self.max_retry_after)
        if decision.retry_after is not None:
            return decision.retry_after
        return backoff(retries_taken, initial=self.initial_delay, cap=self.max_delay)

    async def call(self, attempt: Callable[[], Awaitable[T]], *, describe: str) -> T:
        """Run ``attempt`` once, and through tenacity only after a retryable failure."""
        try:
            return await attempt()
        except AzureMLChatError as exc:
            return await self.call_after(exc, attempt, describe=describe)

    async def call_after(
        self,
        exc: AzureMLChatError,
        attempt: Callable[[], Awaitable[T]],
        *,
        describe: str | Callable[[], str],
        decide: Callable[[BaseException], bool] | None = None,
        wait: Callable[[BaseException], float | None] | None = None,
    ) -> T:
        """Go on after a first attempt (made by the caller) failed with ``exc``: raise it, or retry.

        ``decide`` replaces the retry rule (a pool retries elsewhere what one endpoint cannot answer) and is
        asked once per failure; ``wait`` may set the wait before the next attempt (``None``: this policy's).
        ``describe`` is what the INFO line per retry names (``"POST <url>"`` in "Retrying POST <url> after
        ..."), or a function giving the line's whole opening once the next attempt is decided ("Failing over
        from a to b").
        """
        rule = self._should_retry if decide is None else _once_per_failure(decide)
        if self.max_retries == 0 or not rule(exc):
            raise exc
        first_failure: AzureMLChatError | None = exc

        async def replay_then_attempt() -> T:
            # tenacity cannot be seeded with an outcome, so the first failure is replayed as its attempt 1:
            # every wait, log line and stop rule then goes through one path.
            nonlocal first_failure
            if first_failure is not None:
                failure, first_failure = first_failure, None
                raise failure
            return await attempt()

        def wait_before(state: tenacity.RetryCallState) -> float:
            failure = state.outcome.exception() if state.outcome is not None else None
            assert failure is not None  # tenacity only waits after a failed attempt
            chosen = wait(failure) if wait is not None else None
            return self.wait_for(failure, state.attempt_number - 1) if chosen is None else chosen

        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.max_retries + 1),
            wait=wait_before,
            retry=tenacity.retry_if_exception(rule),
            before_sleep=lambda state: _log_retry(state, describe, self.max_retries + 1),
            reraise=True,
        )
        try:
            return await retrying(replay_then_attempt)
        except AzureMLChatError as exc:
            exc.attempts = retrying.statistics.get("attempt_number", 1)
            raise

    def _should_retry(self, exc: BaseException) -> bool:
        return retry_decision(exc, max_retry_after=self.max_retry_after).retry


def _once_per_failure(decide: Callable[[BaseException], bool]) -> Callable[[BaseException], bool]:
    """``decide``, asked once per failure: the first failure is judged before tenacity starts and again when
    it is replayed inside tenacity, and a pool's decision moves the call (it must not run twice)."""
    judged: list[tuple[BaseException, bool]] = []

    def rule(exc: BaseException) -> bool:
        if judged and judged[0][0] is exc:
            return judged[0][1]
        verdict = decide(exc)
        judged[:] = [(exc, verdict)]
        return verdict

    return rule


def _log_retry(state: tenacity.RetryCallState, describe: str | Callable[[], str], attempts: int) -> None:
    exc = state.outcome.exception() if state.outcome is not None else None
    reason = f"HTTP {exc.status_code}" if isinstance(exc, APIStatusError) else type(exc).__name__
    wait = state.next_action.sleep if state.next_action is not None else 0.0
    logger.info(
        "%s after %s in %.2f s (attempt %d of %d)",
        describe() if callable(describe) else f"Retrying {describe}",
        reason,
        wait,
        state.attempt_number + 1,
        attempts,
    )
