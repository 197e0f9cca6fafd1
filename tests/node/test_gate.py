"""The work gate: schedule parsing (across midnight), busy hysteresis, reasons, waiting."""
from __future__ import annotations

import os
import threading
import time

import pytest

from node.host.gate import OtherLoad, WorkGate, gpu_used_by_others
from node.policies.gate import BusyState, Schedule, busy_step, parse_schedule, smooth


def hm(h: int, m: int = 0) -> int:
    return h * 60 + m


def test_schedule_within_a_day():
    s = parse_schedule("09:30-17:00")
    assert s == Schedule(hm(9, 30), hm(17))
    assert not s.allows(hm(9, 29)) and s.allows(hm(9, 30)) and s.allows(hm(16, 59)) and not s.allows(hm(17))
    assert str(s) == "09:30-17:00"


def test_schedule_across_midnight():
    s = parse_schedule("22:00-07:00")
    assert s.allows(hm(22)) and s.allows(hm(23, 59)) and s.allows(0) and s.allows(hm(6, 59))
    assert not s.allows(hm(7)) and not s.allows(hm(12)) and not s.allows(hm(21, 59))
    assert s.allows(hm(24) + hm(1))  # minutes wrap around the day


def test_schedule_to_midnight_and_spaces():
    s = parse_schedule(" 18:00 - 24:00 ")
    assert s.allows(hm(23, 59)) and not s.allows(0) and not s.allows(hm(17, 59))
    assert parse_schedule("0:00-6:00").allows(hm(5, 59))


@pytest.mark.parametrize("bad", ["", "22:00", "22-07", "25:00-07:00", "22:60-07:00", "24:30-01:00", "08:00-08:00",
                                 "00:00-24:00", "a:b-c:d", "22:00-07:00-09:00"])
def test_bad_schedules_are_clear_errors(bad):
    with pytest.raises(ValueError, match="schedule|time of day"):
        parse_schedule(bad)


def test_busy_hysteresis_and_hold():
    s = BusyState()
    s = busy_step(s, 50, 80, now=0)
    assert not s.busy
    s = busy_step(s, 85, 80, now=1)
    assert s.busy and s.since == 1
    # within the hold time nothing changes, however low the load
    assert busy_step(s, 0, 80, now=30) == s
    # after it, a load between threshold - margin and threshold keeps it busy (no flapping)
    assert busy_step(s, 75, 80, now=100).busy
    s = busy_step(s, 65, 80, now=100)
    assert not s.busy and s.since == 100
    assert not busy_step(s, 95, 80, now=120).busy  # hold again
    assert busy_step(s, 95, 80, now=161).busy


def test_smooth_damps_one_spike():
    assert smooth(None, 90) == 90
    assert smooth(10, 90) == pytest.approx(50)


def test_reasons_set_clear_and_describe():
    gate = WorkGate()
    assert gate.open and gate.reasons == {} and gate.describe() == ""
    gate.set("standby", True, "standby: the plan keeps 4 nodes")
    gate.set("paused", True, "paused by its volunteer")
    assert not gate.open
    assert list(gate.reasons) == ["paused", "standby"]  # REASONS order
    assert gate.describe() == "paused by its volunteer; standby: the plan keeps 4 nodes"
    gate.set("paused", False)
    assert list(gate.reasons) == ["standby"]
    gate.set("standby", False)
    assert gate.open
    with pytest.raises(ValueError, match="unknown gate reason"):
        gate.set("tired", True)


def test_schedule_and_busy_refresh_with_injected_clock_and_load():
    minute = [hm(12)]
    load = [10.0]
    gate = WorkGate(schedule=parse_schedule("22:00-07:00"), busy_cpu_pct=80, load=lambda: load[0],
                    gpu_busy=lambda: None, local_minute=lambda: minute[0])
    assert list(gate.reasons) == ["schedule"] and "22:00-07:00" in gate.describe()
    minute[0] = hm(23)
    gate.refresh(1000.0)
    assert gate.open
    load[0] = 100.0
    gate.refresh(2000.0)  # smoothed: 55
    assert gate.open
    gate.refresh(2005.0)  # 77.5
    gate.refresh(2010.0)  # 88.75 >= 80
    assert list(gate.reasons) == ["busy"] and "CPU" in gate.describe()
    load[0] = 0.0
    gate.refresh(2015.0)  # held for min_hold_s
    assert not gate.open
    for t in range(2080, 2120, 5):
        gate.refresh(float(t))
    assert gate.open


def test_gpu_used_by_others_counts_as_busy():
    gate = WorkGate(busy_cpu_pct=90, check_gpu=True, load=lambda: 0.0, gpu_busy=lambda: True)
    assert list(gate.reasons) == ["busy"] and "GPU" in gate.describe()


def test_wait_open_wakes_on_resume_and_on_stop():
    gate = WorkGate()
    gate.set("paused", True)
    stop = threading.Event()
    t0 = time.monotonic()
    assert gate.wait_open(stop, timeout=0.05) is False
    threading.Timer(0.1, gate.set, args=("paused", False)).start()
    assert gate.wait_open(stop, timeout=10) is True
    assert time.monotonic() - t0 < 5  # woken by the change, not by the timeout


def test_other_load_subtracts_our_own_cpu():
    readings = iter([(0.0, 100.0, 10.0), (2.0, 104.0, 11.0), (4.0, 105.0, 12.0)])  # (wall, machine cpu-s, ours)
    cur: list[tuple[float, float, float]] = []

    def step(i):
        if i == 0:
            cur[:] = [next(readings)]
        return cur[0][i]

    load = OtherLoad(clock=lambda: step(0), machine_cpu_s=lambda: step(1), own_cpu_s=lambda: step(2), cores=2)
    assert load.sample() is None
    assert load.sample() == pytest.approx(100 * (4 - 1) / (2 * 2))  # 75%: 3 cpu-s of others over 2 s x 2 cores
    assert load.sample() == pytest.approx(0.0)  # all of the machine's work was ours


def test_own_cpu_counts_this_process():
    load = OtherLoad()
    before, cpu0, deadline = load.own_cpu_s(), time.process_time(), time.monotonic() + 30
    x = 0
    while time.process_time() - cpu0 < 0.3 and time.monotonic() < deadline:  # 0.3 s of our own CPU, however busy the box
        x += 1
    assert load.own_cpu_s() - before >= 0.25


def _fake_nvidia_smi(tmp_path, monkeypatch, body: str) -> None:
    exe = tmp_path / "nvidia-smi"
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ.get('PATH', '')}")


def test_gpu_check_reads_nvidia_smi_and_ignores_our_own_processes(tmp_path, monkeypatch):
    me = os.getpid()
    _fake_nvidia_smi(tmp_path, monkeypatch, f"echo '{me}, 30000'; echo 'garbage'")
    assert gpu_used_by_others() is False  # only we hold the GPU
    _fake_nvidia_smi(tmp_path, monkeypatch, f"echo '{me}, 30000'; echo '999999, 100'")
    assert gpu_used_by_others() is False  # a tiny context (e.g. a monitoring tool) does not count
    _fake_nvidia_smi(tmp_path, monkeypatch, f"echo '{me}, 30000'; echo '999999, 4096'")
    assert gpu_used_by_others() is True
    _fake_nvidia_smi(tmp_path, monkeypatch, "exit 9")
    assert gpu_used_by_others() is None  # a failing nvidia-smi: the GPU is not checked


def test_no_nvidia_smi_means_no_gpu_check(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert gpu_used_by_others() is None
