"""Every way a peer can send bad bytes, and the one typed error (and ``reason``) each must raise.

Envelopes with a valid signature over a bad payload are built with the ``sign_raw`` fixture,
so that each test reaches the check it is about instead of failing at the signature.
"""
from __future__ import annotations

import msgpack
import pytest

from protocol import (
    DEFAULT_MAX_SIZE,
    DecodeError,
    Hardware,
    IncompatibleVersion,
    OversizedError,
    RemoteProtocolError,
    SignatureError,
    UnknownMessageKind,
    open_envelope,
    pack,
    seal,
    unpack,
)

# Services count rejections by these codes: renaming one breaks dashboards and alerts.
REASONS = {
    DecodeError: "malformed",
    OversizedError: "oversized",
    UnknownMessageKind: "unknown_kind",
    IncompatibleVersion: "incompatible_version",
    SignatureError: "bad_signature",
}


def assert_rejected(data: bytes, error: type[RemoteProtocolError]) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        open_envelope(data)
    assert type(info.value) is error, f"expected {error.__name__}, got {type(info.value).__name__}: {info.value}"
    assert info.value.reason == REASONS[error]
    return info.value


def repack(envelope: bytes, **changes: object) -> bytes:
    """Re-pack the outer array of ``envelope`` with some elements replaced (signature kept)."""
    version, kind, sender, payload, signature = unpack(envelope)
    fields = dict(version=version, kind=kind, sender=sender, payload=payload, signature=signature)
    fields.update(changes)
    return pack([fields["version"], fields["kind"], fields["sender"], fields["payload"], fields["signature"]])


def flip_bit(data: bytes, index: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[index] ^= 1 << bit
    return bytes(out)


# --- signatures --------------------------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 31, 63])
def test_forged_signature(alice, make_report, index):
    env = seal(make_report(alice), alice)
    signature = unpack(env)[4]
    assert_rejected(repack(env, signature=flip_bit(signature, index)), SignatureError)


@pytest.mark.parametrize("cut", [0, 63])
def test_truncated_signature(alice, make_report, cut):
    env = seal(make_report(alice), alice)
    assert_rejected(repack(env, signature=unpack(env)[4][:cut]), SignatureError)


def test_tampered_payload(alice, make_report):
    env = seal(make_report(alice, tokens=1000), alice)
    payload = unpack(env)[3]
    tampered = payload.replace(pack(1000), pack(9000))  # still canonical, still a valid report
    assert tampered != payload and unpack(tampered)["tokens"] == 9000
    assert_rejected(repack(env, payload=tampered), SignatureError)


def test_signature_does_not_cover_another_kind(alice, make_heartbeat):
    """Version, kind and sender are signed too: a signature cannot be moved to another kind."""
    env = seal(make_heartbeat(alice), alice)
    assert_rejected(repack(env, kind="report"), SignatureError)


def test_signed_by_a_key_other_than_the_claimed_senders(alice, bob, make_report, sign_raw):
    payload = make_report(bob).to_wire()
    assert_rejected(sign_raw(alice, payload, sender=bob.peer_id), SignatureError)


def test_message_peer_id_differs_from_signer(alice, bob, make_report, sign_raw):
    """Alice's valid signature over a report that claims to be Bob's."""
    payload = make_report(bob).to_wire()
    err = assert_rejected(sign_raw(alice, payload), SignatureError)
    assert "another peer" in str(err)


@pytest.mark.parametrize(
    "sender",
    [
        "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N",  # an RSA (sha256-hashed) peer id: no key inside
        "12D3KooW" + "0" * 44,  # "0" is not in the base58 alphabet
        "",
        "1" * 52,
    ],
    ids=["rsa-peer-id", "bad-base58", "empty", "all-zero"],
)
def test_sender_that_is_not_an_ed25519_peer_id(alice, make_report, sign_raw, sender):
    assert_rejected(sign_raw(alice, make_report(alice).to_wire(), sender=sender), SignatureError)


# --- size and framing --------------------------------------------------------------------------


def test_oversized_input_is_rejected_before_parsing():
    assert_rejected(b"\xc1" * (DEFAULT_MAX_SIZE + 1), OversizedError)  # 0xc1 is never valid msgpack


def test_max_size_is_a_parameter(alice, make_report):
    env = seal(make_report(alice), alice)
    assert open_envelope(env, max_size=len(env)).message == make_report(alice)
    with pytest.raises(OversizedError):
        open_envelope(env, max_size=len(env) - 1)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        b"\x95\x01",  # a 5-array cut short
        msgpack.packb([1, "report", "x", b"", b""]) + b"\x00",  # trailing bytes
        msgpack.packb([1, "report", "x", b""]),  # 4 elements
        msgpack.packb({"version": 1}),
        msgpack.packb("report"),
        msgpack.packb([True, "report", "x", b"", b""]),  # bool version
        msgpack.packb([1, 5, "x", b"", b""]),  # int kind
        msgpack.packb([1, "report", "x", "payload", b""]),  # str payload
        msgpack.packb([1, "report", "x", b"", "signature"]),  # str signature
        b"\x95\x01\xa6report\xa1x\xc4\x00\xc7\x00\x05",  # ext type
    ],
    ids=[
        "empty", "reserved-byte", "truncated", "trailing", "four-elements", "map", "string",
        "bool-version", "int-kind", "str-payload", "str-signature", "ext-type",
    ],
)
def test_malformed_envelope(data):
    assert_rejected(data, DecodeError)


