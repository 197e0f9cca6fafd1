"""``size``: a swarm of a real-size model (``gpt2-small-bytes``, 86M parameters) on CPU, and a joiner.

N nodes train the preset for ``--rounds`` rounds; a joiner starts once every node applied its first
round and downloads the state from them. Measured per node, from the harness and the nodes' own
figures (``status.json``, the ledger):

* peak memory: the proportional set size (PSS: shared pages split among the processes sharing
  them, so the averager's forked child is not counted twice) of the node's whole process group
  (the node, hivemind's averager and DHT processes, p2pd), sampled every ``--sample-s``, beside
  what ``swarm join --check`` estimates for the preset (``node.policies.model_size.memory_needed_gb``);
* each round's time split: inner compute, waiting on the network (matchmaking, all-reduce,
  agreement) and the rest (evaluation, checkpoint, state sharing), from the ledger's reports;
* payload bytes sent per round vs the butterfly bound 2(N-1)/N x the compressed payload;
* checkpoint writes (seconds each, from the node) and one checkpoint load (in the harness);
* the joiner's state download (download, checks and adoption, as the node times it) and its peak memory;
* identical state hashes: every round that two or more nodes applied, compared across them;
* ``swarm export`` of node 1's state and ``transformers.GPT2LMHeadModel.from_pretrained`` of it.

Loopback only (the memory and size paths are what is measured; shaped links are the other suites').

    python -m benchmarks.suites size --loopback --out bench-out/size --nodes 2 --rounds 3
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.suites.bytes import bound_bytes
from benchmarks.suites.output import publish, suite_result
from benchmarks.suites.provenance import fingerprint
from node.cli.demo import replica_check
from benchmarks.suites.swarm import (base_parser, bench_swarm, cpu_lock, ledger_reports, make_bed, name, Report, SwarmSpec,
                                     tokens_per_step, workdir)

__all__ = ["MemorySampler", "main", "process_group_memory"]

logger = logging.getLogger(__name__)
MB = 2**20


def _kb(field: str, text: str) -> int:
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def process_group_memory(pgid: int, per_process: dict[int, int] | None = None) -> tuple[int, int, int]:
    """(PSS bytes, RSS bytes, processes) of every process in process group ``pgid`` (a node started
    by the launcher leads its own session: its averager, DHT and p2pd are in its group); with
    ``per_process``, each one's PSS is also written there by pid."""
    pss = rss = count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[2]) != pgid:  # fields after "(comm)": state ppid pgrp
                continue
            rollup = Path(entry.path, "smaps_rollup").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError, ValueError):
            continue  # exited between the scan and the read
        mine = 1024 * _kb("Pss", rollup)
        pss, rss, count = pss + mine, rss + 1024 * _kb("Rss", rollup), count + 1
        if per_process is not None:
            per_process[int(entry.name)] = mine
    return pss, rss, count


class MemorySampler:
    """Peak PSS and RSS of each running node's process group, sampled in a thread while in the ``with``."""

    def __init__(self, procs: dict[str, subprocess.Popen[bytes]], every_s: float):
        self.procs, self.every_s = procs, every_s
        self.peak_pss: dict[str, int] = {}
        self.peak_rss: dict[str, int] = {}
        self.processes: dict[str, int] = {}
        self.peak_per_process: dict[str, dict[int, int]] = {}  # node -> pid -> its peak PSS
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory", daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            for node, proc in list(self.procs.items()):
                if proc.poll() is not None:
                    continue
                each: dict[int, int] = {}
                pss, rss, count = process_group_memory(proc.pid, each)
                peaks = self.peak_per_process.setdefault(node, {})
                for pid, v in each.items():
                    peaks[pid] = max(peaks.get(pid, 0), v)
                self.peak_pss[node] = max(self.peak_pss.get(node, 0), pss)
                self.peak_rss[node] = max(self.peak_rss.get(node, 0), rss)
                self.processes[node] = max(self.processes.get(node, 0), count)
            self._stop.wait(self.every_s)


def _split(reports: list[Report]) -> dict[str, float | None]:
    ok = [r for r in reports if r.ok]
    if not ok:
        return {"rounds": 0}

    def med(values: list[float]) -> float:
        return round(statistics.median(values), 2)

    network = [r.blocked_s for r in ok if r.blocked_s is not None]
    return {"rounds": len(ok), "wall_s": med([r.wall_s for r in ok]), "compute_s": med([r.compute_s for r in ok]),
            "network_s": med(network) if network else None,
            "other_s": med([r.wall_s - r.compute_s - (r.blocked_s or 0.0) for r in ok])}


