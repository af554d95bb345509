"""Routing in a pool (``_router.py``): which endpoint an attempt goes to, as table tests with an injected time
and random number (the issue's rules: lowest priority first, weighted within it, headroom preferred, untried
first on failover, the earliest back when every endpoint is cooling)."""

from __future__ import annotations

import pytest

from azureml_chat._endpoint import build_endpoint
from azureml_chat._errors import make_status_error
from azureml_chat._ratelimit import RateLimit, RateLimiter
from azureml_chat._router import Member, Router

NOW = 500.0


def member(name: str, *, weight: float = 1.0, priority: int = 0) -> Member:
    """A pool member named ``name``."""
    endpoint = build_endpoint(
        url=f"https://{name}.eastus2.inference.ml.azure.com/score",
        api_key="key",
        endpoint_type=None,
        formatter=None,
        deployment=None,
        credential=None,
        headers=None,
        auth_header="bearer",
        extra_parameters=None,
        allow_insecure_http=False,
        env={},
    )
    return Member(endpoint, RateLimiter(RateLimit(), max_wait=60.0), weight=weight, priority=priority)


def router(*members: Member, rng: float = 0.0) -> Router:
    """A router over ``members`` whose random number is always ``rng``."""
    return Router(members, rng=lambda: rng)


def throttle(target: Member, seconds: float) -> None:
    """``target`` answered 429 at ``NOW`` asking for ``seconds``."""
    target.health.failed(make_status_error(429, {}, b""), NOW, probe=False, retry_after=seconds)


def names(chosen: tuple[Member | None, float]) -> tuple[str | None, float]:
    return (chosen[0].name if chosen[0] is not None else None, chosen[1])


# --- priority and weight ----------------------------------------------------------------------------------------


def test_the_lowest_priority_value_is_used_first() -> None:
    """With every endpoint healthy, the call goes to priority 0, whatever the order and weights given."""
    pool = router(member("backup", priority=1, weight=100.0), member("main", priority=0), rng=0.0)
    assert ("main", 0.0) == names(pool.choose([], NOW))


def test_a_later_priority_is_used_only_while_the_first_has_no_healthy_endpoint() -> None:
    """The fallback priority gets the call while priority 0's endpoints are both cooling, and not after."""
    east, west, backup = member("east"), member("west"), member("backup", priority=1)
    pool = router(east, west, backup)
    throttle(east, 10.0)
    assert ("west", 0.0) == names(pool.choose([], NOW))
    throttle(west, 10.0)
    assert ("backup", 0.0) == names(pool.choose([], NOW))


@pytest.mark.parametrize(
    ("expected", "rng"), [("light", 0.0), ("light", 0.2499), ("heavy", 0.25), ("heavy", 0.9999)]
)
def test_within_a_priority_the_choice_is_weighted(expected: str, rng: float) -> None:
    """Weights 1:3 give the first endpoint the lowest quarter of the random range and the second the rest."""
    pool = router(member("light", weight=1.0), member("heavy", weight=3.0), rng=rng)
    assert (expected, 0.0) == names(pool.choose([], NOW))


@pytest.mark.parametrize(
    ("expected", "rng"), [("a", 0.0), ("a", 0.33), ("b", 0.34), ("b", 0.66), ("c", 0.67), ("c", 0.99)]
)
def test_equal_weights_share_the_random_range_equally(expected: str, rng: float) -> None:
    """Three endpoints of weight 1 take a third of the random range each, in the order given."""
    assert (expected, 0.0) == names(router(member("a"), member("b"), member("c"), rng=rng).choose([], NOW))


def test_an_endpoint_whose_quota_is_spent_is_avoided_while_others_have_room() -> None:
    """An endpoint whose last answer said its requests are spent is passed over while another has headroom,
    even where the random number points at it."""
    spent, roomy = member("spent", weight=100.0), member("roomy")
    spent.spent_until = NOW + 30.0
    assert ("roomy", 0.0) == names(router(spent, roomy, rng=0.0).choose([], NOW))


def test_when_every_quota_is_spent_the_weighted_choice_stands() -> None:
    """With no endpoint having headroom, the weighted choice is made among them all."""
    first, second = member("first"), member("second")
    first.spent_until = second.spent_until = NOW + 30.0
    assert ("second", 0.0) == names(router(first, second, rng=0.75).choose([], NOW))


def test_a_spent_quota_is_forgotten_once_its_reset_time_passed() -> None:
    """Past its reset time, an endpoint that had spent its quota is chosen again."""
    spent, other = member("spent"), member("other")
    spent.spent_until = NOW - 0.001
    assert ("spent", 0.0) == names(router(spent, other, rng=0.0).choose([], NOW))


# --- failover ---------------------------------------------------------------------------------------------------


def test_failover_prefers_an_endpoint_the_call_has_not_tried() -> None:
    """After a failure on one endpoint, the next attempt goes at once (no wait) to one not tried yet."""
    east, west = member("east"), member("west")
    assert ("west", 0.0) == names(router(east, west, rng=0.0).choose([east], NOW))


def test_failover_falls_back_to_a_later_priority_before_retrying_a_tried_endpoint() -> None:
    """The best-ranked untried endpoint may be in a later priority: it wins over the tried one."""
    main, backup = member("main"), member("backup", priority=1)
    assert ("backup", 0.0) == names(router(main, backup).choose([main], NOW))


def test_when_every_endpoint_was_tried_a_tried_one_is_retried_after_the_usual_backoff() -> None:
    """With no untried endpoint left, the call goes back to the best available one, flagged for backoff (-1)."""
    main, backup = member("main"), member("backup", priority=1)
    assert ("main", -1.0) == names(router(main, backup).choose([main, backup], NOW))


def test_when_every_endpoint_is_cooling_the_earliest_back_is_chosen_with_its_wait() -> None:
    """With all endpoints set aside, the call goes to the one whose cooldown ends first, after that wait."""
    east, west = member("east"), member("west")
    throttle(east, 9.0)
    throttle(west, 4.0)
    assert ("west", 4.0) == names(router(east, west).choose([], NOW))


def test_an_endpoint_whose_probe_is_under_way_takes_no_other_call() -> None:
    """After its cooldown one call probes an endpoint; until it reports, the others go elsewhere."""
    east, west = member("east"), member("west")
    throttle(east, 1.0)
    assert east.health.claim(NOW + 1.0)
    assert ("west", 0.0) == names(router(east, west, rng=0.0).choose([], NOW + 1.0))


def test_a_pool_of_one_always_answers_with_its_endpoint() -> None:
    """A router of one member keeps no health: its member is chosen even while throttled, at once the first
    time and after the usual backoff on a retry."""
    only = member("only")
    throttle(only, 60.0)
    pool = router(only)
    assert [("only", 0.0), ("only", -1.0)] == [names(pool.choose([], NOW)), names(pool.choose([only], NOW))]
