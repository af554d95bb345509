"""The ``batch`` command's files: input lines to jobs, results to output lines, and the resumable output.

Input, one JSON object per line (blank lines are ignored)::

    {"id": "q1", "messages": [{"role": "user", "content": "Hi"}], "params": {"temperature": 0}}

``id`` is a string or a number (default: the line number). Output, one line per item::

    {"id": "q1", "content": "...", "finish_reason": "stop", "usage": {"prompt_tokens": 9, ...}, "request_id": "..."}
    {"id": "q2", "error": {"type": "BadRequestError", "message": "...", "status_code": 400}}
    {"id": 7, "line": 7, "error": {"type": "InvalidRequestError", "message": "line 7 is not valid JSON ..."}}

Each output line is one ``write()`` on an append-only file, so a killed run keeps every line it wrote whole;
a torn last line (from an older or foreign writer) is cut away before anything is appended.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from typing import Any

import attrs

from .._errors import APIStatusError, AzureMLChatError, InvalidRequestError
from .._responses import ChatResponse

__all__ = [
    "INVALID_INPUT",
    "Job",
    "Record",
    "ResultsFile",
    "answer_record",
    "error_record",
    "id_key",
    "parse_line",
    "summary",
]

Record = dict[str, Any]

# The error type of a line that failed as invalid input: it fails again until the input is fixed.
INVALID_INPUT = InvalidRequestError.__name__


@attrs.frozen
class Job:
    """One input line: what to send, or why it cannot be sent.

    Attributes:
        id: the line's ``id``, or its line number.
        line: the 1-based line number.
        messages: the conversation (``None`` when the line is unusable).
        params: ``chat()`` arguments for this line.
        problem: why the line is unusable, or ``None``.
    """

    id: str | int | float
    line: int
    messages: list[Any] | None = None
    params: Mapping[str, Any] = attrs.field(factory=dict)
    problem: str | None = None


def id_key(value: object) -> str:
    """The identity of an id across files: its JSON text (so ``1`` and ``"1"`` stay distinct)."""
    return json.dumps(value)


def _valid_id(value: object) -> bool:
    return isinstance(value, str) or (isinstance(value, (int, float)) and not isinstance(value, bool))


def parse_line(raw: bytes, line: int) -> Job | None:
    """The job on one input line, or ``None`` for a blank line. Never raises: a bad line is a bad job."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Job(line, line, problem=f"line {line} is not UTF-8 ({exc.reason} at byte {exc.start})")
    text = text.removeprefix("\ufeff") if line == 1 else text
    if not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return Job(line, line, problem=f"line {line} is not valid JSON ({exc.msg} at column {exc.colno})")
    if not isinstance(value, dict):
        return Job(line, line, problem=f"line {line} must be a JSON object, got {type(value).__name__}")
    job_id = value.get("id")
    if job_id is None:
        job_id = line
    elif not _valid_id(job_id):
        return Job(line, line, problem=f"line {line}: id must be a string or a number, got {job_id!r:.100}")
    messages = value.get("messages")
    if not isinstance(messages, list):
        found = "nothing" if messages is None else type(messages).__name__
        return Job(job_id, line, problem=f"line {line}: messages must be a list of messages, got {found}")
    params = value.get("params", {})
    if not isinstance(params, dict):
        return Job(job_id, line, problem=f"line {line}: params must be a JSON object")
    if "messages" in params:
        return Job(job_id, line, problem=f"line {line}: params must not hold messages")
    return Job(job_id, line, messages=messages, params=params)


def summary(response: ChatResponse) -> Record:
    """An answer as ``azureml-chat chat --json`` prints it: content, finish reason, token counts, request id,
    and the name of the endpoint that answered.

    The token counts have the fields of :class:`~azureml_chat.Usage` (``prompt_tokens``,
    ``completion_tokens``, ``total_tokens``, and ``cached_tokens`` / ``reasoning_tokens`` when the endpoint
    said), so the CLI's output reads like the Python API. ``reasoning`` is the model's reasoning, or null.
    """
    usage = response.usage
    return {
        "content": response.content,
        "reasoning": response.reasoning,
        "finish_reason": response.finish_reason,
        "usage": None if usage is None else attrs.asdict(usage, filter=lambda _, value: value is not None),
        "request_id": response.request_id,
        "endpoint": response.endpoint,
    }


