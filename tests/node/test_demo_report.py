"""``swarm demo``'s report says whether the replicas agreed: each node's state hash per applied round,
compared on every round that two or more nodes applied."""
from __future__ import annotations

from node.cli.demo import replica_check


def test_identical_replicas_are_reported_identical():
    check = replica_check([{"1": "a", "2": "b"}, {"1": "a", "2": "b", "3": "c"}, {"2": "b"}])
    assert check == {"rounds_compared": 2, "rounds_forked": [], "identical": True}


def test_a_fork_names_its_round():
    check = replica_check([{"1": "a", "2": "b"}, {"1": "a", "2": "z"}])
    assert check == {"rounds_compared": 2, "rounds_forked": ["2"], "identical": False}


def test_nothing_shared_proves_nothing():
    assert replica_check([{"1": "a"}, {"2": "b"}])["identical"] is False
    assert replica_check([])["identical"] is False
