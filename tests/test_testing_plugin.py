"""The azureml_chat.testing plugin, used the way a user's own test suite would use it."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

USER_TESTS = """
import pytest
from azureml_chat import RateLimitError, UserMessage

pytest_plugins = ["azureml_chat.testing"]


@pytest.mark.asyncio
async def test_async_fixture_answers(azureml_emulator):
    response = await azureml_emulator.client.chat([UserMessage("hello plugin")])
    assert "hello plugin" in response.content
    assert 200 == azureml_emulator.requests[-1].status


@pytest.mark.asyncio
async def test_faults_are_retried_quickly(azureml_emulator):
    azureml_emulator.emulator.add_fault("status=503,times=2")
    response = await azureml_emulator.client.chat([UserMessage("again")])
    assert "again" in response.content
    assert [503, 503, 200] == [r.status for r in azureml_emulator.requests]


@pytest.mark.asyncio
async def test_rate_limit_surfaces(azureml_emulator):
    azureml_emulator.emulator.add_fault("status=429,retry_after=30")
    with pytest.raises(RateLimitError) as caught:
        await azureml_emulator.client.chat([UserMessage("x")])
    assert 30 == caught.value.retry_after


def test_sync_fixture_answers(azureml_emulator_sync):
    assert "sync hi" in azureml_emulator_sync.client.chat([UserMessage("sync hi")]).content
"""


@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_user_suite_runs_against_the_fixtures(pytester: pytest.Pytester, mode: str) -> None:
    """A user's test file enabling the plugin gets a working emulator and clients, in both pytest-asyncio modes."""
    pytester.makepyfile(test_user=USER_TESTS)
    pytester.makeini(
        f"[pytest]\nasyncio_mode = {mode}\nasyncio_default_fixture_loop_scope = function\nfilterwarnings = error\n"
    )
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)


def test_async_fixture_works_in_strict_mode_without_any_ini(pytester: pytest.Pytester) -> None:
    """With no pytest-asyncio setting at all (its default, strict mode), a marked async test gets the fixture."""
    pytester.makeconftest('pytest_plugins = ["azureml_chat.testing"]\n')
    pytester.makepyfile(
        test_strict="""
import pytest
from azureml_chat import UserMessage

@pytest.mark.asyncio
async def test_answer(azureml_emulator):
    assert "strict" in (await azureml_emulator.client.chat([UserMessage("strict")])).content
"""
    )
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_unmarked_async_test_in_strict_mode_is_not_silently_passed(pytester: pytest.Pytester) -> None:
    """In strict mode an async test without the asyncio mark fails loudly, which is why the README marks it."""
    pytester.makeconftest('pytest_plugins = ["azureml_chat.testing"]\n')
    pytester.makepyfile(
        test_unmarked="""
async def test_answer(azureml_emulator):
    assert azureml_emulator.client
"""
    )
    pytester.makeini("[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n")
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    assert 0 != result.ret
    assert 0 == result.parseoutcomes().get("passed", 0)
