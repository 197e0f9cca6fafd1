"""coordinator.states: peer states as a pure function of timestamps and now."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator.states import PeerState, StateThresholds, peer_state

T = StateThresholds(stale_after_s=90.0, offline_after_s=300.0)


@pytest.mark.parametrize(
    ("silent_for", "status", "reports", "expected"),
    [
        (0.0, "training", 3, PeerState.ONLINE),
        (90.0, "training", 3, PeerState.ONLINE),
        (90.1, "training", 3, PeerState.STALE),
        (300.1, "training", 3, PeerState.OFFLINE),
        (5.0, "joining", 0, PeerState.JOINING),
        (5.0, "training", 0, PeerState.JOINING),  # heartbeats but no report yet
        (5.0, "joining", 2, PeerState.JOINING),
        (120.0, "joining", 0, PeerState.STALE),
        (1.0, "leaving", 3, PeerState.OFFLINE),
        (5.0, "paused", 3, PeerState.PAUSED),
        (5.0, "paused", 0, PeerState.PAUSED),
        (90.1, "paused", 3, PeerState.STALE),  # a paused node still heartbeats: silence still means stale
    ],
)
def test_states(silent_for, status, reports, expected):
    assert peer_state(last_seen=1000.0, last_status=status, reports=reports, now=1000.0 + silent_for, thresholds=T) == expected


_RANK = {PeerState.ONLINE: 0, PeerState.JOINING: 0, PeerState.PAUSED: 0, PeerState.STALE: 1, PeerState.OFFLINE: 2}


@given(st.floats(0, 1e4), st.floats(0, 1e4), st.sampled_from(["joining", "training", "averaging", "paused"]), st.integers(0, 5))
def test_silence_only_ever_moves_a_peer_towards_offline(a, b, status, reports):
    early, late = sorted((a, b))
    s1 = peer_state(last_seen=0.0, last_status=status, reports=reports, now=early, thresholds=T)
    s2 = peer_state(last_seen=0.0, last_status=status, reports=reports, now=late, thresholds=T)
    assert _RANK[s1] <= _RANK[s2]


def test_thresholds_must_be_ordered():
    with pytest.raises(ValueError):
        StateThresholds(stale_after_s=300.0, offline_after_s=90.0)
