"""One group's all-reduce time is the butterfly bound; timeouts fail or ban as configured."""
from __future__ import annotations

import random

import pytest

from sim.allreduce import butterfly_time, run_group
from sim.config import RoundProtocol
from sim.scenarios import loopback4
from sim.run import simulate

MB = 1e6


def proto(**kw):
    return RoundProtocol(round_tokens=1000, **kw)


@pytest.mark.parametrize("n", [2, 3, 4, 8, 16])
def test_time_is_the_butterfly_bound_at_the_given_bandwidth(n):
    payload, bandwidth = 100 * MB, 10 * MB  # bytes, bytes/s
    out = run_group(payload, [bandwidth] * n, [0.0] * n, proto(assumed_bandwidth_mbps=80.0), random.Random(0))
    assert out.ok
    assert out.duration_s == pytest.approx(2 * (n - 1) / n * payload / bandwidth, rel=1e-12)


def test_the_slowest_link_and_the_longest_round_trip_set_the_pace():
    out = run_group(100 * MB, [50 * MB, 10 * MB, 40 * MB, 30 * MB], [0.01, 0.2, 0.05, 0.05],
                    proto(assumed_bandwidth_mbps=80.0), random.Random(0))
    assert out.duration_s == pytest.approx(1.5 * 100 * MB / (10 * MB) + 2 * 0.2)


def test_alone_a_node_averages_with_itself_at_once():
    out = run_group(100 * MB, [1.0], [0.0], proto(), random.Random(0))
    assert out.ok and out.duration_s == 0.0 and out.sent_share == 0.0


def test_a_group_over_its_timeout_fails_as_a_whole_by_default():
    # timeout at 8 Mbit/s assumed for 64 peers: 5 s + 3 x 2*63/64 x 10 MB / 1 MB/s = 64.06 s
    links = [10 * MB, 10 * MB, 0.05 * MB]  # one member at 0.4 Mbit/s needs 267 s
    out = run_group(10 * MB, links, [0.0] * 3, proto(assumed_bandwidth_mbps=8.0), random.Random(0))
    assert not out.ok and out.cause == "timeout"
    assert out.duration_s == pytest.approx(5 + 3 * 2 * 63 / 64 * 10 * MB / (1 * MB))


def test_ban_drops_the_straggler_and_the_rest_finish():
    links = [10 * MB, 10 * MB, 0.05 * MB]
    p = proto(assumed_bandwidth_mbps=8.0, straggler_policy="ban", failure_detect_s=5.0)
    out = run_group(10 * MB, links, [0.0] * 3, p, random.Random(0))
    assert out.ok and out.banned == (2,) and out.group_size == 2
    assert out.duration_s == pytest.approx(5.0 + butterfly_time(10 * MB, 2, 10 * MB))


def test_random_failures_happen_at_the_configured_rate():
    p = proto(group_failure_rate=0.25, assumed_bandwidth_mbps=1e6)
    rng = random.Random(3)
    outcomes = [run_group(MB, [MB] * 4, [0.0] * 4, p, rng) for _ in range(4000)]
    failed = [o for o in outcomes if not o.ok]
    assert 0.22 < len(failed) / len(outcomes) < 0.28
    assert all(o.cause == "failure" and 0 <= o.duration_s <= 1.5 for o in failed)


def test_a_simulated_round_takes_target_plus_matchmaking_plus_the_bound_plus_eval():
    """The whole swarm model, not just the formula: 4 always-on nodes in one group."""
    cfg = loopback4(tokens_per_s=(1000.0, 2000.0, 3000.0, 4000.0), round_tokens=100_000, matchmaking_s=3.0,
                    eval_s=2.0, loopback_mbps=8.0, hours=0.5)  # 1 MB/s, so the all-reduce is visible
    result = simulate(cfg)
    payload = result.summary["model"]["params"] * 2  # fp16
    expected = 100_000 / 10_000 + 3.0 + 1.5 * payload / 1e6 + 2.0
    assert result.summary["rounds"]["mean_period_s"] == pytest.approx(expected, rel=1e-9)
    sent = result.swarm.acct.bytes_sent
    rounds = result.summary["rounds"]["averaged"]
    averaged_so_far = sum(1 for r in result.rounds if r["last_done"] >= 0)
    assert sent[0] == pytest.approx(1.5 * payload * averaged_so_far) and rounds >= averaged_so_far - 1


def test_dense_codecs_are_symmetric_and_top_k_downlinks_grow_with_the_group():
    from sim.catalog import CODECS

    assert CODECS["int8"].payload_bytes(1000, 16) == pytest.approx(1000 * (1 + 2 / 256))
    topk = CODECS["topkef"]
    assert topk.down(1) == pytest.approx(0.03 * 6)
    assert topk.down(16) == pytest.approx((1 - 0.97**16) * 6)  # the average is non-zero on the union
    assert topk.payload_bytes(1000, 16) == pytest.approx(1000 * (0.18 + (1 - 0.97**16) * 6) / 2)
    chunked = CODECS["topk2ef"]  # 64 of 4096 kept; down: uint16 index + fp16 value, a uint16 count per chunk
    assert chunked.down(4) == pytest.approx((1 - (1 - 1 / 64) ** 4) * 4 + 2 / 4096)


@pytest.mark.parametrize("name", ["none", "fp16", "int8", "q4", "q2ef", "topkef", "topk2ef"])
def test_the_sims_codec_sizes_are_the_nodes(name):
    codecs = pytest.importorskip("node.averaging.codecs")  # imports torch
    from sim.catalog import CODECS

    assert CODECS[name].up == pytest.approx(codecs.CODECS[name].bytes_per_value)
    assert CODECS[name].density == codecs.CODECS[name].density


def test_the_node_sizes_its_timeout_on_fp32_whatever_the_codec():
    links = [10 * MB, 10 * MB, 0.1 * MB]  # the slow member needs 4/3 x 2.5 MB / 0.1 MB/s = 33 s
    p = proto(assumed_bandwidth_mbps=8.0)
    int8 = 10 * MB / 4
    # timeout on its own payload: 5 + 3 x 2(63)/64 x 2.5 MB / 1 MB/s = 19.8 s; on fp32: 64.1 s
    assert not run_group(int8, links, [0.0] * 3, p, random.Random(0)).ok
    assert run_group(int8, links, [0.0] * 3, p, random.Random(0), timeout_payload_bytes=10 * MB).ok
