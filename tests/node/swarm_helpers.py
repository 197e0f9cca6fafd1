"""Helpers for tests that run real ``swarm join`` processes on 127.0.0.1."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from node.launcher import SwarmLauncher

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


def fork_problems(shared: dict[str, set[str]], *, max_forked: int = 1) -> list[str]:
    """What is wrong with the replicas over ``shared`` (round -> hashes), or [] if nothing.

    A volunteer swarm cannot rule out a forked round: a reducer that fails for one member but not
    for another (a timeout on a loaded machine, a peer killed between two members' last parts),
    or a round that raced a join, leaves members with different averages. The design's promise
    is that every fork is *detected and healed*: the members' state hashes differ at the next
    all-reduce, the minority downloads the reference state, and the round after agrees again.
    So: the newest round agrees, every forked round is followed by an agreeing one, and forks
    are rare (at most ``max_forked``).
    """
    if not shared:
        return ["no round was completed by every node"]
    rounds = sorted(shared, key=int)
    forked = [r for r in rounds if len(shared[r]) > 1]
    problems = []
    if len(shared[rounds[-1]]) > 1:
        problems.append(f"the newest common round {rounds[-1]} is forked")
    for r in forked:
        after = str(int(r) + 1)
        if after in shared and len(shared[after]) > 1:
            problems.append(f"the fork at round {r} was not healed by round {after}")
    if len(forked) > max_forked:
        problems.append(f"{len(forked)} forked rounds ({forked}), more than {max_forked}")
    return problems