def test_non_bytes_input():
    with pytest.raises(DecodeError):
        open_envelope("not bytes")  # type: ignore[arg-type]


def test_bytearray_and_memoryview_are_accepted(alice, make_heartbeat):
    env = seal(make_heartbeat(alice), alice)
    assert open_envelope(bytearray(env)) == open_envelope(memoryview(env)) == open_envelope(env)


# --- canonical form ------------------------------------------------------------------------------


def test_non_canonical_outer_array(alice, make_report):
    """The same envelope with its version written as a uint8 (0xcc 0x01) instead of a fixint."""
    env = seal(make_report(alice), alice)
    assert env[:2] == b"\x95\x01"
    assert_rejected(b"\x95\xcc\x01" + env[2:], DecodeError)


@pytest.mark.parametrize(
    "encode",
    [
        lambda wire: msgpack.packb(dict(reversed(sorted(wire.items()))), use_bin_type=True),
        lambda wire: msgpack.packb(wire | {"sent_at": 1.5}, use_single_float=True, use_bin_type=True),
        lambda wire: msgpack.packb(wire | {"run_id": b"test-run"}, use_bin_type=True),
        lambda wire: msgpack.packb(wire, use_bin_type=True).replace(b"\xa8test-run", b"\xd9\x08test-run"),
    ],
    ids=["unsorted-keys", "float32", "bin-for-str", "str8-for-fixstr"],
)
def test_non_canonical_payload_with_valid_signature(alice, make_report, sign_raw, encode):
    wire = make_report(alice).to_wire()
    payload = encode(wire)
    assert payload != pack(wire)
    assert_rejected(sign_raw(alice, payload), DecodeError)


def test_duplicate_map_keys(alice, make_heartbeat, sign_raw):
    """A map that says ``seq`` twice: canonical form allows each key once."""
    wire = make_heartbeat(alice).to_wire()
    payload = bytearray(pack(wire))
    payload[0] += 1  # one more entry in the fixmap header...
    payload += pack("seq") + pack(1)  # ...and a second "seq" at the end
    assert_rejected(sign_raw(alice, bytes(payload), kind="heartbeat"), DecodeError)


# --- kind and version ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bogus", "", "Report", "report " * 10])
def test_unknown_kind(alice, make_report, sign_raw, kind):
    assert_rejected(sign_raw(alice, make_report(alice).to_wire(), kind=kind), UnknownMessageKind)


