"""``azureml_chat.ray.map_chat`` on a local Ray instance (2 CPUs, actors with a quarter CPU each), against an
emulator served from a thread of this process.

Everything talks to 127.0.0.1 only; Ray's usage statistics are off.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pytest
import ray
import ray.cloudpickle
from redis_server import RedisServer

from azureml_chat import ConfigurationError, InvalidRequestError, RateLimit
from azureml_chat.emulator import Emulator
from azureml_chat.ray import map_chat
from azureml_chat.rows import OUTPUT_COLUMNS, OUTPUT_TYPES
from azureml_chat.testing import fast_retry

# Ray 2.60's DataContext sets its own deprecated fields in __init__ and warns about them (ray/data/context.py,
# __setattr__): nothing this package or these tests do, and nothing they can avoid.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")

KEY = "ray-key"
# Set before ray.init, so that its processes (which inherit them) see them too. Without the second one, Ray 2.60
# ignores _node_ip_address="127.0.0.1" for its own processes: they bind every interface and talk over the
# machine's address. It is the switch Ray uses on macOS and Windows to keep a local instance on loopback.
_RAY_ENVIRONMENT = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
TYPES = {name: pa.type_for_alias(alias) for name, alias in OUTPUT_TYPES.items()}


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray instance on 127.0.0.1 only, with 2 CPUs, no dashboard and no usage statistics."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in _RAY_ENVIRONMENT.items():
            patch.setenv(name, value)
        # The factories and token callables below live in this module, which the workers cannot import.
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # type: ignore[no-untyped-call]
        ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
        try:
            yield
        finally:
            ray.shutdown()
            ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
def served(local_ray: None) -> Iterator[Emulator]:
    emulator = Emulator(key=KEY)
    with emulator.start_in_thread():
        yield emulator


@pytest.fixture
def emulator(served: Emulator) -> Emulator:
    served.reset()
    return served


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def collect(dataset: Any) -> pa.Table:
    """The whole dataset as one Arrow table (to_pandas() trips a pandas 3.1 deprecation inside Ray)."""
    return pa.concat_tables(ray.get(dataset.to_arrow_refs())).sort_by("id")


def test_map_chat_keeps_the_input_columns_and_adds_typed_answers(emulator: Emulator) -> None:
    """Every row comes back once, its input columns first, with the answer's columns in their types."""
    dataset = ray.data.from_items([{"id": i, "messages": user(f"q{i}")} for i in range(40)])
    out = collect(map_chat(dataset, endpoint_url=emulator.chat_url, api_key=KEY, concurrency=2, batch_size=8))
    assert ["id", "messages", *OUTPUT_COLUMNS] == out.column_names
    assert TYPES == {name: out.schema.field(name).type for name in OUTPUT_COLUMNS}
    assert list(range(40)) == out.column("id").to_pylist()
    assert [f"You said: q{i}" for i in range(40)] == out.column("content").to_pylist()
    assert [None] * 40 == out.column("error").to_pylist()
    assert [1] * 40 == out.column("attempts").to_pylist()
    assert 40 == len(emulator.requests)


def test_json_messages_and_failing_rows(emulator: Emulator) -> None:
    """JSON-string messages work (on an autoscaling pool); a bad value and a refused call are error rows, and
    the others succeed."""
    messages = {i: json.dumps(user(f"q{i}")) for i in range(12)}
    messages[3] = "not json"
    messages[7] = json.dumps(user("[[fault:status=400]] refused"))
    dataset = ray.data.from_items([{"id": i, "messages": text} for i, text in messages.items()])
    answered = map_chat(
        dataset, endpoint_url=emulator.chat_url, api_key=KEY, concurrency=(1, 2), batch_size=4
    )
    out = collect(answered).to_pydict()
    errors = {i: kind for i, kind in zip(out["id"], out["error_type"], strict=True) if kind is not None}
    assert {3: "InvalidRequestError", 7: "BadRequestError"} == errors
    succeeded = [i for i, content in zip(out["id"], out["content"], strict=True) if content is not None]
    assert [i for i in range(12) if i not in (3, 7)] == succeeded


def test_retry_after_is_honoured(emulator: Emulator) -> None:
    """A 429 with Retry-After is waited out and retried: one row takes two attempts, none fails."""
    emulator.add_fault("429,retry_after=0.5,times=1")
    dataset = ray.data.from_items([{"id": i, "messages": user(f"q{i}")} for i in range(6)])
    out = collect(
        map_chat(dataset, endpoint_url=emulator.chat_url, api_key=KEY, retry=fast_retry(), batch_size=6)
    ).to_pydict()
    assert [None] * 6 == out["error"]
    assert [1, 1, 1, 1, 1, 2] == sorted(out["attempts"])
    retried = out["attempts"].index(2)
    assert out["latency_s"][retried] >= 0.5
    assert [429] == [request.status for request in emulator.requests if request.status != 200]


def _token(path: Path) -> str:
    return KEY


def _counted_factory(path: Path) -> Any:
    """A credential factory that records each call (one line per call, the actor's pid)."""
    with path.open("a") as log:
        log.write(f"{os.getpid()}\n")
    return functools.partial(_token, path)


