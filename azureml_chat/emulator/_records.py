"""The record of the requests the emulator received, with secrets redacted, for tests to assert on."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
from multidict import CIMultiDict, CIMultiDictProxy

from ._faults import Fault

__all__ = ["REDACTED", "RecordedRequest", "RequestLog", "redact_headers"]

REDACTED = "[REDACTED]"
# Every header that carries a credential on Azure ML, Azure AI and APIM front ends.
_SECRET_HEADERS = frozenset({"authorization", "api-key", "ocp-apim-subscription-key", "cookie"})


def redact_headers(headers: Iterable[tuple[str, str]]) -> CIMultiDictProxy[str]:
    """The headers with credential values replaced; ``Authorization`` keeps its scheme (``Bearer [REDACTED]``)."""
    redacted: CIMultiDict[str] = CIMultiDict()
    for name, value in headers:
        if name.lower() in _SECRET_HEADERS:
            scheme, _, credential = value.partition(" ")
            value = f"{scheme} {REDACTED}" if name.lower() == "authorization" and credential else REDACTED
        redacted.add(name, value)
    return CIMultiDictProxy(redacted)


@attrs.frozen
class RecordedRequest:
    """One request as the emulator received it.

    Attributes:
        method: the HTTP method.
        path: the URL path, without the query.
        query: the query parameters (``api-version`` among them).
        headers: the request headers, case-insensitive, credentials redacted.
        body: the parsed JSON body, or ``None`` when there was none or it was not JSON.
        text: the body as text, exactly as received (to check its encoding).
        deployment: the deployment that served it (``None`` when auth or routing refused it).
        status: the status the emulator answered with (``None``: it dropped the connection instead).
        stream: whether the request asked for an SSE stream.
        fault: the fault applied to it, if any.
        time: when it arrived, in seconds since the epoch.
    """

    method: str
    path: str
    query: Mapping[str, str]
    headers: CIMultiDictProxy[str]
    body: Any
    text: str
    deployment: str | None
    status: int | None
    stream: bool
    fault: Fault | None
    time: float


class RequestLog:
    """A thread-safe, bounded list of :class:`RecordedRequest`; the server appends, tests read from any thread.

    Args:
        max_records: how many records to keep; the oldest go first (``None``: keep all). The bound is what
            keeps a long-running emulator (the CLI, a soak test) from growing without end.
        on_record: called with each record as it is added.
    """

    def __init__(
        self, max_records: int | None = None, on_record: Callable[[RecordedRequest], None] | None = None
    ) -> None:
        if max_records is not None and max_records < 0:
            raise ValueError(f"max_records must not be negative, got {max_records}")
        self._lock = threading.Lock()
        self._records: deque[RecordedRequest] = deque(maxlen=max_records)
        self._on_record = on_record

    def append(self, record: RecordedRequest) -> None:
        """Add a record (and tell the ``on_record`` hook)."""
        with self._lock:
            self._records.append(record)
        if self._on_record is not None:
            self._on_record(record)

    def snapshot(self) -> list[RecordedRequest]:
        """A copy of the records so far, oldest first."""
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        """Forget every record."""
        with self._lock:
            self._records.clear()
