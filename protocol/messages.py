"""The messages nodes sign and send (contribution reports, heartbeats), the manifest kind, and what
the run key signs (plans, budget changes, attribution certificates).

Units are in the field comments. Wire rule: fields are only ever appended, with defaults.
``peer_id`` inside a message must equal the envelope's signer (checked by ``open_envelope``),
so a node cannot report on another's behalf.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .manifest import RunManifest
from .schema import WireStruct

__all__ = [
    "AttributionCertificate", "BudgetChange", "ContributionReport", "Credit", "GroupClaim", "Hardware", "Heartbeat",
    "MESSAGE_TYPES", "MemberOutlier", "OutlierReport", "PeerPlan", "Plan", "SPOT_CHECK_REASONS", "SpotCheckVerdict",
    "StateAnnouncement",
]


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
    # appended after v1 (written only when set): sha256 hex of the run manifest this node trains
    # (``RunManifest.content_hash``); the coordinator refuses a report for another manifest.
    manifest_hash: str = field(default="", metadata={"omit_default": True})
    # appended after v1 (written only when set): node.model.state.state_hash of the global state after this
    # round's outer step (ok rounds); what attribution certificates name a checkpoint by
    state_hash: str = field(default="", metadata={"omit_default": True})


@dataclass(frozen=True)
class Heartbeat(WireStruct):
    """Sent about every 30 s so the coordinator can tell online from stale."""

    KIND = "heartbeat"

    run_id: str
    peer_id: str
    seq: int
    sent_at: float
    round: int
    status: str  # "joining" | "syncing" | "training" | "averaging" | "paused" | "standby" (the cost plan) | "leaving"
    tokens_total: int = 0  # tokens since the node started
    hardware: Hardware = field(default_factory=Hardware)
    price_per_hour: float = 0.0
    public_name: str = ""
    # appended after v1 (written only when set): why a "paused" node is not training, in words
    # (the work gate's reasons: schedule, busy, paused by its volunteer, standby by the plan)
    reason: str = field(default="", metadata={"omit_default": True})
    # appended after v1 (written only when set):
    software_version: str = field(default="", metadata={"omit_default": True})  # protocol.SOFTWARE_VERSION
    # multiaddrs the node listens on as it sees them (p2p suffix optional); the coordinator lists
    # them for bootstrap only after dialing them back, never on this claim alone
    maddrs: list[str] = field(default_factory=list, metadata={"omit_default": True})
    role: str = field(default="", metadata={"omit_default": True})  # "reducer" | "client" | "validator"; "" = not said
    reachability: str = field(default="", metadata={"omit_default": True})  # "public" | "private" | "unknown"
    manifest_hash: str = field(default="", metadata={"omit_default": True})  # appended, as in reports

    def __post_init__(self) -> None:
        if len(self.maddrs) > MAX_MADDRS:
            raise ValueError(f"at most {MAX_MADDRS} maddrs")


MAX_MADDRS = 16  # per heartbeat


@dataclass(frozen=True)
class PeerPlan(WireStruct):
    """One peer's line of a :class:`Plan`."""

    peer_id: str
    state: str  # "active" | "standby"
    reason: str = ""  # why, for people: "volunteer", "best tokens per $", "over the $/h cap", ...


@dataclass(frozen=True)
class Plan(WireStruct):
    """The organizer's cost plan: which paid peers train now. Signed with the run key (never a peer key),
    served at ``GET /api/v1/plan``; nodes open it with ``open_signed_by(data, pinned run key)``.

    A peer not listed is active (a newcomer trains until a plan says otherwise). ``round_tokens``
    is advice for the next run's manifest: the manifest's round size is part of its hash, so a
    running swarm never changes it."""

    KIND = "plan"

    run_id: str
    seq: int  # plans are numbered; a node ignores a plan older than the one it obeys
    made_at: float  # unix seconds
    round: int  # the swarm's round when it was made; standby counts from the round after next
    peers: list[PeerPlan] = field(default_factory=list)
    cap_usd_per_hour: float | None = None  # the budget it was made under
    total_usd: float | None = None
    burn_usd_per_hour: float = 0.0  # planned spend rate of the active peers
    tokens_per_s: float = 0.0  # planned confirmed tokens/s
    round_tokens: int = 0  # advised round size (see above)
    eta_s: float | None = None  # time to the token target at the planned rate
    eta_low_s: float | None = None  # range: every peer as reliable as measured ... perfect
    eta_high_s: float | None = None
    usd_to_target: float | None = None
    usd_to_target_low: float | None = None
    usd_to_target_high: float | None = None


@dataclass(frozen=True)
class BudgetChange(WireStruct):
    """An operator's change of the run's budget, signed with the run key. ``seq`` only grows (replays
    and reordering are refused); a None field leaves that setting as it is, a negative one clears it."""

    KIND = "budget"

    run_id: str
    seq: int
    sent_at: float
    cap_usd_per_hour: float | None = None
    total_usd: float | None = None
    deadline: float | None = None  # unix seconds
    target_tokens: int | None = None


@dataclass(frozen=True)
class MemberOutlier(WireStruct):
    """One member whose parts a reducer clipped (too large) or found (almost) empty, or (``dissent``)
    that claimed, in the agreement on failed reducers, failures no other member of its group saw
    (node/policies/agreement.py; its ratios are then 1 and ``clipped`` 0)."""

    peer_id: str
    max_ratio: float  # largest part norm / the median member's norm over the parts this reducer reduced
    min_ratio: float  # smallest such ratio (near 0: zeros sent while claiming tokens)
    clipped: float  # share of this member's norm that clipping removed, 0..1
    weight_capped: bool = False  # its token weight was over the cap and was cut down
    dissent: bool = field(default=False, metadata={"omit_default": True})  # appended after protocol v1


