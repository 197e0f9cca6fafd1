"""Bounds on every number a report or heartbeat carries. Pure: no I/O, no clock, no SQL.

The protocol lets an int be anything MessagePack can hold (-2**63 .. 2**64-1) and a float any
finite double. The ledger can store less than that (SQLite integers stop at 2**63-1) and the
snapshot can show less (sums of 1e300 overflow to infinity). So before a message is queued for
the ledger, each field is held to what a real node could have sent:

- ints: ``0 <= x <= INT64_MAX`` (``out_of_range``);
- durations: none negative, none longer than ``Limits.max_round_s``; ``blocked_s <= wall_s``
  (``implausible``);
- tokens: ``samples <= tokens <= wall_s x accelerators x tokens_per_s_ceiling(model)``
  (``implausible_tokens``), see :func:`tokens_per_s_ceiling` for how the ceiling is chosen;
- hardware: ``count <= max_devices``, memory under ``max_memory_gb``; losses in
  ``[0, max_loss]``; groups of at most ``max_group`` members (``implausible``);
- a declared price at most :func:`price_cap` (``implausible_price``);
- a reducer's outlier report: a group no larger than ``max_group``, finite ratios (``implausible``);
- a validator's verdict: about another, real peer id; gains -1e6..``max_loss``; at most one window per
  ``block_size`` claimed tokens; a 64-hex update digest (``implausible``).

Checks that need the ledger (seq order, one claim per round, the round window) live in
``store.py``; the rejection reasons and their HTTP statuses in ``ledger.py``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from protocol import (
    ContributionReport, Hardware, Heartbeat, ModelSpec, OutlierReport, ProtocolError, SpotCheckVerdict, public_key_from_peer_id,
)

from .cost import PriceTable, _lookup, is_cpu
from .ledger import Reject

__all__ = [
    "INT64_MAX",
    "PEAK_FLOPS_PER_DEVICE",
    "Limits",
    "check_numbers",
    "flops_per_token",
    "price_cap",
    "tokens_per_s_ceiling",
]

INT64_MAX = 2**63 - 1

# The ceiling's one constant: floating-point operations per second that no single accelerator
# sold today sustains. The fastest dense figures on data sheets are ~2e15 (H100/H200 FP8
# dense 1.98e15; B200 FP8 dense ~4.5e15); a CPU is far below. We take 1e16, five times the H200's
# FP8 peak, so that no honest node can ever hit the ceiling, while a claim past it is not a
# matter of opinion: it needs more arithmetic than the hardware can do in the time it reports.
PEAK_FLOPS_PER_DEVICE = 1e16


@dataclass(frozen=True)
class Limits:
    """What a plausible report looks like; ``CoordinatorConfig.limits`` holds the run's."""

    max_round_s: float = 24 * 3600.0  # one round's wall (and compute, and waiting) time
    max_devices: int = 64  # accelerators one node may claim (a DGX has 8; a pod slice more)
    max_memory_gb: float = 16_384.0  # per accelerator, or host RAM for a CPU node
    max_loss: float = 1_000.0  # bits per byte or nats per byte: 8 is a uniform byte model
    # members of one averaging group (keeps a report under ~11 KB). Nodes do not cap hivemind's
    # target_group_size today, so a swarm of more than 128 peers in one group needs this raised
    max_group: int = 128
    max_usd_per_device_hour: float = 20.0  # a declared price above this per accelerator is refused
    table_price_factor: float = 3.0  # ... or above this many times the price table's market price


def flops_per_token(model: ModelSpec) -> float:
    """Training FLOPs per token of a GPT: 6N (forward + backward over N weights) plus attention,
    6 x n_layer x context x width (Kaplan et al. 2020, table 1, times 3 for the backward pass)."""
    d, layers = model.n_embd, model.n_layer
    params = 12 * layers * d * d + model.vocab_size * d + model.block_size * d
    return 6.0 * params + 6.0 * layers * model.block_size * d


def tokens_per_s_ceiling(model: ModelSpec) -> float:
    """Tokens per second one accelerator cannot exceed on ``model`` (tiny preset: ~2e9)."""
    return PEAK_FLOPS_PER_DEVICE / flops_per_token(model)


def price_cap(hardware: Hardware, table: PriceTable, limits: Limits) -> float:
    """The most a node may declare per hour: ``max_usd_per_device_hour`` per accelerator, or
    ``table_price_factor`` times the table's market price for its GPU model if that is higher."""
    count = 1 if is_cpu(hardware) else max(hardware.count, 1)
    market = _lookup(table.gpu_usd_per_hour, hardware.device) or 0.0
    return count * max(limits.max_usd_per_device_hour, limits.table_price_factor * market)


def _ints(m: ContributionReport | Heartbeat) -> list[tuple[str, int]]:
    values = [("seq", m.seq), ("round", m.round), ("hardware.count", m.hardware.count)]
    if isinstance(m, Heartbeat):
        return [*values, ("tokens_total", m.tokens_total)]
    values += [("tokens", m.tokens), ("samples", m.samples), ("bytes_sent", m.bytes_sent),
               ("bytes_received", m.bytes_received), ("payload_bytes", m.payload_bytes)]
    return values + [(f"group[{i}].tokens", g.tokens) for i, g in enumerate(m.group)]


