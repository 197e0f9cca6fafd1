"""Happy paths: what ``seal`` / ``to_bytes`` write, ``open_envelope`` / ``from_bytes`` read back."""
from __future__ import annotations

import pytest

from protocol import (
    PROTOCOL_VERSION,
    ContributionReport,
    DataSpec,
    Envelope,
    GroupClaim,
    Heartbeat,
    Hyperparameters,
    LocalProtocolError,
    ModelSpec,
    RunManifest,
    open_envelope,
    seal,
    unpack,
)


def test_report_round_trip(alice, make_report):
    report = make_report(alice)
    env = open_envelope(seal(report, alice))
    assert env == Envelope(PROTOCOL_VERSION, "report", alice.peer_id, report)
    assert isinstance(env.message, ContributionReport)


def test_report_with_defaults_and_empty_group_round_trips(alice):
    report = ContributionReport(
        run_id="r", peer_id=alice.peer_id, seq=0, sent_at=0.0, round=0, tokens=0, samples=0,
        compute_s=0.0, wall_s=0.0, bytes_sent=0, bytes_received=0,
    )
    assert open_envelope(seal(report, alice)).message == report


def test_heartbeat_round_trip(alice, make_heartbeat):
    heartbeat = make_heartbeat(alice)
    env = open_envelope(seal(heartbeat, alice))
    assert (env.kind, env.sender) == ("heartbeat", alice.peer_id)
    assert isinstance(env.message, Heartbeat)
    assert env.message == heartbeat


def test_payload_is_a_map_of_field_names(alice, make_heartbeat):
    """The wire carries field names, not positions: that is what lets schemas grow."""
    version, kind, sender, payload, signature = unpack(seal(make_heartbeat(alice), alice))
    fields = unpack(payload)
    assert fields["status"] == "training"
    assert fields["hardware"] == {"count": 1, "device": "cpu", "memory_gb": 16.0}
    assert len(signature) == 64


def test_same_message_seals_to_same_bytes(alice, make_report):
    """Canonical encoding + deterministic Ed25519: equal messages give equal envelopes."""
    assert seal(make_report(alice), alice) == seal(make_report(alice), alice)
    assert seal(make_report(alice), alice) != seal(make_report(alice, seq=8), alice)


def test_seal_refuses_a_message_for_another_peer(alice, bob, make_report):
    with pytest.raises(LocalProtocolError):
        seal(make_report(bob), alice)


def test_seal_refuses_a_struct_that_is_not_a_message(alice):
    with pytest.raises(LocalProtocolError):
        seal(ModelSpec(), alice)


@pytest.mark.parametrize(
    "bad",
    [
        {"public_name": "x" * 257},  # the decoder caps strings at 256 characters
        {"tokens": True},  # bool where an int is declared
        {"val_bpb": float("nan")},
        {"seq": 2**64},
    ],
    ids=["long-string", "bool-for-int", "nan", "int-overflow"],
)
def test_seal_refuses_what_open_envelope_would_reject(alice, make_report, bad):
    """A bad message is our bug: caught locally, not counted against us by the receiver."""
    with pytest.raises(LocalProtocolError):
        seal(make_report(alice, **bad), alice)


def test_seal_refuses_an_envelope_over_the_size_cap(alice, make_report):
    group = [GroupClaim(alice.peer_id + str(i), i) for i in range(1024)]  # ~70 KB > 64 KiB cap
    with pytest.raises(LocalProtocolError):
        seal(make_report(alice, group=group), alice)


def test_manifest_round_trip():
    manifest = RunManifest(
        run_id="owt-tiny-01",
        model=ModelSpec(preset="small", n_layer=6, n_head=6, n_embd=384, block_size=256, vocab_size=256),
        data=DataSpec(source="files", val_fraction=0.1),
        round_tokens=500_000,
        hparams=Hyperparameters(batch_size=8, inner_lr=3e-4, outer_lr=0.5),
        codec="int8",
        algorithm="sync",
        seed=1234,
    )
    data = manifest.to_bytes()
    again = RunManifest.from_bytes(data)
    assert again == manifest
    assert again.to_bytes() == data
    assert again.content_hash == manifest.content_hash


def test_appended_field_is_written_only_when_set(alice, make_report):
    """``blocked_s`` came after version 1: unset, a report keeps its version-1 bytes (no key);
    set, it travels and decodes; a version-1 decoder would ignore the extra key."""
    plain = make_report(alice)
    assert "blocked_s" not in unpack(unpack(seal(plain, alice))[3])
    assert open_envelope(seal(plain, alice)).message.blocked_s is None
    timed = make_report(alice, blocked_s=1.25)
    fields = unpack(unpack(seal(timed, alice))[3])
    assert fields["blocked_s"] == 1.25
    assert open_envelope(seal(timed, alice)).message == timed
    assert ContributionReport.from_wire({k: v for k, v in fields.items() if k != "blocked_s"}) == plain
