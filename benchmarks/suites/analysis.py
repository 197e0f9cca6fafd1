"""Figures from a run's samples and reports: quantiles, and bursts of traffic in byte-counter samples.

Pure functions of their inputs (no processes, no clock): ``samples`` are the
``(unix time, {node: (bytes up, bytes down)})`` pairs :class:`benchmarks.suites.swarm.Counters`
records.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

__all__ = ["Burst", "bursts", "fmt_q", "group_span", "quantiles"]


def quantiles(xs: list[float]) -> dict[str, float] | None:
    """median, min, max, n of ``xs`` (None when empty)."""
    if not xs:
        return None
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def fmt_q(q: dict[str, float] | None, digits: int = 3) -> str:
    if not q:
        return "-"
    return f"{q['median']:.{digits}f} ({q['min']:.{digits}f}-{q['max']:.{digits}f})"


@dataclass(frozen=True)
class Burst:
    """A stretch of one node's traffic above a rate threshold (an all-reduce, a state download)."""

    start: float  # unix time the first 1% of its bytes had passed (interpolated)
    end: float  # ... the last 99%
    nbytes: float  # bytes in it, minus the background rate around it

    @property
    def seconds(self) -> float:
        """Duration from 1% to 99% of the bytes, scaled to 100%."""
        return (self.end - self.start) / 0.98


def group_span(samples: list[tuple[float, dict[int, tuple[int, int]]]], nodes: list[int], threshold_bytes_s: float,
               t_from: float, t_to: float, merge_gap_s: float = 0.5) -> Burst | None:
    """The biggest burst of the *summed* uploads of ``nodes`` in ``[t_from, t_to]``.

    Every byte of an all-reduce is uploaded by one of its members, so the sum sees the whole
    transfer, including reducers still returning parts after their own share arrived; a transfer
    that involves one uploader (a state download) stays below a threshold set at a share of the
    group's total capacity.
    """
    summed = [(t, {0: (sum(c[i][0] for i in nodes), 0)}) for t, c in samples if all(i in c for i in nodes)]
    found = bursts(summed, 0, 0, threshold_bytes_s, t_from, t_to, merge_gap_s, subtract_background=False)
    return max(found, key=lambda b: b.nbytes) if found else None


def bursts(samples: list[tuple[float, dict[int, tuple[int, int]]]], node: int, direction: int, threshold_bytes_s: float,
           t_from: float = 0.0, t_to: float = float("inf"), merge_gap_s: float = 0.35,
           subtract_background: bool = True) -> list[Burst]:
    """Bursts of ``node``'s traffic (direction 0: up, 1: down) in ``[t_from, t_to]``.

    A burst is a run of sampling intervals whose rate exceeds ``threshold_bytes_s`` (gaps shorter
    than ``merge_gap_s`` are bridged), widened by one interval on each side so that partly filled
    edge intervals count; unless told otherwise, the background rate (the median rate of the
    intervals below the threshold in the window) is subtracted from its bytes.
    """
    pts = [(t, c[node][direction]) for t, c in samples if node in c and t_from <= t <= t_to]
    if len(pts) < 3:
        return []
    rates = [(pts[k + 1][1] - pts[k][1]) / max(1e-9, pts[k + 1][0] - pts[k][0]) for k in range(len(pts) - 1)]
    quiet = [r for r in rates if r <= threshold_bytes_s]
    background = statistics.median(quiet) if quiet and subtract_background else 0.0
    runs: list[list[int]] = []
    for k, r in enumerate(rates):
        if r > threshold_bytes_s:
            if runs and pts[k][0] - pts[runs[-1][1] + 1][0] <= merge_gap_s:
                runs[-1][1] = k
            else:
                runs.append([k, k])
    out = []
    for a, b in runs:
        a, b = max(0, a - 1), min(len(rates) - 1, b + 1)
        t0, t1 = pts[a][0], pts[b + 1][0]
        total = pts[b + 1][1] - pts[a][1] - background * (t1 - t0)
        if total <= 0:
            continue

        def crossing(level: float) -> float:
            target = pts[a][1] + level
            for k in range(a, b + 1):
                lo, hi = pts[k][1], pts[k + 1][1]
                if hi >= target:
                    w = (target - lo) / (hi - lo) if hi > lo else 0.0
                    return pts[k][0] + w * (pts[k + 1][0] - pts[k][0])
            return t1

        out.append(Burst(crossing(0.01 * total), crossing(0.99 * total), total))
    return out