def check_numbers(
    m: ContributionReport | Heartbeat | OutlierReport | SpotCheckVerdict, *, model: ModelSpec, prices: PriceTable,
    limits: Limits,
) -> None:
    """Raise :class:`Reject` for the first number no honest node sends."""
    peer = m.peer_id
    if isinstance(m, OutlierReport):
        _check_outliers(m, limits)
        return
    if isinstance(m, SpotCheckVerdict):
        _check_verdict(m, model, limits)
        return
    for name, value in _ints(m):
        if not 0 <= value <= INT64_MAX:
            raise Reject("out_of_range", f"{name} must be in 0..2**63-1", peer)
    hw = m.hardware
    if hw.count > limits.max_devices:
        raise Reject("implausible", f"hardware.count must be 0..{limits.max_devices}", peer)
    if not 0 <= hw.memory_gb <= limits.max_memory_gb:
        raise Reject("implausible", f"hardware.memory_gb must be 0..{limits.max_memory_gb:g}", peer)
    cap = price_cap(hw, prices, limits)
    if not 0 <= m.price_per_hour <= cap:
        raise Reject("implausible_price", f"declared price must be 0..{cap:g} $/h for this hardware", peer)
    if isinstance(m, ContributionReport):
        _check_report(m, model, limits)


def _check_outliers(m: OutlierReport, limits: Limits) -> None:
    """A reducer's outlier report: ints in range, a group no larger than any group, finite ratios."""
    for name, value in (("seq", m.seq), ("round", m.round), ("members", m.members)):
        if not 0 <= value <= INT64_MAX:
            raise Reject("out_of_range", f"{name} must be in 0..2**63-1", m.peer_id)
    if m.members > limits.max_group or len(m.outliers) > m.members:
        raise Reject("implausible", f"a group has at most {limits.max_group} members", m.peer_id)
    for o in m.outliers:
        if not (math.isfinite(o.max_ratio) and math.isfinite(o.min_ratio) and 0 <= o.clipped <= 1):
            raise Reject("implausible", "outlier ratios must be finite and clipped in 0..1", m.peer_id)


MAX_VERDICT_WINDOWS = 1 << 20  # windows one spot check evaluates, at most


def _check_verdict(m: SpotCheckVerdict, model: ModelSpec, limits: Limits) -> None:
    """A validator's verdict: ints in range, about another peer, gains a loss can have (a loss is at
    most ``max_loss``; an update may raise it without bound, so only a lowering is capped by it),
    and no more windows than the claimed tokens hold."""
    for name, value in (("seq", m.seq), ("round", m.round), ("tokens", m.tokens), ("windows", m.windows)):
        if not 0 <= value <= INT64_MAX:
            raise Reject("out_of_range", f"{name} must be in 0..2**63-1", m.peer_id)
    if m.subject == m.peer_id:
        raise Reject("implausible", "a validator does not judge itself", m.peer_id)
    try:
        public_key_from_peer_id(m.subject)
    except ProtocolError:
        raise Reject("implausible", "the subject is not a peer id", m.peer_id) from None
    gains = (m.gain, m.random_gain, 0.0 if m.reference_gain is None else m.reference_gain)
    if not all(-1e6 <= g <= limits.max_loss for g in gains):
        raise Reject("implausible", f"gains must be -1e6..{limits.max_loss:g} nats", m.peer_id)
    if not -1e6 <= m.z <= 1e6 or not 1 <= m.windows <= min(MAX_VERDICT_WINDOWS, max(1, m.tokens // max(1, model.block_size))):
        raise Reject("implausible", "z and windows must be what a check of the claimed tokens can give", m.peer_id)
    if m.update_sha256 and (len(m.update_sha256) != 64 or any(c not in "0123456789abcdef" for c in m.update_sha256)):
        raise Reject("implausible", "update_sha256 must be 64 lowercase hex digits", m.peer_id)


def _check_report(r: ContributionReport, model: ModelSpec, limits: Limits) -> None:
    peer = r.peer_id
    blocked = r.blocked_s or 0.0
    for name, value in (("wall_s", r.wall_s), ("compute_s", r.compute_s), ("blocked_s", blocked)):
        if not 0 <= value <= limits.max_round_s:
            raise Reject("implausible", f"{name} must be 0..{limits.max_round_s:g} s", peer)
    slack = 1e-3 + 1e-6 * r.wall_s  # rounding in the reporter
    if blocked > r.wall_s + slack:
        raise Reject("implausible", f"blocked_s {blocked:.3f} exceeds wall_s {r.wall_s:.3f}", peer)
    for name, loss in (("val_bpb", r.val_bpb), ("train_loss", r.train_loss)):
        if loss is not None and not 0 <= loss <= limits.max_loss:
            raise Reject("implausible", f"{name} must be 0..{limits.max_loss:g}", peer)
    if len({g.peer_id for g in r.group}) > limits.max_group:
        raise Reject("implausible", f"a group has at most {limits.max_group} members", peer)
    if r.samples > r.tokens:
        raise Reject("implausible_tokens", "more sequences than tokens", peer)
    ceiling = r.wall_s * max(r.hardware.count, 1) * tokens_per_s_ceiling(model)
    if r.tokens > ceiling + 1:
        raise Reject("implausible_tokens", f"{r.tokens} tokens in {r.wall_s:.3f} s is more than this hardware can do", peer)
