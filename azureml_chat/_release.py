"""The gradual release after a shared cooldown (pure): how many calls may go, and when more may follow.

When a cooldown ends, the calls that waited for it do not all go at once into a quota window that may have room
for a few (a herd collects about as many 429s as calls). They go in *stages*:

* stage 1 is one call, the probe; each later stage opens when every call of the one before has been answered,
  and is twice its size: 1, 2, 4, 8 ...;
* a 429 (or an answer that says the quota is spent) starts a new cooldown, after which the release begins again
  at 1. The calls answered in the interrupted release are how many the window had room for, its *ceiling*: the
  next release doubles up to it, then probes beyond it one call at a time and doubling again, so a storm that
  keeps meeting the same quota costs about one 429 per window instead of the half window the last doubling
  overshoots by;
* the release is over, and calls go freely again, as soon as a stage was not filled (every call it admitted was
  answered and room was left, so nobody is waiting), or once a stage of ``open_at`` calls (``RELEASE_OPEN``, or
  twice the ceiling when more) was answered without a 429: a window with that much room is past a herd's reach,
  and a client under steady load goes back to its fast path.

Stages are counted by answers, not by time, so a release never stalls on the clock: each admitted call is
answered, fails, or is cancelled, and each of those counts (only a 429 does not, since it restarts the cooldown).

A generation number ties each admission to its release: an answer to a call admitted before the latest cooldown
says nothing about the release after it and is ignored. The state is a handful of integers, so a store shared
between processes keeps it in one hash and runs :meth:`Release.claim`, :meth:`Release.answered` and
:meth:`Release.restart` as one script each.
"""

from __future__ import annotations

from . import _defaults

__all__ = ["Release", "next_stage"]


def next_stage(size: int, total: int, ceiling: int) -> int:
    """The size of the stage after one of ``size`` calls, with ``total`` answered since the release began and
    ``ceiling`` the previous release's count (0: unknown).

    Below the ceiling: double, but stop at it. The stage that reached it is followed by 1 (past the ceiling the
    window's room is unknown again), and doubling goes on from there.
    """
    if total < ceiling:
        return min(2 * size, ceiling - total)
    if total - size < ceiling:
        return 1
    return 2 * size


class Release:
    """One limiter's release after its cooldowns: the stage under way and what the last release learned.

    Args:
        open_at: the stage size whose answers end the release (at least twice the ceiling).

    Attributes:
        generation: the current release (0 before the first cooldown); an admission carries it.
        size: the current stage's size.
        granted: calls admitted in the current stage.
        done: calls of the current stage answered.
        total: calls answered since the current release began.
        ceiling: calls the last interrupted release got answered (0: unknown).
    """

    __slots__ = ("ceiling", "done", "generation", "granted", "open_at", "size", "total")

    def __init__(self, open_at: int = _defaults.RELEASE_OPEN) -> None:
        self.open_at = open_at
        self.generation = 0
        self.size = 1
        self.granted = self.done = self.total = 0
        self.ceiling = 0

    def restart(self) -> None:
        """A new cooldown began: the release after it starts with the probe. What the interrupted release got
        answered becomes the ceiling (unless it got nothing answered: then the window never reopened)."""
        if self.total:
            self.ceiling = self.total
        self.generation += 1
        self.size = 1
        self.granted = self.done = self.total = 0

    def claim(self) -> int | None:
        """Admit one call in the current stage: its generation, or ``None`` when the stage is full."""
        if self.granted >= self.size:
            return None
        self.granted += 1
        return self.generation

    def has_room(self) -> bool:
        """Whether :meth:`claim` would admit a call now."""
        return self.granted < self.size

    def answered(self, generation: int) -> tuple[bool, bool]:
        """A call admitted in ``generation`` got an answer other than a 429 (or failed, or was cancelled).

        Returns ``(room, over)``: whether more calls may now be admitted (a stage opened, or the release is over),
        and whether the release is over (the stage was not filled, so nobody is waiting).
        """
        if generation != self.generation:
            return False, False  # admitted before the latest cooldown
        self.done += 1
        self.total += 1
        if self.done >= self.size:
            if self.size >= max(self.open_at, 2 * self.ceiling):
                # Over with room to spare: what it got answered is still what the window held at least, should
                # the next cooldown come soon.
                self._end(self.total)
                return True, True
            self.size = next_stage(self.size, self.total, self.ceiling)
            self.granted = self.done = 0
            return True, False
        if self.done == self.granted:
            self._end(0)  # nobody was waiting: that says nothing about the window
            return True, True
        return False, False

    def _end(self, total: int) -> None:
        self.granted = self.done = 0
        self.total = total
        self.size = 1
