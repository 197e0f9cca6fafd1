"""Helpers for tests that run real ``swarm join`` processes on 127.0.0.1."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from node.cli.launcher import SwarmLauncher

__all__ = ["wait_until", "common_hashes", "fork_problems", "latest_agrees"]


def wait_until(swarm: SwarmLauncher, predicate: Callable[[dict[str, dict[str, Any]]], bool], timeout: float, what: str) -> dict[str, dict[str, Any]]:
    """Poll node statuses until ``predicate`` holds; fail with the last statuses after ``timeout``."""
    deadline = time.monotonic() + timeout
    sts: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        sts = swarm.statuses()
        if predicate(sts):
            return sts
        for name, proc in swarm.procs.items():
            if proc.poll() not in (None, 0, -9) and name in sts:
                log = (swarm.state_dir(name) / "node.log").read_text()[-3000:]
                raise AssertionError(f"{name} exited with {proc.returncode} while waiting for {what}:\n{log}")
        time.sleep(0.5)
    summary = {n: {k: s.get(k) for k in ("round", "rounds", "status", "final_val_bpb")} for n, s in sts.items()}
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; statuses: {summary}")


def common_hashes(sts: dict[str, dict[str, Any]], names: list[str]) -> dict[str, set[str]]:
    """For every round all ``names`` completed: the set of global-state hashes they hold."""
    rounds = set.intersection(*(set(sts[n]["hashes"]) for n in names))
    return {r: {sts[n]["hashes"][r] for n in names} for r in rounds}


def latest_agrees(sts: dict[str, dict[str, Any]], names: list[str]) -> bool:
    """The newest round every one of ``names`` completed leaves them all with one global state."""
    shared = common_hashes(sts, names)
    return bool(shared) and len(shared[max(shared, key=int)]) == 1


def fork_problems(shared: dict[str, set[str]], *, max_forked: int = 0) -> list[str]:
    """What is wrong with the replicas over ``shared`` (round -> hashes), or [] if nothing.

    The members of a group agree on which reducers failed before anyone steps, and a member whose
    state was not the group's takes no step (node/policies/agreement.py, ``node.train.rounds.land``): so once
    every node has contributed, no two nodes hold different states of one round. Tests pass the
    rounds from then on; ``max_forked`` stays 0 unless a test makes forks on purpose.
    """
    if not shared:
        return ["no round was completed by every node"]
    forked = [r for r in sorted(shared, key=int) if len(shared[r]) > 1]
    return [f"{len(forked)} forked rounds ({forked}), more than {max_forked}"] if len(forked) > max_forked else []
