"""protocol: the sans-I/O core shared by node, coordinator and sim.

Map of this package (bytes in, typed values out; no sockets, files only in ``identity``'s
explicit save/load helpers, no clock):

    errors.py    the exception tree (``ProtocolError`` -> Local / Remote -> ...), with ``reason`` codes
    version.py   ``PROTOCOL_VERSION`` and the compatibility rule
    codec.py     canonical MessagePack ``pack`` / ``unpack`` with size caps and strict types
    schema.py    ``WireStruct``: dataclasses checked against their annotations, tolerant of new fields
    identity.py  Ed25519 ``Identity`` in libp2p's key-file format; peer id <-> public key; verify
    messages.py  ``ContributionReport``, ``Heartbeat`` and their parts
    manifest.py  ``RunManifest`` and its content hash; ``check_same_run``
    envelope.py  ``seal`` (sign) and ``open_envelope`` (verify, then decode)

Allowed imports: the standard library, ``msgpack`` and ``cryptography``. Nothing from this
project, nothing heavy (enforced by import-linter in CI).
"""
from .codec import DEFAULT_MAX_SIZE, pack, unpack
from .envelope import Envelope, open_envelope, seal
from .errors import (
    DecodeError,
    IncompatibleVersion,
    LocalProtocolError,
    ManifestMismatch,
    OversizedError,
    ProtocolError,
    RemoteProtocolError,
    SignatureError,
    UnknownMessageKind,
)
from .identity import Identity, peer_id_from_public_key, public_key_from_peer_id, verify_signature
from .manifest import DataSpec, Hyperparameters, ModelSpec, RunManifest, check_same_run
from .messages import ContributionReport, GroupClaim, Hardware, Heartbeat
from .version import PROTOCOL_VERSION, check_compatible

__all__ = [
    "DEFAULT_MAX_SIZE",
    "PROTOCOL_VERSION",
    "ContributionReport",
    "DataSpec",
    "DecodeError",
    "Envelope",
    "GroupClaim",
    "Hardware",
    "Heartbeat",
    "Hyperparameters",
    "Identity",
    "IncompatibleVersion",
    "LocalProtocolError",
    "ManifestMismatch",
    "ModelSpec",
    "OversizedError",
    "ProtocolError",
    "RemoteProtocolError",
    "RunManifest",
    "SignatureError",
    "UnknownMessageKind",
    "check_compatible",
    "check_same_run",
    "open_envelope",
    "pack",
    "peer_id_from_public_key",
    "public_key_from_peer_id",
    "seal",
    "unpack",
    "verify_signature",
]