@pytest.mark.parametrize("version", [0, 2, -1, 2**32])
def test_wrong_version(alice, make_report, sign_raw, version):
    err = assert_rejected(sign_raw(alice, make_report(alice).to_wire(), version=version), IncompatibleVersion)
    assert str(version) in str(err)


def test_version_is_checked_before_kind(alice, sign_raw):
    """A future version may add kinds: say "incompatible", not "unknown kind"."""
    assert_rejected(sign_raw(alice, {}, kind="future-kind", version=2), IncompatibleVersion)


# --- fields ------------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["run_id", "peer_id", "seq", "tokens", "bytes_received"])
def test_missing_required_field(alice, make_report, sign_raw, missing):
    wire = make_report(alice).to_wire()
    del wire[missing]
    err = assert_rejected(sign_raw(alice, wire), DecodeError)
    assert missing in str(err)


def test_missing_field_in_nested_struct(alice, make_report, sign_raw):
    wire = make_report(alice).to_wire()
    del wire["group"][0]["tokens"]
    assert_rejected(sign_raw(alice, wire), DecodeError)


def test_missing_optional_fields_take_their_defaults(alice, make_report, sign_raw):
    wire = make_report(alice).to_wire()
    for name in ("group", "hardware", "price_per_hour", "public_name", "val_bpb", "ok", "payload_bytes"):
        del wire[name]
    expected = make_report(
        alice, group=[], hardware=Hardware(), price_per_hour=0.0, public_name="", val_bpb=None, ok=True, payload_bytes=0
    )
    assert open_envelope(sign_raw(alice, wire)).message == expected


@pytest.mark.parametrize(
    "field, value",
    [
        ("seq", True),  # bool is not an int on our wire
        ("tokens", 1.0),
        ("tokens", "1000"),
        ("round", None),
        ("ok", 1),
        ("compute_s", True),
        ("compute_s", "41.5"),
        ("run_id", 5),
        ("run_id", b"test-run"),
        ("public_name", "x" * 257),
        ("group", {"a": 1}),
        ("group", [{"peer_id": "x", "tokens": -1.5}]),
        ("hardware", ["cpu", 1, 16.0]),
        ("val_bpb", "1.5"),
    ],
)
def test_wrong_field_type(alice, make_report, sign_raw, field, value):
    wire = make_report(alice).to_wire() | {field: value}
    err = assert_rejected(sign_raw(alice, wire), DecodeError)
    assert field in str(err)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_float(alice, make_report, sign_raw, value):
    """``pack`` refuses to write NaN, so the payload is written with plain msgpack."""
    wire = make_report(alice).to_wire() | {"compute_s": value}
    assert_rejected(sign_raw(alice, msgpack.packb(wire, use_bin_type=True)), DecodeError)


def test_string_of_exactly_the_cap_is_accepted(alice, make_report):
    report = make_report(alice, public_name="x" * 256)
    assert open_envelope(seal(report, alice)).message == report


def test_int_is_accepted_for_a_float_field(alice, make_report, sign_raw):
    """Documented leniency for hand-made clients: 58 means 58.0."""
    wire = make_report(alice).to_wire() | {"wall_s": 58}
    message = open_envelope(sign_raw(alice, wire)).message
    assert message.wall_s == 58.0 and isinstance(message.wall_s, float)


def test_unknown_fields_are_ignored(alice, make_report, sign_raw):
    """Forward compatibility: a newer peer's extra fields, top level and nested, are dropped."""
    wire = make_report(alice).to_wire()
    wire["zz_future"] = {"anything": [1, 2.5, "three", None]}
    wire["hardware"]["interconnect"] = "nvlink"
    wire["group"][1]["signature"] = b"\x00" * 64
    env = open_envelope(sign_raw(alice, wire))
    assert env.message == make_report(alice)
    assert not hasattr(env.message, "zz_future")
