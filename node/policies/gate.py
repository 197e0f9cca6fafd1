"""The work gate's decisions: may this node train now, and if not, why. Pure: clock readings and
load samples come in as arguments.

A node trains only while no *reason* holds it back:

    schedule  outside the volunteer's hours (``--schedule 22:00-07:00``, local time)
    busy      the machine is busy with other work (``--pause-when-busy CPU%``)
    paused    the volunteer said so (``swarm ctl pause``)
    standby   the organizer's signed plan said so (set by the plan follower)

``node/host/gate.py`` holds the live set of reasons; this module decides the automatic ones.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["REASONS", "BusyState", "Schedule", "busy_step", "parse_schedule", "smooth"]

# in the order a status line names them
REASONS = ("paused", "standby", "schedule", "busy")

_HHMM = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*$")
_DAY = 24 * 60


def _minutes(text: str) -> int:
    m = _HHMM.match(text)
    if not m:
        raise ValueError(f"{text.strip()!r} is not a time of day like 07:30")
    h, mi = int(m.group(1)), int(m.group(2))
    if mi >= 60 or h > 24 or (h == 24 and mi != 0):
        raise ValueError(f"{text.strip()!r} is not a time of day (00:00 to 24:00)")
    return h * 60 + mi


@dataclass(frozen=True)
class Schedule:
    """Hours in which the node may train: ``start`` (inclusive) to ``end`` (exclusive), in minutes
    after local midnight. ``start > end`` spans midnight (22:00-07:00)."""

    start: int
    end: int

    def allows(self, minute_of_day: float) -> bool:
        m = minute_of_day % _DAY
        if self.start < self.end:
            return self.start <= m < self.end
        return m >= self.start or m < self.end  # across midnight

    def __str__(self) -> str:
        return "-".join(f"{t // 60:02d}:{t % 60:02d}" for t in (self.start, self.end))


def parse_schedule(text: str) -> Schedule:
    """``"22:00-07:00"`` -> Schedule. Raises ``ValueError`` with a message for people."""
    parts = str(text).split("-")
    if len(parts) != 2:
        raise ValueError(f"schedule {text!r}: expected START-END like 22:00-07:00")
    start, end = (_minutes(p) for p in parts)
    if start % _DAY == end % _DAY:
        raise ValueError(f"schedule {text!r}: start and end are the same time (leave --schedule out to train all day)")
    return Schedule(start % _DAY, end if end == _DAY else end % _DAY)


def smooth(previous: float | None, sample: float, alpha: float = 0.5) -> float:
    """Exponential moving average of a load sample: one spike does not pause the node."""
    return sample if previous is None else alpha * sample + (1 - alpha) * previous


@dataclass(frozen=True)
class BusyState:
    busy: bool = False
    since: float | None = None  # when ``busy`` last changed (clock of the caller); None: never


def busy_step(state: BusyState, load_pct: float, threshold_pct: float, now: float, *,
              margin_pct: float = 10.0, min_hold_s: float = 60.0) -> BusyState:
    """Hysteresis on the machine's load from *other* processes.

    Becomes busy when the (smoothed) load reaches ``threshold_pct``; becomes free only once it has
    fallen below ``threshold_pct - margin_pct``. Either change waits until the previous one is
    ``min_hold_s`` old, so a load hovering at the threshold cannot make the node leave and rejoin
    its groups every few seconds (each resume costs a state download).
    """
    if state.since is not None and now - state.since < min_hold_s:
        return state
    if not state.busy and load_pct >= threshold_pct:
        return BusyState(True, now)
    if state.busy and load_pct < threshold_pct - margin_pct:
        return BusyState(False, now)
    return state
