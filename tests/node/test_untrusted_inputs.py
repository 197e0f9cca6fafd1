"""What a node reads from other peers, checked: gathered group values, downloaded states, state
announcements in the DHT; and what it cannot seal is skipped, not fatal."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

from node.net.announce import majority_hash, verify_records
from node.daemon.node import Node
from node.daemon.reports import outlier_report
from node.averaging.group import Member, parse_group, reference_hash, token_ceiling
from node.averaging.robust import MemberStats
from node.model.state import GlobalState, StateCheck, StateError, state_hash
from protocol import Identity, RunManifest, StateAnnouncement, open_envelope, seal

H1, H2 = "a" * 64, "b" * 64
MANIFEST = RunManifest(run_id="untrusted")


def test_malformed_or_implausible_members_are_dropped_not_fatal(caplog):
    cap = token_ceiling(MANIFEST.round_tokens)
    gathered = {
        "honest-1": {"tokens": 1000, "state_hash": H1, "state_round": 3},
        "honest-2": {"tokens": 900, "state_hash": H1, "state_round": 3},
        "huge": {"tokens": 2**70, "state_hash": H1, "state_round": 3},  # crashed the sealing of honest reports
        "negative": {"tokens": -5, "state_hash": H1, "state_round": 3},
        "bool": {"tokens": True, "state_hash": H1, "state_round": 3},
        "not-hex": {"tokens": 10, "state_hash": "z" * 64, "state_round": 3},
        "short-hash": {"tokens": 10, "state_hash": "ab", "state_round": 3},
        "list": [1, 2, 3],
        "float-round": {"tokens": 10, "state_hash": H1, "state_round": 3.5},
        "future-liar": {"tokens": cap, "state_hash": H2, "state_round": 10**6},
    }
    with caplog.at_level(logging.WARNING):
        members = parse_group(gathered, cap)
    assert [m.peer_id for m in members] == ["honest-1", "honest-2", "future-liar"]
    assert caplog.text.count("dropped from the round") == 7
    # one member announcing a made-up future round does not outvote two that agree
    assert reference_hash(members) == H1
    assert reference_hash([]) is None
    odd = {"odd": {"tokens": 1, "state_hash": H1, "state_round": 3, "serves": "yes"}}
    assert parse_group(odd, cap) == []


def test_the_reference_is_a_state_some_member_can_serve():
    """A public node one round behind a home node (a client, which serves nothing) is the reference:
    the home node downloads from it. The home node's newer round used to win, and the public node
    could never fetch that state (a NAT swarm stuck for 240 s)."""
    public, home = Member("pub", 10, H1, 5, serves=True), Member("home", 10, H2, 6, serves=False)
    assert reference_hash([public, home]) == H1
    assert reference_hash([Member("pub", 10, H1, 5), Member("pub-2", 10, H2, 6)]) == H2  # servers: newer round
    # clients still vote among servable states, and alone they are the reference
    assert reference_hash([public, Member("pub-2", 10, H2, 5), Member("home", 10, H2, 5, serves=False)]) == H2
    assert reference_hash([home, Member("home-2", 10, H1, 5, serves=False)]) == H2
    assert reference_hash([public, home, Member("home-2", 10, H2, 6, serves=False)]) == H1


def _state(round_: int = 2, scale: float = 1.0) -> GlobalState:
    return GlobalState(round_, [torch.ones(3, 2) * scale, torch.arange(4.0)], [torch.zeros(3, 2), torch.ones(4)])


def test_state_hash_covers_momentum_and_shapes():
    s = _state()
    other_momentum = GlobalState(2, s.params, [torch.zeros(3, 2), torch.ones(4) * 2])
    assert other_momentum.hash != s.hash
    reshaped = [t.reshape(-1) for t in s.params + s.momentum]
    assert state_hash(2, reshaped) != s.hash  # same bytes, other shapes
    assert state_hash(3, s.params + s.momentum) != s.hash


def test_downloaded_states_are_checked():
    s = _state()
    meta, tensors = s.to_wire(MANIFEST.content_hash)
    shapes = tuple(tuple(t.shape) for t in s.params)
    check = StateCheck(MANIFEST.content_hash, shapes)
    assert check(meta, tensors) is None
    assert StateCheck(MANIFEST.content_hash, shapes, expected_hash=s.hash)(meta, tensors) is None
    assert "majority" in StateCheck(MANIFEST.content_hash, shapes, expected_hash=H1)(meta, tensors)
    assert "older" in StateCheck(MANIFEST.content_hash, shapes, min_round=5)(meta, tensors)
    assert "manifest" in check({**meta, "manifest_hash": "x"}, tensors)
    assert "own" in check({**meta, "state_hash": H1}, tensors)
    bad = [t.clone() for t in tensors]
    bad[3][0] = float("nan")
    assert "non-finite" in check(meta, bad)
    assert "expected" in check(meta, [torch.zeros(2, 3)] + tensors[1:])
    assert "tensors" in check(meta, tensors[:3])
    assert "round" in check({**meta, "round": -1}, tensors)
    assert "round" in check({**meta, "round": "7"}, tensors)
    assert "manifest" in check([1], tensors)
    with pytest.raises(StateError, match="map"):
        GlobalState.from_wire([1], tensors, [torch.Size(x) for x in shapes])
    with pytest.raises(StateError):
        GlobalState.from_wire(meta, [t.long() for t in tensors], [torch.Size(x) for x in shapes])


def _record(ident: Identity, round_: int, h: str, sent_at: float = 1000.0, run_id: str = "untrusted") -> bytes:
    return seal(StateAnnouncement(run_id=run_id, peer_id=ident.peer_id, sent_at=sent_at, round=round_, state_hash=h), ident)


def test_announcements_count_only_signed_recent_distinct_peers():
    ids = [Identity.from_seed(bytes([i]) * 32) for i in range(7)]
    item = SimpleNamespace
    records = {
        ids[0].peer_id: item(value=_record(ids[0], 5, H1)),
        ids[1].peer_id: item(value=_record(ids[1], 5, H1)),
        ids[2].peer_id: item(value=_record(ids[2], 5, H2)),
        ids[3].peer_id: item(value=_record(ids[4], 5, H2)),  # ids[4]'s record under ids[3]'s subkey
        ids[5].peer_id: item(value=_record(ids[5], 5, H2, sent_at=1.0)),  # too old
        "junk": item(value=b"\x93garbage"),
        ids[6].peer_id: item(value=_record(ids[6], 5, "")),  # an abstention (a node that knows it forked)
        "other-run": item(value=_record(ids[3], 5, H2, run_id="another")),
    }
    valid = verify_records(records, MANIFEST, now=1000.0)
    assert sorted(a.peer_id for a in valid) == sorted(i.peer_id for i in ids[:3])
    m = majority_hash(valid)
    assert (m.state_hash, m.round, m.votes, m.voters) == (H1, 5, 2, 3)
    assert majority_hash(valid, exclude=ids[0].peer_id) is None  # 1 of 2: no strict majority
    assert majority_hash([]) is None
    newer = StateAnnouncement(run_id="untrusted", peer_id=ids[2].peer_id, sent_at=2000.0, round=6, state_hash=H1)
    assert majority_hash(valid + [newer]).votes == 2  # one vote per peer: its newest record


def test_outlier_reports_seal_even_with_infinite_ratios():
    ident = Identity.from_seed(b"\x07" * 32)
    stats = MemberStats()
    stats.add(float("inf"), 5.0, 0.0, True)
    msg = outlier_report(MANIFEST, ident.peer_id, 3, 7, 4, {"12D3KooWpeer": stats})
    opened = open_envelope(seal(msg, ident)).message
    assert opened.outliers[0].max_ratio == 1e9 and opened.outliers[0].weight_capped


def test_a_message_that_cannot_be_sealed_is_logged_and_skipped(tmp_path, caplog):
    """The old crash: a group member's 2**70-token claim made the honest node's report unsealable,
    and the exception ended its training loop. Now parse_group drops such a member; and should a
    report still be unsealable, it is logged and skipped."""
    from node.uplink.reporter import Reporter
    from protocol import ContributionReport, GroupClaim

    ident = Identity.from_seed(b"\x08" * 32)
    node = Node.__new__(Node)  # only the reporting path
    node.reporter = Reporter(ident, "http://127.0.0.1:9", tmp_path / "outbox")
    report = ContributionReport(run_id="r", peer_id=ident.peer_id, seq=3, sent_at=0.0, round=1, tokens=10, samples=1,
                                compute_s=1.0, wall_s=1.0, bytes_sent=0, bytes_received=0,
                                group=[GroupClaim("12D3KooWliar", 2**70)])
    with caplog.at_level(logging.ERROR):
        node._submit(report)  # must not raise
    assert "skipped" in caplog.text and node.reporter.pending == 0
