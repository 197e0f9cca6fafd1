"""The messages nodes sign and send: contribution reports and heartbeats.

Units are in the field comments. Wire rule: fields are only ever appended, with defaults.
``peer_id`` inside a message must equal the envelope's signer (checked by ``open_envelope``),
so a node cannot report on another's behalf.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .schema import WireStruct

__all__ = ["ContributionReport", "GroupClaim", "Hardware", "Heartbeat", "MESSAGE_TYPES"]


@dataclass(frozen=True)
class Hardware(WireStruct):
    device: str = "cpu"  # e.g. "NVIDIA H100 80GB HBM3" or "cpu"
    count: int = 1  # accelerators used by this node
    memory_gb: float = 0.0  # per accelerator (host RAM for cpu)


@dataclass(frozen=True)
class GroupClaim(WireStruct):
    """What one member of an averaging group claimed, as this node saw it in the all-gather."""

    peer_id: str
    tokens: int  # tokens that member said it processed in the round


@dataclass(frozen=True)
class ContributionReport(WireStruct):
    """Sent after every completed (or failed) round."""

    KIND = "report"

    run_id: str
    peer_id: str
    seq: int  # per-peer sequence number, shared with heartbeats; idempotence key
    sent_at: float  # unix seconds when the report was made (freshness window)
    round: int  # the global round this work went into
    tokens: int  # tokens processed in the inner phase of this round
    samples: int  # sequences processed
    compute_s: float  # seconds spent in forward/backward/optimizer
    wall_s: float  # seconds from round start to outer step
    bytes_sent: int  # averaging bytes this round, after compression
    bytes_received: int
    group: list[GroupClaim] = field(default_factory=list)  # includes this node itself
    hardware: Hardware = field(default_factory=Hardware)
    price_per_hour: float = 0.0  # declared $/h; 0 for a pure volunteer
    public_name: str = ""
    val_bpb: float | None = None  # validation bits per byte after the outer step, if measured
    train_loss: float | None = None  # mean inner-phase loss, nats per byte
    ok: bool = True  # False when the all-reduce failed and the round was abandoned
    payload_bytes: int = 0  # uncompressed fp32 size of the pseudo-gradient, for the compression ratio
    # appended after v1 (written only when set): seconds of ``wall_s`` the training loop waited on
    # the network (matchmaking, all-reduce, state download); None = not measured.
    # Compute utilization in the sense is 1 - blocked_s / wall_s.
    blocked_s: float | None = field(default=None, metadata={"omit_default": True})


@dataclass(frozen=True)
class Heartbeat(WireStruct):
    """Sent about every 30 s so the coordinator can tell online from stale."""

    KIND = "heartbeat"

    run_id: str
    peer_id: str
    seq: int
    sent_at: float
    round: int
    status: str  # "joining" | "training" | "averaging" | "leaving"
    tokens_total: int = 0  # tokens since the node started
    hardware: Hardware = field(default_factory=Hardware)
    price_per_hour: float = 0.0
    public_name: str = ""


MESSAGE_TYPES: dict[str, type[WireStruct]] = {
    ContributionReport.KIND: ContributionReport,
    Heartbeat.KIND: Heartbeat,
}
