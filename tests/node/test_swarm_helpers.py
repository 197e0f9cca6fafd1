"""The replica check the swarm tests rely on must itself be able to fail."""
from __future__ import annotations

from swarm_helpers import fork_problems


def test_identical_rounds_pass():
    assert fork_problems({"3": {"a"}, "4": {"b"}, "5": {"c"}}) == []


def test_any_forked_round_fails_and_so_does_no_round():
    assert fork_problems({}) == ["no round was completed by every node"]
    assert fork_problems({"3": {"a", "x"}, "4": {"b"}, "5": {"c"}}) == ["1 forked rounds (['3']), more than 0"]
    assert fork_problems({"3": {"a"}, "4": {"b", "y"}, "10": {"c", "z"}}) == ["2 forked rounds (['4', '10']), more than 0"]
    # a test that makes forks on purpose says how many it allows
    assert fork_problems({"3": {"a", "x"}, "4": {"b"}}, max_forked=1) == []
