"""The azureml_chat.testing plugin, used the way a user's own test suite would use it."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

USER_TESTS = """
import pytest
from azureml_chat import RateLimitError, UserMessage

pytest_plugins = ["azureml_chat.testing"]


async def test_async_fixture_answers(azureml_emulator):
    response = await azureml_emulator.client.chat([UserMessage("hello plugin")])
    assert "hello plugin" in response.content
    assert 200 == azureml_emulator.requests[-1].status


async def test_faults_are_retried_quickly(azureml_emulator):
    azureml_emulator.emulator.add_fault("status=503,times=2")
    response = await azureml_emulator.client.chat([UserMessage("again")])
    assert "again" in response.content
    assert [503, 503, 200] == [r.status for r in azureml_emulator.requests]


async def test_rate_limit_surfaces(azureml_emulator):
    azureml_emulator.emulator.add_fault("status=429,retry_after=30")
    with pytest.raises(RateLimitError) as caught:
        await azureml_emulator.client.chat([UserMessage("x")])
    assert 30 == caught.value.retry_after


def test_sync_fixture_answers(azureml_emulator_sync):
    assert "sync hi" in azureml_emulator_sync.client.chat([UserMessage("sync hi")]).content
"""


def test_user_suite_runs_against_the_fixtures(pytester: pytest.Pytester) -> None:
    """A user's test file enabling the plugin gets a working emulator and clients, async and sync."""
    pytester.makepyfile(test_user=USER_TESTS)
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\nfilterwarnings = error\n"
    )
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
