"""Node identity: one Ed25519 key, stored in libp2p's protobuf private-key format.

Why this format (hard to undo): hivemind's p2pd reads ``identity_path`` as a libp2p
``PrivateKey`` protobuf, so the very file the daemon authenticates with also signs our
messages. The libp2p peer id of an Ed25519 key is the *identity multihash* of the public
key protobuf, so the public key can be recovered from the peer id alone and any signature
checked against the id it claims, with no key registry.

Wire layouts (protobuf, written by hand because they are two fixed fields and ``protocol``
must not import hivemind's generated classes)::

    PrivateKey { key_type = 1 (Ed25519); data = seed(32) || public(32) }  -> 08 01 12 40 <64 B>
    PublicKey  { key_type = 1 (Ed25519); data = public(32) }              -> 08 01 12 20 <32 B>
    peer id = base58btc( 00 24 || PublicKey-bytes )                       -> "12D3KooW..."
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import DecodeError, LocalProtocolError, SignatureError

__all__ = ["Identity", "peer_id_from_public_key", "public_key_from_peer_id", "verify_signature"]

_PRIV_HEADER = bytes([0x08, 0x01, 0x12, 0x40])
_PUB_HEADER = bytes([0x08, 0x01, 0x12, 0x20])
_IDENTITY_MULTIHASH = bytes([0x00, 0x24])  # code 0x00 (identity), length 36
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}


def _b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_B58[r])
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + "".join(reversed(out))


def _b58decode(text: str) -> bytes:
    n = 0
    for c in text:
        if c not in _B58_INDEX:
            raise DecodeError(f"invalid base58 character {c!r} in peer id")
        n = n * 58 + _B58_INDEX[c]
    pad = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * pad + body


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def peer_id_from_public_key(public: bytes) -> str:
    """The libp2p peer id (``12D3KooW...``) of a raw 32-byte Ed25519 public key."""
    if len(public) != 32:
        raise LocalProtocolError("an Ed25519 public key is 32 bytes")
    return _b58encode(_IDENTITY_MULTIHASH + _PUB_HEADER + public)


def public_key_from_peer_id(peer_id: str) -> Ed25519PublicKey:
    """Recover the Ed25519 public key embedded in a peer id, or raise :class:`DecodeError`."""
    if not isinstance(peer_id, str) or not 40 <= len(peer_id) <= 60:
        raise DecodeError("peer id is not an Ed25519 libp2p peer id")
    raw = _b58decode(peer_id)
    prefix = _IDENTITY_MULTIHASH + _PUB_HEADER
    if len(raw) != len(prefix) + 32 or not raw.startswith(prefix):
        raise DecodeError("peer id is not an Ed25519 libp2p peer id (RSA or hashed ids are not accepted)")
    return Ed25519PublicKey.from_public_bytes(raw[len(prefix):])


def verify_signature(peer_id: str, signature: bytes, data: bytes) -> None:
    """Raise :class:`SignatureError` unless ``signature`` over ``data`` is by ``peer_id``'s key."""
    try:
        key = public_key_from_peer_id(peer_id)
    except DecodeError as e:
        raise SignatureError(f"cannot verify: {e}") from None
    try:
        key.verify(signature, data)
    except InvalidSignature:
        raise SignatureError(f"signature does not verify for peer {peer_id}") from None


@dataclass(frozen=True)
class Identity:
    """An Ed25519 private key plus the peer id it implies."""

    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> Identity:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """Deterministic identity from a 32-byte seed (tests, golden files)."""
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @property
    def public_bytes(self) -> bytes:
        return _raw_public(self.private_key.public_key())

    @property
    def peer_id(self) -> str:
        return peer_id_from_public_key(self.public_bytes)

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data)

    # --- libp2p protobuf file ---------------------------------------------------------------
    def to_libp2p_bytes(self) -> bytes:
        seed = self.private_key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        return _PRIV_HEADER + seed + self.public_bytes

    @classmethod
    def from_libp2p_bytes(cls, blob: bytes) -> Identity:
        if len(blob) != len(_PRIV_HEADER) + 64 or not blob.startswith(_PRIV_HEADER):
            raise DecodeError("not an Ed25519 libp2p private key file (expected 68 bytes, key type 1)")
        seed, public = blob[4:36], blob[36:68]
        ident = cls.from_seed(seed)
        if ident.public_bytes != public:
            raise DecodeError("corrupt key file: public half does not match the seed")
        return ident

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the key file with 0600 permissions (created so, never widened then narrowed)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # an existing file keeps its mode on open: narrow it before writing
        with os.fdopen(fd, "wb") as f:
            f.write(self.to_libp2p_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Identity:
        return cls.from_libp2p_bytes(Path(path).read_bytes())

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> Identity:
        path = Path(path)
        if path.exists():
            return cls.load(path)
        ident = cls.generate()
        ident.save(path)
        return ident
