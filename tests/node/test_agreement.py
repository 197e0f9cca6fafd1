"""node/policies/agreement.py: what each member applies, from its own claims and the others' records;
node/averaging/records.py: only a member can write its own record."""
from __future__ import annotations

import itertools

import pytest
from hivemind.dht.validation import DHTRecord
from hivemind.utils.serializer import MSGPackSerializer

from node.policies.agreement import MIN_WAIT_S, parse_failed, quorum, settle, wait_s
from node.averaging.records import AgreementRecords, agreement_subkey, poster_of
from protocol import Identity

MEMBERS = ["A", "B", "C", "D"]
REDUCERS = {0, 1, 2, 3}


def _settle(me, records, *, own=(), final=False, members=MEMBERS, reducers=REDUCERS):
    return settle(frozenset(own), {p: frozenset(v) for p, v in records.items()}, members, me, set(reducers), final=final)


def test_a_reducer_that_a_majority_saw_fail_is_zeroed_by_every_member():
    # D died mid all-reduce: A, B and C lost its share, and D never posts
    for me in "ABC":
        out = _settle(me, {p: {3} for p in "ABC" if p != me}, own={3})
        assert out is not None and out.drop is None and out.failed == {3} and out.unheard == ["D"], me


def test_a_liar_that_posts_every_reducer_failed_drops_only_its_own_round():
    records = {"B": set(), "C": set(), "D": REDUCERS}
    out = _settle("A", records)
    assert out.drop is None and out.failed == frozenset() and out.dissenters == ["D"]
    # what the liar would decide from its own (posted) claims: it lacks shares the group keeps
    liar = _settle("D", {"A": set(), "B": set(), "C": set()}, own=REDUCERS)
    assert liar.drop is not None and "no majority" in liar.drop


def test_a_withholder_costs_nothing_once_nothing_it_could_post_would_change_the_decision():
    out = _settle("A", {"B": set()})  # C and D are silent: no reducer can reach a quorum of 3 now
    assert out is not None and out.drop is None and out.unheard == ["C", "D"]
    # with three silent members a quorum is still reachable for every reducer: wait ...
    assert _settle("A", {}) is None and _settle("A", {"B": {1}}) is None
    # ... and at the deadline drop (never apply on an open decision: that could fork)
    late = _settle("A", {}, final=True)
    assert late.drop is not None and "before the deadline" in late.drop


def test_a_member_alone_in_seeing_a_failure_drops_and_the_others_apply_the_share():
    # C's share reached B and D but not A (a partial failure): A drops, the others keep C's share
    assert _settle("A", {"B": set(), "C": set(), "D": set()}, own={2}).drop is not None
    for me in "BCD":
        out = _settle(me, {p: ({2} if p == "A" else set()) for p in MEMBERS if p != me})
        assert out.drop is None and out.failed == frozenset() and out.dissenters == ["A"], me


def test_every_share_failed_drops_and_a_lone_member_keeps_the_old_rule():
    assert _settle("A", {p: REDUCERS for p in "BCD"}, own=REDUCERS).drop == "every reducer's share failed"
    alone = settle(frozenset(), {}, ["A"], "A", {0}, final=True)
    assert alone.drop is None and alone.failed == frozenset()


def test_two_members_that_both_decided_never_disagree():
    """Exhaustive over 4 members' honest claims and what each member heard: whenever two members
    both decide (nothing open), they zero the same shares, and neither applies an average holding a
    share it lacks."""
    subsets = [frozenset(s) for r in range(3) for s in itertools.combinations(range(4), r)]
    for claims in itertools.product(subsets, repeat=4):
        truth = dict(zip(MEMBERS, claims))
        decided = []
        for me in MEMBERS:
            for heard in itertools.product([False, True], repeat=3):
                others = [p for p in MEMBERS if p != me]
                records = {p: truth[p] for p, h in zip(others, heard) if h}
                out = settle(truth[me], records, MEMBERS, me, REDUCERS, final=True)
                if out.drop is None:
                    assert truth[me] <= out.failed, (truth, me, records)
                    decided.append(out.failed)
        assert len(set(decided)) <= 1, (truth, set(decided))


def test_quorum_and_record_bounds():
    assert [quorum(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 2, 3, 3]
    assert parse_failed([0, 3], 4) == frozenset({0, 3}) and parse_failed([], 4) == frozenset()
    for bad in (None, {"0": 1}, [True], [-1], [4], [1.0], list(range(5)), [1, 1]):
        assert parse_failed(bad, 4) is None, bad


def test_the_wait_covers_a_reducer_timeout_and_never_drops_below_the_floor():
    assert wait_s(None) == wait_s(0.5) == MIN_WAIT_S
    assert wait_s(4.0) == 12.0


# --- signed records (the DHT validator every node runs) --------------------------------------------

KEY = b"\x11" * 20  # a DHTID's bytes: the record's key as the validator sees it


def _record(poster: str, value: object, expiration: float = 1000.0) -> DHTRecord:
    return DHTRecord(KEY, MSGPackSerializer.dumps(agreement_subkey(poster)), MSGPackSerializer.dumps(value), expiration)


@pytest.fixture()
def alice():
    return Identity.from_seed(b"\x01" * 32)


@pytest.fixture()
def bob():
    return Identity.from_seed(b"\x02" * 32)


def test_a_member_signs_its_own_record_and_every_node_accepts_it(alice, bob):
    record = _record(alice.peer_id, [1, 2])
    signed = AgreementRecords(alice).sign_value(record)
    stored = DHTRecord(record.key, record.subkey, signed, record.expiration_time)
    assert AgreementRecords(bob).validate(stored)
    assert MSGPackSerializer.loads(AgreementRecords(bob).strip_value(stored)) == [1, 2]
    assert poster_of(agreement_subkey(alice.peer_id)) == alice.peer_id and poster_of("other") is None


def test_unsigned_forged_replayed_or_altered_records_are_refused(alice, bob):
    validator = AgreementRecords(bob)
    record = _record(alice.peer_id, [1])
    assert not validator.validate(record)  # unsigned
    # bob writes under alice's name: his node does not sign it, and his own signature does not verify
    assert AgreementRecords(bob).sign_value(record) == record.value
    forged = AgreementRecords(alice).sign_value(_record(bob.peer_id, [1]))  # alice's key, bob's subkey
    assert not validator.validate(DHTRecord(KEY, _record(bob.peer_id, [1]).subkey, forged, 1000.0))
    signed = AgreementRecords(alice).sign_value(record)
    for changed in (DHTRecord(b"\x22" * 20, record.subkey, signed, 1000.0),  # another group's key
                    DHTRecord(KEY, record.subkey, signed, 5000.0),  # a later expiration, to outlive a newer record
                    DHTRecord(KEY, record.subkey, MSGPackSerializer.dumps([0, 1, 2]) + signed[-72:], 1000.0),
                    DHTRecord(KEY, record.subkey, signed[:-1], 1000.0)):
        assert not validator.validate(changed)


def test_other_records_pass_untouched(alice):
    plain = DHTRecord(KEY, MSGPackSerializer.dumps("12D3KooWsomething"), MSGPackSerializer.dumps(7), 1000.0)
    regular = DHTRecord(KEY, b"", MSGPackSerializer.dumps(7), 1000.0)
    validator = AgreementRecords(alice)
    for record in (plain, regular):
        assert validator.validate(record) and validator.sign_value(record) == record.value
        assert validator.strip_value(record) == record.value
