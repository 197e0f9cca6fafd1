"""The replica check the swarm tests rely on must itself be able to fail."""
from __future__ import annotations

from swarm_helpers import fork_problems


def test_identical_rounds_and_a_healed_fork_pass():
    assert fork_problems({"3": {"a"}, "4": {"b"}, "5": {"c"}}) == []
    assert fork_problems({"3": {"a", "x"}, "4": {"b"}, "5": {"c"}}) == []


def test_unhealed_repeated_and_trailing_forks_fail():
    assert fork_problems({}) == ["no round was completed by every node"]
    assert fork_problems({"3": {"a", "x"}, "4": {"b", "y"}, "5": {"c"}}) == [
        "the fork at round 3 was not healed by round 4", "2 forked rounds (['3', '4']), more than 1"]
    assert fork_problems({"3": {"a"}, "4": {"b", "y"}}) == ["the newest common round 4 is forked"]
    assert fork_problems({"2": {"a", "x"}, "3": {"b"}, "4": {"c", "z"}, "5": {"d"}}) == ["2 forked rounds (['2', '4']), more than 1"]