def test_the_credential_factory_is_called_once_per_actor(emulator: Emulator, tmp_path: Path) -> None:
    """Each actor builds its credential once, however many batches it runs; the token authorizes its calls."""
    calls = tmp_path / "factory-calls"
    dataset = ray.data.from_items([{"id": i, "messages": user(f"q{i}")} for i in range(24)])
    out = collect(
        map_chat(
            dataset,
            endpoint_url=emulator.chat_url,
            credential=functools.partial(_counted_factory, calls),
            concurrency=2,
            batch_size=4,
        )
    )
    assert [None] * 24 == out.column("error").to_pylist()
    pids = calls.read_text().split()
    assert len(set(pids)) == len(pids)
    # Each client's request ids share a prefix: as many clients sent requests as the factory was called.
    prefixes = {request.headers["x-ms-client-request-id"].rsplit("-", 1)[0] for request in emulator.requests}
    assert len(pids) == len(prefixes)
    assert 1 <= len(pids) <= 2


class _Token:
    """An access token that expires at once, so the client asks for a new one before every attempt."""

    def __init__(self) -> None:
        self.token = KEY
        self.expires_on = int(time.time())


def _dying_token(marker: Path, after: int) -> _Token:
    """A token callable that kills its actor's process once (the first to claim the marker), after ``after``
    calls in that process, in the middle of a batch."""
    count = _dying_token.__dict__.setdefault("calls", 0) + 1
    _dying_token.__dict__["calls"] = count
    if count >= after:
        try:
            marker.rename(marker.with_suffix(".fired"))
        except FileNotFoundError:
            return _Token()
        os._exit(1)
    return _Token()


def _dying_factory(marker: Path, after: int) -> Any:
    return functools.partial(_dying_token, marker, after)


def test_an_actor_killed_mid_run_loses_no_row_and_answers_none_twice(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Ray replays the dead actor's batches: every row is in the output once; only their calls repeat."""
    marker = tmp_path / "kill-once"
    marker.touch()
    emulator.add_fault("latency=0.05")
    rows = 60
    dataset = ray.data.from_items([{"id": i, "messages": user(f"q{i}")} for i in range(rows)])
    out = collect(
        map_chat(
            dataset,
            endpoint_url=emulator.chat_url,
            credential=functools.partial(_dying_factory, marker, 10),
            concurrency=2,
            batch_size=5,
            per_worker_concurrency=4,
        )
    )
    assert marker.with_suffix(".fired").exists()  # the kill did happen
    assert list(range(rows)) == out.column("id").to_pylist()
    assert [f"You said: q{i}" for i in range(rows)] == out.column("content").to_pylist()
    # The replayed batches sent again the calls the dead actor had sent for them: some, and at most the 9
    # it sent before it died (its 10th call asked for a token and killed it).
    asked = [request.body["messages"][0]["content"] for request in emulator.requests]
    assert {f"q{i}" for i in range(rows)} == set(asked)
    assert rows < len(asked) <= rows + 9, len(asked)


def test_options_are_refused_before_anything_runs(local_ray: None) -> None:
    """A bad option, a misspelt chat option or a live credential raise in map_chat itself."""
    dataset = ray.data.from_items([{"messages": user("q")}])
    with pytest.raises(ConfigurationError):
        map_chat(dataset, endpoint_url="http://127.0.0.1:1/score", api_key=KEY, endpoint_type="bogus")
    with pytest.raises(InvalidRequestError, match="did you mean temperature"):
        map_chat(dataset, endpoint_url="http://127.0.0.1:1/score", chat_options={"temprature": 0.1})
    with pytest.raises(ConfigurationError, match="factory"):
        map_chat(dataset, endpoint_url="http://127.0.0.1:1/score", credential=_Token())  # type: ignore[arg-type]


def test_without_ray_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without Ray Data installed, map_chat says which extra to install."""
    monkeypatch.setitem(sys.modules, "ray.data", None)
    with pytest.raises(ImportError, match=r'pip install "azureml-chat\[ray\]"'):
        map_chat(None)  # type: ignore[arg-type]


def test_actors_with_a_store_share_one_quota(emulator: Emulator) -> None:
    """Two actors with RateLimit(requests_per_minute=600, store=...) spend one budget between them: 20 requests
    arrive at least 19 intervals of 0.1 s apart in all (each actor alone would allow 10 a second, so they would
    take half that). And the 429 one actor meets holds back both: within its Retry-After (1 s) arrive only the
    requests already admitted when it came (at most one per other slot: 2 actors x 2 calls, less the one
    throttled), where actors pacing alone would send about ten."""
    emulator.add_fault("429,retry_after=1,times=1")
    with RedisServer() as redis_server:
        limit = RateLimit(requests_per_minute=600, store=redis_server.url, name="ray-shared")
        dataset = ray.data.from_items([{"id": i, "messages": user(f"q{i}")} for i in range(20)])
        out = collect(
            map_chat(
                dataset,
                endpoint_url=emulator.chat_url,
                api_key=KEY,
                rate_limit=limit,
                concurrency=2,
                per_worker_concurrency=2,
                batch_size=5,
            )
        ).to_pydict()
    assert [None] * 20 == out["error"]
    arrivals = sorted(request.time for request in emulator.requests)
    throttled = next(request.time for request in emulator.requests if request.status == 429)
    assert 21 == len(arrivals)
    assert arrivals[-1] - arrivals[0] >= 1.9 - 0.05
    # One more for a request admitted in the instant between the 429's answer and its cooldown reaching Redis.
    assert len([t for t in arrivals if throttled < t < throttled + 0.95]) <= 4
