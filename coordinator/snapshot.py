"""Build the dashboard's snapshot: ledger rows in, one JSON-ready dict out. Pure (``now`` is an
argument), so a test can pin every figure without a server.

Shape (``GET /api/v1/state``; fields are only added)::

    run          run id, manifest hash, current round (the highest with a confirmed claim),
                 highest claimed round, token target, software and minimum versions,
                 run key fingerprint, coordinator URL and the join line; corpus tokens and epochs
                 (confirmed-or-not tokens trained / the corpus's training tokens; None if unknown)
    swarm        peer counts by state; tokens (claimed, confirmed, unconfirmed); $ (and the part
                 priced at declared prices), $/1M confirmed tokens, tokens/s, burn $/h,
                 progress and eta_s in confirmed tokens
    network      bytes sent / received, payload bytes, compression ratio
    peers        one row per peer (the first ``peers_listed``: online first, then by tokens), with
                 its software version (and how it compares), role and reachability; ``flagged``
                 (and ``flag``) when >= 2 reducers reported it as an outlier in each of 3 rounds
    leaderboard  one row per peer id (a name is only a label; two peers may share one), ranked by
                 credit: confirmed tokens; GPU-hours, share of the credited tokens, $, share confirmed
    loss         per round up to the current round: mean val_bpb, tokens, tokens/s
    rejections   counts by reason; events: joins, leaves, failed rounds, rejections, newest first
    plan, plans  added by the hub (``hub.add_plan``): the budget and the current cost plan's forecast,
                 one row per plan over time (burn against the cap, spend against the forecast), and
                 each peer's ``plan_state`` / ``plan_reason``

Credit and cost use confirmed tokens (``ledger.cross_check``): unconfirmed claims are shown
and totalled apart, never credited or priced. The snapshot holds no NaN or infinity: every
non-finite float becomes null (:func:`finite`), so the JSON is strict and the page always loads.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, overload

from protocol import SOFTWARE_VERSION, Hardware, is_older

from .config import CoordinatorConfig
from .cost import NodeCost, Usage, hourly_price, is_cpu, node_cost, swarm_cost
from .ledger import device_label
from .outliers import apply_flags
from .outliers import flags as outlier_flags
from .states import PeerState, peer_state

__all__ = ["SNAPSHOT_VERSION", "build_snapshot", "finite", "version_status"]

SNAPSHOT_VERSION = 1
_STATE_ORDER = {PeerState.ONLINE: 0, PeerState.JOINING: 1, PeerState.STANDBY: 2, PeerState.PAUSED: 3, PeerState.STALE: 4,
                PeerState.OFFLINE: 5}


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def version_status(version: str, min_version: str, current: str = SOFTWARE_VERSION) -> str:
    """How a node's software compares: "too_old" (below the manifest's ``min_version``: it must
    refuse to train), "older" (than this coordinator's release), "ok", or "unknown" (not said)."""
    if not version or is_older(version, current) is None:
        return "unknown"
    if min_version and is_older(version, min_version):
        return "too_old"
    return "older" if is_older(version, current) else "ok"


@overload
def finite(value: dict[str, Any]) -> dict[str, Any]: ...
@overload
def finite(value: Any) -> Any: ...
def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float (at any depth) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def _peer(
    row: Mapping[str, Any], config: CoordinatorConfig, now: float, flags: dict[str, int],
) -> tuple[dict[str, Any], Usage, NodeCost]:
    state = peer_state(
        last_seen=row["last_seen"], last_status=row["last_status"], reports=row["reports"], now=now,
        thresholds=config.thresholds,
    )
    hardware = Hardware(device=row["device"], count=row["device_count"], memory_gb=row["memory_gb"])
    price = hourly_price(hardware, row["declared_price"], config.prices)
    active = state in (PeerState.ONLINE, PeerState.JOINING)
    usage = Usage(  # priced per confirmed token: an unconfirmed claim makes no one look cheap
        tokens=row["confirmed_tokens"], wall_s=row["wall_s"], gpus=0 if is_cpu(hardware) else max(hardware.count, 1),
        tokens_per_s=row["last_tokens_per_s"], active=active,
    )
    cost = node_cost(usage, price)
    view = {
        "peer_id": row["peer_id"],
        "name": row["public_name"],
        "state": state.value,
        "device": device_label(row["device"]),  # cleaned at insert too; ledgers older than v5 were not
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
        "flags": flags,
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
        # what its newest heartbeat said ('' = an older node that does not say)
        "software_version": row["software_version"],
        "version_status": version_status(row["software_version"], config.manifest.min_version),
        "role": row["role"],
        "reachability": row["reachability"],
    }
    return view, usage, cost


def _leaderboard(peers: Iterable[dict[str, Any]], credited_total: int, rows: int) -> list[dict[str, Any]]:
    board = [
        {
            "peer_id": p["peer_id"], "name": p["name"], "tokens": p["tokens"], "confirmed_tokens": p["confirmed_tokens"],
            "credited_tokens": p["confirmed_tokens"], "gpu_hours": p["gpu_hours"], "compute_hours": p["compute_hours"],
            "usd": p["usd"], "flags": p["flags"],
        }
        for p in peers
    ]
    board.sort(key=lambda e: (-e["credited_tokens"], -e["tokens"], e["peer_id"]))
    board = board[:rows]
    for entry in board:
        entry["share"] = _ratio(entry["credited_tokens"], credited_total) or 0.0
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
    join: Mapping[str, Any] | None = None,
    current_round: int = 0,
    flags: Mapping[str, dict[str, int]] | None = None,
    outlier_rows: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """``join``: the run key's fingerprint, the coordinator's URL and the join line (``runkey.join_info``)."""
    peers, pairs = [], []
    flags = flags or {}
    flagged = outlier_flags(outlier_rows)  # flagged by reducers: credit stays unconfirmed, so unpriced too
    for row in peer_rows:
        if row["peer_id"] in flagged:
            row = {**row, "confirmed_tokens": 0}
        view, usage, cost = _peer(row, config, now, flags.get(row["peer_id"], {}))
        view["last_status"] = row["last_status"]
        peers.append(view)
        pairs.append((usage, cost))
    apply_flags(peers, flagged)
    swarm = swarm_cost(pairs, config.target_tokens)
    by_state = {state.value: 0 for state in PeerState}
    for p in peers:
        by_state[p["state"]] += 1
    confirmed = swarm.tokens  # what the cost model counted: confirmed tokens
    claimed = sum(p["tokens"] for p in peers)
    declared_usd = sum(p["usd"] for p in peers if p["price_source"] == "declared")
    sent = sum(p["bytes_sent"] for p in peers)
    payload = sum(row["payload_bytes"] for row in peer_rows)
    events = _events(event_rows, recent_rejections, peers, config)
    for p in peers:
        del p["last_status"]
    peers.sort(key=lambda p: (_STATE_ORDER[PeerState(p["state"])], -p["tokens"], p["peer_id"]))
    return finite({
        "version": SNAPSHOT_VERSION,
        "generated_at": now,
        "ledger_version": ledger_version,
        "run": {
            "run_id": config.manifest.run_id,
            "manifest_hash": config.manifest.content_hash,
            "algorithm": config.manifest.algorithm,
            "codec": config.manifest.codec,
            "round_tokens": config.manifest.round_tokens,
            "round": current_round,
            "claimed_round": max((p["last_round"] for p in peers), default=0),
            "target_tokens": config.target_tokens,
            "software_version": SOFTWARE_VERSION,
            "min_version": config.manifest.min_version,
            **(join or {}),
            "corpus_tokens": config.corpus_tokens or None,
            "epochs": _ratio(claimed, config.corpus_tokens),  # every token trained, confirmed or not
        },
        "swarm": {
            "peers": len(peers),
            "by_state": by_state,
            "flagged": sum(p["flagged"] for p in peers),
            "tokens": claimed,
            "confirmed_tokens": confirmed,
            "unconfirmed_tokens": claimed - confirmed,
            "tokens_per_s": swarm.tokens_per_s,
            "compute_hours": swarm.compute_hours,
            "gpu_hours": swarm.gpu_hours,
            "usd": swarm.usd,
            "usd_declared": declared_usd,  # the part of ``usd`` priced at the nodes' own declared prices
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
        "leaderboard": _leaderboard(peers, confirmed, config.leaderboard_rows),
        "loss": _loss(round_rows),
        "rejections": dict(sorted(rejections.items())),
        "rejections_total": sum(rejections.values()),
        "events": events,
    })
