"""The ``batch`` command's counters, its live status line and its closing summary (stdlib only).

On a terminal the status line is redrawn in place with a carriage return, a few times a second; anywhere
else nothing is drawn and only the summary is printed, so logs and CI output stay clean.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from typing import TextIO

from ._jsonl import INVALID_INPUT

__all__ = ["Progress", "format_duration"]

# Redraws per second: smooth enough to watch, rare enough to cost nothing next to the requests.
REFRESH_SECONDS = 0.25
# The width when the terminal reports none (0 columns: a pseudo-terminal nobody sized, COLUMNS=0): what
# terminal emulators open at, and shutil.get_terminal_size's own fallback.
FALLBACK_COLUMNS = 80


def format_duration(seconds: float) -> str:
    """``42.0 s`` under a minute, else ``3m07s`` or ``2h05m``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _short_duration(seconds: float) -> str:
    """``7s``, ``3m07s`` or ``2h05m``: an ETA needs no tenths."""
    whole = max(1, math.ceil(seconds))
    return f"{whole}s" if whole < 60 else format_duration(whole)


def _tokens(count: int) -> str:
    if count < 1000:
        return str(count)
    if count < 1_000_000:
        return f"{count / 1000:.1f}k"
    return f"{count / 1_000_000:.1f}M"


def _lines(count: int) -> str:
    return f"{count:,} line" if count == 1 else f"{count:,} lines"


class Progress:
    """Counts a batch's outcomes and draws them on ``out``.

    Args:
        out: where the status line and the summary go (stderr).
        live: draw the status line (``out`` is a terminal).
        total: how many input lines there are (for the percentage and the ETA), when known.
        clock: the time source (tests pass a fake one).
    """

    def __init__(
        self,
        out: TextIO,
        *,
        live: bool,
        total: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.out = out
        self.live = live
        self.total = total
        self.clock = clock
        self.started = clock()
        self.done = 0
        self.failed = 0
        self.skipped = 0
        self.skipped_failed = 0
        self.invalid = 0
        self.duplicates = 0
        self.tokens = 0
        self.failures: Counter[str] = Counter()
        self._drawn = 0
        self._last_draw: float | None = None

    def add(self, *, error_type: str | None, tokens: int = 0) -> None:
        """Count one finished item: an answer (``error_type`` ``None``) or a failure of that error type."""
        if error_type is None:
            self.done += 1
            self.tokens += tokens
        else:
            self.failed += 1
            self.failures[error_type] += 1
            self.invalid += error_type == INVALID_INPUT

    def skip(self, *, failed: bool, invalid: bool = False) -> None:
        """Count an item already in the output file (``failed``: its line there is an error; ``invalid``:
        that error is invalid input)."""
        self.skipped += 1
        self.skipped_failed += failed
        self.invalid += invalid

    def duplicate(self, message: str) -> None:
        """Count an input line whose id an earlier line already has, and say so."""
        self.duplicates += 1
        self.note(message)

    @property
    def elapsed(self) -> float:
        """Seconds since the run started."""
        return self.clock() - self.started

    def status_line(self) -> str:
        """The live line: position, outcomes, rate, ETA and tokens (the least needed last, as a narrow
        terminal cuts the end)."""
        elapsed = self.elapsed
        finished = self.done + self.failed
        rate = finished / elapsed if elapsed > 0 else 0.0
        position = f"{finished + self.skipped:,}"
        eta = ""
        if self.total is not None:
            position += f"/{self.total:,}"
            remaining = max(0, self.total - self.skipped - finished)
            if remaining and rate > 0:
                eta = f", ETA {_short_duration(remaining / rate)}"
        skipped = f", {self.skipped:,} skipped" if self.skipped else ""
        return (
            f"batch {position} | {self.done:,} done, {self.failed:,} failed{skipped} | {rate:.1f}/s{eta} "
            f"| {_tokens(self.tokens)} tokens"
        )

    def draw(self, *, force: bool = False) -> None:
        """Redraw the status line in place (at most every ``REFRESH_SECONDS`` unless ``force``)."""
        if not self.live:
            return
        now = self.clock()
        if not force and self._last_draw is not None and now - self._last_draw < REFRESH_SECONDS:
            return
        self._last_draw = now
        # A line wider than the terminal wraps, and a carriage return then redraws only its last row.
        width = max(20, self._columns() - 1)
        line = self.status_line()[:width]
        self.out.write("\r" + line.ljust(self._drawn))
        self.out.flush()
        self._drawn = len(line)

    def _columns(self) -> int:
        # The terminal stderr is on (stdout may be redirected to a file); else $COLUMNS or stdout's terminal.
        try:
            columns = os.get_terminal_size(self.out.fileno()).columns
        except (AttributeError, ValueError, OSError):  # io.UnsupportedOperation is an OSError
            columns = 0
        if columns <= 0:
            columns = shutil.get_terminal_size((FALLBACK_COLUMNS, 24)).columns
        return columns if columns > 0 else FALLBACK_COLUMNS

    def clear(self) -> None:
        """Erase the status line, so the next output starts on a clean line."""
        if self.live and self._drawn:
            self.out.write("\r" + " " * self._drawn + "\r")
            self.out.flush()
            self._drawn = 0

    def note(self, message: str) -> None:
        """Print a message above the status line."""
        self.clear()
        print(message, file=self.out, flush=True)
        self.draw(force=True)

    def summary(self, source: str, output: str, *, interrupted: bool = False) -> str:
        """The closing lines: counts, tokens, wall time, and what to do about failures.

        Args:
            source: the input file (where invalid lines are to be fixed).
            output: the output file.
            interrupted: the run was stopped before its end.
        """
        elapsed = self.elapsed
        finished = self.done + self.failed
        rate = f" ({finished / elapsed:.1f}/s)" if elapsed > 0 and finished else ""
        earlier = f", {self.skipped_failed:,} of them failed" if self.skipped_failed else ""
        lines = [
            f"azureml-chat batch: {self.done:,} done, {self.failed:,} failed, "
            f"{self.skipped:,} skipped as already in {output}{earlier}; "
            f"{self.tokens:,} tokens; {format_duration(elapsed)}{rate}"
        ]
        if self.failures:
            kinds = ", ".join(f"{count:,} {kind}" for kind, count in self.failures.most_common())
            lines.append(f'  failed: {kinds} (see the lines with an "error" in {output})')
        if self.invalid:
            them = "it" if self.invalid == 1 else "them"
            lines.append(
                f"  {_lines(self.invalid)} failed as invalid input and would fail the same way again: "
                f"fix {them} in {source} first (the error lines in {output} say what is wrong), "
                "then rerun the same command with --retry-failed"
            )
        if self.failed + self.skipped_failed > self.invalid:
            other = "other " if self.invalid else ""
            lines.append(f"  to run the {other}failed ones again: rerun the same command with --retry-failed")
        if self.duplicates:
            lines.append(f"  {_lines(self.duplicates)} not run: an earlier line has the same id (see above)")
        if interrupted:
            lines.append("  interrupted: rerun the same command to resume where it stopped")
        return "\n".join(lines)
