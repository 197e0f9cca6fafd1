"""Property tests on every decoder (h11's invariant): parse, or raise our error, never anything else.

- ``unpack`` and ``open_envelope`` on arbitrary bytes and on arbitrary (often non-canonical)
  MessagePack return a value or raise :class:`RemoteProtocolError`;
- what ``unpack`` accepts is canonical: it re-encodes to the very same bytes;
- random byte flips of valid envelopes never yield a message whose signature does not verify;
- validly signed envelopes around random payloads reach the schema checks, which hold the same
  invariant, and whatever ``open_envelope`` accepts, ``seal`` can send again unchanged;
- ``pack`` and ``seal`` raise only :class:`LocalProtocolError` on bad local values.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import msgpack
import pytest
from cryptography.exceptions import InvalidSignature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import (
    ContributionReport,
    Envelope,
    GroupClaim,
    Hardware,
    Heartbeat,
    LocalProtocolError,
    RemoteProtocolError,
    open_envelope,
    pack,
    public_key_from_peer_id,
    seal,
    unpack,
)

fuzz = settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])

leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=24)
    | st.binary(max_size=24)
)


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


# What the codec can write: nested at most 6 deep, so that a report field may hold it (cap: 8).
wire_values = st.recursive(
    leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=16,
).filter(lambda value: _depth(value) <= 6)


def _packb(value: Any, use_bin_type: bool, use_single_float: bool) -> bytes:
    try:
        return msgpack.packb(value, use_bin_type=use_bin_type, use_single_float=use_single_float)
    except OverflowError:  # a float64 too large for float32
        return msgpack.packb(value, use_bin_type=use_bin_type)


# Anything msgpack can write, canonical or not: raw strings, float32, bytes keys, NaN, ...
any_msgpack = st.builds(
    _packb,
    st.recursive(
        leaves | st.floats(),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8) | st.binary(max_size=8), inner, max_size=4)
        ),
        max_leaves=16,
    ),
    st.booleans(),
    st.booleans(),
)


REJECTED = object()


def parses_or_raises_remote_error(decode: Any, data: bytes) -> Any:
    """``decode(data)``, or ``REJECTED`` if it raised our error; anything else propagates."""
    try:
        return decode(data)
    except RemoteProtocolError:
        return REJECTED


# --- codec -------------------------------------------------------------------------------------


@fuzz
@given(st.binary(max_size=512))
def test_unpack_arbitrary_bytes(data):
    value = parses_or_raises_remote_error(unpack, data)
    if value is not REJECTED:
        assert pack(value) == data


@fuzz
@given(any_msgpack)
def test_unpack_arbitrary_msgpack(data):
    value = parses_or_raises_remote_error(unpack, data)
    if value is not REJECTED:
        assert pack(value) == data


@fuzz
@given(wire_values)
def test_pack_unpack_round_trip(value):
    assert unpack(pack(value)) == value


@fuzz
@given(
    st.recursive(
        leaves | st.floats() | st.integers() | st.just("\udcff") | st.sets(st.integers(), max_size=2) | st.just(object()),
        lambda inner: st.lists(inner, max_size=3)
        | st.tuples(inner)
        | st.dictionaries(st.text(max_size=3) | st.integers(), inner, max_size=3),
        max_leaves=12,
    )
)
def test_pack_raises_only_local_errors(value):
    try:
        data = pack(value)
    except LocalProtocolError:
        return
    assert pack(unpack(data)) == data  # and what it wrote is canonical


@pytest.mark.parametrize(
    "value",
    [float("nan"), 2**64, -(2**63) - 1, {1: "a"}, {"\udcff": 1}, "\udcff", {1, 2}, object(), [[[[[[[[[[1]]]]]]]]]]],
    ids=["nan", "int-too-big", "int-too-small", "int-key", "surrogate-key", "surrogate", "set", "object", "too-deep"],
)
def test_pack_rejects_unencodable_values(value):
    with pytest.raises(LocalProtocolError):
        pack(value)


# --- envelopes ---------------------------------------------------------------------------------


@fuzz
@given(st.binary(max_size=512))
def test_open_envelope_arbitrary_bytes(data):
    assert parses_or_raises_remote_error(open_envelope, data) is REJECTED  # nothing random is signed


@fuzz
@given(any_msgpack)
def test_open_envelope_arbitrary_msgpack(data):
    assert parses_or_raises_remote_error(open_envelope, data) is REJECTED


@fuzz
@given(
    st.one_of(st.integers(-1, 3), st.booleans(), st.text(max_size=3)),
    st.sampled_from(["report", "heartbeat", "bogus"]) | st.text(max_size=8),
    st.text(max_size=60),
    st.binary(max_size=64),
    st.binary(max_size=70),
)
def test_open_envelope_arbitrary_five_arrays(version, kind, sender, payload, signature):
    data = pack([version, kind, sender, payload, signature])
    assert parses_or_raises_remote_error(open_envelope, data) is REJECTED


def _signature_verifies(data: bytes) -> bool:
    """Check an accepted envelope's signature by the documented layout, without ``open_envelope``."""
    version, kind, sender, payload, signature = msgpack.unpackb(data)
    signed = b"capaswarm/envelope\x00" + msgpack.packb([version, kind, sender, payload], use_bin_type=True)
    try:
        public_key_from_peer_id(sender).verify(signature, signed)
    except InvalidSignature:
        return False
    return True


