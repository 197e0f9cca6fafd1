"""``swarm demo``: a whole swarm on 127.0.0.1 — N nodes and the coordinator — in one command.

Each node is a real ``swarm join`` process with its own identity, state dir and p2pd, on
loopback only. The demo prints every node's validation loss as it falls, and with
``--seconds`` stops by itself and writes a JSON report (per node: peer id, initial and final
validation bits per byte, rounds, tokens, bytes sent and received).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from node.config import NodeConfig

__all__ = ["DemoSwarm", "run_demo"]

logger = logging.getLogger(__name__)
LOOPBACK = "/ip4/127.0.0.1/tcp/0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read_status(state_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((state_dir / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class DemoSwarm:
    """Starts and stops a local swarm of ``swarm join`` processes (also used by tests)."""

    def __init__(self, workdir: Path, *, run_id: str = "capaswarm-demo", model: str = "tiny", codec: str = "fp16",
                 round_tokens: int = 60_000, batch_size: int | None = None, coordinator_url: str | None = None,
                 extra_args: list[str] | None = None):
        self.workdir = workdir
        self.coordinator_url = coordinator_url
        self.manifest_args = ["--run-id", run_id, "--model", model, "--codec", codec, "--round-tokens", str(round_tokens)]
        if batch_size:
            self.manifest_args += ["--batch-size", str(batch_size)]
        self.extra_args = extra_args or []
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def state_dir(self, name: str) -> Path:
        return self.workdir / name

    def start_node(self, name: str, initial_peers: list[str] | None = None, extra: list[str] | None = None,
                   env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        state = self.state_dir(name)
        state.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "node", "join", "--host-maddrs", LOOPBACK, "--state-dir", str(state),
               "--public-name", name, "--threads", "1"]
        cmd += ["--initial-peers", *initial_peers] if initial_peers else ["--new-swarm"]
        cmd += ["--coordinator", self.coordinator_url] if self.coordinator_url else self.manifest_args
        cmd += self.extra_args + (extra or [])
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
        log = open(state / "node.log", "ab")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()
        self.procs[name] = proc
        return proc

    def wait_for_maddr(self, name: str, timeout: float = 90.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = read_status(self.state_dir(name))
            if st and st.get("maddrs"):
                return str(st["maddrs"][0])
            if self.procs[name].poll() is not None:
                raise RuntimeError(f"node {name} exited early; see {self.state_dir(name) / 'node.log'}")
            time.sleep(0.3)
        raise TimeoutError(f"node {name} did not come up in {timeout:.0f} s")

    def start(self, n: int) -> list[str]:
        names = [f"node-{i + 1}" for i in range(n)]
        self.start_node(names[0])
        first = self.wait_for_maddr(names[0])
        for name in names[1:]:
            self.start_node(name, [first])
        return names

    def statuses(self) -> dict[str, dict[str, Any]]:
        return {name: st for name in self.procs if (st := read_status(self.state_dir(name)))}

    def stop_node(self, name: str, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Signal the node's main process (SIGTERM: orderly shutdown), then reap its process group."""
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("node %s did not stop in %.0f s; killing it", name, timeout)
        try:  # p2pd and hivemind helpers of a killed (or stuck) node share its process group
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait(5)
        return proc.returncode

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # all at once, so they leave together
        for name in list(self.procs):
            self.stop_node(name)

    def __enter__(self) -> DemoSwarm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def steady_state(statuses: list[dict[str, Any]]) -> dict[str, float]:
    """Rounds per hour and swarm tokens/s over the rounds every node completed (start-up excluded)."""
    logs = [{int(r): v for r, v in (st.get("round_log") or {}).items()} for st in statuses]
    common = sorted(set.intersection(*(set(log) for log in logs))) if logs else []
    if len(common) < 2:
        return {"swarm_tokens_per_s": 0.0, "rounds_per_hour": 0.0, "steady_rounds": len(common)}
    first, last = common[0], common[-1]
    span = statistics.median(log[last][0] - log[first][0] for log in logs)
    tokens = sum(log[r][1] for log in logs for r in common[1:])  # rounds that ended inside the window
    return {"swarm_tokens_per_s": round(tokens / span, 1), "rounds_per_hour": round((len(common) - 1) / span * 3600, 1),
            "steady_rounds": len(common) - 1}


