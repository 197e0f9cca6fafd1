"""The work gate: may this node train now, and if not, why.

One object, shared by the threads of a node:
- the trainer asks ``reasons`` between rounds (and between inner steps) and, while any holds,
  leaves its groups and waits in ``wait_open``;
- ``swarm ctl pause|resume`` (``node/host/ctl.py``) sets and clears the ``paused`` reason;
- the plan follower sets ``standby`` when the organizer's signed plan says so;
- the daemon's periodic thread calls ``refresh`` every few seconds, which re-decides the
  automatic reasons ``schedule`` (local clock) and ``busy`` (other processes' CPU, and other
  processes on our GPU) with the pure rules of ``node.policies.gate``.

Measuring "busy": the machine's CPU time minus the CPU time of this node's own process tree
(the trainer, hivemind's helpers, p2pd) over the last interval, as a share of all cores, so the
node's own training never pauses it. On a CUDA node where ``nvidia-smi`` exists, another process
holding a compute context on the GPU also counts as busy (GPU *utilization* cannot be split by
process, so it is not used). Without ``nvidia-smi`` the GPU is not checked.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable

import psutil

from node.policies.gate import REASONS, BusyState, Schedule, busy_step, smooth

__all__ = ["OtherLoad", "WorkGate", "gpu_used_by_others"]

logger = logging.getLogger(__name__)


class OtherLoad:
    """CPU use of every process but ours, in percent of the whole machine, between two calls.
    The three readings are arguments so that the arithmetic is testable without a busy machine."""

    def __init__(self, *, machine_cpu_s: Callable[[], float] | None = None, own_cpu_s: Callable[[], float] | None = None,
                 clock: Callable[[], float] = time.monotonic, cores: int | None = None) -> None:
        self.me = psutil.Process(os.getpid())
        self.cores = cores or psutil.cpu_count() or 1
        self._machine = machine_cpu_s or _machine_cpu_s
        self._own = own_cpu_s or self.own_cpu_s
        self._clock = clock
        self._last: tuple[float, float, float] | None = None  # (wall, machine busy cpu-s, our cpu-s)

    def own_cpu_s(self) -> float:
        """CPU seconds of this process and its children (hivemind's helpers, p2pd)."""
        total = 0.0
        for p in [self.me, *self.me.children(recursive=True)]:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return total

    def sample(self) -> float | None:
        """Percent of all cores used by other processes since the previous call (None the first time)."""
        now = (self._clock(), self._machine(), self._own())
        last, self._last = self._last, now
        if last is None or now[0] - last[0] <= 0:
            return None
        others = (now[1] - last[1]) - (now[2] - last[2])
        return max(0.0, min(100.0, 100.0 * others / ((now[0] - last[0]) * self.cores)))


def _machine_cpu_s() -> float:
    t = psutil.cpu_times()
    return t.user + t.system + getattr(t, "nice", 0.0) + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


def gpu_used_by_others(min_mib: float = 256.0) -> bool | None:
    """True when a process outside our tree holds a compute context of ``min_mib`` or more on a GPU;
    None when ``nvidia-smi`` is missing or fails (the GPU is then not checked)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=5, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    me = psutil.Process(os.getpid())
    ours = {me.pid, *(c.pid for c in me.children(recursive=True))}
    for line in out.splitlines():
        try:
            pid, mib = (float(x) for x in line.split(","))
        except ValueError:
            continue
        if int(pid) not in ours and mib >= min_mib:
            return True
    return False


class WorkGate:
    """The set of reasons that hold this node back from training (empty: train)."""

    def __init__(self, *, schedule: Schedule | None = None, busy_cpu_pct: float | None = None, check_gpu: bool = False,
                 load: Callable[[], float | None] | None = None, gpu_busy: Callable[[], bool | None] | None = None,
                 local_minute: Callable[[], float] | None = None) -> None:
        self.schedule, self.busy_cpu_pct, self.check_gpu = schedule, busy_cpu_pct, check_gpu
        self._load = load or (OtherLoad().sample if busy_cpu_pct is not None else (lambda: None))
        self._gpu_busy = gpu_busy or gpu_used_by_others
        self._local_minute = local_minute or (lambda: (lambda t: t.tm_hour * 60 + t.tm_min + t.tm_sec / 60)(time.localtime()))
        self._reasons: dict[str, str] = {}  # reason -> detail
        self._changed = threading.Condition()
        self._busy = BusyState()
        self.load_pct: float | None = None  # smoothed load of other processes, for status and metrics
        self.refresh(time.monotonic())

    # ------------------------------------------------------------------ reasons
    def set(self, reason: str, on: bool, detail: str = "") -> None:
        """Hold the node back for ``reason`` (or stop doing so). Wakes a trainer waiting in ``wait_open``."""
        if reason not in REASONS:
            raise ValueError(f"unknown gate reason {reason!r}; one of {', '.join(REASONS)}")
        with self._changed:
            before = set(self._reasons)
            if on:
                self._reasons[reason] = detail or reason  # a new detail alone (the load changed) is no news
            else:
                self._reasons.pop(reason, None)
            if before != set(self._reasons):
                if on:
                    logger.info("holding back from training: %s", self._reasons[reason])
                else:
                    logger.info("%s no longer holds the node back%s", reason,
                                "" if self._reasons else "; training resumes")
                self._changed.notify_all()

    @property
    def reasons(self) -> dict[str, str]:
        """Reasons now in force, in ``REASONS`` order: {reason: detail}."""
        with self._changed:
            return {r: self._reasons[r] for r in REASONS if r in self._reasons}

    @property
    def open(self) -> bool:
        with self._changed:
            return not self._reasons

    def describe(self) -> str:
        """One line: the reasons and their details, e.g. ``schedule 22:00-07:00; busy (other processes 93% CPU)``."""
        return "; ".join(self.reasons.values())

    def wait_open(self, stop: threading.Event, timeout: float = 1.0) -> bool:
        """Block up to ``timeout`` s for the gate to open (or ``stop``); True when it is open."""
        with self._changed:
            if self._reasons and not stop.is_set():
                self._changed.wait(timeout)
            return not self._reasons

    # ------------------------------------------------------------------ automatic reasons
    def refresh(self, now: float) -> None:
        """Re-decide ``schedule`` and ``busy``; ``now`` is a monotonic clock reading (seconds)."""
        if self.schedule is not None:
            self.set("schedule", not self.schedule.allows(self._local_minute()), f"outside the schedule {self.schedule}")
        if self.busy_cpu_pct is None:
            return
        sample = self._load()
        if sample is not None:
            self.load_pct = smooth(self.load_pct, sample)
        gpu = self._gpu_busy() if self.check_gpu else None
        load = 100.0 if gpu else (self.load_pct or 0.0)
        self._busy = busy_step(self._busy, load, self.busy_cpu_pct, now)
        what = "another process uses the GPU" if gpu else f"other processes use {self.load_pct or 0:.0f}% CPU"
        self.set("busy", self._busy.busy, f"busy ({what})")
