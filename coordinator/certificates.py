"""Attribution certificates: the run key signs which contributors trained a checkpoint.

``GET /api/v1/certificate?state_hash=H[&peer=ID]`` returns an ``AttributionCertificate`` envelope
signed by the run key. The checkpoint is named by the state hash the nodes report with each ok
round (``ContributionReport.state_hash``). Trust rule (hard to undo, so written here): the
coordinator certifies a hash only if it is the hash most peers reported for its round (a lone
node cannot get a made-up checkpoint certified while others reported another one); ties are
refused. Credits count the ok reports of rounds up to that round: confirmed tokens (matched by
another group member, ``ledger.cross_check``), all claimed tokens, and GPU-hours (wall hours of
those reports x the peer's accelerators; 0 for CPU nodes, as in ``cost.node_cost``).

A certificate is one envelope (64 KiB cap): the full one lists the top :data:`MAX_LISTED`
contributors by confirmed tokens and says how many there are in all; a volunteer's own
(``peer=ID``) lists just them, with the run's totals.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from protocol import AttributionCertificate, Credit, Hardware, Identity, RunManifest, seal

from .cost import is_cpu
from .store import Store

__all__ = ["CertificateRefused", "MAX_LISTED", "build_certificate", "gather", "pick_checkpoint", "sign"]

MAX_LISTED = 300  # contributors in a full certificate (~150 bytes each, under the envelope cap)


class CertificateRefused(Exception):
    def __init__(self, reason: str, detail: str, status: int = 404) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.status = reason, detail, status


def pick_checkpoint(
    reported: Sequence[Mapping[str, Any]], by_round: Mapping[int, Mapping[str, int]], requested: str
) -> tuple[int, str]:
    """(round, state hash) to certify. ``reported``: ``Store.state_rounds(requested)``;
    ``by_round``: for each of those rounds, ``Store.round_hashes``."""
    if not reported:
        raise CertificateRefused("unknown_state", f"no ok report names state hash {requested[:16]}..." if requested
                                 else "no report carries a state hash yet")
    candidates = []
    for row in reported:
        counts = by_round[row["round"]]
        top = max(counts.values())
        leaders = sorted(h for h, n in counts.items() if n == top)
        if requested and leaders == [requested]:
            candidates.append((row["round"], requested))
        elif not requested and len(leaders) == 1:
            candidates.append((row["round"], leaders[0]))
    if not candidates:
        raise CertificateRefused("not_majority", "that state hash is not the one most peers reported for its round", 409)
    return min(candidates)  # the first round that reached this state


def build_certificate(manifest: RunManifest, round_: int, state_hash: str, rows: Sequence[Mapping[str, Any]], *,
                      now: float, peer: str = "") -> AttributionCertificate:
    """Pure: ``rows`` are ``Store.credits(round_)``."""
    credits = []
    for r in rows:
        gpus = 0 if is_cpu(Hardware(device=r["device"], count=r["device_count"])) else max(r["device_count"], 1)
        credits.append(Credit(peer_id=r["peer_id"], public_name=r["public_name"], confirmed_tokens=int(r["confirmed_tokens"]),
                              tokens=int(r["tokens"]), gpu_hours=float(r["wall_s"]) / 3600.0 * gpus))
    credits.sort(key=lambda c: (-c.confirmed_tokens, -c.tokens, c.peer_id))
    listed = credits[:MAX_LISTED]
    if peer:
        listed = [c for c in credits if c.peer_id == peer]
        if not listed:
            raise CertificateRefused("unknown_peer", f"peer {peer[:20]}... has no ok report up to round {round_}")
    return AttributionCertificate(
        run_id=manifest.run_id, manifest_hash=manifest.content_hash, round=round_, state_hash=state_hash, issued_at=now,
        contributors=listed, contributors_total=len(credits),
        confirmed_tokens_total=sum(c.confirmed_tokens for c in credits), gpu_hours_total=sum(c.gpu_hours for c in credits),
        scope=peer or "all",
    )


def gather(store: Store, state_hash: str) -> tuple[int, str, list[dict[str, Any]]]:
    """On the ledger's reader thread: the checkpoint to certify and its credit rows."""
    reported = store.state_rounds(state_hash)
    by_round = {row["round"]: store.round_hashes(row["round"]) for row in reported}
    round_, chosen = pick_checkpoint(reported, by_round, state_hash)
    return round_, chosen, store.credits(round_)


def sign(certificate: AttributionCertificate, run_key: Identity) -> bytes:
    return seal(certificate, run_key)
