"""Run one simulation: build the swarm, sample its time series, and sum it up.

``simulate(cfg)`` returns a :class:`Result` whose ``summary``, ``series`` and ``rounds`` are plain
JSON-ready values. Everything in them depends only on the config (seed included); the wall time
of the run is kept apart in ``Result.wall_s`` so that two runs of one seed compare equal.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from node.policies.timeouts import allreduce_bytes

from .config import SimConfig
from .swarm import Swarm

__all__ = ["SERIES", "Result", "simulate"]

SERIES = (
    "t_h", "online", "computing", "round",
    "tokens_per_s",  # tokens of successful rounds per second (what goes into the model)
    "tokens_ok",  # cumulative tokens of successful rounds
    "computed_tokens_per_s",  # tokens computed per second, wasted or not
    "utilization",  # share of online node-time spent computing
    "wasted_tokens",  # cumulative
    "wasted_share",  # cumulative wasted / computed
    "mb_per_peer_h",  # MB sent + received per online peer-hour in the interval
    "true_usd", "true_usd_per_mtok",  # every online hour priced
    "ledger_usd", "ledger_usd_per_mtok", "ledger_burn_usd_h",  # coordinator.cost on the reported rounds
    "peers_online", "peers_joining", "peers_stale", "peers_offline",  # coordinator.states
)


@dataclass
class Result:
    summary: dict[str, Any]
    series: dict[str, list[Any]]
    rounds: list[dict[str, float]]
    trace_sha256: str
    trace: list[tuple[float, str, int]] | None = None
    wall_s: float = 0.0
    events: int = 0
    swarm: Swarm | None = field(default=None, repr=False)


class Sampler:
    def __init__(self, swarm: Swarm) -> None:
        self.swarm = swarm
        self.cols: dict[str, list[Any]] = {name: [] for name in SERIES}
        self.prev = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)  # t, ok, computed, compute_node_s, online_node_s, bytes
        self.count = 0

    def sample(self) -> None:
        sw, a, cfg = self.swarm, self.swarm.acct, self.swarm.cfg
        t = sw.engine.now
        a.advance(t)
        t0, ok0, comp0, cns0, ons0, b0 = self.prev
        dt, dons = t - t0, a.online_node_s - ons0
        wasted = sum(a.wasted_by_cause.values())
        c = self.cols
        c["t_h"].append(round(t / 3600.0, 6))
        c["online"].append(a.n_online)
        c["computing"].append(a.n_computing)
        c["round"].append(sw.open_round)
        c["tokens_per_s"].append((a.tokens_ok_total - ok0) / dt if dt > 0 else 0.0)
        c["tokens_ok"].append(a.tokens_ok_total)
        c["computed_tokens_per_s"].append((a.computed_tokens - comp0) / dt if dt > 0 else 0.0)
        c["utilization"].append((a.compute_node_s - cns0) / dons if dons > 0 else 0.0)
        c["wasted_tokens"].append(wasted)
        c["wasted_share"].append(wasted / a.computed_tokens if a.computed_tokens > 0 else 0.0)
        c["mb_per_peer_h"].append((a.bytes_total - b0) / 1e6 / (dons / 3600.0) if dons > 0 else 0.0)
        c["true_usd"].append(a.true_usd)
        c["true_usd_per_mtok"].append(a.true_usd / a.tokens_ok_total * 1e6 if a.tokens_ok_total > 0 else None)
        if self.count % cfg.ledger_every == 0:  # coordinator.cost over every node: priced less often
            view = a.ledger(t, cfg.target_tokens)
            c["ledger_usd"].append(view.cost.usd)
            c["ledger_usd_per_mtok"].append(view.cost.usd_per_million_tokens)
            c["ledger_burn_usd_h"].append(view.cost.burn_usd_per_hour)
            for state in ("online", "joining", "stale", "offline"):
                c[f"peers_{state}"].append(view.states[state])
        else:
            for key in ("ledger_usd", "ledger_usd_per_mtok", "ledger_burn_usd_h", "peers_online", "peers_joining",
                        "peers_stale", "peers_offline"):
                c[key].append(None)
        self.prev = (t, a.tokens_ok_total, a.computed_tokens, a.compute_node_s, a.online_node_s, a.bytes_total)
        self.count += 1
        if t + cfg.sample_s < cfg.duration_s - 1e-9:
            sw.engine.at(t + cfg.sample_s, self.sample)


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p90": 0.0, "max": 0.0}
    values = sorted(values)
    return {"p50": values[len(values) // 2], "p90": values[min(len(values) - 1, int(len(values) * 0.9))], "max": values[-1]}


def summarize(sw: Swarm, sampler: Sampler) -> dict[str, Any]:
    cfg, a, end = sw.cfg, sw.acct, sw.cfg.duration_s
    seen = [i for i in range(len(sw.nodes)) if a.left_at[i] >= 0 or a.session_start[i] is not None]
    ledger, true = a.ledger(end, cfg.target_tokens).cost, a.ledger(end, cfg.target_tokens, wall=a.online_seconds).cost
    wasted = sum(a.wasted_by_cause.values())
    in_flight = sw.in_flight()
    closes = [r["closed_at"] for r in sw.rounds]
    averaged = [r for r in sw.rounds if r["failed_groups"] < r["groups"]]
    per_peer = [(a.bytes_sent[i] + a.bytes_received[i]) for i in seen]
    online = sampler.cols["online"]
    return {
        "scenario": cfg.scenario, "seed": cfg.seed, "hours": cfg.hours, "codec": cfg.codec,
        "model": {"preset": cfg.model.preset, "params": sw.params},
        "round_tokens": cfg.protocol.round_tokens,
        "peers": {"identities": len(sw.nodes), "seen": len(seen), "peak_online": max(online, default=0),
                  "mean_online": statistics.fmean(online) if online else 0.0},
        "rounds": {"closed": len(sw.rounds), "averaged": len(averaged),
                   "mean_period_s": (closes[-1] - closes[0]) / (len(closes) - 1) if len(closes) > 1 else None,
                   "group_failures": sum(int(r["failed_groups"]) for r in sw.rounds),
                   "groups": sum(int(r["groups"]) for r in sw.rounds),
                   # (node, round) contributions: reported ok (the node applied the average) or dropped
                   "member_applied": sum(a.reports) - sum(a.failed), "member_dropped": sum(a.failed)},
        "hostile": {"fraction": cfg.protocol.hostile_fraction, "kind": cfg.protocol.hostile_kind, "nodes": sum(sw.hostile)},
        "tokens": {"computed": a.computed_tokens, "ok": a.tokens_ok_total, "wasted": wasted,
                   "wasted_by_cause": dict(a.wasted_by_cause), "in_flight": in_flight,
                   "unaccounted": a.computed_tokens - (a.tokens_ok_total + wasted + in_flight),
                   "ok_per_s": a.tokens_ok_total / end},
        "utilization": a.compute_node_s / a.online_node_s if a.online_node_s > 0 else 0.0,
        "useful_share": a.tokens_ok_total / a.possible_tokens if a.possible_tokens > 0 else 0.0,
        "cost": {
            "ledger_usd": ledger.usd, "ledger_usd_per_mtok": ledger.usd_per_million_tokens,
            "ledger_compute_hours": ledger.compute_hours, "ledger_gpu_hours": ledger.gpu_hours,
            "true_usd": true.usd, "true_usd_per_mtok": true.usd_per_million_tokens,
            "true_compute_hours": true.compute_hours, "true_usd_integral": a.true_usd,
        },
        "target": {"tokens": cfg.target_tokens,
                   "reached_h": None if a.target_reached_at is None else a.target_reached_at / 3600.0,
                   "usd_at_target": a.usd_at_target,
                   "usd_per_mtok_at_target": None if a.usd_at_target is None else a.usd_at_target / cfg.target_tokens * 1e6},
        "plan": {"enabled": cfg.plan is not None, "plans": len(sw.plans),
                 "mean_standby": statistics.fmean(p["standby"] for p in sw.plans) if sw.plans else 0.0,
                 "max_planned_burn": max((p["burn"] for p in sw.plans), default=0.0)},
        "bytes": {"payload_per_round": sw.payload,  # symmetric equivalent, for a full group
                  "allreduce_per_peer_round": allreduce_bytes(int(sw.payload), cfg.protocol.group_size(len(sw.nodes))),
                  "state_download": sw.state_bytes, "downloads": a.downloads,
                  "per_peer_total": _percentiles(per_peer), "total": a.bytes_total},
    }


def simulate(cfg: SimConfig) -> Result:
    wall0 = time.perf_counter()
    sw = Swarm(cfg)
    sampler = Sampler(sw)
    sw.schedule_population()
    sw.engine.at(0.0, sampler.sample)
    sw.engine.run(until=cfg.duration_s)
    sampler.count = 0  # the last row is always priced
    sampler.sample()  # at the end of the run
    summary = summarize(sw, sampler)
    return Result(
        summary=summary, series=sampler.cols, rounds=sw.rounds, trace_sha256=sw.trace.hexdigest(),
        trace=sw.trace.records, wall_s=time.perf_counter() - wall0, events=sw.engine.events, swarm=sw,
    )

