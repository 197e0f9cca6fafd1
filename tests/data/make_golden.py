"""Write ``golden_v1.json``: frozen wire bytes of protocol version 1.

Run once, by hand, when a protocol version is released::

    python tests/data/make_golden.py          # refuses to overwrite an existing file

The output is committed and never regenerated: ``tests/protocol/test_golden_v1.py`` checks
that today's code still produces and accepts exactly these bytes. Every field is set
explicitly (no defaults), so that changing a default does not move the golden bytes, and the
identity comes from a fixed seed (Ed25519 signatures are deterministic).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from protocol import (
    PROTOCOL_VERSION,
    ContributionReport,
    DataSpec,
    GroupClaim,
    Hardware,
    Heartbeat,
    Hyperparameters,
    Identity,
    ModelSpec,
    RunManifest,
    seal,
)

GOLDEN_PATH = Path(__file__).with_name(f"golden_v{PROTOCOL_VERSION}.json")
SEED = bytes(range(32))
OTHER_PEER = Identity.from_seed(bytes(range(32, 64))).peer_id


def golden_identity() -> Identity:
    return Identity.from_seed(SEED)


def golden_report() -> ContributionReport:
    me = golden_identity().peer_id
    return ContributionReport(
        run_id="golden-run",
        peer_id=me,
        seq=42,
        sent_at=1_700_000_123.5,
        round=17,
        tokens=131_072,
        samples=1_024,
        compute_s=55.25,
        wall_s=61.75,
        bytes_sent=3_500_000,
        bytes_received=3_600_000,
        group=[GroupClaim(me, 131_072), GroupClaim(OTHER_PEER, 65_536)],
        hardware=Hardware(device="NVIDIA H100 80GB HBM3", count=2, memory_gb=80.0),
        price_per_hour=2.25,
        public_name="golden node",
        val_bpb=1.5,
        train_loss=None,
        ok=True,
        payload_bytes=7_000_000,
    )


def golden_heartbeat() -> Heartbeat:
    return Heartbeat(
        run_id="golden-run",
        peer_id=golden_identity().peer_id,
        seq=43,
        sent_at=1_700_000_153.0,
        round=17,
        status="averaging",
        tokens_total=2_000_000,
        hardware=Hardware(device="cpu", count=1, memory_gb=16.0),
        price_per_hour=0.0,
        public_name="",
    )


def golden_manifest() -> RunManifest:
    return RunManifest(
        run_id="golden-run",
        model=ModelSpec(preset="tiny", n_layer=2, n_head=4, n_embd=128, block_size=128, vocab_size=256),
        data=DataSpec(source="stdlib", val_fraction=0.05),
        round_tokens=200_000,
        hparams=Hyperparameters(
            batch_size=16, inner_lr=1e-3, weight_decay=0.1, warmup_steps=20, grad_clip=1.0,
            outer_lr=0.7, outer_momentum=0.9, target_batch=256,
        ),
        codec="fp16",
        algorithm="diloco",
        seed=0,
        protocol_version=1,
    )


def build() -> dict[str, str]:
    """The golden record: hex bytes and the manifest hash, keyed by name."""
    identity = golden_identity()
    manifest = golden_manifest()
    return {
        "protocol_version": str(PROTOCOL_VERSION),
        "peer_id": identity.peer_id,
        "report_envelope": seal(golden_report(), identity).hex(),
        "heartbeat_envelope": seal(golden_heartbeat(), identity).hex(),
        "manifest_bytes": manifest.to_bytes().hex(),
        "manifest_content_hash": manifest.content_hash,
    }


def main() -> int:
    if GOLDEN_PATH.exists():
        print(f"{GOLDEN_PATH} exists; golden files are frozen. Delete it only if v{PROTOCOL_VERSION} was never released.")
        return 1
    GOLDEN_PATH.write_text(json.dumps(build(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
