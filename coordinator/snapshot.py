"""Build the dashboard's snapshot: ledger rows in, one JSON-ready dict out. Pure (``now`` is an
argument), so a test can pin every figure without a server.

Shape (``GET /api/v1/state``; fields are only added)::

    run          run id, manifest hash, latest round, token target
    swarm        peer counts by state; tokens (confirmed / unconfirmed); $, $/1M tokens,
                 tokens/s, burn $/h, progress, eta_s
    network      bytes sent / received, payload bytes, compression ratio
    peers        one row per peer (the first ``peers_listed``: online first, then by tokens)
    leaderboard  rows by public name: tokens, GPU-hours, share of the run, $, share confirmed
    loss         per round: mean val_bpb, tokens, tokens/s (the round's tokens / its longest wall)
    rejections   counts by reason; events: joins, leaves, failed rounds, rejections, newest first
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from protocol import Hardware

from .config import CoordinatorConfig
from .cost import NodeCost, Usage, hourly_price, is_cpu, node_cost, swarm_cost
from .states import PeerState, peer_state

__all__ = ["SNAPSHOT_VERSION", "build_snapshot"]

SNAPSHOT_VERSION = 1
_STATE_ORDER = {PeerState.ONLINE: 0, PeerState.JOINING: 1, PeerState.STALE: 2, PeerState.OFFLINE: 3}


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def _peer(row: Mapping[str, Any], config: CoordinatorConfig, now: float) -> tuple[dict[str, Any], Usage, NodeCost]:
    state = peer_state(
        last_seen=row["last_seen"], last_status=row["last_status"], reports=row["reports"], now=now,
        thresholds=config.thresholds,
    )
    hardware = Hardware(device=row["device"], count=row["device_count"], memory_gb=row["memory_gb"])
    price = hourly_price(hardware, row["declared_price"], config.prices)
    active = state in (PeerState.ONLINE, PeerState.JOINING)
    usage = Usage(
        tokens=row["tokens"], wall_s=row["wall_s"], gpus=0 if is_cpu(hardware) else max(hardware.count, 1),
        tokens_per_s=row["last_tokens_per_s"], active=active,
    )
    cost = node_cost(usage, price)
    view = {
        "peer_id": row["peer_id"],
        "name": row["public_name"],
        "state": state.value,
        "device": row["device"],
        "device_count": row["device_count"],
        "price_usd_per_hour": price.usd_per_hour,
        "price_source": price.source,
        "first_seen": row["first_seen"],
        "last_seen": row["last_seen"],
        "last_round": row["last_round"],
        "reports": row["reports"],
        "failed_rounds": row["failed_rounds"],
        "tokens": row["tokens"],
        "confirmed_tokens": row["confirmed_tokens"],
        "unconfirmed_tokens": row["tokens"] - row["confirmed_tokens"],
        "tokens_per_s": cost.tokens_per_s,
        "compute_hours": cost.compute_hours,
        "gpu_hours": cost.gpu_hours,
        "usd": cost.usd,
        "usd_per_million_tokens": cost.usd_per_million_tokens,
        "bytes_sent": row["bytes_sent"],
        "bytes_received": row["bytes_received"],
        "compression_ratio": _ratio(row["payload_bytes"], row["bytes_sent"]),
        # share of its rounds' wall time the node waited on the network; None until a report measured it
        "network_wait_share": _ratio(row["blocked_s"], row["blocked_wall_s"]),
    }
    return view, usage, cost


def _leaderboard(peers: Iterable[dict[str, Any]], total_tokens: int, rows: int) -> list[dict[str, Any]]:
    by_name: dict[str, dict[str, Any]] = {}
    for p in peers:
        entry = by_name.setdefault(
            p["name"], {"name": p["name"], "peers": 0, "tokens": 0, "confirmed_tokens": 0, "gpu_hours": 0.0,
                        "compute_hours": 0.0, "usd": 0.0},
        )
        entry["peers"] += 1
        for key in ("tokens", "confirmed_tokens", "gpu_hours", "compute_hours", "usd"):
            entry[key] += p[key]
    board = sorted(by_name.values(), key=lambda e: (-e["tokens"], e["name"]))[:rows]
    for entry in board:
        entry["share"] = _ratio(entry["tokens"], total_tokens) or 0.0
        entry["confirmed_share"] = _ratio(entry["confirmed_tokens"], entry["tokens"])
    return board


def _loss(rounds: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "round": r["round"],
            "t": r["first_at"],
            "val_bpb": r["val_sum"] / r["val_n"] if r["val_n"] else None,
            "tokens": r["tokens"],
            "tokens_per_s": _ratio(r["tokens"], r["max_wall_s"]),
            "reports": r["reports"],
        }
        for r in rounds
    ]


def _events(
    stored: Sequence[Mapping[str, Any]],
    rejections: Iterable[Mapping[str, Any]],
    peers: Sequence[dict[str, Any]],
    config: CoordinatorConfig,
) -> list[dict[str, Any]]:
    names = {p["peer_id"]: p["name"] for p in peers}
    events = [{"at": e["at"], "kind": e["kind"], "peer_id": e["peer_id"], "detail": e["detail"]} for e in stored]
    events += [{"at": r["at"], "kind": "rejected", "peer_id": r["peer_id"], "detail": r["reason"]} for r in rejections]
    offline_after = config.thresholds.offline_after_s
    events += [
        {"at": p["last_seen"] + offline_after, "kind": "offline", "peer_id": p["peer_id"], "detail": "went silent"}
        for p in peers
        if p["state"] == PeerState.OFFLINE.value and p["last_status"] != "leaving"
    ]
    events.sort(key=lambda e: -e["at"])
    events = events[: config.events_listed]
    for e in events:
        e["name"] = names.get(e["peer_id"], "")
    return events


def build_snapshot(
    *,
    config: CoordinatorConfig,
    peer_rows: Sequence[Mapping[str, Any]],
    round_rows: Sequence[Mapping[str, Any]],
    event_rows: Sequence[Mapping[str, Any]],
    rejections: Mapping[str, int],
    recent_rejections: Iterable[Mapping[str, Any]],
    now: float,
    ledger_version: int,
) -> dict[str, Any]:
    peers, pairs = [], []
    for row in peer_rows:
        view, usage, cost = _peer(row, config, now)
        view["last_status"] = row["last_status"]
        peers.append(view)
        pairs.append((usage, cost))
    swarm = swarm_cost(pairs, config.target_tokens)
    by_state = {state.value: 0 for state in PeerState}
    for p in peers:
        by_state[p["state"]] += 1
    confirmed = sum(p["confirmed_tokens"] for p in peers)
    sent = sum(p["bytes_sent"] for p in peers)
    payload = sum(row["payload_bytes"] for row in peer_rows)
    events = _events(event_rows, recent_rejections, peers, config)
    for p in peers:
        del p["last_status"]
    peers.sort(key=lambda p: (_STATE_ORDER[PeerState(p["state"])], -p["tokens"], p["peer_id"]))
    return {
        "version": SNAPSHOT_VERSION,
        "generated_at": now,
        "ledger_version": ledger_version,
        "run": {
            "run_id": config.manifest.run_id,
            "manifest_hash": config.manifest.content_hash,
            "algorithm": config.manifest.algorithm,
            "codec": config.manifest.codec,
            "round_tokens": config.manifest.round_tokens,
            "round": max((p["last_round"] for p in peers), default=0),
            "target_tokens": config.target_tokens,
        },
        "swarm": {
            "peers": len(peers),
            "by_state": by_state,
            "tokens": swarm.tokens,
            "confirmed_tokens": confirmed,
            "unconfirmed_tokens": swarm.tokens - confirmed,
            "tokens_per_s": swarm.tokens_per_s,
            "compute_hours": swarm.compute_hours,
            "gpu_hours": swarm.gpu_hours,
            "usd": swarm.usd,
            "usd_per_million_tokens": swarm.usd_per_million_tokens,
            "burn_usd_per_hour": swarm.burn_usd_per_hour,
            "progress": swarm.progress,
            "eta_s": swarm.eta_s,
            "usd_to_target": swarm.usd_to_target,
        },
        "network": {
            "bytes_sent": sent,
            "bytes_received": sum(p["bytes_received"] for p in peers),
            "payload_bytes": payload,
            "compression_ratio": _ratio(payload, sent),
        },
        "peers": peers[: config.peers_listed],
        "peers_truncated": len(peers) > config.peers_listed,
        "leaderboard": _leaderboard(peers, swarm.tokens, config.leaderboard_rows),
        "loss": _loss(round_rows),
        "rejections": dict(sorted(rejections.items())),
        "rejections_total": sum(rejections.values()),
        "events": events,
    }
