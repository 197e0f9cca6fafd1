"""One typed config tree for a simulated run: units and defaults visible in one place.

Scenarios (``scenarios.py``) are functions that return a :class:`SimConfig`; the CLI only changes a
few fields of one. Every duration is in seconds, every link speed in Mbit/s, every price in US$.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from coordinator.cost import PriceTable
from coordinator.planner import Budget
from coordinator.states import StateThresholds
from protocol import ModelSpec

from .agreement import HOSTILE_KINDS

__all__ = ["Distribution", "LinkProfile", "MassLeave", "PlanPolicy", "Population", "RoundProtocol", "SimConfig"]

KINDS = ("const", "lognormal", "exp", "uniform")


@dataclass(frozen=True)
class Distribution:
    """A positive random quantity.

    ``const``: a. ``lognormal``: median a, shape sigma b. ``exp``: mean a. ``uniform``: [a, b].
    """

    kind: str
    a: float
    b: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"distribution kind must be one of {KINDS}, not {self.kind!r}")

    def sample(self, rng: random.Random) -> float:
        if self.kind == "const":
            return self.a
        if self.kind == "lognormal":
            return self.a * math.exp(self.b * rng.gauss(0.0, 1.0))
        if self.kind == "exp":
            return rng.expovariate(1.0 / self.a)
        return rng.uniform(self.a, self.b)

    def mean(self) -> float:
        if self.kind == "lognormal":
            return self.a * math.exp(self.b * self.b / 2)
        if self.kind == "uniform":
            return (self.a + self.b) / 2
        return self.a


def const(x: float) -> Distribution:
    return Distribution("const", x)


@dataclass(frozen=True)
class LinkProfile:
    """A node's access link, drawn once per node."""

    up_mbps: Distribution
    down_mbps: Distribution
    rtt_ms: Distribution = field(default_factory=lambda: const(0.0))  # to a typical peer
    max_mbps: float = 10_000.0  # clip of the lognormal tail


@dataclass(frozen=True)
class Population:
    """A kind of node: hardware mix, links, price and churn. ``count`` identities, each alternating
    online sessions and offline gaps (or one session, when ``returns`` is False)."""

    name: str
    count: int
    gpus: tuple[tuple[str, float], ...]  # (sim.catalog GPU name, weight)
    link: LinkProfile
    session_s: Distribution  # length of one online session (for spot nodes: time to preemption)
    gap_s: Distribution  # offline time between sessions (its mean, when the daily pattern is on)
    price: str = "volunteer"  # "volunteer": declares $0 (the coordinator prices electricity); "spot"; "on_demand"
    daily_amplitude: float = 0.0  # 0..1: arrivals swing by +-this much around the mean over a local day
    peak_hour: float = 20.0  # local hour of the most arrivals
    regions: tuple[tuple[float, float], ...] = ((0.0, 1.0),)  # (UTC offset in hours, weight)
    online_at_start: float | None = None  # share online at t=0; None: the long-run availability
    arrive_at_s: float = 0.0  # the population appears at this time (a flash crowd); 0: from the start
    arrive_over_s: float = 0.0  # first arrivals spread uniformly over this window
    returns: bool = True  # after a session ends the node comes back later
    graceful: float = 0.5  # share of leaves announced with a "leaving" heartbeat (the rest crash)
    throughput_sigma: float = 0.15  # node-to-node spread of tokens/s (lognormal shape)
    tokens_per_s: tuple[float, ...] = ()  # measured rates instead of the catalog model, cycled over nodes
    declared_usd_h: float | None = None  # the $/h each node declares, instead of the ``price`` rule (fleets)

    def availability(self) -> float:
        s, g = self.session_s.mean(), self.gap_s.mean()
        return s / (s + g) if self.returns else 1.0


@dataclass(frozen=True)
class MassLeave:
    """At ``at_s``, a share of the online nodes (of one population, or all) leave at once."""

    at_s: float
    fraction: float
    population: str | None = None
    returns: bool = True  # False: they never come back (a donor pulls out)


