"""A suite's swarm: ``swarm join`` nodes and their coordinator in a testbed, its ledger, its byte counters.

:func:`bench_swarm` starts the coordinator (in the hub namespace, or on 127.0.0.1 in loopback
mode) with a run manifest built from a :class:`SwarmSpec`, and yields the one launcher
(:class:`node.cli.launcher.SwarmLauncher`) with every node placed in its namespace (:func:`bed_place`)
and reporting to that coordinator. Each round's signed report lands in the coordinator's SQLite
ledger, which is how suites read per-round figures (:func:`ledger_reports`: compute seconds, wall
seconds, payload bytes, group size) without adding anything to node code. :class:`Counters`
samples every node's layer-2 byte counters (netns mode) several times a second.

Nodes are named ``node-1`` .. ``node-N`` (:func:`name`); node ``i`` sits in the testbed's
namespace ``i``, and in a testbed with homes, node ``N + j`` on home ``j`` behind its NAT router.
Also here: the CPU lock every swarm run takes (``/tmp/capaswarm-cpu.lock``, shared with other
users of this machine), and the flags, testbed check and work dir every suite shares.
"""
from __future__ import annotations

import argparse
import bisect
import contextlib
import dataclasses
import fcntl
import logging
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.netns import LoopbackBed, NeedsRootError, Testbed, Topology, require_root
from node.cli.launcher import Place, SwarmLauncher

__all__ = ["Counters", "Report", "SwarmSpec", "assemble", "base_parser", "bed_place", "bench_swarm", "check_testbed", "cpu_lock",
           "index", "ledger_reports", "make_bed", "name", "tokens_per_step", "warm_up", "workdir"]

logger = logging.getLogger(__name__)
NODE_PORT = 31337  # every node has its own namespace, so one fixed port serves all
DEFAULT_CPU_LOCK = "/tmp/capaswarm-cpu.lock"


@dataclass(frozen=True)
class SwarmSpec:
    """What the run manifest and every node's flags say."""

    run_id: str
    round_tokens: int
    model: str = "tiny"
    codec: str = "fp16"
    algorithm: str = "diloco"
    batch_size: int | None = None
    matchmaking_time_s: float = 3.0
    bandwidth_mbps: float = 100.0  # nodes derive their all-reduce timeouts from it
    max_seconds: float = 300.0  # every node stops by itself after this long, whatever happens to the harness
    extra_args: tuple[str, ...] = ()
    hparams: tuple[tuple[str, Any], ...] = ()  # manifest hyper-parameter overrides, e.g. (("target_batch", 128),)
    env: tuple[tuple[str, str], ...] = ()  # extra node environment, e.g. (("SWARM_EVAL_BATCHES", "1"),)

    def manifest(self) -> Any:
        """The run manifest (a ``protocol.RunManifest``) the coordinator serves."""
        from node.host.config import NodeConfig
        from node.uplink.manifests import manifest_from_flags
        from protocol import Hyperparameters

        manifest = manifest_from_flags(NodeConfig(run_id=self.run_id, round_tokens=self.round_tokens, model=self.model,
                                                  codec=self.codec, algorithm=self.algorithm, batch_size=self.batch_size))
        if self.hparams:
            hp = Hyperparameters.from_wire({**manifest.hparams.to_wire(), **dict(self.hparams)})
            manifest = dataclasses.replace(manifest, hparams=hp)
        return manifest

    def node_args(self) -> list[str]:
        return ["--matchmaking-time-s", str(self.matchmaking_time_s), "--bandwidth-mbps", str(self.bandwidth_mbps),
                "--max-seconds", str(self.max_seconds), "--status-interval-s", "10", *self.extra_args]


@dataclass
class Report:
    """One round's report as the ledger stored it."""

    node: int
    peer: str
    seq: int
    round: int
    tokens: int
    compute_s: float
    wall_s: float
    bytes_sent: int
    bytes_received: int
    payload_bytes: int
    ok: bool
    sent_at: float
    val_bpb: float | None
    train_loss: float | None
    group: int  # group size: the other members this node saw claim tokens, plus itself
    members: frozenset[str] = frozenset()  # the group's peer ids, this node included
    blocked_s: float | None = None  # of wall_s, waiting on the network (None: the node did not measure it)


