"""The event core: time order, deterministic ties, named streams, the trace hash."""
from __future__ import annotations

import pytest

from sim.engine import Engine, Streams, Trace


def test_events_run_in_time_order_and_ties_in_insertion_order():
    log = []
    engine = Engine()
    engine.at(2.0, log.append, "c")
    engine.at(1.0, log.append, "a")
    engine.at(1.0, log.append, "b")  # same time: after "a", scheduled first
    engine.at(5.0, log.append, "late")
    engine.run(until=5.0)  # strictly before `until`
    assert log == ["a", "b", "c"]
    assert engine.now == 5.0 and engine.pending() == 1


def test_events_can_schedule_events_and_time_is_explicit():
    engine, log = Engine(), []

    def tick():
        log.append(engine.now)
        engine.after(1.0, tick)

    engine.at(0.0, tick)
    engine.run(until=3.0)
    assert log == [0.0, 1.0, 2.0]


def test_cannot_schedule_in_the_past():
    engine = Engine()
    engine.run(until=10.0)
    with pytest.raises(ValueError):
        engine.at(9.0, print)


def test_before_hook_sees_every_time_advance_once():
    seen = []
    engine = Engine(before=seen.append)
    for t in (1.0, 1.0, 2.0):
        engine.at(t, lambda: None)
    engine.run(until=4.0)
    assert seen == [1.0, 2.0, 4.0]


def test_named_streams_are_reproducible_and_independent():
    a, b = Streams(7), Streams(7)
    assert [a("churn").random() for _ in range(3)] == [b("churn").random() for _ in range(3)]
    # drawing from one stream does not shift another
    c = Streams(7)
    c("links").random()
    assert c("churn").random() == Streams(7)("churn").random()
    assert Streams(7)("churn").random() != Streams(8)("churn").random()
    assert Streams(7)("churn").random() != Streams(7)("links").random()


def test_trace_hash_covers_time_kind_and_node():
    def digest(*records):
        trace = Trace()
        for r in records:
            trace(*r)
        return trace.hexdigest()

    base = digest((1.0, "join", 3), (2.0, "leave", 3))
    assert base == digest((1.0, "join", 3), (2.0, "leave", 3))
    assert base != digest((1.0, "join", 3), (2.000000001, "leave", 3))
    assert base != digest((1.0, "join", 4), (2.0, "leave", 3))
    assert base != digest((1.0, "join", 3), (2.0, "fail", 3))
