"""benchmarks/soak.py counts forked rounds from node statuses: the count must be able to say 'forked'."""
from __future__ import annotations

from benchmarks.soak import forked_rounds


def _st(first: int | None, hashes: dict[int, str]) -> dict:
    return {"first_contribution": first, "hashes": {str(r): h for r, h in hashes.items()}}


def test_rounds_after_everyone_contributed_are_checked_and_a_fork_is_counted():
    sts = {"a": _st(0, {1: "x", 2: "p", 3: "q", 4: "r", 5: "s"}),
           "b": _st(1, {2: "y", 3: "q", 4: "R", 5: "s"}),
           "victim": _st(0, {1: "x", 2: "p", 3: "q"})}  # stopped after round 3
    # settled = 2: round 2 (a join race) is not checked; 3 is three nodes, 4 is forked, 5 agrees
    assert forked_rounds(sts) == ([4], 3)


def test_nodes_that_never_contributed_and_lone_rounds_are_left_out():
    sts = {"a": _st(0, {1: "x", 2: "y", 3: "z"}), "late": _st(None, {}), "b": _st(0, {2: "y"})}
    assert forked_rounds(sts) == ([], 1)
    assert forked_rounds({"a": _st(0, {1: "x"})}) == ([], 0)


def test_pytests_current_link_is_not_counted_twice(tmp_path):
    import json

    from benchmarks.soak import _statuses

    node = tmp_path / "test_x0" / "node-1"
    node.mkdir(parents=True)
    (node / "status.json").write_text(json.dumps(_st(0, {1: "x"})))
    (tmp_path / "test_xcurrent").symlink_to(tmp_path / "test_x0")
    assert list(_statuses(tmp_path)) == ["test_x0"]
