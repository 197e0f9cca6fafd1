"""Every error the protocol raises, in one tree (h11 / httpx style).

::

    ProtocolError                  base of everything below
    |- LocalProtocolError          *we* tried to build or send something invalid (a bug on our side)
    `- RemoteProtocolError         bytes from a peer are unacceptable (their fault; count and drop)
       |- DecodeError              malformed, non-canonical or wrongly-typed MessagePack / fields
       |- OversizedError           input larger than the cap for its kind
       |- UnknownMessageKind       a kind this version does not know
       |- IncompatibleVersion      the envelope's protocol version is not ours
       |- SignatureError           signature does not verify for the claimed peer id
       `- ManifestMismatch         the peer trains a different run manifest than ours

Each remote error carries a short machine-readable ``reason`` so that services can count
rejections by reason without parsing messages.
"""
from __future__ import annotations

__all__ = [
    "DecodeError",
    "IncompatibleVersion",
    "LocalProtocolError",
    "ManifestMismatch",
    "OversizedError",
    "ProtocolError",
    "RemoteProtocolError",
    "SignatureError",
    "UnknownMessageKind",
]


class ProtocolError(Exception):
    """Base class of all protocol errors."""

    reason: str = "protocol_error"


class LocalProtocolError(ProtocolError):
    """We were asked to encode or send something that violates the protocol."""

    reason = "local_error"


class RemoteProtocolError(ProtocolError):
    """Input from the network violates the protocol."""

    reason = "remote_error"


class DecodeError(RemoteProtocolError):
    reason = "malformed"


class OversizedError(RemoteProtocolError):
    reason = "oversized"


class UnknownMessageKind(RemoteProtocolError):
    reason = "unknown_kind"


class IncompatibleVersion(RemoteProtocolError):
    reason = "incompatible_version"


class SignatureError(RemoteProtocolError):
    reason = "bad_signature"


class ManifestMismatch(RemoteProtocolError):
    reason = "manifest_mismatch"
