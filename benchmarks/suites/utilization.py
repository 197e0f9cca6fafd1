"""``utilization``: compute utilization of a swarm against its no-communication twin.

Two figures per run, both from the round reports in the ledger:

* **CU (the issue's definition) = 1 - sum(blocked_s) / sum(wall_s)**: the share of wall time the
  training loop was *not* waiting on the network. ``blocked_s`` is measured by the node itself
  (``ContributionReport.blocked_s``): matchmaking and the all-reduce in blocking DiLoCo, only the
  part of the all-reduce that the next inner phase did not hide with overlap, state downloads.
* **compute share = sum(compute_s) / sum(wall_s)**: forward/backward/optimizer only; evaluation
  and checkpointing count against it. The twin is the same node alone (no peers: no matchmaking,
  no all-reduce) with the same inner steps per round, so ``compute share / twin's`` isolates what
  communication costs from evaluation and checkpointing (which shrink as 1/H with longer rounds).

The link is set so that communication takes ``--rho`` (default 0.2) of a round's compute: from the
twin's compute time per round (x N / cores, since N nodes share this machine's cores), the cap is
    cap = 2(N-1)/N x compressed payload / (rho x compute per round) / TCP framing (0.956),
clamped to 5..100 Mbit/s. The rho actually reached is measured (all-reduce time from the veth
counters over median compute per round) and reported. Each algorithm in ``--algorithms`` runs on
that cap (default: blocking ``diloco`` and ``diloco-overlap``), ``--repeats`` times, interleaved.

Latency: none is emulated. Blocking DiLoCo pays matchmaking and every round trip of the
all-reduce in wall time; with an RTT its CU here is an upper bound. Overlap hides them as long as
they fit behind the next inner phase.

    python -m benchmarks.suites utilization --out bench-out/netns/utilization --nodes 4 --rho 0.2
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from benchmarks.netns import TCP_FRAMING
from benchmarks.suites.allreduce import round_times
from benchmarks.suites.bytes import bound_bytes
from benchmarks.suites.charts import bar_chart
from benchmarks.suites.analysis import fmt_q, quantiles
from benchmarks.suites.output import publish, suite_result
from benchmarks.suites.provenance import fingerprint
from benchmarks.suites.swarm import (assemble, base_parser, bench_swarm, check_testbed, Counters, cpu_lock, make_bed, Report,
                                     ledger_reports, SwarmSpec, tokens_per_step, workdir)

__all__ = ["cap_for_rho", "main", "utilization"]

logger = logging.getLogger(__name__)


def utilization(reports: list[Report], after: float) -> dict[str, Any]:
    """CU over each node's reports sent after ``after`` (its first such report skipped: it may hold a join)."""
    per_node: dict[int, list[Report]] = {}
    for r in sorted(reports, key=lambda r: (r.node, r.seq)):
        if r.sent_at >= after:
            per_node.setdefault(r.node, []).append(r)
    used = [r for rs in per_node.values() for r in rs[1:]]
    wall = sum(r.wall_s for r in used)
    nodes = {i: sum(r.compute_s for r in rs[1:]) / sum(r.wall_s for r in rs[1:]) for i, rs in per_node.items()
             if sum(r.wall_s for r in rs[1:]) > 0}
    measured = [r for r in used if r.blocked_s is not None]
    measured_wall = sum(r.wall_s for r in measured)
    cu_net = 1 - sum(r.blocked_s or 0.0 for r in measured) / measured_wall if measured_wall else None
    return {"cu_net": cu_net, "blocked_s_per_round": quantiles([r.blocked_s for r in measured if r.blocked_s is not None]),
            "cu": sum(r.compute_s for r in used) / wall if wall else None, "cu_per_node": nodes, "rounds": len(used),
            "rounds_ok": sum(r.ok for r in used), "compute_s_per_round": quantiles([r.compute_s for r in used]),
            "wall_s_per_round": quantiles([r.wall_s for r in used]),
            "groups": sorted({r.group for r in used})}


def cap_for_rho(payload_fp32: int, codec: str, nodes: int, compute_s: float, rho: float) -> float:
    """The tbf rate (Mbit/s) at which an ideal all-reduce takes ``rho`` x ``compute_s``."""
    goodput = bound_bytes(payload_fp32, codec, nodes) / (rho * compute_s)  # bytes/s
    return min(100.0, max(5.0, goodput * 8 / 1e6 / TCP_FRAMING))


def run(args: argparse.Namespace, work: Path, *, nodes: int, algorithm: str, cap: float | None, label: str) -> dict[str, Any]:
    step_tokens = tokens_per_step(args.model)
    spec = SwarmSpec(run_id=f"util-{label}-{int(time.time())}", round_tokens=args.steps_per_round * step_tokens * nodes,
                     model=args.model, codec=args.codec, algorithm=algorithm, bandwidth_mbps=cap or 100.0,
                     max_seconds=args.run_seconds + 60)
    bed = make_bed(nodes, loopback=args.loopback or nodes == 1, up_mbit=None, down_mbit=None)
    with cpu_lock(args.cpu_lock), bed, bench_swarm(bed, work / label, spec) as swarm, Counters(bed, 0.05) as counters:
        t0 = time.monotonic()  # after the CPU lock: waiting for it is not the run's time
        t_capped = assemble(swarm, bed, nodes, cap, cap, timeout=args.run_seconds / 2)
        base = {i: st.get("rounds", 0) for i, st in swarm.statuses().items()}
        swarm.wait(lambda sts: all(st.get("rounds", 0) >= base.get(i, 0) + args.rounds + 1 for i, st in sts.items()),
                   timeout=args.run_seconds - (time.monotonic() - t0))
        swarm.stop()
        reports = ledger_reports(swarm)
        out = {"label": label, "nodes": nodes, "algorithm": algorithm, "cap_mbit": cap, **utilization(reports, t_capped),
               "seconds": round(time.monotonic() - t0, 1), "payload_fp32": max((r.payload_bytes for r in reports), default=0)}
        if nodes > 1 and cap and not bed.loopback:
            goodput = cap * 1e6 / 8 * TCP_FRAMING
            times = [r for r in round_times(counters.samples, [r for r in reports if r.sent_at > t_capped], args.codec, goodput,
                                            cap_bytes_s=cap * 1e6 / 8)
                     if r["group"] == nodes]
            comm = quantiles([r["t_measured"] for r in times])
            out["allreduce_s"] = comm
            if comm and out["compute_s_per_round"]:
                out["rho_measured"] = comm["median"] / out["compute_s_per_round"]["median"]
    logger.info("utilization %s: CU %s", label, out["cu"])
    return out


