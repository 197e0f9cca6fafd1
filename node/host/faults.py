"""Fault injection for churn tests: a seam, not a sleep.

``CAPASWARM_FAULT=<action>_mid_allreduce:<n>`` makes a node fail in the middle of its n-th
all-reduce, right after it streamed its first part to a remote reducer:

    kill  SIGKILL to the node's whole process group (p2pd included): a machine that dies
    hang  SIGSTOP to the node's whole process group: a machine that freezes (no FIN, no RST)

``CAPASWARM_FAULT=poison:<scale>`` makes a node a poisoner: every pseudo-gradient it sends is
its honest one times ``scale`` (``poison:-100``: sign flip x100), the attack that robust
aggregation (``node.averaging.robust``) must bound and report.

``CAPASWARM_FAULT=agreement:<how>`` changes only what a node posts in the agreement on failed
reducers (``node.policies.agreement``), as a hostile copy of the node would; it still decides its
own round honestly:

    lie       post "every reducer failed" every round
    withhold  post nothing
    stall     post only after the others' longest wait (``agreement.wait_s``) is over

``CAPASWARM_FAULT=blind_tracker`` makes the progress tracker's first read of the swarm's progress
come back empty, as when a joiner's DHT has just bootstrapped and does not find the record yet.

Unset (always, outside tests) it costs one dictionary lookup per all-reduce.
"""
from __future__ import annotations

import os
import signal

__all__ = ["AGREEMENT_FAULTS", "agreement_fault", "blind_tracker", "maybe_fail_mid_allreduce", "poison_scale"]

AGREEMENT_FAULTS = ("lie", "withhold", "stall")
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


def poison_scale() -> float | None:
    """The factor a poisoning node scales its pseudo-gradients by, or None (an honest node)."""
    action, _, scale = os.environ.get("CAPASWARM_FAULT", "").partition(":")
    if action != "poison":
        return None
    try:
        return float(scale)
    except ValueError:
        return None


def blind_tracker() -> bool:
    """Whether the tracker's first view of the swarm is to be the empty one (a joiner's missed read)."""
    return os.environ.get("CAPASWARM_FAULT", "") == "blind_tracker"


def agreement_fault() -> str | None:
    """How this node misbehaves in the agreement (one of ``AGREEMENT_FAULTS``), or None (honest)."""
    action, _, how = os.environ.get("CAPASWARM_FAULT", "").partition(":")
    return how if action == "agreement" and how in AGREEMENT_FAULTS else None
