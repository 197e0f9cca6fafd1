"""Children die with their launcher: the parent-death signal, the watchdog in forked helpers; and a
launcher unwinds once on a stop signal.

Each test starts one small Python launcher (and ``sleep`` processes under it), kills the launcher
with SIGKILL, and checks by a marker in the environment that nothing it started is still running.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from node.host.lifeline import STOP_SIGNALS, unwind_on_signals

REPO = Path(__file__).resolve().parents[2]
MARK = "CAPASWARM_TEST_MARK"


def marked(mark: str) -> list[psutil.Process]:
    """Live processes whose environment carries ``MARK=mark`` (zombies are dead: they wait for a reaper)."""
    out = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and proc.status() != psutil.STATUS_ZOMBIE and proc.environ().get(MARK) == mark:
                out.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return out


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def _launch(script: str, mark: str) -> subprocess.Popen[str]:
    env = {**os.environ, MARK: mark, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], env=env, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)


@contextlib.contextmanager
def _killed_once_ready(launcher: subprocess.Popen[str], mark: str, ready: Callable[[], bool]) -> Iterator[None]:
    """Wait for the script's "up" and for ``ready``, SIGKILL the launcher, run the body's checks,
    then kill whatever of ``mark`` is left."""
    try:
        assert launcher.stdout is not None and launcher.stdout.readline().strip() == "up"
        assert wait_for(ready, 10), [p.cmdline() for p in marked(mark)]
        launcher.kill()
        launcher.wait(10)
        yield
    finally:
        for p in marked(mark):
            p.kill()


def test_die_with_parent_takes_the_child_down_on_kill_9():
    mark = uuid.uuid4().hex
    launcher = _launch("""
        import subprocess, time
        from node.host.lifeline import die_with_parent
        subprocess.Popen(["sleep", "120"], preexec_fn=die_with_parent())      # dies with us
        subprocess.Popen(["sleep", "121"], start_new_session=True)           # the control: outlives us
        print("up", flush=True)
        time.sleep(120)
    """, mark)
    with _killed_once_ready(launcher, mark, lambda: len(marked(mark)) == 3):
        assert wait_for(lambda: [p.cmdline()[-1] for p in marked(mark)] == ["121"], 5), [p.cmdline() for p in marked(mark)]


def test_forked_helpers_and_their_daemons_die_with_the_node_on_kill_9():
    """As hivemind does: the node forks a helper process, which starts a daemon (p2pd) of its own."""
    mark = uuid.uuid4().hex
    launcher = _launch("""
        import multiprocessing as mp, subprocess, time
        from node.host.lifeline import guard_forked_helpers

        def helper():
            subprocess.Popen(["sleep", "120"])  # the daemon a DHT process starts
            time.sleep(120)

        guard_forked_helpers()
        mp.set_start_method("fork")
        mp.Process(target=helper, daemon=True).start()
        print("up", flush=True)
        time.sleep(120)
    """, mark)
    with _killed_once_ready(launcher, mark, lambda: any("sleep" in p.name() for p in marked(mark)) and len(marked(mark)) >= 3):
        assert wait_for(lambda: not marked(mark), 5), [p.cmdline() for p in marked(mark)]


def test_without_the_guard_the_helper_would_be_orphaned():
    """The control for the test above: it can fail, because this is what happens without the watchdog."""
    mark = uuid.uuid4().hex
    launcher = _launch("""
        import multiprocessing as mp, subprocess, time

        def helper():
            subprocess.Popen(["sleep", "120"])
            time.sleep(120)

        mp.set_start_method("fork")
        mp.Process(target=helper, daemon=True).start()
        print("up", flush=True)
        time.sleep(120)
    """, mark)
    with _killed_once_ready(launcher, mark, lambda: len(marked(mark)) >= 3):
        time.sleep(2)
        assert len(marked(mark)) == 2  # the helper and its sleep live on


def test_unwind_on_signals_raises_once_then_ignores_and_restores():
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    restore = unwind_on_signals(lambda signum: SystemExit(128 + signum))
    try:
        with pytest.raises(SystemExit) as stopped:
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(1)  # the handler runs at the next bytecode; never reached
        assert stopped.value.code == 128 + signal.SIGHUP
        assert all(signal.getsignal(sig) == signal.SIG_IGN for sig in STOP_SIGNALS)  # a second one cannot cut the unwinding short
        os.kill(os.getpid(), signal.SIGTERM)  # ignored: no exception, the test process lives on
    finally:
        restore()
    assert {sig: signal.getsignal(sig) for sig in STOP_SIGNALS} == before