def markdown(result: dict[str, Any]) -> str:
    twin = result["twin"]
    lines = ["# compute utilization vs the no-communication twin", "",
             f"Twin: one node alone, {result['args']['steps_per_round']} inner steps per round: CU {twin['cu']:.3f} "
             f"(compute {fmt_q(twin['compute_s_per_round'], 2)} s per round). Cap {result['cap_mbit']:.1f} Mbit/s up and down, "
             f"chosen for rho = {result['args']['rho']}.", "",
             "CU = 1 - blocked s / wall s (the node's own count of time spent waiting on the network); compute share = "
             "compute s / wall s (evaluation and checkpointing count against it, as they do in the twin).", "",
             "| run | algorithm | N | **CU** | blocked s per round | compute share | compute share / twin's | rho measured "
             "| all-reduce s | compute s per round | wall s per round | rounds (ok) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in [twin, *result["runs"]]:
        share = r["cu"] or 0.0
        cu_net = "-" if r.get("cu_net") is None else f"{r['cu_net']:.3f}"
        rho = f"{r['rho_measured']:.2f}" if r.get("rho_measured") is not None else "-"
        lines.append(f"| {r['label']} | {r['algorithm']} | {r['nodes']} | {cu_net} | {fmt_q(r.get('blocked_s_per_round'), 2)} "
                     f"| {share:.3f} | {share / twin['cu']:.3f} | {rho} "
                     f"| {fmt_q(r.get('allreduce_s'), 2)} | {fmt_q(r['compute_s_per_round'], 2)} | {fmt_q(r['wall_s_per_round'], 2)} "
                     f"| {r['rounds']} ({r['rounds_ok']}) |")
    for alg, s in result["summary"].items():
        for key, what in (("cu_net", "CU"), ("cu", "compute share")):
            if s.get(key):
                q = s[key]
                lines.append(f"\n{alg}: {what} median {q['median']:.3f} over {q['n']} runs (min {q['min']:.3f}, max {q['max']:.3f}).")
    lines += ["", "Target (issue): CU >= 0.95 with overlap where communication takes 20% of compute time.", ""]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = base_parser("utilization", "compute utilization against a no-communication twin")
    p.set_defaults(model="tiny")
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--codec", default="fp16")
    p.add_argument("--algorithms", nargs="+", default=["diloco", "diloco-overlap"])
    p.add_argument("--rho", type=float, default=0.2, help="communication / compute time per round to set the cap for")
    p.add_argument("--cap", type=float, default=None, help="Mbit/s (default: derived from --rho and the twin)")
    p.add_argument("--steps-per-round", type=int, default=20, help="inner steps per node per round")
    p.add_argument("--rounds", type=int, default=4, help="rounds to measure per run (after one to warm up)")
    p.add_argument("--repeats", type=int, default=1, help="runs per algorithm, interleaved ABAB")
    p.add_argument("--run-seconds", type=float, default=170.0)
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if (why := check_testbed(args)) is not None:
        print(f"error: {why}")
        return 2
    fp = fingerprint(manifest_seed=0, sampler_seed="run_id + peer_id", run_ids="util-<label>-<unix time>")
    with workdir(args, "utilization") as work:
        twin = run(args, work, nodes=1, algorithm="diloco", cap=None, label="twin")
        cores = fp.cores or 2
        compute = twin["compute_s_per_round"]["median"] * max(1.0, args.nodes / cores)
        cap = args.cap or cap_for_rho(twin["payload_fp32"], args.codec, args.nodes, compute, args.rho)
        runs = [run(args, work, nodes=args.nodes, algorithm=alg, cap=None if args.loopback else cap, label=f"{alg}-{k + 1}")
                for k in range(args.repeats) for alg in args.algorithms]
    summary = {alg: {key: quantiles([r[key] for r in runs if r["algorithm"] == alg and r.get(key) is not None]) for key in ("cu_net", "cu")}
               for alg in args.algorithms}
    result = suite_result("utilization", args, fp, cap_mbit=cap, twin=twin, runs=runs,
                          summary={k: v for k, v in summary.items() if any(v.values())})
    chart = bar_chart("compute utilization", ["twin"] + [r["label"] for r in runs],
                      [("CU = 1 - blocked / wall", [twin.get("cu_net")] + [r.get("cu_net") for r in runs]),
                       ("compute share", [twin["cu"]] + [r["cu"] for r in runs])],
                      subtitle=f"cap {cap:.1f} Mbit/s; dashed: the 0.95 target", y_label="share of wall time", ref=0.95)
    return publish(args.out, result, markdown(result), {"cu": chart})