def name(i: int) -> str:
    """Node ``i``'s name (and state dir) in a suite's swarm."""
    return f"node-{i}"


def index(node_name: str) -> int:
    """The testbed index of a node named by :func:`name`."""
    return int(node_name.removeprefix("node-"))


def tokens_per_step(model: str, batch_size: int | None = None) -> int:
    """Tokens one inner step of ``model`` processes (batch x context)."""
    from node.model.gpt import preset
    from protocol import Hyperparameters

    return (batch_size or Hyperparameters().batch_size) * preset(model).block_size


def make_bed(nodes: int, *, loopback: bool, up_mbit: float | None, down_mbit: float | None, tag: str | None = None,
             homes: int = 0) -> Any:
    """``nodes`` public nodes, and ``homes`` more behind NAT routers (netns only)."""
    if loopback:
        if homes:
            raise ValueError("loopback has no NAT: home nodes need the namespace testbed")
        return LoopbackBed(nodes)
    return Testbed(Topology(tag or f"{os.getpid() % 100000:x}", nodes, up_mbit, down_mbit, homes=homes))


def bed_place(bed: Any) -> Callable[[str], Place]:
    """The launcher's ``place`` hook for ``bed``: node ``i`` in namespace ``i``, on a fixed port there;
    node ``N + j`` (past the N public ones) on home ``j``, listening on every address it has there
    (its LAN address, which no one outside can dial: it announces nothing else)."""
    def place(node_name: str) -> Place:
        if bed.loopback:
            return Place()
        if index(node_name) > bed.nodes:
            return Place(tuple(bed.home_prefix(index(node_name) - bed.nodes)), f"/ip4/0.0.0.0/tcp/{NODE_PORT}")
        maddr = f"/ip4/{bed.addr(index(node_name))}/tcp/{NODE_PORT}"
        return Place(tuple(bed.prefix(index(node_name))), maddr, maddr)

    return place


@contextlib.contextmanager
def bench_swarm(bed: Any, workdir: Path, spec: SwarmSpec) -> Iterator[SwarmLauncher]:
    """The run's coordinator in ``bed``'s hub, and a launcher whose nodes report to it; all stop on exit."""
    if workdir.exists() and any(workdir.iterdir()):
        raise FileExistsError(f"{workdir} is not empty: a node would resume another run's checkpoint")
    swarm = SwarmLauncher(workdir, extra_args=spec.node_args(), env=dict(spec.env), place=bed_place(bed))
    with swarm:
        swarm.start_coordinator(spec.manifest(), host=bed.hub_addr, prefix=bed.hub_prefix(), args=["--log-level", "WARNING"])
        yield swarm


@contextlib.contextmanager
def cpu_lock(path: str | None) -> Iterator[None]:
    """Hold the machine's CPU lock (the one ``flock /tmp/capaswarm-cpu.lock CMD`` takes) while a swarm runs.

    ``None`` or "" skips it: for a caller that already holds it (a test run under ``flock``).
    """
    if not path:
        yield
        return
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for the CPU lock %s", path)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class Counters:
    """Every node's layer-2 byte counters, sampled from ``bed`` every ``every_s`` while in the ``with``.

    ``samples``: ``[(unix time, {node index: (bytes up, bytes down)})]``; nothing on loopback.
    """

    def __init__(self, bed: Any, every_s: float = 0.1):
        self.bed, self.every_s = bed, every_s
        self.samples: list[tuple[float, dict[int, tuple[int, int]]]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Counters:
        if not self.bed.loopback:
            self._thread = threading.Thread(target=self._sample, name="counters", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.time(), self.bed.counters()))
            except (FileNotFoundError, ProcessLookupError, KeyError):
                pass
            self._stop.wait(self.every_s)

    def at(self, node: int, t: float) -> tuple[float, float] | None:
        """(up, down) bytes of ``node`` at unix time ``t``, interpolated between samples."""
        times = [s[0] for s in self.samples]
        k = bisect.bisect_left(times, t)
        if k == 0 or k >= len(times):
            return None
        (t0, c0), (t1, c1) = self.samples[k - 1], self.samples[k]
        if node not in c0 or node not in c1:
            return None
        w = (t - t0) / (t1 - t0) if t1 > t0 else 0.0
        return (c0[node][0] + w * (c1[node][0] - c0[node][0]), c0[node][1] + w * (c1[node][1] - c0[node][1]))