def _start_coordinator(workdir: Path, port: int, run_id: str, round_tokens: int, model: str, codec: str,
                       algorithm: str = "diloco") -> tuple[subprocess.Popen[bytes], str]:
    from node.manifests import manifest_from_flags

    manifest = manifest_from_flags(NodeConfig(run_id=run_id, round_tokens=round_tokens, model=model, codec=codec,
                                              algorithm=algorithm))
    mpath = workdir / "manifest.msgpack"
    mpath.write_bytes(manifest.to_bytes())
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "coordinator", "--host", "127.0.0.1", "--port", str(port),
           "--db", str(workdir / "ledger.sqlite3"), "--manifest", str(mpath)]
    log = open(workdir / "coordinator.log", "ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    import urllib.request

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1):
                return proc, url
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.3)
    raise RuntimeError(f"coordinator did not start; see {workdir / 'coordinator.log'}")


def run_demo(args: argparse.Namespace) -> int:
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="capaswarm-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    round_tokens = args.round_tokens or 20_000 * args.nodes
    run_id = f"demo-{int(time.time())}"
    coord = None
    url = None
    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))
    try:
        if not args.no_coordinator:
            coord, url = _start_coordinator(workdir, args.port or free_port(), run_id, round_tokens, args.model, args.codec)
            print(f"dashboard: {url}/", flush=True)
        swarm = DemoSwarm(workdir, run_id=run_id, model=args.model, codec=args.codec, round_tokens=round_tokens,
                          coordinator_url=url, extra_args=["--status-interval-s", "10"])
        with swarm:
            print(f"starting {args.nodes} nodes on 127.0.0.1 (state and logs in {workdir})", flush=True)
            names = swarm.start(args.nodes)
            t0 = time.monotonic()
            try:
                while not stop["flag"] and (args.seconds is None or time.monotonic() - t0 < args.seconds):
                    time.sleep(5)
                    sts = swarm.statuses()
                    line = "  ".join(
                        f"{n}: round {st['round']} val {st['final_val_bpb']:.3f}" if st.get("final_val_bpb") else f"{n}: starting"
                        for n, st in sorted(sts.items())
                    )
                    print(f"[{time.monotonic() - t0:5.0f}s] {line}  (validation bits/byte)", flush=True)
                    if any(p.poll() is not None for p in swarm.procs.values()):
                        print("a node exited; see its node.log", flush=True)
                        break
            except KeyboardInterrupt:
                print("stopping the swarm...", flush=True)
            swarm.stop()
            final = swarm.statuses()
        nodes = [
            {k: final[n].get(k) for k in ("peer_id", "public_name", "initial_val_bpb", "final_val_bpb", "rounds", "tokens",
                                         "tokens_contributed", "bytes_sent", "bytes_received", "state_hash", "compute_s",
                                         "eval_s", "inner_steps", "uptime_s")}
            for n in names if n in final
        ]
        elapsed = time.monotonic() - t0
        report = {
            "nodes": nodes,
            "run_id": run_id,
            "seconds": args.seconds,
            "elapsed_s": round(elapsed, 1),  # from when every node was launched to the stop
            "round_tokens": round_tokens,
            "matchmaking_time_s": NodeConfig.model_fields["matchmaking_time_s"].default,
            **steady_state([final[n] for n in names if n in final]),
            "workdir": str(workdir),
            "dashboard": url,
        }
        if args.report:
            args.report.write_text(json.dumps(report, indent=2))
            print(f"report written to {args.report}", flush=True)
        for n in report["nodes"]:
            print(f"{n['public_name']}: {n['initial_val_bpb']:.3f} -> {n['final_val_bpb']:.3f} bits/byte "
                  f"in {n['rounds']} rounds, {n['tokens']:,} tokens", flush=True)
        return 0
    finally:
        if coord is not None and coord.poll() is None:
            os.killpg(coord.pid, signal.SIGTERM)
            try:
                coord.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(coord.pid, signal.SIGKILL)
