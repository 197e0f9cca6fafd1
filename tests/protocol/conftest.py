"""Fixtures for the protocol tests: fixed identities, sample messages, and a spec-level signer.

``sign_raw`` re-implements the version-1 envelope layout from ``protocol/envelope.py``'s
docstring, independently of ``seal``: it is how tests build envelopes that ``seal`` refuses
to make (wrong kind, wrong version, another sender, hand-made payloads). Fixtures are session
scoped and immutable so hypothesis tests can use them.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from protocol import ContributionReport, GroupClaim, Hardware, Heartbeat, Identity, pack

ENVELOPE_DOMAIN = b"capaswarm/envelope\x00"

SignRaw = Callable[..., bytes]


@pytest.fixture(scope="session")
def alice() -> Identity:
    return Identity.from_seed(b"\x01" * 32)


@pytest.fixture(scope="session")
def bob() -> Identity:
    return Identity.from_seed(b"\x02" * 32)


@pytest.fixture(scope="session")
def sign_raw() -> SignRaw:
    def sign(
        identity: Identity,
        payload: bytes | dict[str, Any],
        *,
        kind: str = "report",
        version: int = 1,
        sender: str | None = None,
    ) -> bytes:
        """Envelope bytes ``[version, kind, sender, payload, signature]`` signed by ``identity``."""
        if isinstance(payload, dict):
            payload = pack(payload)
        sender = identity.peer_id if sender is None else sender
        signature = identity.sign(ENVELOPE_DOMAIN + pack([version, kind, sender, payload]))
        return pack([version, kind, sender, payload, signature])

    return sign


def _report(identity: Identity, **changes: Any) -> ContributionReport:
    fields: dict[str, Any] = dict(
        run_id="test-run",
        peer_id=identity.peer_id,
        seq=7,
        sent_at=1_700_000_000.25,
        round=3,
        tokens=65_536,
        samples=512,
        compute_s=41.5,
        wall_s=58.0,
        bytes_sent=1_234_567,
        bytes_received=2_345_678,
        group=[GroupClaim(identity.peer_id, 65_536), GroupClaim("12D3KooWother", 32_768)],
        hardware=Hardware("NVIDIA H100 80GB HBM3", 1, 80.0),
        price_per_hour=2.5,
        public_name="alice",
        val_bpb=1.75,
        train_loss=None,
        ok=True,
        payload_bytes=4_000_000,
    )
    fields.update(changes)
    return ContributionReport(**fields)


def _heartbeat(identity: Identity, **changes: Any) -> Heartbeat:
    fields: dict[str, Any] = dict(
        run_id="test-run",
        peer_id=identity.peer_id,
        seq=8,
        sent_at=1_700_000_030.5,
        round=3,
        status="training",
        tokens_total=1_000_000,
        hardware=Hardware("cpu", 1, 16.0),
        price_per_hour=0.0,
        public_name="",
    )
    fields.update(changes)
    return Heartbeat(**fields)


@pytest.fixture(scope="session")
def make_report() -> Callable[..., ContributionReport]:
    """``make_report(identity, **changes)``: a fully populated report signed-for by ``identity``."""
    return _report


@pytest.fixture(scope="session")
def make_heartbeat() -> Callable[..., Heartbeat]:
    """``make_heartbeat(identity, **changes)``: a fully populated heartbeat."""
    return _heartbeat
