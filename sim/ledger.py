"""Accounting: what every node did, what the swarm did over time, and what the coordinator would bill.

Two views of the same run are kept side by side:

- the **sim's own integrals**, exact over piecewise-constant state (nodes online, nodes computing,
  swarm rate, the hourly price of everything online): the truth, including time the ledger never
  sees (state downloads, the partial round of a node that crashed);
- the **coordinator's ledger**: per node, the tokens of successful rounds and the wall time of every
  reported round, priced with :func:`coordinator.cost.node_cost` and summed with
  :func:`coordinator.cost.swarm_cost`; peers' states from :func:`coordinator.states.peer_state`
  on their heartbeat times. This is the same code the real coordinator runs.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from coordinator.cost import NodeCost, SwarmCost, Usage, is_cpu, node_cost, swarm_cost
from coordinator.states import PeerState, StateThresholds, peer_state

from .population import Nodes

__all__ = ["Accounts", "LedgerView", "WASTE_CAUSES"]

WASTE_CAUSES = (
    "leave",  # the leaver's own unfinished round
    "left_group",  # the round of a group a member left mid-all-reduce (leave_fails_group)
    "timeout",  # the group overran the node's all-reduce timeout
    "failure",  # a random failure of the group
    "straggler",  # dropped from its group as too slow (straggler_policy "ban")
    "standby",  # the inner phase a node abandoned when the cost plan put it on standby
    "agreement",  # the group's agreement on failed reducers dropped the round (a hostile majority)
)


@dataclass(frozen=True)
class LedgerView:
    cost: SwarmCost  # coordinator.cost.swarm_cost over every node the coordinator has heard of
    states: dict[str, int]  # peers per coordinator.states.PeerState value


class Accounts:
    def __init__(self, nodes: Nodes, heartbeat_s: float, thresholds: StateThresholds, target_tokens: int = 0) -> None:
        n = len(nodes)
        self.nodes, self.heartbeat_s, self.thresholds = nodes, heartbeat_s, thresholds
        self.target_tokens = target_tokens
        self.target_reached_at: float | None = None  # when tokens into the model first reached the target
        self.usd_at_target: float | None = None  # true $ spent by then
        self.gpus = [0 if is_cpu(hw) else hw.count for hw in nodes.hardware]  # Usage.gpus
        # per node
        self.tokens_ok = [0.0] * n  # tokens of rounds that went into the model
        self.tokens_wasted = [0.0] * n
        self.billed_s = [0.0] * n  # wall time of every reported round (what the ledger bills)
        self.reports = [0] * n
        self.failed = [0] * n  # reported rounds that failed
        self.paused = [False] * n  # on standby: online but neither computing nor billed
        self.paused_s = [0.0] * n  # closed standby stretches; see online_seconds()
        self.paused_at = [0.0] * n  # when the current one began
        self.last_rate = [0.0] * n  # tokens / wall s of the latest reported round
        self.compute_s = [0.0] * n
        self.online_s = [0.0] * n  # closed sessions only; see online_seconds()
        self.session_start: list[float | None] = [None] * n  # None while offline
        self.left_at = [-1.0] * n  # end of the latest session (-1: never online)
        self.last_status = ["joining"] * n  # the status its latest heartbeat carried
        self.bytes_sent = [0.0] * n
        self.bytes_received = [0.0] * n
        # swarm totals
        self.wasted_by_cause = dict.fromkeys(WASTE_CAUSES, 0.0)
        self.tokens_ok_total = 0.0
        self.bytes_total = 0.0  # sent + received, all nodes
        self.downloads = 0
        # integrals, advanced by the engine before time moves
        self.t = 0.0
        self.n_online = 0
        self.online_rate = 0.0  # sum of tokens/s of nodes online
        self.burn = 0.0  # sum of $/h of nodes online
        self.rate = 0.0  # swarm computing rate (set by the swarm)
        self.n_computing = 0
        self.online_node_s = 0.0
        self.compute_node_s = 0.0
        self.computed_tokens = 0.0
        self.possible_tokens = 0.0  # had every online node computed all the time
        self.true_usd = 0.0

    # --- integrals ------------------------------------------------------------------------------
    def advance(self, t: float) -> None:
        dt = t - self.t
        if dt > 0:
            self.online_node_s += self.n_online * dt
            self.compute_node_s += self.n_computing * dt
            self.computed_tokens += self.rate * dt
            self.possible_tokens += self.online_rate * dt
            self.true_usd += self.burn * dt / 3600.0
            self.t = t

    # --- events ---------------------------------------------------------------------------------
    def join(self, i: int, t: float) -> None:
        self.session_start[i] = t
        self.last_status[i] = "joining"
        self.n_online += 1
        self.online_rate += self.nodes.rate[i]
        self.burn += self.nodes.price[i].usd_per_hour

    def leave(self, i: int, t: float, graceful: bool) -> None:
        start = self.session_start[i]
        assert start is not None
        self.online_s[i] += t - start
        self.session_start[i] = None
        self.left_at[i] = t
        if graceful:
            self.last_status[i] = "leaving"
        self.n_online -= 1
        self.online_rate -= self.nodes.rate[i]
        self.burn -= self.nodes.price[i].usd_per_hour
        if self.n_online == 0:  # no drift left behind by += / -= of floats
            self.online_rate = self.burn = 0.0

    def report(self, i: int, tokens: float, wall_s: float, ok: bool) -> None:
        """A contribution report: the ledger bills its wall time, and counts its tokens if ok."""
        self.reports[i] += 1
        self.billed_s[i] += wall_s
        self.last_status[i] = "training"
        if ok:
            self.tokens_ok[i] += tokens
            self.tokens_ok_total += tokens
            if self.target_tokens and self.target_reached_at is None and self.tokens_ok_total >= self.target_tokens:
                self.target_reached_at, self.usd_at_target = self.t, self.true_usd
        else:
            self.failed[i] += 1
        self.last_rate[i] = tokens / wall_s if wall_s > 0 else 0.0

    def pause(self, i: int) -> None:
        """Standby (the cost plan): online, but it neither computes nor costs; heartbeats say so."""
        if not self.paused[i]:
            self.paused[i] = True
            self.paused_at[i] = self.t
            self.online_rate -= self.nodes.rate[i]
            self.burn -= self.nodes.price[i].usd_per_hour
            self.last_status[i] = "standby"

    def resume(self, i: int) -> None:
        if self.paused[i]:
            self.paused[i] = False
            self.paused_s[i] += self.t - self.paused_at[i]
            self.online_rate += self.nodes.rate[i]
            self.burn += self.nodes.price[i].usd_per_hour
            self.last_status[i] = "joining"

    def waste(self, i: int, tokens: float, cause: str) -> None:
        self.tokens_wasted[i] += tokens
        self.wasted_by_cause[cause] += tokens

    def transfer(self, sender: int, receiver: int, nbytes: float) -> None:
        if sender >= 0:
            self.bytes_sent[sender] += nbytes
        self.bytes_received[receiver] += nbytes
        self.bytes_total += nbytes if sender < 0 else 2 * nbytes

    def exchange(self, i: int, nbytes: float) -> None:
        """All-reduce traffic: a member sends and receives the same amount."""
        self.bytes_sent[i] += nbytes
        self.bytes_received[i] += nbytes
        self.bytes_total += 2 * nbytes

    # --- views ----------------------------------------------------------------------------------
    def online_seconds(self, i: int, now: float) -> float:
        """Seconds online and billable: standby stretches (the cost plan) are not paid for."""
        start = self.session_start[i]
        paused = self.paused_s[i] + (now - self.paused_at[i] if self.paused[i] else 0.0)
        return self.online_s[i] + (now - start if start is not None else 0.0) - paused

    def state(self, i: int, now: float) -> PeerState:
        """The peer state the coordinator shows for node ``i``: its last heartbeat is the latest
        multiple of ``heartbeat_s`` into its session, or its "leaving" message."""
        start = self.session_start[i]
        if start is not None:
            last_seen = start + (now - start) // self.heartbeat_s * self.heartbeat_s
        elif self.last_status[i] == "leaving":
            last_seen = self.left_at[i]
        else:
            last_seen = self.left_at[i] - (self.left_at[i] % self.heartbeat_s)
        return peer_state(
            last_seen=last_seen, last_status=self.last_status[i], reports=self.reports[i],
            now=now, thresholds=self.thresholds,
        )

    def ledger(self, now: float, target_tokens: int, wall: Callable[[int, float], float] | None = None) -> LedgerView:
        """Price every node ever seen with the coordinator's cost model.

        ``wall`` replaces the billed seconds (e.g. with :meth:`online_seconds`, the true cost of
        every hour a node was up); peer states then stay the coordinator's."""
        pairs: list[tuple[Usage, NodeCost]] = []
        states = dict.fromkeys((s.value for s in PeerState), 0)
        nodes = self.nodes
        for i in range(len(nodes)):
            if self.left_at[i] < 0 and self.session_start[i] is None:
                continue  # never online: the coordinator has never heard of it
            state = self.state(i, now)
            states[state.value] += 1
            usage = Usage(
                tokens=int(self.tokens_ok[i]),
                wall_s=self.billed_s[i] if wall is None else wall(i, now),
                gpus=self.gpus[i],
                tokens_per_s=self.last_rate[i],
                active=state in (PeerState.ONLINE, PeerState.JOINING),
            )
            pairs.append((usage, node_cost(usage, nodes.price[i])))
        return LedgerView(swarm_cost(pairs, target_tokens), states)
