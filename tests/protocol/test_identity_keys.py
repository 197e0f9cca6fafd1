"""Identity: the libp2p key file, the peer id, and agreement with hivemind / go-libp2p."""
from __future__ import annotations

import os
import stat

import pytest

from protocol import (
    DecodeError,
    Identity,
    LocalProtocolError,
    SignatureError,
    peer_id_from_public_key,
    public_key_from_peer_id,
    verify_signature,
)


def _mode(path: os.PathLike[str]) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# --- key file ----------------------------------------------------------------------------------


def test_key_file_is_private_and_loads_back(tmp_identity):
    identity, path = tmp_identity
    assert _mode(path) == 0o600
    loaded = Identity.load(path)
    assert loaded.peer_id == identity.peer_id
    assert loaded.public_bytes == identity.public_bytes
    assert loaded.sign(b"hello") == identity.sign(b"hello")  # same private key (Ed25519 is deterministic)


def test_key_file_is_private_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        Identity.generate().save(tmp_path / "a.key")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.key") == 0o600


def test_overwriting_a_world_readable_file_makes_it_private(tmp_path):
    path = tmp_path / "old.key"
    path.write_bytes(b"")
    path.chmod(0o644)
    identity = Identity.generate()
    identity.save(path)
    assert _mode(path) == 0o600
    assert Identity.load(path).peer_id == identity.peer_id


def test_save_creates_missing_directories(tmp_path):
    path = tmp_path / "nested" / "dir" / "identity.key"
    Identity.generate().save(path)
    assert path.exists()


def test_key_file_is_the_libp2p_private_key_protobuf(tmp_identity):
    """What go-libp2p (p2pd) reads: PrivateKey{key_type=Ed25519, data=seed||public}."""
    from hivemind.proto import crypto_pb2  # hivemind's own generated protobuf class

    identity, path = tmp_identity
    parsed = crypto_pb2.PrivateKey.FromString(path.read_bytes())
    assert parsed.key_type == crypto_pb2.KeyType.Ed25519
    assert len(parsed.data) == 64
    assert Identity.from_seed(parsed.data[:32]).peer_id == identity.peer_id
    assert parsed.data[32:] == identity.public_bytes


def test_load_or_create(tmp_path):
    path = tmp_path / "identity.key"
    first = Identity.load_or_create(path)
    assert _mode(path) == 0o600
    assert Identity.load_or_create(path).peer_id == first.peer_id
    assert Identity.load_or_create(tmp_path / "other.key").peer_id != first.peer_id


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda blob: blob[:-1],
        lambda blob: blob + b"\x00",
        lambda blob: b"",
        lambda blob: b"\x08\x00" + blob[2:],  # key type 0 (RSA)
        lambda blob: blob[:40] + bytes([blob[40] ^ 1]) + blob[41:],  # public half does not match the seed
    ],
    ids=["truncated", "extended", "empty", "rsa-type", "mismatched-public-half"],
)
def test_corrupt_key_file(tmp_identity, corrupt):
    _, path = tmp_identity
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(DecodeError):
        Identity.load(path)


# --- peer id -----------------------------------------------------------------------------------


def test_peer_id_embeds_the_public_key():
    identity = Identity.generate()
    assert identity.peer_id.startswith("12D3KooW")
    assert peer_id_from_public_key(identity.public_bytes) == identity.peer_id
    key = public_key_from_peer_id(identity.peer_id)
    assert Identity.from_seed(b"\x00" * 32).public_bytes != identity.public_bytes
    key.verify(identity.sign(b"data"), b"data")  # raises InvalidSignature if the key were wrong


def test_distinct_keys_give_distinct_peer_ids():
    assert len({Identity.generate().peer_id for _ in range(16)}) == 16


def test_verify_signature(alice, bob):
    signature = alice.sign(b"payload")
    verify_signature(alice.peer_id, signature, b"payload")
    with pytest.raises(SignatureError):
        verify_signature(alice.peer_id, signature, b"payload!")
    with pytest.raises(SignatureError):
        verify_signature(bob.peer_id, signature, b"payload")


@pytest.mark.parametrize(
    "peer_id",
    ["", "12D3KooW", "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N", "12D3KooW" + "I" * 44, 5],
    ids=["empty", "short", "rsa", "bad-alphabet", "not-a-string"],
)
def test_public_key_from_bad_peer_id(peer_id):
    with pytest.raises(DecodeError):
        public_key_from_peer_id(peer_id)  # type: ignore[arg-type]


def test_peer_id_from_wrong_length_key():
    with pytest.raises(LocalProtocolError):
        peer_id_from_public_key(b"\x01" * 31)


def test_peer_id_is_hivemind_base58(alice):
    from hivemind.p2p import PeerID

    parsed = PeerID.from_base58(alice.peer_id)
    assert parsed.to_base58() == alice.peer_id
    assert parsed.to_bytes() == b"\x00\x24\x08\x01\x12\x20" + alice.public_bytes  # identity multihash


@pytest.mark.timeout(60)
def test_hivemind_dht_with_our_key_file_has_our_peer_id(tmp_identity):
    """go-libp2p derives the same peer id from the key file as we do (one DHT, loopback)."""
    import hivemind

    identity, path = tmp_identity
    dht = hivemind.DHT(
        start=True, identity_path=str(path), host_maddrs=["/ip4/127.0.0.1/tcp/0"], nat_port_map=False
    )
    try:
        assert dht.peer_id.to_base58() == identity.peer_id
    finally:
        dht.shutdown()
