"""Fault injection for churn tests: a seam, not a sleep.

``CAPASWARM_FAULT=<action>_mid_allreduce:<n>`` makes a node fail in the middle of its n-th
all-reduce, right after it streamed its first part to a remote reducer:

    kill  SIGKILL to the node's whole process group (p2pd included): a machine that dies
    hang  SIGSTOP to the node's whole process group: a machine that freezes (no FIN, no RST)

Unset (always, outside tests) it costs one dictionary lookup per all-reduce.
"""
from __future__ import annotations

import os
import signal

__all__ = ["maybe_fail_mid_allreduce"]

_SIGNALS = {"kill": signal.SIGKILL, "hang": signal.SIGSTOP}
_allreduces_started = 0


def _planned() -> tuple[int, int] | None:
    spec = os.environ.get("CAPASWARM_FAULT", "")
    action, _, n = spec.partition("_mid_allreduce:")
    if action not in _SIGNALS or not n.isdigit():
        return None
    return _SIGNALS[action], int(n)


def allreduce_started() -> None:
    global _allreduces_started
    _allreduces_started += 1


def maybe_fail_mid_allreduce() -> None:
    plan = _planned()
    if plan is not None and _allreduces_started == plan[1]:
        os.killpg(os.getpgrp(), plan[0])
