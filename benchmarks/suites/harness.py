"""What every suite needs: a swarm of ``swarm join`` processes in a testbed, its ledger, its counters.

:class:`BenchSwarm` starts a coordinator (in the hub namespace, or on 127.0.0.1 in loopback mode)
with a run manifest built here, then nodes that report to it; each round's signed report lands in
the coordinator's SQLite ledger, which is how suites read per-round figures (compute seconds,
wall seconds, payload bytes, group size) without adding anything to node code. A sampler thread
records every node's layer-2 byte counters (netns mode) several times a second.

Also here: the CPU lock every swarm run takes (``/tmp/capaswarm-cpu.lock``, shared with other
users of this machine), the run fingerprint, and writing a suite's JSON / markdown / PNG files.
"""
from __future__ import annotations

import argparse
import bisect
import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.netns import LoopbackBed, NeedsRootError, Testbed, Topology, require_root

__all__ = ["BenchSwarm", "Report", "SwarmSpec", "base_parser", "bursts", "group_span", "check_testbed", "cpu_lock", "fingerprint", "make_bed",
           "publish", "quantiles", "suite_result", "tokens_per_step", "workdir", "write_outputs"]

logger = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
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


def tokens_per_step(model: str, batch_size: int | None = None) -> int:
    """Tokens one inner step of ``model`` processes (batch x context)."""
    from node.model import preset
    from protocol import Hyperparameters

    return (batch_size or Hyperparameters().batch_size) * preset(model).block_size


def make_bed(nodes: int, *, loopback: bool, up_mbit: float | None, down_mbit: float | None, tag: str | None = None) -> Any:
    if loopback:
        return LoopbackBed(nodes)
    return Testbed(Topology(tag or f"{os.getpid() % 100000:x}", nodes, up_mbit, down_mbit))


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


