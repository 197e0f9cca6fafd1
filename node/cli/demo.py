"""``swarm demo``: a whole swarm on 127.0.0.1 — N nodes and the coordinator — in one command.

Each node is a real ``swarm join`` process with its own identity, state dir and p2pd, on
loopback only. The demo prints every node's validation loss as it falls, and with
``--seconds`` stops by itself and writes a JSON report (per node: peer id, initial and final
validation bits per byte, rounds, tokens, bytes sent and received). ``--data PATH`` (a file or a
folder of text, recognised by content) is passed to every node.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from node.host.config import NodeConfig
from node.cli.launcher import SwarmLauncher, loopback_round_tokens
from node.host.lifeline import unwind_on_signals
from protocol import RunManifest
from protocol.manifest import DataSpec

__all__ = ["demo_manifest", "run_demo", "steady_state"]


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


def demo_manifest(run_id: str, round_tokens: int, model: str, codec: str, data: Path | None = None) -> RunManifest:
    """The demo's run manifest, from the same flags a node would take; with ``--data``, it says so: each
    node trains on its ``--data``, not on the stdlib."""
    from node.uplink.manifests import manifest_from_flags

    manifest = manifest_from_flags(NodeConfig(run_id=run_id, round_tokens=round_tokens, model=model, codec=codec))
    if data is not None:
        manifest = dataclasses.replace(manifest, data=DataSpec(source="files", val_fraction=manifest.data.val_fraction))
    return manifest


def _check_data(path: Path) -> str:
    """The line that says what ``--data`` holds (each node logs the same), or ValueError/FileNotFoundError."""
    from node.data.load import MAX_FILE_BYTES
    from node.data.textfiles import TextScan, iter_text_files

    scan = TextScan()
    for _ in iter_text_files(path, max_bytes=MAX_FILE_BYTES, scan=scan):
        pass
    if not scan.used_files:
        raise ValueError(f"no text files under {path} ({scan.summary()})")
    return f"data {path}: {scan.summary()}"


def _say(line: str) -> None:
    """Print for the person watching; after SIGHUP the terminal may be gone, and that must not stop the clean-up."""
    try:
        print(line, flush=True)
    except OSError:
        pass


def exit_reason(returncode: int) -> str:
    """How a process ended, for people: "exited with code 1", "killed by SIGKILL"."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


def _tell_exit(name: str, returncode: int, log: Path, lines: int = 25) -> None:
    """On stderr: why a node ended and the tail of its log, so an unattended run (CI) shows the cause."""
    try:
        tail = log.read_text(errors="replace").splitlines()[-lines:]
    except OSError as e:
        tail = [f"(cannot read {log}: {e.strerror or e})"]
    try:
        print(f"{name} {exit_reason(returncode)}; the last {len(tail)} lines of {log}:", *("  " + t for t in tail),
              sep="\n", file=sys.stderr, flush=True)
    except OSError:
        pass


def run_demo(args: argparse.Namespace) -> int:
    data = getattr(args, "data", None)
    if data is not None:
        data = data.expanduser().resolve()  # every node runs in its own state dir
        try:
            _say(_check_data(data))
        except (ValueError, FileNotFoundError) as e:
            print(f"error: --data: {e}", file=sys.stderr, flush=True)
            return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="capaswarm-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    # Ctrl-C, SIGTERM and SIGHUP (a closed terminal) all unwind like Ctrl-C, once: leaving the launcher's
    # ``with`` stops the nodes and the coordinator
    restore = unwind_on_signals(lambda signum: KeyboardInterrupt(signal.Signals(signum).name))
    try:
        return _run_demo(args, workdir, data)
    except KeyboardInterrupt as e:
        _say(f"stopped by {e.args[0] if e.args else 'SIGINT'} before the swarm was up; nothing is left running")
        return 130
    finally:
        restore()


def replica_check(hashes: list[dict[str, str]]) -> dict[str, object]:
    """Did every node that applied a round hold the same state after it? ``hashes``: each node's
    state hash per round applied (status.json's ``hashes``). Rounds that only one node applied
    prove nothing and are counted apart."""
    rounds = sorted({r for h in hashes for r in h}, key=int)
    shared = [r for r in rounds if sum(r in h for h in hashes) >= 2]
    forked = [r for r in shared if len({h[r] for h in hashes if r in h}) > 1]
    return {"rounds_compared": len(shared), "rounds_forked": forked, "identical": not forked and bool(shared)}


def _run_demo(args: argparse.Namespace, workdir: Path, data: Path | None) -> int:
    round_tokens = args.round_tokens or loopback_round_tokens(args.nodes)
    run_id = f"demo-{int(time.time())}"
    swarm = SwarmLauncher(workdir, run_id=run_id, model=args.model, codec=args.codec, round_tokens=round_tokens,
                          extra_args=["--status-interval-s", "10", *(["--data", str(data)] if data else [])])
    with swarm:  # leaving it, however: the nodes stop, then the coordinator
        if not args.no_coordinator:
            swarm.start_coordinator(demo_manifest(run_id, round_tokens, args.model, args.codec, data), port=args.port or 0)
            _say(f"dashboard: {swarm.coordinator_url}/")
        _say(f"starting {args.nodes} nodes on 127.0.0.1 (state and logs in {workdir})")
        names = swarm.start(args.nodes)
        t0 = time.monotonic()
        try:
            while args.seconds is None or time.monotonic() - t0 < args.seconds:
                time.sleep(5)
                sts = swarm.statuses()
                line = "  ".join(
                    f"{n}: round {st['round']} val {st['final_val_bpb']:.3f}" if st.get("final_val_bpb") else f"{n}: starting"
                    for n, st in sorted(sts.items())
                )
                _say(f"[{time.monotonic() - t0:5.0f}s] {line}  (validation bits/byte)")
                dead = [n for n, p in swarm.procs.items() if p.poll() is not None]
                if dead:
                    _say("a node exited; see its node.log")
                    for n in dead:
                        _tell_exit(n, swarm.procs[n].returncode, swarm.state_dir(n) / "node.log")
                    break
        except KeyboardInterrupt:
            _say("stopping the swarm...")
        swarm.stop()
        final = swarm.statuses()
    nodes = [
        {k: final[n].get(k) for k in ("peer_id", "public_name", "initial_val_bpb", "final_val_bpb", "rounds", "tokens",
                                     "tokens_contributed", "bytes_sent", "bytes_received", "state_hash", "compute_s",
                                     "eval_s", "inner_steps", "uptime_s", "hashes")}
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
        "replicas": replica_check([n.get("hashes") or {} for n in nodes]),
        "workdir": str(workdir),
        "dashboard": swarm.coordinator_url,
    }
    if args.report:
        args.report.write_text(json.dumps(report, indent=2))
        _say(f"report written to {args.report}")
    for n in report["nodes"]:
        if n["initial_val_bpb"] is None or n["final_val_bpb"] is None:
            _say(f"{n['public_name']}: stopped before its first evaluation")
            continue
        _say(f"{n['public_name']}: {n['initial_val_bpb']:.3f} -> {n['final_val_bpb']:.3f} bits/byte "
             f"in {n['rounds']} rounds, {n['tokens']:,} tokens")
    return 0
