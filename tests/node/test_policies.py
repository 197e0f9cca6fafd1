"""node.policies: pure functions, tested in milliseconds."""
from __future__ import annotations

import math

import pytest

from node.policies.schedule import RoundProgress, eta_seconds, is_behind, round_done
from node.policies.timeouts import allreduce_bytes, allreduce_timeout, state_download_timeout


def test_round_done_by_tokens_or_when_the_swarm_moved_on():
    p = RoundProgress(round=3, tokens=900, tokens_per_s=100.0, peers=3)
    assert not round_done(p, 1000, local_round=3)
    assert round_done(RoundProgress(3, 1000, 100.0, 3), 1000, local_round=3)
    assert round_done(p, 1000, local_round=2), "a node behind the swarm must stop its inner phase"


def test_is_behind():
    assert is_behind(1, 2) and not is_behind(2, 2) and not is_behind(3, 2)


def test_eta():
    assert eta_seconds(RoundProgress(0, 250, 50.0, 2), 1000) == pytest.approx(15.0)
    assert eta_seconds(RoundProgress(0, 1000, 50.0, 2), 1000) == 0.0
    assert math.isinf(eta_seconds(RoundProgress(0, 0, 0.0, 1), 1000))


@pytest.mark.parametrize("n, expected", [(1, 0.0), (2, 1.0), (4, 1.5), (8, 1.75)])
def test_allreduce_bytes_is_the_butterfly_bound(n, expected):
    assert allreduce_bytes(1000, n) == pytest.approx(1000 * expected)


def test_allreduce_timeout_grows_with_payload_and_shrinks_with_bandwidth():
    small = allreduce_timeout(1_000_000, 4, 10e6 / 8)
    big = allreduce_timeout(100_000_000, 4, 10e6 / 8)
    fast = allreduce_timeout(100_000_000, 4, 1e9 / 8)
    assert small < big and fast < big
    assert allreduce_timeout(10**12, 4, 1.0) == 1800.0  # capped
    assert allreduce_timeout(0, 4, 1e6) == 5.0  # floor
    assert state_download_timeout(10**9, 12.5e6) > state_download_timeout(10**6, 12.5e6)


def test_link_estimate_follows_measurements():
    from node.policies.timeouts import chunk_timeout, update_link_estimate

    assert update_link_estimate(None, 10 << 20, 2.0) == pytest.approx(5 * 2**20)
    assert update_link_estimate(1e6, 100, 1.0) == 1e6, "a round too small to time keeps the estimate"
    assert update_link_estimate(None, 10 << 20, 0.0) is None
    slower = update_link_estimate(10e6, 10 << 20, 10.0)
    assert 1e6 < slower < 10e6
    assert chunk_timeout(1e9) == 2.0 and chunk_timeout(50e3) > chunk_timeout(300e3) > 2.0


def test_chunk_timeout_counts_the_streams_sharing_a_link():
    from node.policies.timeouts import chunk_timeout

    link = 5e6 / 8  # 5 Mbit/s
    one = chunk_timeout(link)
    assert one == pytest.approx(3 * 2**19 / link)  # a 512 KiB part at a third of the link
    assert chunk_timeout(link, streams=3) == pytest.approx(3 * one)  # 4 peers: 3 streams share each link
    assert chunk_timeout(link, streams=0) == one
    assert chunk_timeout(1e9, streams=7) == 2.0  # a fast link keeps the floor


@pytest.mark.parametrize("group", [2, 4, 16, 64])
def test_the_timeouts_at_124m_on_a_20_mbit_link_outlast_the_transfers_they_guard(group):
    """Issue 24: at ``gpt2-124m`` (an fp32 update of 498 MB) on the default 20 Mbit/s link, neither the
    all-reduce's timeout nor a joiner's state download's fires on a link that is merely as slow as declared."""
    from node.model.gpt import PRESETS
    from node.policies.model_size import param_count
    from node.policies.timeouts import chunk_timeout

    update, link = 4 * param_count(PRESETS["gpt2-124m"]), 20e6 / 8  # the node's payload_bytes, bytes/s
    assert allreduce_timeout(update, group, link) >= 2 * allreduce_bytes(update, group) / link  # 2x the whole transfer
    assert state_download_timeout(2 * update, link) >= 2 * (2 * update) / link  # params and momentum
    part = 2**19  # one all-reduce part, sharing the uplink with the group's other streams
    assert chunk_timeout(link, streams=group - 1) >= 2 * part * (group - 1) / link
