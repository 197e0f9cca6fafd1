"""The cost model: what each node's time costs and what the swarm's tokens cost. Pure.

No I/O and no clock: numbers in, numbers out, so ``sim/`` prices ten thousand simulated nodes
with exactly the code the coordinator uses. Imports: stdlib and ``protocol`` only.

How a node's hourly price is chosen (first rule that applies):

1. ``declared``: the node's own ``price_per_hour`` (> 0), e.g. a rented cloud GPU;
2. ``table``: a market price for its GPU model from :attr:`PriceTable.gpu_usd_per_hour`;
3. ``electricity``: volunteer GPU hardware costs its power draw, watts x count x $/kWh;
4. ``cpu_default``: a CPU node costs a small flat :attr:`PriceTable.cpu_usd_per_hour`.

Billed time is a round's wall time (``wall_s``), failed rounds included: the machine was paid
for whether or not the all-reduce worked. Tokens count only from rounds that went into the model,
so failed rounds show up as a higher $ per 1M tokens.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from protocol import Hardware

__all__ = ["NodeCost", "Price", "PriceTable", "SwarmCost", "Usage", "hourly_price", "is_cpu", "node_cost", "swarm_cost"]

_DEFAULT_GPU_WATTS: dict[str, float] = {  # board power at full load, watts per accelerator
    "H200": 700.0,
    "H100": 700.0,
    "A100": 400.0,
    "L40": 300.0,
    "A10": 150.0,
    "L4": 72.0,
    "T4": 70.0,
    "V100": 300.0,
    "4090": 450.0,
    "4080": 320.0,
    "3090": 350.0,
    "3080": 320.0,
    "MI300": 750.0,
    "MI250": 500.0,
}


@dataclass(frozen=True)
class PriceTable:
    """Prices for nodes that declare none. GPU models match by case-insensitive substring of
    ``Hardware.device``; the longest matching pattern wins ("A100" over "A10")."""

    electricity_usd_per_kwh: float = 0.15  # volunteer hardware pays for its power
    gpu_watts: dict[str, float] = field(default_factory=lambda: dict(_DEFAULT_GPU_WATTS))
    default_gpu_watts: float = 300.0  # a GPU model missing from ``gpu_watts``
    gpu_usd_per_hour: dict[str, float] = field(default_factory=dict)  # market $/h per accelerator
    cpu_usd_per_hour: float = 0.01  # whole CPU node, flat

    @classmethod
    def from_toml(cls, data: dict[str, Any], electricity: float | None = None) -> PriceTable:
        """From a parsed TOML price table (see docs/coordinator.md); missing keys keep the defaults."""
        base = cls()
        return cls(
            electricity_usd_per_kwh=float(
                electricity if electricity is not None else data.get("electricity_usd_per_kwh", base.electricity_usd_per_kwh)
            ),
            gpu_watts={**base.gpu_watts, **{k: float(v) for k, v in data.get("gpu_watts", {}).items()}},
            default_gpu_watts=float(data.get("default_gpu_watts", base.default_gpu_watts)),
            gpu_usd_per_hour={k: float(v) for k, v in data.get("gpu_usd_per_hour", {}).items()},
            cpu_usd_per_hour=float(data.get("cpu_usd_per_hour", base.cpu_usd_per_hour)),
        )


@dataclass(frozen=True)
class Price:
    usd_per_hour: float  # for the whole node (all its accelerators)
    source: str  # "declared" | "table" | "electricity" | "cpu_default"


def is_cpu(hardware: Hardware) -> bool:
    return hardware.device.strip().lower() in ("", "cpu") or hardware.device.lower().startswith("cpu")


def _lookup(table: dict[str, float], device: str) -> float | None:
    device = device.lower()
    matches = [pattern for pattern in table if pattern and pattern.lower() in device]
    if not matches:
        return None
    return table[max(matches, key=len)]


def hourly_price(hardware: Hardware, declared_usd_per_hour: float, table: PriceTable) -> Price:
    """The node's price in $/h, and which rule set it."""
    if declared_usd_per_hour > 0:
        return Price(declared_usd_per_hour, "declared")
    if is_cpu(hardware):
        return Price(table.cpu_usd_per_hour, "cpu_default")
    count = max(hardware.count, 1)
    market = _lookup(table.gpu_usd_per_hour, hardware.device)
    if market is not None:
        return Price(market * count, "table")
    watts = _lookup(table.gpu_watts, hardware.device)
    watts = table.default_gpu_watts if watts is None else watts
    return Price(watts * count / 1000.0 * table.electricity_usd_per_kwh, "electricity")


@dataclass(frozen=True)
class Usage:
    """What the ledger knows about one node."""

    tokens: int  # tokens of rounds that went into the model
    wall_s: float  # billed seconds: wall time of every reported round, failed ones included
    gpus: int  # accelerators (0 for a CPU node)
    tokens_per_s: float  # the node's current rate (its latest round)
    active: bool  # online or joining: counts towards the swarm's current rate and burn


@dataclass(frozen=True)
class NodeCost:
    compute_hours: float  # node-hours
    gpu_hours: float  # accelerator-hours (0 for CPU nodes)
    usd: float
    usd_per_million_tokens: float | None  # None before the first token
    tokens_per_s: float  # current rate, 0 when not active
    burn_usd_per_hour: float  # price when active, else 0


def _per_million(usd: float, tokens: int) -> float | None:
    return usd / tokens * 1e6 if tokens > 0 else None


def node_cost(usage: Usage, price: Price) -> NodeCost:
    hours = max(usage.wall_s, 0.0) / 3600.0
    usd = hours * price.usd_per_hour
    return NodeCost(
        compute_hours=hours,
        gpu_hours=hours * usage.gpus,
        usd=usd,
        usd_per_million_tokens=_per_million(usd, usage.tokens),
        tokens_per_s=usage.tokens_per_s if usage.active else 0.0,
        burn_usd_per_hour=price.usd_per_hour if usage.active else 0.0,
    )


@dataclass(frozen=True)
class SwarmCost:
    tokens: int
    compute_hours: float
    gpu_hours: float
    usd: float
    usd_per_million_tokens: float | None
    tokens_per_s: float  # sum of active nodes' current rates
    burn_usd_per_hour: float  # sum of active nodes' prices
    target_tokens: int
    progress: float  # tokens / target, capped at 1
    eta_s: float | None  # time to target at the current rate; None when nothing is training
    usd_to_target: float | None  # burn x eta


def swarm_cost(nodes: Iterable[tuple[Usage, NodeCost]], target_tokens: int) -> SwarmCost:
    tokens = 0
    hours = gpu_hours = usd = rate = burn = 0.0
    for usage, cost in nodes:
        tokens += usage.tokens
        hours += cost.compute_hours
        gpu_hours += cost.gpu_hours
        usd += cost.usd
        rate += cost.tokens_per_s
        burn += cost.burn_usd_per_hour
    remaining = max(target_tokens - tokens, 0)
    if remaining == 0:
        eta: float | None = 0.0
    elif rate > 0:
        eta = remaining / rate
    else:
        eta = None
    return SwarmCost(
        tokens=tokens,
        compute_hours=hours,
        gpu_hours=gpu_hours,
        usd=usd,
        usd_per_million_tokens=_per_million(usd, tokens),
        tokens_per_s=rate,
        burn_usd_per_hour=burn,
        target_tokens=target_tokens,
        progress=min(tokens / target_tokens, 1.0) if target_tokens > 0 else 1.0,
        eta_s=eta,
        usd_to_target=None if eta is None else burn * eta / 3600.0,
    )