def answer_record(job_id: object, response: ChatResponse) -> Record:
    """The output line of an answer: the shape of ``azureml-chat chat --json``, plus the id."""
    return {"id": job_id, **summary(response)}


def error_record(job_id: object, error: AzureMLChatError, *, line: int | None = None) -> Record:
    """The output line of a failed item (``line`` for an input line that could not be used)."""
    status = error.status_code if isinstance(error, APIStatusError) else None
    record: Record = {"id": job_id}
    if line is not None:
        record["line"] = line
    record["error"] = {"type": type(error).__name__, "message": str(error), "status_code": status}
    return record


class ResultsFile:
    """The output file: what it already holds, and an append-only writer of whole lines.

    Attributes:
        path: the file; created when missing.
        done: the ids already written (their :func:`id_key`) -> whether that line is an error.
        invalid: the ids among them whose error is invalid input (``INVALID_INPUT``).
        repaired: whether :meth:`open` cut a torn last line.
        dropped: how many error lines :meth:`open` removed for ``retry_failed``.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.done: dict[str, bool] = {}
        self.invalid: set[str] = set()
        self.repaired = False
        self.dropped = 0
        self._fd: int | None = None

    def open(self, *, retry_failed: bool = False) -> None:
        """Read what the file holds, cut a torn last line, and open it for appending.

        Args:
            retry_failed: first remove the error lines (atomically: a copy replaces the file), so that
                their ids run again.
        """
        try:
            with open(self.path, "r+b") as existing:
                end, unterminated = self._scan(existing)
                size = existing.seek(0, os.SEEK_END)
                if size != end:
                    existing.truncate(end)
                    self.repaired = True
                elif unterminated:
                    existing.write(b"\n")  # a whole record without its newline: keep it, end it
        except FileNotFoundError:
            pass
        if retry_failed and any(self.done.values()):
            self._drop_errors()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _scan(self, existing: Any) -> tuple[int, bool]:
        """Collect the ids; return where the last whole line ends, and whether it lacks its newline."""
        end, unterminated = 0, False
        for raw in existing:
            record = _record_or_none(raw)
            if not raw.endswith(b"\n"):
                if record is None:
                    break  # a torn last line: never finished, so never counted, and cut away
                unterminated = True
            end += len(raw)
            if record is not None:
                key, error = id_key(record["id"]), record.get("error")
                self.done[key] = "error" in record
                if isinstance(error, dict) and error.get("type") == INVALID_INPUT:
                    self.invalid.add(key)
        return end, unterminated

    def _drop_errors(self) -> None:
        # Written aside and swapped in: a run killed here leaves the old file or the new one, never half.
        kept = f"{self.path}.retry-failed.tmp"
        with open(self.path, "rb") as source, open(kept, "wb") as target:
            for raw in source:
                record = _record_or_none(raw)
                if record is not None and "error" in record:
                    self.dropped += 1
                else:
                    target.write(raw)
            target.flush()
            os.fsync(target.fileno())
        os.replace(kept, self.path)
        self.done = {key: failed for key, failed in self.done.items() if not failed}
        self.invalid.clear()

    def append(self, record: Record) -> None:
        """Write one record as one line: a single ``write()`` of the whole line on an append-only file."""
        assert self._fd is not None, "open() first"
        try:
            data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate from a \ud800 escape in the input
            data = (json.dumps(record) + "\n").encode("ascii")
        written = os.write(self._fd, data)
        while written < len(data):  # only on a full disk or a signal; the resume check cuts a torn tail
            written += os.write(self._fd, data[written:])

    def close(self) -> None:
        """Flush to disk and close. Safe to call twice."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):  # fsync is unsupported on some pipes and special files
                os.fsync(fd)
            os.close(fd)


def _record_or_none(raw: bytes) -> dict[str, Any] | None:
    """An output line's record, or ``None`` when the line is not one of ours."""
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) and _valid_id(record.get("id")) else None
