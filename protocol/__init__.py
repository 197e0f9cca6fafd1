"""protocol: the sans-I/O core shared by node, coordinator and sim.

Map of this package (bytes in, typed values out; no sockets, files only in ``identity``'s
explicit save/load helpers, no clock):

    errors.py    the exception tree (``ProtocolError`` -> Local / Remote -> ...), with ``reason`` codes
    version.py   ``PROTOCOL_VERSION``, ``SOFTWARE_VERSION`` and the compatibility rules
    codec.py     canonical MessagePack ``pack`` / ``unpack`` with size caps and strict types
    schema.py    ``WireStruct``: dataclasses checked against their annotations, tolerant of new fields
    identity.py  Ed25519 ``Identity`` in libp2p's key-file format; peer id <-> public key; verify
    messages.py  ``ContributionReport``, ``Heartbeat`` and their parts; reducers' ``OutlierReport``;
                 validators' ``SpotCheckVerdict``; DHT ``StateAnnouncement``; what the run key signs: ``Plan``,
                 ``BudgetChange``, ``AttributionCertificate``
    manifest.py  ``RunManifest`` and its content hash; ``check_same_run``; manifest files parsed (``parse_manifest_file``)
    envelope.py  ``seal`` (sign), ``open_envelope`` (verify, then decode), ``open_signed_by`` (a pinned signer)

Allowed imports: the standard library, ``msgpack`` and ``cryptography``. Nothing from this
project, nothing heavy (enforced by import-linter in CI).
"""
from .codec import DEFAULT_MAX_SIZE, pack, unpack
from .envelope import Envelope, open_envelope, open_signed_by, seal
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
from .messages import (
    AttributionCertificate, BudgetChange, ContributionReport, Credit, GroupClaim, Hardware, Heartbeat, MemberOutlier,
    OutlierReport, PeerPlan, Plan, SpotCheckVerdict, StateAnnouncement,
)
from .version import PROTOCOL_VERSION, SOFTWARE_VERSION, check_compatible, check_software_version, is_older, parse_version

__all__ = [
    "DEFAULT_MAX_SIZE",
    "PROTOCOL_VERSION",
    "AttributionCertificate",
    "BudgetChange",
    "SOFTWARE_VERSION",
    "ContributionReport",
    "Credit",
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
    "MemberOutlier",
    "ModelSpec",
    "OutlierReport",
    "OversizedError",
    "PeerPlan",
    "Plan",
    "ProtocolError",
    "RemoteProtocolError",
    "RunManifest",
    "SignatureError",
    "SpotCheckVerdict",
    "StateAnnouncement",
    "UnknownMessageKind",
    "check_compatible",
    "check_software_version",
    "check_same_run",
    "is_older",
    "open_envelope",
    "open_signed_by",
    "pack",
    "peer_id_from_public_key",
    "public_key_from_peer_id",
    "parse_version",
    "seal",
    "unpack",
    "verify_signature",
]
