"""Signed envelopes: the only thing that crosses the wire between nodes and the coordinator.

Wire format, version 1 (hard to undo; golden bytes in ``tests/data/``)::

    envelope  = canonical msgpack array [version:int, kind:str, sender:str, payload:bin, signature:bin]
    signed    = b"capaswarm/envelope\\x00" || canonical msgpack [version, kind, sender, payload]
    payload   = canonical msgpack map of the message's fields

The signature covers version, kind and sender as well as the payload bytes (a signature can
not be replayed under another kind or version), with a domain prefix so that these bytes
can never be confused with anything else the same key signs (libp2p handshakes). The
signature is checked *before* the payload is decoded.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .codec import DEFAULT_MAX_SIZE, pack, unpack
from .errors import DecodeError, LocalProtocolError, SignatureError, UnknownMessageKind
from .identity import Identity, verify_signature
from .messages import MESSAGE_TYPES
from .schema import WireStruct
from .version import PROTOCOL_VERSION, check_compatible

__all__ = ["Envelope", "open_envelope", "open_signed_by", "seal"]

_DOMAIN = b"capaswarm/envelope\x00"


def _signed_bytes(version: int, kind: str, sender: str, payload: bytes) -> bytes:
    return _DOMAIN + pack([version, kind, sender, payload])


@dataclass(frozen=True)
class Envelope:
    """A verified envelope and the message it carried."""

    version: int
    kind: str
    sender: str  # libp2p peer id of the signer
    message: Any


def seal(message: WireStruct, identity: Identity) -> bytes:
    """Sign ``message`` with ``identity`` and return the envelope bytes.

    Raises :class:`LocalProtocolError` for a message that ``open_envelope`` would reject.
    """
    kind = type(message).KIND
    if kind not in MESSAGE_TYPES:
        raise LocalProtocolError(f"{type(message).__name__} is not a sendable message")
    if getattr(message, "peer_id", identity.peer_id) != identity.peer_id:
        raise LocalProtocolError("message.peer_id must be the signer's peer id")
    wire = message.to_wire()
    try:  # refuse here what every receiver would refuse (and count against us)
        type(message).from_wire(wire)
    except DecodeError as e:
        raise LocalProtocolError(f"invalid {kind}: {e}") from None
    payload = pack(wire)
    sender = identity.peer_id
    signature = identity.sign(_signed_bytes(PROTOCOL_VERSION, kind, sender, payload))
    envelope = pack([PROTOCOL_VERSION, kind, sender, payload, signature])
    if len(envelope) > DEFAULT_MAX_SIZE:
        raise LocalProtocolError(f"{kind} envelope is {len(envelope)} bytes, over the {DEFAULT_MAX_SIZE}-byte cap")
    return envelope


def open_envelope(data: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> Envelope:
    """Verify and decode envelope bytes from an untrusted source.

    Raises a :class:`~protocol.errors.RemoteProtocolError` subclass for any bad input.
    """
    outer = unpack(data, max_size=max_size)
    if not isinstance(outer, list) or len(outer) != 5:
        raise DecodeError("envelope must be a 5-element array")
    version, kind, sender, payload, signature = outer
    if not isinstance(version, int) or isinstance(version, bool):
        raise DecodeError("envelope version must be an integer")
    check_compatible(version)
    if not isinstance(kind, str) or not isinstance(sender, str):
        raise DecodeError("envelope kind and sender must be strings")
    if not isinstance(payload, bytes) or not isinstance(signature, bytes):
        raise DecodeError("envelope payload and signature must be binary")
    if kind not in MESSAGE_TYPES:
        raise UnknownMessageKind(f"unknown message kind {kind[:32]!r}")
    verify_signature(sender, signature, _signed_bytes(version, kind, sender, payload))
    message = MESSAGE_TYPES[kind].from_wire(unpack(payload, max_size=max_size))
    if getattr(message, "peer_id", sender) != sender:
        raise SignatureError("message claims another peer's id than its signer's")
    return Envelope(version, kind, sender, message)


def open_signed_by(data: bytes, signer: str, *, max_size: int = DEFAULT_MAX_SIZE) -> Envelope:
    """Open an envelope that only ``signer`` may have signed: the run key's documents.

    The organizer's run key is an ordinary Ed25519 identity; its fingerprint is its peer-id string,
    which nodes pin from the join line. Anything the run key signs (the manifest, the cost plan,
    budget changes, attribution certificates) is an envelope whose sender must equal that pin.
    Raises :class:`SignatureError` for a valid envelope from anyone else.
    """
    envelope = open_envelope(data, max_size=max_size)
    if envelope.sender != signer:
        raise SignatureError(f"{envelope.kind} is signed by {envelope.sender[:16]}..., not by the pinned key {signer[:16]}...")
    return envelope
