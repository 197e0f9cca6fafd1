"""Attribution certificates, checked offline: ``swarm certificate verify FILE [--run-key FPR] [--export DIR]``.

A certificate is an envelope of kind ``certificate`` (``protocol.AttributionCertificate``) signed by
the run key. ``verify`` checks the signature (and, given ``--run-key``, that the signer is that key),
then decodes; with ``--export`` it recomputes the export's state hash from its weights and checks it
is the certified checkpoint (see ``coordinator/certificates.py`` for what the coordinator certifies).
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from protocol import AttributionCertificate, DecodeError, open_envelope, open_signed_by

__all__ = ["check_export", "describe", "verify_bytes", "verify_file"]


def verify_bytes(data: bytes, run_key: str | None = None) -> dict[str, Any]:
    """The certificate's fields plus ``signer``; raises a ``ProtocolError`` for anything not valid."""
    envelope = open_signed_by(data, run_key) if run_key else open_envelope(data)
    if not isinstance(envelope.message, AttributionCertificate):
        raise DecodeError(f"this is a {envelope.kind!r} envelope, not a certificate")
    return {**asdict(envelope.message), "signer": envelope.sender}


def describe(data: bytes) -> dict[str, Any]:
    """A freshly fetched certificate's fields (verified, signer not pinned: the export records it)."""
    return verify_bytes(data)


def verify_file(path: Path, run_key: str | None = None) -> dict[str, Any]:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    return verify_bytes(data, run_key)


def check_export(certificate: dict[str, Any], export_dir: Path) -> None:
    """Raise ``ValueError`` unless the weights in ``export_dir`` are the certified checkpoint."""
    from node.model.export import read_export

    ckpt = read_export(export_dir)
    if ckpt.state_hash != certificate["state_hash"]:
        raise ValueError(f"{export_dir} has state hash {ckpt.state_hash[:16]}..., the certificate names "
                         f"{certificate['state_hash'][:16]}...: not the certified checkpoint")