def ledger_reports(swarm: SwarmLauncher) -> list[Report]:
    """Every round report in the run's ledger (call after ``swarm.stop()``, so outboxes are flushed)."""
    nodes = {st["peer_id"]: index(n) for n in swarm.procs if (st := swarm.status(n))}
    db = sqlite3.connect(f"file:{swarm.workdir / 'ledger.sqlite3'}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT r.peer_id, r.seq, r.round, r.tokens, r.compute_s, r.wall_s, r.bytes_sent, r.bytes_received,"
            " r.payload_bytes, r.ok, r.sent_at, r.val_bpb, r.train_loss,"
            # the ledger stores the *other* members a reporter saw: group size = that + 1
            " 1 + (SELECT COUNT(*) FROM group_claims g WHERE g.reporter = r.peer_id AND g.seq = r.seq), r.blocked_s"
            " FROM reports r ORDER BY r.sent_at").fetchall()
        others: dict[tuple[str, int], set[str]] = {}
        for reporter, seq, member in db.execute("SELECT reporter, seq, member FROM group_claims"):
            others.setdefault((reporter, seq), set()).add(member)
    finally:
        db.close()
    return [Report(nodes.get(r[0], 0), r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], bool(r[9]), r[10], r[11], r[12],
                   r[13],
                   frozenset(others.get((r[0], r[1]), set()) | {r[0]}), r[14]) for r in rows]


def warm_up(swarm: SwarmLauncher, n: int, timeout: float, rounds: int = 2) -> bool:
    """Wait until all ``n`` nodes did ``rounds`` good rounds and share one round number.

    Run it on unshaped links, then cap them: a node that started first trains alone meanwhile,
    and on a slow link a joiner's state download can take longer than that lone node's rounds,
    so the joiner would chase it for ever.
    """
    return swarm.wait(lambda sts: len(sts) == n and all(st.get("rounds", 0) >= rounds for st in sts.values())
                      and max(st.get("round", 0) for st in sts.values()) - min(st.get("round", 0) for st in sts.values()) <= 1,
                      timeout=timeout)


def assemble(swarm: SwarmLauncher, bed: Any, n: int, up_mbit: float | None, down_mbit: float | None, timeout: float) -> float:
    """Start nodes 1..n on unshaped links, warm up, then cap the links; returns the unix time of capping."""
    swarm.start(n)
    if not warm_up(swarm, n, timeout):
        logger.warning("the swarm did not settle in %.0f s; capping the links anyway", timeout)
    bed.shape(up_mbit, down_mbit)
    return time.time()


# ---------------------------------------------------------------------------------------- CLI pieces


def base_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The flags every suite takes."""
    p = argparse.ArgumentParser(prog=f"swarm bench {prog}", description=description)
    p.add_argument("--out", type=Path, required=True, help="directory for the JSON, markdown and PNG files")
    p.add_argument("--loopback", action="store_true",
                   help="run on 127.0.0.1 with no namespaces and no shaping (bytes from reports only); no root needed")
    p.add_argument("--model", default="tiny", help="model preset (tiny | small)")
    p.add_argument("--cpu-lock", default=DEFAULT_CPU_LOCK,
                   help="lock held while a swarm runs ('' to skip, when the caller already holds it)")
    p.add_argument("--workdir", type=Path, default=None, help="node state and logs (default: a temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    return p


def check_testbed(args: argparse.Namespace) -> str | None:
    """The reason the shaped testbed cannot run here, or None (always None with --loopback)."""
    if args.loopback:
        return None
    try:
        require_root()
    except NeedsRootError as e:
        return str(e)
    return None


@contextlib.contextmanager
def workdir(args: argparse.Namespace, suite: str) -> Iterator[Path]:
    """The suite's work directory: removed afterwards unless ``--keep`` or ``--workdir``, or the suite failed."""
    path = args.workdir or Path(tempfile.mkdtemp(prefix=f"capaswarm-bench-{suite}-"))
    path.mkdir(parents=True, exist_ok=True)
    ok = False
    try:
        yield path
        ok = True
    finally:
        if ok and not args.keep and args.workdir is None:
            shutil.rmtree(path, ignore_errors=True)
        elif not ok:
            logger.error("node logs are in %s", path)
