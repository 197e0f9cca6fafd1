"""Shared pytest infrastructure for the whole suite.

What lives here (add new shared fixtures below, one section each, with a docstring):

- process hygiene: hivemind starts a go ``p2pd`` daemon and forks helper processes, and these
  outlive a test that crashes or forgets ``shutdown()`` (they get reparented to init). Two
  autouse fixtures reap them: ``_reap_leaked_processes`` after every test (kills what the test
  started and left running, and warns with their names) and ``_reap_all_descendants`` once
  at session end (kills every descendant of this pytest process, whoever started it);
- ``tmp_identity``: a fresh Ed25519 identity saved as a libp2p key file under ``tmp_path``;
- ``read_png``: checks that a plot is a real PNG of the expected size and reads its pixels back.

Environment: ``OMP_NUM_THREADS=1`` is set before any test module imports torch, so that
tests on small shared machines do not oversubscribe the cores.
"""
from __future__ import annotations

import io
import logging
import os
import struct

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported anywhere

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from protocol import Identity

logger = logging.getLogger(__name__)

_GRACE_S = 3.0  # SIGTERM, then this long before SIGKILL
# Helpers a library starts once per process and reuses for the rest of the session: killing one
# after the test that happened to start it would break every later test (torch caches the
# shared-memory manager's socket and never restarts it). The session reaper still ends them.
_PROCESS_WIDE_HELPERS = frozenset({"torch_shm_manager"})


# --- process hygiene ---------------------------------------------------------------------------


def _live_descendants() -> list[psutil.Process]:
    """Descendants of this process that are still running (zombies are dead already: whoever
    forked them reaps them, and reaping them here would confuse ``multiprocessing``)."""
    alive = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.NoSuchProcess:
            pass
    return alive


def _name(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except psutil.Error:
        return "?"


def _describe(proc: psutil.Process) -> str:
    return f"{_name(proc)}[{proc.pid}]"


def _terminate(procs: list[psutil.Process]) -> None:
    """SIGTERM ``procs``, wait up to ``_GRACE_S``, SIGKILL the survivors."""
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=_GRACE_S)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=_GRACE_S)


def _leaked(proc: psutil.Process, owners: set[int]) -> bool:
    """Neither a process-wide helper nor forked by a process that ran before the test, and still there."""
    try:
        return proc.name() not in _PROCESS_WIDE_HELPERS and not any(parent.pid in owners for parent in proc.parents())
    except psutil.NoSuchProcess:  # ended meanwhile: nothing to reap
        return False


@pytest.fixture(autouse=True, scope="session")
def _reap_all_descendants() -> Iterator[None]:
    """At session end, kill every process this pytest run started and left behind."""
    yield
    leftovers = _live_descendants()
    if leftovers:
        logger.warning("reaping %d processes at session end: %s", len(leftovers), ", ".join(map(_describe, leftovers)))
        _terminate(leftovers)


@pytest.fixture(autouse=True)
def _reap_leaked_processes() -> Iterator[None]:
    """Kill processes a test started and did not stop, and say which.

    Processes that already ran before the test (for example those owned by a module- or
    session-scoped fixture, which pytest sets up before function-scoped fixtures), what those fork
    meanwhile (a PostgreSQL server's backend for each connection: theirs to end; SIGKILLing one
    would send the server into crash recovery) and ``_PROCESS_WIDE_HELPERS`` are left alone;
    function-scoped fixtures are torn down before this check runs.
    """
    before = {p.pid for p in _live_descendants()}
    yield
    leaked = [p for p in _live_descendants() if p.pid not in before and _leaked(p, before)]
    if leaked:
        names = ", ".join(map(_describe, leaked))
        logger.warning("test leaked %d processes, killing them: %s", len(leaked), names)
        warnings.warn(f"test leaked processes, killed: {names}", stacklevel=1)
        _terminate(leaked)


# --- identities --------------------------------------------------------------------------------


@pytest.fixture
def tmp_identity(tmp_path: Path) -> tuple[Identity, Path]:
    """A fresh identity and the path of its key file (libp2p protobuf format, mode 0600)."""
    identity = Identity.generate()
    path = tmp_path / "identity.key"
    identity.save(path)
    return identity, path


# --- PNG plots ---------------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Png:
    """A PNG's pixels as matplotlib reads them back: rows of RGBA floats in [0, 1]."""

    def __init__(self, pixels: Any) -> None:
        self.pixels = pixels

    def count(self, color: str, tolerance: float = 0.04) -> int:
        """How many pixels are ``color`` (``#rrggbb``, opaque) within ``tolerance`` per channel."""
        import numpy as np

        rgb = np.array([int(color[k:k + 2], 16) / 255 for k in (1, 3, 5)])
        close = np.abs(self.pixels[:, :, :3] - rgb).max(axis=2) <= tolerance
        return int((close & (self.pixels[:, :, 3] > 0.99)).sum())


@pytest.fixture
def read_png() -> Callable[[Path | bytes, int, int], Png]:
    """``read_png(path_or_bytes, width, height)``: asserts the PNG signature, a size above that of an
    empty figure (~1.6 KB), ``width`` x ``height`` in the header and in the pixels matplotlib decodes,
    and more than one colour; returns the pixels."""
    import matplotlib.image  # only the tests that read plots import matplotlib

    def read(png: Path | bytes, width: int, height: int) -> Png:
        data = png if isinstance(png, bytes) else png.read_bytes()
        assert data[:8] == PNG_SIGNATURE, data[:16]
        assert len(data) > 4000, len(data)
        assert data[12:16] == b"IHDR" and struct.unpack(">II", data[16:24]) == (width, height)
        pixels = matplotlib.image.imread(io.BytesIO(data), format="png")
        assert pixels.shape == (height, width, 4)
        assert pixels[:, :, :3].std() > 0.01  # something is drawn
        return Png(pixels)

    return read
