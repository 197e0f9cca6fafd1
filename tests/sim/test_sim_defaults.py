"""The simulator's round defaults are the node's settings (issue 16: docs/simulator.md says so)."""
from __future__ import annotations

import random

import pytest

from node.host.config import NodeConfig
from sim.config import RoundProtocol
from sim.scenarios import make_scenario


def _node_default(name: str) -> object:
    return NodeConfig.model_fields[name].default


def test_round_protocol_defaults_are_the_nodes():
    proto = RoundProtocol(round_tokens=1000)
    assert proto.matchmaking_s == _node_default("matchmaking_time_s")
    assert proto.assumed_bandwidth_mbps == _node_default("bandwidth_mbps")
    assert proto.grouping == "random"  # hivemind's matchmaking; the node has no bandwidth tiers
    assert proto.target_group_size is None  # the node sets no group size: one group of every ready peer
    assert "group_size" not in NodeConfig.model_fields


def test_no_group_size_means_one_group_of_everyone():
    from node.policies.grouping import form_groups

    proto = RoundProtocol(round_tokens=1000)
    members = list(range(37))
    groups = form_groups(members, proto.group_size(len(members)), random.Random(0))
    assert len(groups) == 1 and sorted(groups[0]) == members
    assert RoundProtocol(round_tokens=1000, target_group_size=16).group_size(37) == 16
    assert RoundProtocol(round_tokens=1000, target_group_size=16).group_size(5) == 5
    with pytest.raises(ValueError, match="target_group_size"):
        RoundProtocol(round_tokens=1000, target_group_size=0)


def test_loopback_twin_runs_node_defaults_and_internet_scenarios_say_otherwise():
    assert make_scenario("loopback4").protocol.matchmaking_s == _node_default("matchmaking_time_s")
    internet = make_scenario("volunteers", peers=50, hours=1.0).protocol
    assert (internet.target_group_size, internet.matchmaking_s, internet.assumed_bandwidth_mbps) == (16, 15.0, 5.0)