class BenchSwarm:
    """A coordinator and nodes 1..N of one run inside ``bed``; everything stops on ``__exit__``."""

    def __init__(self, bed: Any, workdir: Path, spec: SwarmSpec, *, sample_every_s: float = 0.1):
        self.bed, self.workdir, self.spec = bed, workdir, spec
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.coordinator: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.first = ""  # node 1's multiaddr, once it is up
        self.samples: list[tuple[float, dict[int, tuple[int, int]]]] = []  # (unix time, {node: (up, down)})
        self.events: list[tuple[float, str, int]] = []  # (unix time, what, node): starts and kills
        self._sample_every = sample_every_s
        self._stop_sampling = threading.Event()
        self._sampler: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> BenchSwarm:
        if self.workdir.exists() and any(self.workdir.iterdir()):
            raise FileExistsError(f"{self.workdir} is not empty: a node would resume another run's checkpoint")
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_coordinator()
            if not self.bed.loopback:
                self._sampler = threading.Thread(target=self._sample, name="counters", daemon=True)
                self._sampler.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # all at once, so they leave together
        for i in list(self.procs):
            self.stop_node(i)
        self._stop_sampling.set()
        if self._sampler is not None:
            self._sampler.join(2)
        if self.coordinator is not None and self.coordinator.poll() is None:
            self.coordinator.send_signal(signal.SIGTERM)
            try:
                self.coordinator.wait(10)
            except subprocess.TimeoutExpired:
                _killpg(self.coordinator)
            self.coordinator.wait(5)

    # ------------------------------------------------------------------ coordinator and nodes
    def _env(self) -> dict[str, str]:
        local = f"{self.bed.hub_addr},127.0.0.1,localhost"
        return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "NO_PROXY": local, "no_proxy": local,
                "PYTHONPATH": str(REPO)}

    def _start_coordinator(self) -> None:
        from node.config import NodeConfig
        from node.manifests import manifest_from_flags

        s = self.spec
        manifest = manifest_from_flags(NodeConfig(run_id=s.run_id, round_tokens=s.round_tokens, model=s.model, codec=s.codec,
                                                  algorithm=s.algorithm, batch_size=s.batch_size))
        if s.hparams:
            from protocol import Hyperparameters

            hp = Hyperparameters.from_wire({**manifest.hparams.to_wire(), **dict(s.hparams)})
            manifest = dataclasses.replace(manifest, hparams=hp)
        (self.workdir / "manifest.msgpack").write_bytes(manifest.to_bytes())
        port_file = self.workdir / "coordinator.port"
        port_file.unlink(missing_ok=True)
        cmd = [*self.bed.hub_prefix(), sys.executable, "-m", "coordinator", "--host", self.bed.hub_addr, "--port", "0",
               "--port-file", str(port_file), "--db", str(self.workdir / "ledger.sqlite3"),
               "--manifest", str(self.workdir / "manifest.msgpack"), "--log-level", "WARNING"]
        with open(self.workdir / "coordinator.log", "ab") as log:
            self.coordinator = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self._env(), cwd=REPO,
                                                start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if port_file.exists() and port_file.read_text().strip():
                self.url = f"http://{self.bed.hub_addr}:{int(port_file.read_text())}"
                return
            if self.coordinator.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"coordinator did not start; see {self.workdir / 'coordinator.log'}")

    def state_dir(self, i: int) -> Path:
        return self.workdir / f"node-{i}"

    def start_node(self, i: int, initial_peers: list[str] | None = None, extra: list[str] | None = None) -> None:
        s, state = self.spec, self.state_dir(i)
        state.mkdir(parents=True, exist_ok=True)
        (state / "status.json").unlink(missing_ok=True)  # a restarted node: wait for its new address
        if self.bed.loopback:
            listen = ["--host-maddrs", "/ip4/127.0.0.1/tcp/0"]
        else:
            maddr = f"/ip4/{self.bed.addr(i)}/tcp/{NODE_PORT}"
            listen = ["--host-maddrs", maddr, "--announce-maddrs", maddr]
        cmd = [*self.bed.prefix(i), sys.executable, "-m", "node", "join", *listen, "--state-dir", str(state),
               "--public-name", f"node-{i}", "--threads", "1", "--coordinator", self.url,
               "--matchmaking-time-s", str(s.matchmaking_time_s), "--bandwidth-mbps", str(s.bandwidth_mbps),
               "--max-seconds", str(s.max_seconds), "--status-interval-s", "10"]
        cmd += ["--initial-peers", *initial_peers] if initial_peers else ["--new-swarm"]
        cmd += [*s.extra_args, *(extra or [])]
        with open(state / "node.log", "ab") as log:
            self.procs[i] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**self._env(), **dict(s.env)}, cwd=REPO,
                                             start_new_session=True)
        self.events.append((time.time(), "start", i))

    def wait_for_maddr(self, i: int, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.status(i)
            if st and st.get("maddrs"):
                return str(st["maddrs"][0])
            if self.procs[i].poll() is not None:
                raise RuntimeError(f"node {i} exited early; see {self.state_dir(i) / 'node.log'}")
            time.sleep(0.3)
        raise TimeoutError(f"node {i} did not come up in {timeout:.0f} s")

    def start(self, n: int, extra: Callable[[int], list[str]] | None = None) -> str:
        """Start nodes 1..n (the others join node 1); returns node 1's multiaddr."""
        self.start_node(1, extra=extra(1) if extra else None)
        self.first = self.wait_for_maddr(1)
        for i in range(2, n + 1):
            self.start_node(i, [self.first], extra=extra(i) if extra else None)
        return self.first

    def stop_node(self, i: int, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        proc = self.procs[i]
        if proc.poll() is None:
            proc.send_signal(sig)
            if sig == signal.SIGKILL:
                self.events.append((time.time(), "kill", i))
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("node %d did not stop in %.0f s; killing it", i, timeout)
        _killpg(proc)  # p2pd and hivemind's helpers share the node's process group
        proc.wait(5)

    # ------------------------------------------------------------------ reading
    def status(self, i: int) -> dict[str, Any] | None:
        try:
            return json.loads((self.state_dir(i) / "status.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def statuses(self) -> dict[int, dict[str, Any]]:
        return {i: st for i in self.procs if (st := self.status(i))}

    def wait(self, predicate: Callable[[dict[int, dict[str, Any]]], bool], timeout: float, poll_s: float = 0.5) -> bool:
        """Poll node statuses until ``predicate`` holds (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.statuses()):
                return True
            time.sleep(poll_s)
        return False

    def reports(self) -> list[Report]:
        """Every round report in the ledger (call after ``stop``, so outboxes are flushed)."""
        nodes = {st["peer_id"]: i for i in self.procs if (st := self.status(i))}
        db = sqlite3.connect(f"file:{self.workdir / 'ledger.sqlite3'}?mode=ro", uri=True)
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
        return [Report(nodes.get(r[0], 0), r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], bool(r[9]), r[10], r[11], r[12], r[13],
                       frozenset(others.get((r[0], r[1]), set()) | {r[0]}), r[14]) for r in rows]

    def assemble(self, n: int, up_mbit: float | None, down_mbit: float | None, timeout: float) -> float:
        """Start nodes 1..n on unshaped links, warm up, then cap the links; returns the unix time of capping."""
        self.start(n)
        if not self.warm_up(n, timeout):
            logger.warning("the swarm did not settle in %.0f s; capping the links anyway", timeout)
        self.bed.shape(up_mbit, down_mbit)
        return time.time()

    def warm_up(self, n: int, timeout: float, rounds: int = 2) -> bool:
        """Wait until all ``n`` nodes did ``rounds`` good rounds and share one round number.

        Run it on unshaped links, then cap them: a node that started first trains alone meanwhile,
        and on a slow link a joiner's state download can take longer than that lone node's rounds,
        so the joiner would chase it for ever.
        """
        return self.wait(lambda sts: len(sts) == n and all(st.get("rounds", 0) >= rounds for st in sts.values())
                         and max(st.get("round", 0) for st in sts.values()) - min(st.get("round", 0) for st in sts.values()) <= 1,
                         timeout=timeout)

    def _sample(self) -> None:
        while not self._stop_sampling.is_set():
            try:
                self.samples.append((time.time(), self.bed.counters()))
            except (FileNotFoundError, ProcessLookupError, KeyError):
                pass
            self._stop_sampling.wait(self._sample_every)

    def counter_at(self, node: int, t: float) -> tuple[float, float] | None:
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


def _killpg(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# ---------------------------------------------------------------------------------------- records


def _steal() -> int:
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return int(fields[8]) if len(fields) > 8 else 0


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("torch", "hivemind", "numpy", "capaswarm"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "absent"
    return out


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=5)
        return out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


@dataclass
class Fingerprint:
    """Where and when a suite ran; ``finish()`` adds the end-of-run load."""

    cpu: str = field(default_factory=_cpu_model)
    cores: int = field(default_factory=lambda: os.cpu_count() or 0)
    kernel: str = field(default_factory=platform.release)
    versions: dict[str, str] = field(default_factory=_versions)
    git_commit: str = field(default_factory=_git_commit)
    started_at: float = field(default_factory=time.time)
    load_start: tuple[float, ...] = field(default_factory=os.getloadavg)
    steal_start: int = field(default_factory=_steal)
    load_end: tuple[float, ...] = ()
    steal_ticks: int = 0
    seeds: dict[str, Any] = field(default_factory=dict)

    def finish(self) -> dict[str, Any]:
        self.load_end = os.getloadavg()
        self.steal_ticks = _steal() - self.steal_start
        return asdict(self)


def fingerprint(**seeds: Any) -> Fingerprint:
    return Fingerprint(seeds=dict(seeds))


def write_outputs(out: Path, name: str, result: dict[str, Any], markdown: str, charts: dict[str, bytes]) -> list[Path]:
    """``<name>.json``, ``<name>.md`` and ``<name>-<chart>.png`` (PNG bytes from ``charts.py``) under
    ``out``; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.json", out / f"{name}.md"]
    paths[0].write_text(json.dumps(result, indent=1, default=str) + "\n")
    paths[1].write_text(markdown)
    for chart, png in charts.items():
        path = out / f"{name}-{chart}.png"
        path.write_bytes(png)
        paths.append(path)
    return paths


def suite_result(suite: str, args: argparse.Namespace, fp: Any, **body: Any) -> dict[str, Any]:
    """A suite's JSON document: its name, its arguments, the run's fingerprint, then its figures."""
    return {"suite": suite, "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "fingerprint": fp.finish(), **body}


def publish(out: Path, result: dict[str, Any], md: str, charts: dict[str, bytes]) -> int:
    """Write a suite's outputs (:func:`write_outputs`), list them, print its table; the exit code 0."""
    for path in write_outputs(out, result["suite"], result, md, charts):
        print(path)
    print(md)
    return 0


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
def workdir(args: argparse.Namespace, name: str) -> Iterator[Path]:
    """The suite's work directory: removed afterwards unless ``--keep`` or ``--workdir``, or the suite failed."""
    path = args.workdir or Path(tempfile.mkdtemp(prefix=f"capaswarm-bench-{name}-"))
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


def quantiles(xs: list[float]) -> dict[str, float] | None:
    """median, min, max, n of ``xs`` (None when empty)."""
    if not xs:
        return None
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def fmt_q(q: dict[str, float] | None, digits: int = 3) -> str:
    if not q:
        return "-"
    return f"{q['median']:.{digits}f} ({q['min']:.{digits}f}-{q['max']:.{digits}f})"


# ---------------------------------------------------------------------------------------- bursts


@dataclass(frozen=True)
class Burst:
    """A stretch of one node's traffic above a rate threshold (an all-reduce, a state download)."""

    start: float  # unix time the first 1% of its bytes had passed (interpolated)
    end: float  # ... the last 99%
    nbytes: float  # bytes in it, minus the background rate around it

    @property
    def seconds(self) -> float:
        """Duration from 1% to 99% of the bytes, scaled to 100%."""
        return (self.end - self.start) / 0.98


def group_span(samples: list[tuple[float, dict[int, tuple[int, int]]]], nodes: list[int], threshold_bytes_s: float,
               t_from: float, t_to: float, merge_gap_s: float = 0.5) -> Burst | None:
    """The biggest burst of the *summed* uploads of ``nodes`` in ``[t_from, t_to]``.

    Every byte of an all-reduce is uploaded by one of its members, so the sum sees the whole
    transfer, including reducers still returning parts after their own share arrived; a transfer
    that involves one uploader (a state download) stays below a threshold set at a share of the
    group's total capacity.
    """
    summed = [(t, {0: (sum(c[i][0] for i in nodes), 0)}) for t, c in samples if all(i in c for i in nodes)]
    found = bursts(summed, 0, 0, threshold_bytes_s, t_from, t_to, merge_gap_s, subtract_background=False)
    return max(found, key=lambda b: b.nbytes) if found else None


def bursts(samples: list[tuple[float, dict[int, tuple[int, int]]]], node: int, direction: int, threshold_bytes_s: float,
           t_from: float = 0.0, t_to: float = float("inf"), merge_gap_s: float = 0.35, subtract_background: bool = True) -> list[Burst]:
    """Bursts of ``node``'s traffic (direction 0: up, 1: down) in ``[t_from, t_to]``.

    A burst is a run of sampling intervals whose rate exceeds ``threshold_bytes_s`` (gaps shorter
    than ``merge_gap_s`` are bridged), widened by one interval on each side so that partly filled
    edge intervals count; unless told otherwise, the background rate (the median rate of the
    intervals below the threshold in the window) is subtracted from its bytes.
    """
    pts = [(t, c[node][direction]) for t, c in samples if node in c and t_from <= t <= t_to]
    if len(pts) < 3:
        return []
    rates = [(pts[k + 1][1] - pts[k][1]) / max(1e-9, pts[k + 1][0] - pts[k][0]) for k in range(len(pts) - 1)]
    quiet = [r for r in rates if r <= threshold_bytes_s]
    background = statistics.median(quiet) if quiet and subtract_background else 0.0
    runs: list[list[int]] = []
    for k, r in enumerate(rates):
        if r > threshold_bytes_s:
            if runs and pts[k][0] - pts[runs[-1][1] + 1][0] <= merge_gap_s:
                runs[-1][1] = k
            else:
                runs.append([k, k])
    out = []
    for a, b in runs:
        a, b = max(0, a - 1), min(len(rates) - 1, b + 1)
        t0, t1 = pts[a][0], pts[b + 1][0]
        total = pts[b + 1][1] - pts[a][1] - background * (t1 - t0)
        if total <= 0:
            continue

        def crossing(level: float) -> float:
            target = pts[a][1] + level
            for k in range(a, b + 1):
                lo, hi = pts[k][1], pts[k + 1][1]
                if hi >= target:
                    w = (target - lo) / (hi - lo) if hi > lo else 0.0
                    return pts[k][0] + w * (pts[k + 1][0] - pts[k][0])
            return t1

        out.append(Burst(crossing(0.01 * total), crossing(0.99 * total), total))
    return out