@fuzz
@given(st.data())
def test_byte_flips_never_yield_an_unverified_message(alice, make_report, make_heartbeat, data):
    message = data.draw(st.sampled_from([make_report(alice), make_heartbeat(alice)]))
    envelope = bytearray(seal(message, alice))
    flips = data.draw(
        st.lists(st.tuples(st.integers(0, len(envelope) - 1), st.integers(1, 255)), min_size=1, max_size=6)
    )
    for index, mask in flips:
        envelope[index] ^= mask
    if data.draw(st.booleans()):
        envelope = envelope[: data.draw(st.integers(0, len(envelope)))]
    opened = parses_or_raises_remote_error(open_envelope, bytes(envelope))
    if opened is not REJECTED:  # only possible when the flips cancelled out
        assert _signature_verifies(bytes(envelope))
        assert opened.message == message


REPORT_FIELDS = [f.name for f in dataclasses.fields(ContributionReport)]


@fuzz
@given(
    st.dictionaries(st.sampled_from(REPORT_FIELDS) | st.text(max_size=8), wire_values, max_size=8),
    st.lists(st.sampled_from(REPORT_FIELDS), max_size=3),
)
def test_signed_random_payloads(alice, make_report, sign_raw, changes, deletions):
    """Valid signature, random field values: the schema layer holds the invariant too."""
    wire = make_report(alice).to_wire() | changes
    for name in deletions:
        wire.pop(name, None)
    opened = parses_or_raises_remote_error(open_envelope, sign_raw(alice, wire))
    if opened is not REJECTED:
        message = opened.message
        assert isinstance(message, ContributionReport) and message.peer_id == alice.peer_id
        assert open_envelope(seal(message, alice)) == opened  # what we accept, we can send


# --- sealing -------------------------------------------------------------------------------------

GOOD = {
    "str": st.text(max_size=256),
    "int": st.integers(min_value=-(2**63), max_value=2**64 - 1),
    "float": st.floats(allow_nan=False, allow_infinity=False) | st.integers(-10, 10),
}
BAD = {
    "str": st.text(min_size=257, max_size=300),
    "int": st.booleans() | st.integers(2**64, 2**65) | st.integers(-(2**64), -(2**63) - 1),
    "float": st.sampled_from([math.nan, math.inf, -math.inf, True]),
}
REPORT_SLOTS = {
    "run_id": "str", "seq": "int", "sent_at": "float", "round": "int", "tokens": "int", "samples": "int",
    "compute_s": "float", "wall_s": "float", "bytes_sent": "int", "bytes_received": "int",
    "price_per_hour": "float", "public_name": "str", "val_bpb": "float", "train_loss": "float",
    "payload_bytes": "int", "hardware.device": "str", "hardware.count": "int", "hardware.memory_gb": "float",
    "group.peer_id": "str", "group.tokens": "int",
}


@st.composite
def reports(draw: st.DrawFn, peer_id: str) -> ContributionReport:
    """Reports within the schema, except that in about half of them one value is out of it."""
    bad_slot = draw(st.none() | st.sampled_from(sorted(REPORT_SLOTS)))

    def value(slot: str) -> Any:
        return draw((BAD if slot == bad_slot else GOOD)[REPORT_SLOTS[slot]])

    top = {name: value(name) for name in REPORT_SLOTS if "." not in name}
    for name in ("val_bpb", "train_loss"):
        if bad_slot != name and draw(st.booleans()):
            top[name] = None
    group = [GroupClaim(value("group.peer_id"), value("group.tokens")) for _ in range(draw(st.integers(0, 2)))]
    if bad_slot in ("group.peer_id", "group.tokens"):
        group.append(GroupClaim(value("group.peer_id"), value("group.tokens")))
    hardware = Hardware(value("hardware.device"), value("hardware.count"), value("hardware.memory_gb"))
    return ContributionReport(peer_id=peer_id, group=group, hardware=hardware, ok=draw(st.booleans()), **top)


def _well_formed(report: ContributionReport) -> bool:
    """What the version-1 schema allows, restated independently of ``protocol.schema``."""

    def ok_int(x: Any) -> bool:
        return type(x) is int and -(2**63) <= x < 2**64

    def ok_float(x: Any) -> bool:
        return (type(x) is float and math.isfinite(x)) or ok_int(x)  # ints are documented as accepted

    def ok_str(x: Any) -> bool:
        return len(x) <= 256

    w = report
    return (
        all(ok_str(s) for s in (w.run_id, w.public_name, w.hardware.device))
        and all(ok_int(i) for i in (w.seq, w.round, w.tokens, w.samples, w.bytes_sent, w.bytes_received,
                                    w.payload_bytes, w.hardware.count))
        and all(ok_float(f) for f in (w.sent_at, w.compute_s, w.wall_s, w.price_per_hour, w.hardware.memory_gb))
        and all(f is None or ok_float(f) for f in (w.val_bpb, w.train_loss))
        and all(ok_str(c.peer_id) and ok_int(c.tokens) for c in w.group)
    )


@fuzz
@given(st.data())
def test_seal_accepts_exactly_the_well_formed_reports(alice, data):
    report = data.draw(reports(alice.peer_id))
    try:
        envelope = seal(report, alice)
    except LocalProtocolError:
        assert not _well_formed(report)
        return
    assert _well_formed(report)
    assert open_envelope(envelope) == Envelope(1, "report", alice.peer_id, report)


@fuzz
@given(st.data())
def test_seal_heartbeat_raises_only_local_errors(alice, data):
    def value(kind: str) -> Any:
        return data.draw(GOOD[kind] | BAD[kind])

    heartbeat = Heartbeat(
        run_id=value("str"), peer_id=alice.peer_id, seq=value("int"), sent_at=value("float"),
        round=value("int"), status=value("str"), tokens_total=value("int"),
        price_per_hour=value("float"), public_name=value("str"),
    )
    try:
        envelope = seal(heartbeat, alice)
    except LocalProtocolError:
        return
    assert open_envelope(envelope).message == heartbeat
