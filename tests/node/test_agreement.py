"""node/agreement.py: the union of failed reducers every member applies, from members' records."""
from __future__ import annotations

from node.agreement import parse_failed, union_of_failed

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