def _bytes_vs_bound(reports: list[Report], codec: str) -> dict[str, Any]:
    """Payload bytes sent per round in a group of two or more vs the butterfly bound (``bytes.bound_bytes``)."""
    full = [r for r in reports if r.ok and r.group >= 2 and r.payload_bytes]
    if not full:
        return {}
    bound = statistics.median(bound_bytes(r.payload_bytes, codec, r.group) for r in full)
    sent = statistics.median(r.bytes_sent for r in full)
    return {"rounds": len(full), "payload_fp32_mb": round(statistics.median(r.payload_bytes for r in full) / MB, 1),
            "sent_mb": round(sent / MB, 1), "bound_mb": round(bound / MB, 1), "sent_over_bound": round(sent / bound, 3)}


def _export(state_dir: Path, out: Path) -> dict[str, Any]:
    """``swarm export`` of ``state_dir`` and transformers loading the result, each timed in its own process."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "node", "export", "--state-dir", str(state_dir), "--out", str(out)], check=True,
                   capture_output=True, timeout=900)
    export_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    code = ("import sys, transformers; m = transformers.GPT2LMHeadModel.from_pretrained(sys.argv[1]); "
            "print(sum(p.numel() for p in m.parameters()))")
    done = subprocess.run([sys.executable, "-c", code, str(out)], check=True, capture_output=True, text=True, timeout=900)
    load_s = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    return {"export_s": round(export_s, 1), "transformers_load_s": round(load_s, 1),
            "transformers_parameters": int(done.stdout.split()[-1]), "export_mb": round(size / MB, 1)}


def _load_checkpoint_s(path: Path) -> float:
    """One checkpoint load in a fresh process (as a restarted node does), in seconds."""
    code = ("import sys, time; from node.model.state import NodeCheckpoint; t = time.perf_counter(); "
            "NodeCheckpoint.load(__import__('pathlib').Path(sys.argv[1])); print(time.perf_counter() - t)")
    done = subprocess.run([sys.executable, "-c", code, str(path)], check=True, capture_output=True, text=True, timeout=900)
    return round(float(done.stdout.split()[-1]), 2)


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from node.averaging.codecs import get_codec
    from node.model.gpt import preset
    from node.policies.model_size import memory_needed_gb, param_count

    n = args.nodes
    spec = SwarmSpec(run_id=f"size-{int(time.time())}", model=args.model, codec=args.codec, batch_size=args.batch_size,
                     round_tokens=args.steps_per_round * tokens_per_step(args.model, args.batch_size) * n,
                     matchmaking_time_s=args.matchmaking_time_s, bandwidth_mbps=args.bandwidth_mbps,
                     max_seconds=args.run_seconds + 120,
                     env=(("SWARM_EVAL_BATCHES", "1"), ("SWARM_EVAL_WINDOWS", str(args.eval_windows))))
    joiner = name(n + 1)
    bed = make_bed(n, loopback=True, up_mbit=None, down_mbit=None)
    with cpu_lock(args.cpu_lock), bed, bench_swarm(bed, work / "swarm", spec) as swarm:
        t0 = time.monotonic()

        def left() -> float:
            return max(1.0, args.run_seconds - (time.monotonic() - t0))

        with MemorySampler(swarm.procs, args.sample_s) as memory:
            swarm.start(n)
            first = swarm.wait(lambda sts: len(sts) == n and all(st.get("rounds", 0) >= 1 for st in sts.values()), left())
            if first:
                swarm.start_node(joiner, [swarm.wait_for_maddr(name(1))])
            done = first and swarm.wait(
                lambda sts: all(sts.get(name(i), {}).get("rounds", 0) >= args.rounds for i in range(1, n + 1))
                and sts.get(joiner, {}).get("rounds", 0) >= 1, left())
            statuses = swarm.statuses()
            swarm.stop()
        reports = ledger_reports(swarm)
        seconds = time.monotonic() - t0
        model_spec = preset(args.model)
        estimate = memory_needed_gb(model_spec, args.batch_size or 1, error_feedback=get_codec(args.codec).error_feedback)
        nodes = []
        for node in sorted(statuses, key=lambda s: int(s.removeprefix("node-"))):
            st, mine = statuses[node], [r for r in reports if r.node == int(node.removeprefix("node-"))]
            checkpoints = st.get("checkpoints") or 0
            nodes.append({
                "node": node, "joiner": node == joiner, "rounds": st.get("rounds"), "status": st.get("status"),
                "peak_pss_gb": round(memory.peak_pss.get(node, 0) / 2**30, 2),
                "peak_rss_gb": round(memory.peak_rss.get(node, 0) / 2**30, 2),
                "processes": memory.processes.get(node), "estimate_gb": round(estimate, 2),
                "peak_pss_gb_per_process": sorted((round(v / 2**30, 2) for v in memory.peak_per_process.get(node, {}).values()),
                                                  reverse=True),
                "pss_over_estimate": round(memory.peak_pss.get(node, 0) / 2**30 / estimate, 2),
                "round_split_s": _split(mine), "bytes": _bytes_vs_bound(mine, args.codec),
                "checkpoint_write_s": round(st["checkpoint_s"] / checkpoints, 2) if checkpoints else None,
                "evaluation_s": round(st["eval_s"] / st["evaluations"], 2) if st.get("evaluations") else None,
                "state_download_s": (st.get("synced_from_peers") or {}).get("seconds"),
            })
        ckpt = work / "swarm" / name(1) / "checkpoint.pt"
        extras = {"checkpoint_mb": round(ckpt.stat().st_size / MB, 1), "checkpoint_load_s": _load_checkpoint_s(ckpt),
                  **_export(work / "swarm" / name(1), work / "export")} if ckpt.exists() else {}
    hashes = replica_check([st.get("hashes") or {} for st in statuses.values()])
    return {"completed": bool(done), "seconds": round(seconds, 1), "model": args.model,
            "parameters": param_count(model_spec), "nodes": nodes, "hashes": hashes, **extras}


def markdown(result: dict[str, Any]) -> str:
    a, r = result["args"], result["run"]
    lines = [f"# size: {a['nodes']} nodes + 1 joiner train `{r['model']}` ({r['parameters'] / 1e6:.1f}M parameters) on "
             f"loopback, {a['rounds']} rounds, batch {a['batch_size']}, {a['steps_per_round']} inner steps per node per round, "
             f"codec {a['codec']}", "",
             f"Completed: {r['completed']} in {r['seconds']:.0f} s. State hashes: {r['hashes']['rounds_compared']} rounds "
             f"held by two or more nodes, {len(r['hashes']['rounds_forked'])} forked.", "",
             "| node | rounds | peak PSS GB (RSS) | `join --check` estimate GB | PSS / estimate | round wall s | compute s "
             "| network s | other s | of which evaluation s | sent MB / bound MB | checkpoint write s | state download s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for nd in r["nodes"]:
        sp, by = nd["round_split_s"], nd["bytes"]
        fmt = (lambda v: "-" if v is None else f"{v}")
        sent = f"{by['sent_mb']} / {by['bound_mb']}" if by else "-"
        lines.append(f"| {nd['node']}{' (joiner)' if nd['joiner'] else ''} | {nd['rounds']} | {nd['peak_pss_gb']} "
                     f"({nd['peak_rss_gb']}) | {nd['estimate_gb']} | {nd['pss_over_estimate']} | {fmt(sp.get('wall_s'))} "
                     f"| {fmt(sp.get('compute_s'))} | {fmt(sp.get('network_s'))} | {fmt(sp.get('other_s'))} "
                     f"| {fmt(nd['evaluation_s'])} | {sent} | {fmt(nd['checkpoint_write_s'])} "
                     f"| {fmt(nd['state_download_s'])} |")
    if "checkpoint_mb" in r:
        lines += ["", f"Checkpoint {r['checkpoint_mb']} MB, loaded in {r['checkpoint_load_s']} s. `swarm export`: "
                      f"{r['export_s']} s ({r['export_mb']} MB); `GPT2LMHeadModel.from_pretrained`: "
                      f"{r['transformers_load_s']} s, "
                      f"{r['transformers_parameters']:,} parameters."]
    lines += ["", "PSS: the node's whole process group (node, averager, DHT, p2pd), shared pages split among sharers. "
              "Network: the reports' blocked time (matchmaking, all-reduce, agreement); other: wall - compute - network "
              "(evaluation, checkpoint, state sharing); evaluation: one validation run (`--eval-windows` windows of the "
              "context).", ""]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = base_parser("size", "a real-size model's swarm and joiner: memory, round split, bytes, checkpoint, export")
    p.set_defaults(model="gpt2-small-bytes")
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3, help="rounds every first node applies before the run ends")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--steps-per-round", type=int, default=2, help="inner steps per node per round")
    p.add_argument("--codec", default="fp16")
    p.add_argument("--eval-windows", type=int, default=2,
                   help="validation windows per evaluation (SWARM_EVAL_WINDOWS; a node's default, 16, takes ~70 s at 86M on "
                        "this CPU, more than the round's training)")
    p.add_argument("--matchmaking-time-s", type=float, default=5.0)
    p.add_argument("--bandwidth-mbps", type=float, default=1000.0, help="what nodes derive their timeouts from")
    p.add_argument("--sample-s", type=float, default=0.5, help="memory sampling interval")
    p.add_argument("--run-seconds", type=float, default=1500.0)
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if not args.loopback:
        print("error: size runs on loopback only (--loopback)")
        return 2
    fp = fingerprint(manifest_seed=0, sampler_seed="run_id + peer_id", run_ids="size-<unix time>")
    with workdir(args, "size") as work:
        result = run(args, work)
    doc = suite_result("size", args, fp, run=result)
    code = publish(args.out, doc, markdown(doc), {})
    return code if result["completed"] and not result["hashes"]["rounds_forked"] else 1
