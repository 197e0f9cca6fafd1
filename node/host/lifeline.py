"""Nothing outlives its launcher: children die with the process that started them, SIGKILL included.

Two tools (Linux; elsewhere both do nothing and say so once in the log):

* :func:`die_with_parent` -- a ``preexec_fn`` for ``subprocess.Popen``: the kernel sends the child
  ``sig`` when its launcher dies, however it dies (``prctl(PR_SET_PDEATHSIG)``; the setting
  survives ``exec``, so ``ip netns exec ... python -m node join`` keeps it). The one launcher
  (node/cli/launcher.py: ``swarm demo``, the tests, the benchmarks) starts every node and coordinator so,
  and the namespace testbed its anchor.
  The kernel ties the signal to the *thread* that forked the child: launch from a thread that
  lives as long as the child (the main thread, as every launcher here does).
* :func:`guard_forked_helpers` -- for the node itself. hivemind forks its DHT and averager
  processes, and the DHT process starts the go ``p2pd`` daemon; none of them would notice the
  node's death. After this call, every process forked from here runs a watchdog thread that
  polls its parent (twice a second); when the parent is gone it SIGKILLs its own descendants
  (``p2pd``) and then itself. So ``kill -9`` of a node leaves nothing running within a second.

And for a launcher's own clean-up, :func:`unwind_on_signals`: the first SIGINT, SIGTERM or SIGHUP
(a closed terminal) raises an exception in the main thread, so every ``with`` and ``finally``
stops what it started; later signals are ignored, so they cannot cut that clean-up short.
``swarm demo``, the benchmark suites and the namespace testbed use it.
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

__all__ = ["STOP_SIGNALS", "descendants", "die_with_parent", "guard_forked_helpers", "set_parent_death_signal",
           "unwind_on_signals"]

logger = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
POLL_S = 0.5
_guarded = False


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    return ctypes.CDLL("libc.so.6", use_errno=True).prctl


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies. False where unsupported."""
    prctl = _prctl()
    return prctl is not None and prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn``: the child receives ``sig`` when this (launching) process dies."""
    launcher = os.getpid()
    prctl = _prctl()  # looked up here: the child, forked from a process with threads, only calls it

    def preexec() -> None:  # runs in the child between fork and exec: no imports, no logging, no locks
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != launcher:  # the launcher died before prctl took effect
            os.kill(os.getpid(), sig)

    return preexec


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children first), read from /proc."""
    parent_of: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        if fields and fields[0] != "Z":
            parent_of[int(entry)] = int(fields[1])
    out, frontier = [], [pid]
    while frontier:
        kids = [p for p, pp in parent_of.items() if pp in frontier]
        out += kids
        frontier = kids
    return out


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_S)
    for pid in descendants(os.getpid()):  # p2pd, and whatever else this helper started
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    os.kill(os.getpid(), signal.SIGKILL)


def _after_fork_in_child() -> None:
    threading.Thread(target=_watch, args=(os.getppid(),), name="lifeline", daemon=True).start()


def guard_forked_helpers() -> None:
    """From now on, every process forked from this one dies (with its descendants) when this one does."""
    global _guarded
    if _guarded or not sys.platform.startswith("linux"):
        return
    os.register_at_fork(after_in_child=_after_fork_in_child)
    _guarded = True


def unwind_on_signals(exc: Callable[[int], BaseException], signals: tuple[int, ...] = STOP_SIGNALS) -> Callable[[], None]:
    """Until the returned function is called (it puts the previous handlers back): the first of
    ``signals`` raises ``exc(signum)`` and ignores all of ``signals`` from then on. Main thread only."""
    def unwind(signum: int, _frame: object) -> None:
        for sig in signals:
            signal.signal(sig, signal.SIG_IGN)
        raise exc(signum)

    previous = {sig: signal.signal(sig, unwind) for sig in signals}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
