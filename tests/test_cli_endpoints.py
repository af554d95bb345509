"""``azureml-chat chat`` and ``batch`` over several endpoints (``--endpoints FILE``), run as a subprocess."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli import KEY, run

from azureml_chat.emulator import Emulator


@pytest.fixture
def pair() -> Iterator[tuple[Emulator, Emulator]]:
    """Two emulators: a main endpoint and a fallback."""
    main, fallback = Emulator(key=KEY), Emulator(key=KEY)
    with main.start_in_thread(), fallback.start_in_thread():
        yield main, fallback


def write(path: Path, entries: object) -> str:
    path.write_text(json.dumps(entries), encoding="utf-8")
    return str(path)


def test_chat_fails_over_to_the_fallback_endpoint(pair: tuple[Emulator, Emulator], tmp_path: Path) -> None:
    """With the main endpoint answering 503, `chat --endpoints` answers from the fallback, named in --json."""
    main, fallback = pair
    main.add_fault("status=503,times=10")
    endpoints = write(
        tmp_path / "endpoints.json",
        [
            {"url": main.chat_url, "key_env": "MAIN_KEY", "name": "main"},
            {"url": fallback.chat_url, "key": KEY, "name": "backup", "priority": 1},
        ],
    )
    done = run("chat", "hello pool", "--endpoints", endpoints, "--json", env={"MAIN_KEY": KEY})
    assert 0 == done.returncode, done.stderr
    answer = json.loads(done.stdout)
    assert ("backup", True) == (answer["endpoint"], "hello pool" in answer["content"])
    assert [503] == [request.status for request in main.requests]


def test_batch_lines_name_the_endpoint_that_answered(pair: tuple[Emulator, Emulator], tmp_path: Path) -> None:
    """`batch --endpoints` writes each answer with its endpoint's name; equal weights spread the calls over both."""
    main, fallback = pair
    endpoints = write(
        tmp_path / "endpoints.json",
        [
            {"url": main.chat_url, "key": KEY, "name": "a"},
            {"url": fallback.chat_url, "key": KEY, "name": "b"},
        ],
    )
    lines = [
        json.dumps({"id": f"q{i}", "messages": [{"role": "user", "content": f"q{i}"}]}) for i in range(40)
    ]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = run("batch", "in.jsonl", "-o", "out.jsonl", "--endpoints", endpoints, cwd=tmp_path)
    assert 0 == done.returncode, done.stderr
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    served = {record["endpoint"] for record in records}
    assert (40, {"a", "b"}) == (len(records), served)
    assert 40 == len(main.requests) + len(fallback.requests)


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ([], "non-empty JSON list"),
        ({"url": "x"}, "non-empty JSON list"),
        (["https://x.eastus2.inference.ml.azure.com/score"], "entry 0: must be an object"),
        ([{"key": KEY}], "entry 0: has no url"),
        ([{"url": "https://x.eastus2.inference.ml.azure.com/score"}], "entry 0: give key_env"),
        (
            [{"url": "https://x.eastus2.inference.ml.azure.com/score", "key_env": "NOT_SET_ANYWHERE"}],
            "not set",
        ),
        ([{"url": "https://x.eastus2.inference.ml.azure.com/score", "key": KEY, "wieght": 2}], "unknown key"),
        ([{"url": "https://x.eastus2.inference.ml.azure.com/score", "key": KEY, "weight": -1}], "weight"),
        (
            [
                {"url": "https://x.eastus2.inference.ml.azure.com/score", "key": KEY},
                {"url": "https://x.westus3.inference.ml.azure.com/score", "key": KEY},
            ],
            "named 'x'",
        ),
    ],
    ids=[
        "empty",
        "object",
        "string-entry",
        "no-url",
        "no-key",
        "unset-variable",
        "typo",
        "bad-weight",
        "same-name",
    ],
)
def test_a_bad_endpoints_file_exits_2_naming_the_file_and_entry(
    tmp_path: Path, entries: object, expected: str
) -> None:
    """Every mistake in an endpoints file is one line naming --endpoints FILE and what to fix, exit 2."""
    endpoints = write(tmp_path / "endpoints.json", entries)
    done = run("chat", "hi", "--endpoints", endpoints)
    assert 2 == done.returncode
    assert [] == [line for line in done.stderr.splitlines()[1:] if line.strip()], done.stderr
    assert "--endpoints" in done.stderr
    assert expected in done.stderr


def test_endpoints_with_url_exits_2(tmp_path: Path) -> None:
    """--endpoints and --url together are refused, naming both."""
    endpoints = write(
        tmp_path / "endpoints.json", [{"url": "https://x.eastus2.inference.ml.azure.com/score", "key": KEY}]
    )
    done = run(
        "chat", "hi", "--endpoints", endpoints, "--url", "https://y.eastus2.inference.ml.azure.com/score"
    )
    assert 2 == done.returncode
    assert "--endpoints or --url" in done.stderr


def test_a_missing_endpoints_file_exits_2(tmp_path: Path) -> None:
    """A file that is not there is named, with exit 2."""
    done = run("chat", "hi", "--endpoints", str(tmp_path / "nowhere.json"))
    assert (2, True) == (done.returncode, "cannot read it" in done.stderr)
