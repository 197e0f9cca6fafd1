"""The nodes: per-node constants (hardware, rate, links, price) and the churn that moves them.

Nodes are kept as a struct of arrays (one list per attribute, indexed by node id): ten thousand
small objects would cost more memory and attribute lookups than ten lists. Prices come from the
coordinator's own cost model (:func:`coordinator.cost.hourly_price`), so a volunteer who declares
$0 is priced at its GPU's electricity exactly as the real ledger would.
"""
from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from coordinator.cost import Price, hourly_price
from protocol import Hardware

from .catalog import GPUS, tokens_per_s
from .config import Population, SimConfig

__all__ = ["Churn", "Nodes", "build_nodes"]

MBIT = 1e6 / 8  # bytes per second in one Mbit/s
T = TypeVar("T")


@dataclass
class Nodes:
    """Constants of every node; ``len(nodes.rate)`` nodes, ids ``0..n-1``."""

    pop: list[int] = field(default_factory=list)  # index into SimConfig.populations
    rate: list[float] = field(default_factory=list)  # training tokens/s
    up: list[float] = field(default_factory=list)  # bytes/s
    down: list[float] = field(default_factory=list)  # bytes/s
    rtt: list[float] = field(default_factory=list)  # seconds
    hardware: list[Hardware] = field(default_factory=list)
    price: list[Price] = field(default_factory=list)  # coordinator.cost.hourly_price
    declared: list[float] = field(default_factory=list)  # $/h the node declares (0 for volunteers)
    utc_offset_h: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rate)

    def link(self, i: int) -> float:
        """The bytes/s that bound node ``i``'s share of a butterfly all-reduce: it sends and
        receives the same amount, so the slower direction sets the pace."""
        return min(self.up[i], self.down[i])


def _pick(choices: Sequence[tuple[T, float]], rng: random.Random) -> T:
    total = sum(w for _, w in choices)
    x = rng.random() * total
    for value, weight in choices:
        x -= weight
        if x < 0:
            return value
    return choices[-1][0]


def build_nodes(cfg: SimConfig, rng: random.Random) -> Nodes:
    """Draw every node of every population (ids are assigned population by population)."""
    nodes = Nodes()
    price_cache: dict[tuple[str, float], tuple[Hardware, float, Price]] = {}
    for p_index, pop in enumerate(cfg.populations):
        for k in range(pop.count):
            gpu = GPUS[_pick(pop.gpus, rng)]
            if pop.declared_usd_h is not None:
                declared = pop.declared_usd_h
            elif pop.price == "volunteer":
                declared = 0.0
            else:
                declared = gpu.spot_usd_h if pop.price == "spot" else gpu.on_demand_usd_h
            cache_key = (gpu.name, declared)
            if cache_key not in price_cache:
                hw = gpu.hardware()
                price_cache[cache_key] = (hw, declared, hourly_price(hw, declared, cfg.prices))
            hw, declared, price = price_cache[cache_key]
            if pop.tokens_per_s:
                rate = pop.tokens_per_s[k % len(pop.tokens_per_s)]
            else:
                rate = tokens_per_s(gpu, cfg.model) * math.exp(pop.throughput_sigma * rng.gauss(0.0, 1.0))
            link = pop.link
            nodes.pop.append(p_index)
            nodes.rate.append(rate)
            nodes.up.append(min(link.up_mbps.sample(rng), link.max_mbps) * MBIT)
            nodes.down.append(min(link.down_mbps.sample(rng), link.max_mbps) * MBIT)
            nodes.rtt.append(link.rtt_ms.sample(rng) / 1000.0)
            nodes.hardware.append(hw)
            nodes.price.append(price)
            nodes.declared.append(declared)
            nodes.utc_offset_h.append(_pick(pop.regions, rng))
    return nodes


class Churn:
    """When nodes come and go. Session lengths and gaps are drawn per node from its population;
    arrivals follow the local time of day when the population has a daily pattern (a Poisson
    process thinned by ``1 + A cos(2 pi (hour - peak) / 24)``, Lewis and Shedler 1979)."""

    def __init__(self, populations: tuple[Population, ...], rng: random.Random) -> None:
        self.populations = populations
        self.rng = rng

    def first_arrival(self, pop_index: int, utc_offset_h: float) -> float | None:
        """Time of the node's first join: 0 when online at the start, None if never (this run)."""
        pop, rng = self.populations[pop_index], self.rng
        if pop.arrive_at_s > 0 or pop.arrive_over_s > 0:
            return pop.arrive_at_s + rng.random() * pop.arrive_over_s
        share = pop.availability() if pop.online_at_start is None else pop.online_at_start
        if rng.random() < share:
            return 0.0
        if pop.daily_amplitude > 0:
            return self.next_arrival(pop_index, 0.0, utc_offset_h)
        return rng.random() * pop.gap_s.sample(rng)  # somewhere in an offline gap already under way

    def session(self, pop_index: int) -> float:
        return self.populations[pop_index].session_s.sample(self.rng)

    def next_arrival(self, pop_index: int, now: float, utc_offset_h: float) -> float:
        pop, rng = self.populations[pop_index], self.rng
        amplitude = pop.daily_amplitude
        if amplitude <= 0:
            return now + pop.gap_s.sample(rng)
        peak_rate = (1.0 + amplitude) / pop.gap_s.mean()
        t = now
        while True:
            t += rng.expovariate(peak_rate)
            hour = (t / 3600.0 + utc_offset_h) % 24.0
            if rng.random() * (1.0 + amplitude) < 1.0 + amplitude * math.cos(2 * math.pi * (hour - pop.peak_hour) / 24.0):
                return t