@dataclass(frozen=True)
class RoundProtocol:
    """The DiLoCo round as ``node/train/trainer.py`` runs it, with the knobs of ``node/host/config.py``."""

    round_tokens: int  # swarm-wide tokens per round (the manifest's)
    # peers per all-reduce group; None: one group of every ready peer, as the node runs (no group size)
    target_group_size: int | None = None
    grouping: str = "random"  # "random" (hivemind matchmaking) | "bandwidth" (tiers; the node has no such grouping)
    # min_matchmaking_time (the node's matchmaking_time_s): the all-reduce starts this long after the target
    matchmaking_s: float = 3.0
    progress_lag_s: float = 0.0  # peers notice the target this late and keep computing meanwhile
    eval_s: float = 0.0  # evaluation + checkpoint after each successful round (node idle)
    assumed_bandwidth_mbps: float = 20.0  # node config bandwidth_mbps: timeouts derive from it
    timeout_group_size: int = 64  # the node sizes its all-reduce timeout for this many peers ...
    timeout_bytes_per_param: float = 4.0  # ... and for an fp32 payload, whatever the codec (node/averaging/timeouts.py)
    failure_detect_s: float = 5.0  # the rest notice a member that died mid-all-reduce this late (chunk timeout)
    # node/averaging/averager.py: survivors finish the round, the dead reducer's share zeroed (True: the round fails for all)
    leave_fails_group: bool = False
    straggler_policy: str = "fail_group"  # group over its timeout: "fail_group" (averager.step raises) | "ban"
    group_failure_rate: float = 0.0  # chance a group's all-reduce fails for other reasons
    # share of nodes hostile in the agreement on failed reducers, and how (sim/agreement.py: lie |
    # withhold | stall, as node/host/faults.py's seams); the node's settle() decides each group's round
    hostile_fraction: float = 0.0
    hostile_kind: str = "lie"
    state_bytes_per_param: float = 8.0  # a joiner downloads fp32 params + outer momentum
    download_failure_rate: float = 0.0  # chance a state download fails (retried with backoff)

    def __post_init__(self) -> None:
        if self.round_tokens <= 0:
            raise ValueError("round_tokens must be positive")
        if self.grouping not in ("random", "bandwidth"):
            raise ValueError("grouping must be 'random' or 'bandwidth'")
        if self.straggler_policy not in ("fail_group", "ban"):
            raise ValueError("straggler_policy must be 'fail_group' or 'ban'")
        if not 0.0 <= self.hostile_fraction <= 1.0:
            raise ValueError("hostile_fraction must be within 0..1")
        if self.hostile_kind not in HOSTILE_KINDS:
            raise ValueError(f"hostile_kind must be one of {HOSTILE_KINDS}")
        if self.target_group_size is not None and self.target_group_size < 1:
            raise ValueError("target_group_size must be >= 1 (or None: one group of every ready peer)")

    def group_size(self, peers: int) -> int:
        """The largest group of a swarm of ``peers``: the target, or all of them when there is none."""
        return max(1, min(peers, self.target_group_size) if self.target_group_size else peers)


@dataclass(frozen=True)
class PlanPolicy:
    """The coordinator's cost plan (:func:`coordinator.planner.make_plan`) run inside the simulation.

    Re-planned at a round's close every ``every_rounds`` rounds, and at once when nodes join or leave.
    A paid node put on standby abandons its inner phase (an all-reduce under way finishes), then idles
    unbilled; reactivated, it downloads the state and computes (node/train/trainer.py's ``pause``)."""

    budget: Budget = field(default_factory=Budget)
    every_rounds: int = 3
    hysteresis: float = 0.2


@dataclass(frozen=True)
class SimConfig:
    scenario: str
    populations: tuple[Population, ...]
    protocol: RoundProtocol
    model: ModelSpec = field(default_factory=ModelSpec)
    codec: str = "fp16"  # a name in sim.catalog.CODECS
    hours: float = 24.0
    seed: int = 0
    mass_leaves: tuple[MassLeave, ...] = ()
    prices: PriceTable = field(default_factory=PriceTable)  # the coordinator's price table
    thresholds: StateThresholds = field(default_factory=StateThresholds)  # the coordinator's peer states
    heartbeat_s: float = 30.0
    sample_s: float = 600.0  # one row of the time series per this many simulated seconds
    ledger_every: int = 6  # price the ledger (coordinator.cost over every node) every n-th sample
    target_tokens: int = 0  # the run's token budget, for the ledger's progress and ETA (0: none)
    initial_download: bool = False  # nodes online at t=0 start from the seed's weights, no download
    keep_trace: bool = False  # keep every trace record in memory (small runs, tests)
    plan: PlanPolicy | None = None  # None: admit everyone (no cost plan)

    @property
    def duration_s(self) -> float:
        return self.hours * 3600.0

    def peers(self) -> int:
        return sum(p.count for p in self.populations)
