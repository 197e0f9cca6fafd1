"""node/averaging/agreement.py: the union of failed reducers every member applies, from members' records."""
from __future__ import annotations

from node.averaging.agreement import MIN_WAIT_S, parse_failed, union_of_failed, verdict, wait_s

MEMBERS = ["A", "B", "C", "D"]


def test_members_that_each_saw_a_different_reducer_fail_zero_the_same_union():
    # the CI fork: two survivors each lost the other's share (and the victim's), and kept their own
    a, _, _ = union_of_failed({1, 2}, {"B": [0, 2], "D": []}, MEMBERS, "A")
    b, _, _ = union_of_failed({0, 2}, {"A": [1, 2], "D": []}, MEMBERS, "B")
    assert a == b == {0, 1, 2}


def test_unheard_members_are_listed_and_records_of_strangers_ignored():
    failed, missing, malformed = union_of_failed({3}, {"B": [], "Z": [0, 1, 2]}, MEMBERS, "A")
    assert failed == {3} and missing == ["C", "D"] and malformed == []


def test_malformed_records_are_named_and_change_nothing():
    records = {"B": "all", "C": [0, 0], "D": [7]}
    failed, missing, malformed = union_of_failed(set(), records, MEMBERS, "A")
    assert failed == set() and missing == [] and malformed == ["B", "C", "D"]


def test_parse_failed_bounds():
    assert parse_failed([0, 3], 4) == frozenset({0, 3}) and parse_failed([], 4) == frozenset()
    for bad in (None, {"0": 1}, [True], [-1], [4], [1.0], list(range(5)), [1, 1]):
        assert parse_failed(bad, 4) is None, bad


def test_a_member_applies_only_when_it_heard_everyone_and_some_share_survived():
    reducers = {0, 1, 2}
    assert verdict({2}, [], reducers) is None  # the union is zeroed and applied
    assert verdict(set(), ["C"], reducers) == "no record of failed reducers from 1 member(s)"
    assert verdict({0, 1, 2}, [], reducers) == "every reducer's share failed"
    # a member whose data phase failed posts every index (clients included): the others drop the round
    everything, _, _ = union_of_failed(set(), {"B": [0, 1, 2, 3], "C": [], "D": []}, MEMBERS, "A")
    assert verdict(everything, [], reducers) is not None


def test_the_wait_covers_a_reducer_timeout_and_never_drops_below_the_floor():
    assert wait_s(None) == wait_s(0.5) == MIN_WAIT_S
    assert wait_s(4.0) == 12.0
