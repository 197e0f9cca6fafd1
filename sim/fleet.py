"""A fleet description (TOML) -> a :class:`SimConfig`: who could train, at what price, on what links.

::

    hours = 24                 # simulated horizon
    target_tokens = 2e9        # the run's token target
    group_size = 32            # optional all-reduce group size; omitted: one group of every ready peer, as the node
    assumed_mbps = 20          # the nodes' --bandwidth-mbps: their all-reduce timeouts derive from it
    matchmaking_s = 3          # the nodes' --matchmaking-time-s
    seed = 0

    [budget]                   # the organizer's budget (coordinator.planner.Budget)
    cap_per_hour = 6.0         # $/h; omit for no cap
    total = 500.0              # $ for the run; optional

    [[devices]]                # one entry per kind of machine
    name = "home-4090"
    count = 20
    gpu = "4090"               # a sim.catalog GPU: its tokens/s for the model and its power draw
    price_per_hour = 0.0       # declared $/h; 0: a volunteer, priced at its electricity
    tokens_per_s = 30000       # optional: measured, instead of the catalog model
    bandwidth_mbps = 50        # its link (up = down)
    session_h = 4              # churn: mean online session, exponential; omit for always on
    gap_h = 2                  # mean time offline between sessions

The model, codec and round size come from the run manifest; prices for nodes that declare none come
from the coordinator's price table (``coordinator.cost.PriceTable``), exactly as in a real run.
"""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from coordinator.cost import PriceTable
from coordinator.planner import Budget
from protocol import RunManifest

from .catalog import GPUS
from .config import Distribution, LinkProfile, PlanPolicy, Population, RoundProtocol, SimConfig, const

__all__ = ["FleetError", "load_fleet", "load_manifest", "fleet_config"]


class FleetError(ValueError):
    """A fleet, manifest or price table that cannot be used; the message says which field."""


def load_manifest(path: Path) -> RunManifest:
    """TOML (fields at the top level or under ``[manifest]``) or the canonical msgpack bytes."""
    try:
        if path.suffix.lower() == ".toml":
            data: Any = tomllib.loads(path.read_text())
            return RunManifest.from_wire(data.get("manifest", data))
        return RunManifest.from_bytes(path.read_bytes())
    except (OSError, ValueError, tomllib.TOMLDecodeError) as e:
        raise FleetError(f"manifest {path}: {e}") from None


def _population(d: dict[str, Any], k: int) -> Population:
    where = f"devices[{k}] ({d.get('name', '?')})"
    try:
        gpu = str(d.get("gpu", "cpu"))
        if gpu not in GPUS:
            raise FleetError(f"{where}: gpu must be one of {sorted(GPUS)}, not {gpu!r}")
        count, mbps = int(d["count"]), float(d["bandwidth_mbps"])
        price = float(d.get("price_per_hour", 0.0))
        if count < 0 or mbps <= 0 or price < 0:
            raise FleetError(f"{where}: count >= 0, bandwidth_mbps > 0 and price_per_hour >= 0 please")
        churn = "session_h" in d
        session = Distribution("exp", float(d["session_h"]) * 3600.0) if churn else const(1e12)
        gap = Distribution("exp", float(d.get("gap_h", 1.0)) * 3600.0) if churn else const(1e12)
        rates = (float(d["tokens_per_s"]),) if "tokens_per_s" in d else ()
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, FleetError):
            raise
        raise FleetError(f"{where}: {e!r} (needs count and bandwidth_mbps)") from None
    return Population(
        name=str(d.get("name", f"devices-{k}")), count=count, gpus=((gpu, 1.0),),
        link=LinkProfile(up_mbps=const(mbps), down_mbps=const(mbps)), session_s=session, gap_s=gap,
        online_at_start=None if churn else 1.0, returns=churn, throughput_sigma=0.0 if rates else 0.1,
        tokens_per_s=rates, declared_usd_h=price, graceful=0.5,
    )


def fleet_config(data: dict[str, Any], manifest: RunManifest, prices: PriceTable, *, name: str = "fleet",
                 plan: bool = False) -> SimConfig:
    """The simulation of ``manifest`` on the fleet ``data``; with the cost plan when ``plan``."""
    devices = data.get("devices")
    if not isinstance(devices, list) or not devices:
        raise FleetError("a fleet needs at least one [[devices]] entry")
    b = data.get("budget", {})
    try:
        budget = Budget(cap_usd_per_hour=b.get("cap_per_hour"), total_usd=b.get("total"))
        hours, target = float(data.get("hours", 24.0)), int(float(data.get("target_tokens", 0)))
        group = int(data["group_size"]) if "group_size" in data else None
    except (TypeError, ValueError) as e:
        raise FleetError(f"budget / hours / target_tokens / group_size: {e}") from None
    pops = tuple(_population(d, k) for k, d in enumerate(devices))
    proto = RoundProtocol(
        round_tokens=manifest.round_tokens, target_group_size=group,
        matchmaking_s=float(data.get("matchmaking_s", RoundProtocol.matchmaking_s)),
        assumed_bandwidth_mbps=float(data.get("assumed_mbps", RoundProtocol.assumed_bandwidth_mbps)),
        eval_s=float(data.get("eval_s", 0.0)),
    )
    return SimConfig(
        scenario=name, populations=pops, protocol=proto, model=manifest.model, codec=manifest.codec, hours=hours,
        seed=int(data.get("seed", 0)), prices=prices, target_tokens=target, sample_s=float(data.get("sample_s", 300.0)),
        plan=PlanPolicy(budget=budget, every_rounds=int(data.get("plan_every_rounds", 3))) if plan else None,
    )


def load_fleet(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise FleetError(f"fleet {path}: {e}") from None
