"""Start and stop a swarm of real processes: a coordinator and ``swarm join`` nodes.

The one launcher behind ``swarm demo``, the multi-process tests and the benchmark suites:

* :func:`start_coordinator` -- ``python -m coordinator`` with a run manifest, its ledger, log and
  port file in a work dir; returns a :class:`Coordinator` once it listens (the port file is written
  after the socket is bound). Every coordinator a demo, test or benchmark runs is started here.
* :class:`SwarmLauncher` -- ``swarm join`` processes, each with its own identity, state dir, log
  and p2pd; optionally the coordinator they report to (:meth:`SwarmLauncher.start_coordinator`).
  Where a process runs is a :class:`Place`: a command prefix (``ip netns exec NS``) and the
  addresses it listens on and announces. The default is 127.0.0.1; a ``place`` hook (name ->
  Place) puts each node elsewhere, as the benchmark testbed does (benchmarks/suites/swarm.py).

Lifelines (node/host/lifeline.py): every process gets its own session (a Ctrl-C in the terminal
reaches the launcher, which stops them in order) and a parent-death signal, so a launcher killed
with ``kill -9`` takes them along: nodes get SIGKILL (their last complete round is checkpointed
and their outbox is on disk, so an orderly stop would keep nothing more), the coordinator SIGTERM
(it closes its ledger). Nodes are stopped with SIGTERM, then their process group (p2pd and
hivemind's helpers) is killed. Nothing here imports coordinator/ or benchmarks/: both run as
separate processes.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from node.host.lifeline import die_with_parent
from protocol import Identity, RunManifest

__all__ = [
    "LOOPBACK", "LOOPBACK_TOKENS_PER_NODE", "Coordinator", "Place", "SwarmLauncher", "free_port", "loopback_round_tokens",
    "read_status", "start_coordinator",
]

# A round on one machine (demo, tests, benchmarks): a few seconds of the tiny model per node, so a
# loopback swarm shows rounds quickly. Real runs use the manifest default, protocol.manifest.ROUND_TOKENS.
LOOPBACK_TOKENS_PER_NODE = 20_000


def loopback_round_tokens(nodes: int) -> int:
    """Tokens per round for a swarm of ``nodes`` on one machine."""
    return LOOPBACK_TOKENS_PER_NODE * max(nodes, 1)

logger = logging.getLogger(__name__)
LOOPBACK = "/ip4/127.0.0.1/tcp/0"
SOURCE = Path(__file__).resolve().parents[1]  # where ``node`` and ``coordinator`` are imported from


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read_status(state_dir: Path) -> dict[str, Any] | None:
    """A node's ``status.json`` (None before its first, or mid-write)."""
    try:
        return json.loads((state_dir / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


@dataclass(frozen=True)
class Place:
    """Where a process runs: a command prefix (e.g. ``ip netns exec NS``), the multiaddr a node listens
    on and, if it differs from what others should dial, the one it announces."""

    prefix: tuple[str, ...] = ()
    host_maddrs: str = LOOPBACK
    announce_maddrs: str | None = None


def _loopback(_name: str) -> Place:
    return Place()


def child_env(*hosts: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a launched process: this one's, single-threaded BLAS, unbuffered output, the
    same source tree first on the path, and no HTTP proxy for the swarm's own ``hosts``."""
    local = ",".join(dict.fromkeys([*hosts, "127.0.0.1", "localhost"]))
    path = os.pathsep.join(p for p in (str(SOURCE), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": path, "NO_PROXY": local,
            "no_proxy": local, **(extra or {})}


def _killpg(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class Coordinator:
    """A running ``python -m coordinator``; :meth:`stop` (or leaving the ``with``) ends it."""

    proc: subprocess.Popen[bytes]
    host: str
    port: int
    log: Path
    run_key: str = ""  # the run key's fingerprint: what the join line pins (``--run-key``)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or an OOM kill."""
        _killpg(self.proc)
        self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (an orderly shutdown), SIGKILL after ``timeout``; returns the exit status."""
        if self.proc.poll() is None:
            _killpg(self.proc, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("the coordinator did not stop in %.0f s; killing it", timeout)
                _killpg(self.proc)
        self.proc.wait(5)
        return self.proc.returncode

    def __enter__(self) -> Coordinator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_coordinator(workdir: Path, manifest: RunManifest | None = None, *, db: Path | str | None = None,
                      run_key: Path | None = None, host: str = "127.0.0.1", port: int = 0, prefix: Sequence[str] = (),
                      args: Sequence[str] = (), timeout: float = 60.0) -> Coordinator:
    """Start ``python -m coordinator`` and return once it listens.

    In ``workdir``: ``manifest.msgpack`` (``manifest``, if given), ``ledger.sqlite3`` (unless ``db``: a
    path or a ``postgresql://`` URL), ``coordinator.log`` and ``coordinator.port``. The run key is
    ``run_key``, else beside a SQLite ledger, else ``workdir/run.runkey`` (coordinators sharing one
    PostgreSQL ledger must be given one file). ``port`` 0 takes a free one; ``prefix`` runs it
    elsewhere (a namespace, where ``host`` is its address there); ``args`` are more coordinator flags.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port_file, log = workdir / "coordinator.port", workdir / "coordinator.log"
    port_file.unlink(missing_ok=True)
    db = db or workdir / "ledger.sqlite3"
    # named here, so the nodes can pin the key it holds
    key_file = run_key or (db.with_name(db.name + ".runkey") if isinstance(db, Path) else workdir / "run.runkey")
    cmd = [*prefix, sys.executable, "-m", "coordinator", "--host", host, "--port", str(port), "--port-file", str(port_file),
           "--db", str(db), "--run-key-file", str(key_file)]
    if manifest is not None:
        (workdir / "manifest.msgpack").write_bytes(manifest.to_bytes())
        cmd += ["--manifest", str(workdir / "manifest.msgpack")]
    with open(log, "ab") as out:
        proc = subprocess.Popen([*cmd, *args], stdout=out, stderr=subprocess.STDOUT, env=child_env(host),
                                start_new_session=True, preexec_fn=die_with_parent())
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            text = port_file.read_text().strip() if port_file.exists() else ""
            if text:  # the run key is made before the socket is bound
                return Coordinator(proc, host, int(text), log, Identity.load(key_file).peer_id)
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    except BaseException:  # Ctrl-C while it starts: it must not outlive this call
        _killpg(proc)
        raise
    _killpg(proc)
    proc.wait(5)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise RuntimeError(f"the coordinator did not start; see {log}\n{tail}")


@dataclass
class SwarmLauncher:
    """Starts and stops ``swarm join`` processes (and, if asked, their coordinator) under ``workdir``.

    A node named ``name`` keeps its state and ``node.log`` in ``workdir/name``. Without a coordinator
    the run manifest comes from flags (``run_id`` ... ``batch_size``); with one, from it.
    ``extra_args`` go to every node, ``env`` into every node's environment, and ``place`` says where
    each node runs (default: 127.0.0.1).
    """

    workdir: Path
    run_id: str = "capaswarm-demo"
    model: str = "tiny"
    codec: str = "fp16"
    round_tokens: int = LOOPBACK_TOKENS_PER_NODE * 3  # a 3-node loopback swarm's
    batch_size: int | None = None
    coordinator_url: str | None = None
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    place: Callable[[str], Place] = _loopback
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, init=False)
    coordinator: Coordinator | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.extra_args = list(self.extra_args or [])

    @property
    def manifest_args(self) -> list[str]:
        args = ["--run-id", self.run_id, "--model", self.model, "--codec", self.codec, "--round-tokens", str(self.round_tokens)]
        return args + (["--batch-size", str(self.batch_size)] if self.batch_size else [])

    # ------------------------------------------------------------------ coordinator
    def start_coordinator(self, manifest: RunManifest, *, host: str = "127.0.0.1", port: int = 0, prefix: Sequence[str] = (),
                          args: Sequence[str] = ()) -> Coordinator:
        """Start the run's coordinator in ``workdir`` (see :func:`start_coordinator`); the nodes started
        after this report to it, and :meth:`stop` stops it after them."""
        self.coordinator = start_coordinator(self.workdir, manifest, host=host, port=port, prefix=prefix, args=args)
        self.coordinator_url = self.coordinator.url
        return self.coordinator

    # ------------------------------------------------------------------ nodes
    def state_dir(self, name: str) -> Path:
        return self.workdir / name

    def start_node(self, name: str, initial_peers: list[str] | None = None, extra: list[str] | None = None,
                   env: dict[str, str] | None = None, place: Place | None = None) -> subprocess.Popen[bytes]:
        """Start ``swarm join`` for ``name``: with ``initial_peers``, or (none given) ``--new-swarm``, or,
        with ``initial_peers=[]`` and a coordinator, neither: the peers come from the coordinator.
        ``place`` overrides the launcher's ``place`` hook for this node."""
        state = self.state_dir(name)
        state.mkdir(parents=True, exist_ok=True)
        (state / "status.json").unlink(missing_ok=True)  # a restarted node: wait for its new address
        cmd = self.node_command(name, initial_peers, extra, place)
        hosts = [urlsplit(self.coordinator_url).hostname or ""] if self.coordinator_url else []
        with open(state / "node.log", "ab") as log:
            env = child_env(*hosts, extra={**self.env, **(env or {})})
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True, preexec_fn=die_with_parent(signal.SIGKILL))
        self.procs[name] = proc
        return proc

    def node_command(self, name: str, initial_peers: list[str] | None = None, extra: list[str] | None = None,
                     place: Place | None = None) -> list[str]:
        """The command line :meth:`start_node` runs."""
        where = place or self.place(name)
        cmd = [*where.prefix, sys.executable, "-m", "node", "join", "--host-maddrs", where.host_maddrs]
        cmd += ["--announce-maddrs", where.announce_maddrs] if where.announce_maddrs else []
        cmd += ["--state-dir", str(self.state_dir(name)), "--public-name", name, "--threads", "1"]
        if initial_peers:
            cmd += ["--initial-peers", *initial_peers]
        elif initial_peers is None or not self.coordinator_url:
            cmd += ["--new-swarm"]
        if self.coordinator_url:  # the join line a volunteer copies: the URL and the pinned run key
            cmd += ["--coordinator", self.coordinator_url]
            cmd += ["--run-key", self.coordinator.run_key] if self.coordinator and self.coordinator.run_key else []
        else:
            cmd += self.manifest_args
        return cmd + [*self.extra_args, *(extra or [])]

    def wait_for_maddr(self, name: str, timeout: float = 120.0) -> str:
        """The first multiaddr ``name`` announces, once its status says it is up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.status(name)
            if st and st.get("maddrs"):
                return str(st["maddrs"][0])
            if self.procs[name].poll() is not None:
                raise RuntimeError(f"node {name} exited early; see {self.state_dir(name) / 'node.log'}")
            time.sleep(0.3)
        raise TimeoutError(f"node {name} did not come up in {timeout:.0f} s")

    def start(self, n: int, extra: Callable[[str], list[str]] | None = None) -> list[str]:
        """Start ``node-1`` .. ``node-n``: the first a new swarm, the others joining it; returns the names."""
        names = [f"node-{i + 1}" for i in range(n)]
        self.start_node(names[0], extra=extra(names[0]) if extra else None)
        first = self.wait_for_maddr(names[0])
        for name in names[1:]:
            self.start_node(name, [first], extra=extra(name) if extra else None)
        return names

    def stop_node(self, name: str, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Signal the node's main process (SIGTERM: orderly shutdown), then reap its process group."""
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("node %s did not stop in %.0f s; killing it", name, timeout)
        _killpg(proc)  # p2pd and hivemind helpers of a killed (or stuck) node share its process group
        proc.wait(5)
        return proc.returncode

    def stop(self) -> None:
        """Stop every node (all signalled at once, so they leave together), then the coordinator."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name in list(self.procs):
            self.stop_node(name)
        if self.coordinator is not None:
            self.coordinator.stop()

    def __enter__(self) -> SwarmLauncher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ reading
    def status(self, name: str) -> dict[str, Any] | None:
        return read_status(self.state_dir(name))

    def statuses(self) -> dict[str, dict[str, Any]]:
        return {name: st for name in self.procs if (st := self.status(name))}

    def wait(self, predicate: Callable[[dict[str, dict[str, Any]]], bool], timeout: float, poll_s: float = 0.5) -> bool:
        """Poll node statuses until ``predicate`` holds (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.statuses()):
                return True
            time.sleep(poll_s)
        return False