@dataclass(frozen=True)
class OutlierReport(WireStruct):
    """Sent by a reducer after a robust all-reduce in which it found outliers (node/averaging/robust.py),
    or by any member after an agreement in which others claimed failures no one else saw (``dissent``).

    The coordinator flags a member that at least two distinct reducers report in each of three
    rounds (one reducer alone could be lying about an honest member; one round can be honest noise)."""

    KIND = "outliers"

    run_id: str
    peer_id: str  # the reducer (= the signer)
    seq: int  # shared with the reducer's reports and heartbeats
    sent_at: float
    round: int  # the round of the all-reduce
    aggregation: str  # the run's rule: "centered_clip" | "trimmed_mean"
    members: int  # senders whose parts this reducer aggregated (this one included)
    outliers: list[MemberOutlier] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.outliers) > 256:
            raise ValueError("at most 256 outliers per report")


SPOT_CHECK_REASONS = ("ok", "harmful", "no_gain", "not_assigned")  # node/trust/spotcheck.py


@dataclass(frozen=True)
class SpotCheckVerdict(WireStruct):
    """A validator's signed verdict on one peer's claimed work of one round (node/trust/spotcheck.py).

    The validator took the round's global state, recomputed the peer's windows for the round (a
    function of run, peer and round) and measured how much the peer's update lowers the loss on
    them (``gain``) and on random windows (``random_gain``). The coordinator accepts verdicts only
    from the peer ids its operator lists as validators; a failed verdict is a flag against
    (subject, round), and a quorum of distinct validators takes that round's credit away."""

    KIND = "verdict"

    run_id: str
    peer_id: str  # the validator (= the signer)
    seq: int  # shared with the validator's heartbeats
    sent_at: float
    round: int  # the checked round (whose global state the update applies to)
    subject: str  # the checked peer's id
    passed: bool
    reason: str  # SPOT_CHECK_REASONS: "ok" | "harmful" | "no_gain" | "not_assigned"
    tokens: int  # the subject's claimed tokens for the round (its inner steps = tokens / (batch x block))
    windows: int  # assigned windows the validator evaluated
    gain: float  # nats per token: loss(global) - loss(global - update) on the assigned windows
    random_gain: float  # the same on random windows of the train split
    z: float = 0.0  # (gain - random_gain) / its standard error
    update_sha256: str = ""  # node.trust.spotcheck.update_digest of the update judged
    reference_gain: float | None = None  # the gain of the validator's own recompute of the round, if made

    def __post_init__(self) -> None:
        if self.reason not in SPOT_CHECK_REASONS:
            raise ValueError(f"reason must be one of {SPOT_CHECK_REASONS}")
        if self.passed != (self.reason == "ok"):
            raise ValueError("a verdict passes exactly when its reason is 'ok'")


@dataclass(frozen=True)
class StateAnnouncement(WireStruct):
    """A node's global-state hash after a round, signed, in the DHT (never sent to the coordinator).

    A joiner accepts a downloaded state only if its hash is the one a majority of the distinct peers
    that recently announced agree on (node/net/announce.py); the signature stops anyone from announcing
    on another peer's behalf."""

    KIND = "state"

    run_id: str
    peer_id: str
    sent_at: float  # unix seconds
    round: int  # rounds folded into the global state
    state_hash: str  # node.model.state.state_hash, hex


@dataclass(frozen=True)
class Credit(WireStruct):
    """One contributor's credit in a certificate: confirmed work up to the certificate's round."""

    peer_id: str
    public_name: str = ""
    confirmed_tokens: int = 0  # tokens of ok rounds that at least one other group member confirmed
    tokens: int = 0  # all tokens of ok rounds it claimed (confirmed or not)
    gpu_hours: float = 0.0  # wall hours of its ok rounds x its accelerators (0 for CPU nodes)


@dataclass(frozen=True)
class AttributionCertificate(WireStruct):
    """Signed by the run key: this checkpoint was trained by these contributors.

    The checkpoint is named by its state hash (``node.model.state.state_hash``: sha256 of the round and
    the fp32 parameters): the hash the nodes themselves report each round, so the coordinator
    certifies only a checkpoint its ledger saw the swarm reach, and any export of it (whatever the
    file format) can be checked against it. ``scope`` is "all", or one peer id for a volunteer's
    own certificate (then ``contributors`` holds that peer only; the totals stay the run's).
    """

    KIND = "certificate"

    run_id: str
    manifest_hash: str
    round: int  # credits count reports of rounds <= this one (the round whose outer step made the checkpoint)
    state_hash: str  # the checkpoint
    issued_at: float  # unix seconds
    contributors: list[Credit] = field(default_factory=list)  # by confirmed tokens, largest first
    contributors_total: int = 0  # all contributors of the run up to ``round`` (``contributors`` may list fewer)
    confirmed_tokens_total: int = 0
    gpu_hours_total: float = 0.0
    scope: str = "all"


MESSAGE_TYPES: dict[str, type[WireStruct]] = {
    ContributionReport.KIND: ContributionReport,
    Heartbeat.KIND: Heartbeat,
    Plan.KIND: Plan,
    BudgetChange.KIND: BudgetChange,
    RunManifest.KIND: RunManifest,  # signed by the run key only (``open_signed_by``)
    OutlierReport.KIND: OutlierReport,
    StateAnnouncement.KIND: StateAnnouncement,
    AttributionCertificate.KIND: AttributionCertificate,
    SpotCheckVerdict.KIND: SpotCheckVerdict,
}
