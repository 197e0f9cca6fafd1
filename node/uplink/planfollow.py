"""Following the signed cost plan: fetch ``GET /api/v1/plan``, verify it, and set the work gate.

The plan must be signed by the run key pinned with ``--run-key`` (``open_signed_by``): no other key,
not even the coordinator's TLS or a peer's, can put this node on standby. Without a pinned key the
node trusts no plan and keeps training (logged once). A plan older than the one obeyed is ignored
(a stale cache or a replay); a peer the plan does not list is active.

Standby means: stop training (the loop leaves its inner phase at the next step and waits), send no
reports (no rounds), heartbeats say "standby". Activation reopens the gate; the loop then downloads
the swarm's current state before its first round, so it is back within a round.
"""
from __future__ import annotations

import logging
import urllib.error
import urllib.request

from protocol import DEFAULT_MAX_SIZE, Plan, RemoteProtocolError, open_signed_by

from node.host.gate import WorkGate

__all__ = ["PlanFollower", "read_plan"]

logger = logging.getLogger(__name__)

PLAN_PATH = "/api/v1/plan"


def read_plan(data: bytes, *, run_key: str, run_id: str, peer_id: str) -> tuple[int, str, str]:
    """``(seq, state, reason)`` for ``peer_id`` from plan bytes; raises ``RemoteProtocolError``
    (forged, malformed) or ``ValueError`` (another run's plan)."""
    plan = open_signed_by(data, run_key).message
    if not isinstance(plan, Plan):
        raise ValueError("not a plan")
    if plan.run_id != run_id:
        raise ValueError(f"a plan for run {plan.run_id!r}, not {run_id!r}")
    for p in plan.peers:
        if p.peer_id == peer_id:
            return plan.seq, p.state if p.state in ("active", "standby") else "active", p.reason
    return plan.seq, "active", "not in the plan"


class PlanFollower:
    """Polled from the node's periodic thread; owns the gate's "standby" reason."""

    def __init__(self, coordinator: str, run_key: str | None, run_id: str, peer_id: str, gate: WorkGate) -> None:
        self.url = coordinator.rstrip("/") + PLAN_PATH
        self.run_key, self.run_id, self.peer_id, self.gate = run_key, run_id, peer_id, gate
        self.seq = 0  # the plan obeyed
        self.state, self.reason = "active", ""
        self.refused = 0  # plans refused (bad signature, wrong run, malformed)
        self._warned = False

    def poll(self, timeout: float = 5.0) -> None:
        if not self.run_key:
            if not self._warned:
                logger.info("no --run-key pinned: the coordinator's cost plan is not followed")
                self._warned = True
            return
        try:
            with urllib.request.urlopen(self.url, timeout=timeout) as response:
                data = response.read(DEFAULT_MAX_SIZE + 1)
        except (urllib.error.URLError, OSError) as e:  # 503 before the first plan, or the coordinator is down
            logger.debug("no plan: %s", e)
            return
        try:
            seq, state, reason = read_plan(data, run_key=self.run_key, run_id=self.run_id, peer_id=self.peer_id)
        except (RemoteProtocolError, ValueError) as e:
            self.refused += 1
            logger.warning("refused a cost plan: %s", e)
            return
        self.apply(seq, state, reason)

    def apply(self, seq: int, state: str, reason: str) -> None:
        if seq < self.seq:
            return
        self.seq = seq
        if state != self.state:
            logger.info("cost plan %d: %s (%s)", seq, state, reason)
        self.state, self.reason = state, reason
        why = f"standby by the cost plan ({reason})" if reason else "standby by the cost plan"
        self.gate.set("standby", state == "standby", why)
