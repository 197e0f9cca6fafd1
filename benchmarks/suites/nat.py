"""``nat``: 4 nodes with 2 behind NAT routers against 4 public ones, same caps, same rounds.

Run A: 4 public nodes. Run B: 2 public nodes and 2 "home" nodes, each behind its own NAT router
(nftables masquerade, replies in, nothing new in: :mod:`benchmarks.netns`). Every node joins with
the same line (``swarm join --coordinator URL``; node 1 starts the swarm with ``--new-swarm``); the
coordinator's dial-back finds the home nodes unreachable, so they become all-reduce clients and use
libp2p circuit relays (auto-relay) through the public peers. Every link, a home's being its
router's WAN link, is capped at ``--cap`` Mbit/s up and down with ``tc tbf`` once the swarm has
assembled. Runs alternate A B A B (``--repeats``).

Figures, per run, from the ledger's round reports sent after the cap (each node's first skipped):

* **round s**: the median of the reports' ``wall_s`` over rounds whose group held all 4 nodes; the
  headline is B / A (the issue's goal: within 1.3x). Beside it, the same rounds' compute s and the
  seconds each node counted itself blocked on the network (``blocked_s``): all nodes share this
  machine's cores, so compute time moves with the load of other jobs, and blocked s isolates the
  network side of the comparison.
* **bytes besides the all-reduce** per node per round: its link's layer-2 bytes up + down between
  two of its reports (a home's: its router's WAN port) minus the all-reduce payload it reported
  sending and receiving, framed (x 1514/1448). Every byte a relay carries for a NATed peer crosses
  that peer's WAN link, so the two home nodes' sum per round is an **upper bound on what the relays
  carry per round**; it also holds their DHT, matchmaking, progress records, reports to the
  coordinator and TCP ACKs, which the same two nodes' figure in run A (public there) shows without
  NAT. The relays' own links (the public nodes) would count a relayed byte twice (in and out), mixed
  with their all-reduce traffic; their figure in A and B is reported as a cross-check. Compared with
  the all-reduce payload M (the compressed model update one peer contributes).

    python -m benchmarks.suites nat --out bench-out/netns/nat --cap 20 --repeats 2
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from benchmarks.suites.allreduce import WIRE_FRAMING
from benchmarks.suites.analysis import fmt_q, quantiles
from benchmarks.suites.bytes import bytes_per_value, round_rows
from benchmarks.suites.charts import bar_chart
from benchmarks.suites.output import publish, suite_result
from benchmarks.suites.provenance import fingerprint
from benchmarks.suites.swarm import (base_parser, bench_swarm, check_testbed, Counters, cpu_lock, ledger_reports, make_bed, name,
                                     Report, SwarmSpec, tokens_per_step, warm_up, workdir)

__all__ = ["full_group_rounds", "main", "other_bytes", "relay_bound"]

logger = logging.getLogger(__name__)
NODES = 4
HOMES = 2  # run B: nodes 3 and 4 sit behind NAT


def full_group_rounds(reports: list[Report], after: float, group: int) -> dict[str, Any]:
    """Round wall seconds over reports sent after ``after`` (each node's first such one skipped: it may
    hold a join) whose group held ``group`` nodes; of them, compute seconds and seconds blocked on the
    network (the node's own count); and the spacing of each node's reports."""
    per_node: dict[int, list[Report]] = {}
    for r in sorted(reports, key=lambda r: (r.node, r.seq)):
        if r.sent_at >= after:
            per_node.setdefault(r.node, []).append(r)
    used = [r for rs in per_node.values() for r in rs[1:] if r.ok and r.group == group]
    spacing = [b.sent_at - a.sent_at for rs in per_node.values() for a, b in zip(rs, rs[1:]) if b.ok and b.group == group]
    return {"round_s": quantiles([r.wall_s for r in used]), "report_spacing_s": quantiles(spacing),
            "compute_s": quantiles([r.compute_s for r in used]),
            "blocked_s": quantiles([r.blocked_s for r in used if r.blocked_s is not None]),
            "rounds": sorted({r.round for r in used}), "reports": len(used),
            "reports_all": sum(len(rs) - 1 for rs in per_node.values()),
            "reports_not_ok": sum(not r.ok for rs in per_node.values() for r in rs[1:])}


def other_bytes(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (node, round) row of :func:`benchmarks.suites.bytes.round_rows` with wire counts: the bytes
    its link carried besides the framed all-reduce payload it reported."""
    out = []
    for row in rows:
        if "wire_up" not in row:
            continue
        payload = row["payload_sent"] + row["payload_received"]
        out.append({"node": row["node"], "round": row["round"], "group": row["group"], "wire": row["wire_up"] + row["wire_down"],
                    "payload": payload, "other": row["wire_up"] + row["wire_down"] - WIRE_FRAMING * payload})
    return out


def relay_bound(rows: list[dict[str, Any]], nodes: list[int], group: int) -> list[float]:
    """Per round whose group held ``group`` nodes and where every one of ``nodes`` has a row: the sum of
    their bytes besides the all-reduce (:func:`other_bytes`)."""
    by_round: dict[int, dict[int, float]] = {}
    for row in rows:
        if row["group"] == group and row["node"] in nodes:
            by_round.setdefault(row["round"], {})[row["node"]] = row["other"]
    return [sum(v.values()) for _, v in sorted(by_round.items()) if set(v) == set(nodes)]


def run(args: argparse.Namespace, work: Path, *, homes: int, label: str) -> dict[str, Any]:
    public = NODES - homes
    spec = SwarmSpec(run_id=f"nat-{label}-{int(time.time())}",
                     round_tokens=args.steps_per_round * tokens_per_step(args.model) * NODES,
                     model=args.model, codec=args.codec, algorithm="diloco", bandwidth_mbps=args.cap,
                     max_seconds=args.run_seconds + 60)
    bed = make_bed(public, loopback=False, up_mbit=None, down_mbit=None, homes=homes)
    with cpu_lock(args.cpu_lock), bed, bench_swarm(bed, work / label, spec) as swarm, Counters(bed, 0.1) as counters:
        t0 = time.monotonic()  # after the CPU lock: waiting for it is not the run's time
        # every node but the seed joins with the volunteer's line: the coordinator lists the peers
        swarm.start_node(name(1))
        swarm.wait_for_maddr(name(1))
        for i in range(2, NODES + 1):
            swarm.start_node(name(i), [])
        if not warm_up(swarm, NODES, timeout=args.run_seconds / 2):
            logger.warning("the swarm did not settle in %.0f s; capping the links anyway", args.run_seconds / 2)
        bed.shape(args.cap, args.cap)
        t_capped = time.time()
        base = {n: st.get("rounds", 0) for n, st in swarm.statuses().items()}
        complete = swarm.wait(lambda sts: len(sts) == NODES and all(st.get("rounds", 0) >= base.get(n, 0) + args.rounds + 1
                                                                     for n, st in sts.items()),
                              timeout=args.run_seconds - (time.monotonic() - t0))
        roles = {n: f"{st.get('role')}/{st.get('reachability')}" for n, st in sorted(swarm.statuses().items())}
        swarm.stop()
        reports = ledger_reports(swarm)
        rows = other_bytes(round_rows(counters, [r for r in reports if r.sent_at > t_capped], args.codec))
    payload_fp32 = max((r.payload_bytes for r in reports), default=0)
    m = payload_fp32 / 4 * bytes_per_value(args.codec)
    homes_idx, public_idx = list(range(public + 1, NODES + 1)), list(range(1, public + 1))
    pair = list(range(NODES - HOMES + 1, NODES + 1))  # the nodes that are homes in run B, in either run
    full = [r for r in rows if r["group"] == NODES]
    nodes = range(1, NODES + 1)
    out: dict[str, Any] = {
        "label": label, "homes": homes, "nodes": NODES, "complete": complete, "roles": roles,
        "seconds": round(time.monotonic() - t0, 1), **full_group_rounds(reports, t_capped, NODES),
        "payload_fp32": payload_fp32, "payload_m": m,
        "other_per_node_round": {str(i): quantiles([r["other"] for r in full if r["node"] == i]) for i in nodes},
        "payload_per_node_round": {str(i): quantiles([r["payload"] for r in full if r["node"] == i]) for i in nodes},
        "pair_other_per_round": quantiles(relay_bound(full, pair, NODES)),
        "public_other_per_node_round": quantiles([r["other"] for r in full if r["node"] in public_idx]),
        "home_nodes": homes_idx, "rows": rows,
    }
    logger.info("nat %s: round %s s, nodes %s besides the all-reduce %s bytes per round", label, fmt_q(out["round_s"], 2), pair,
                fmt_q(out["pair_other_per_round"], 0))
    return out


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per repeat k: B's round s / A's (medians); and over the runs of each kind, the medians."""
    a = [r for r in runs if r["homes"] == 0]
    b = [r for r in runs if r["homes"] > 0]
    ratios = [rb["round_s"]["median"] / ra["round_s"]["median"] for ra, rb in zip(a, b)
              if ra.get("round_s") and rb.get("round_s")]
    pick = {"round_s": lambda r: r["round_s"], "blocked_s": lambda r: r.get("blocked_s"),
            "pair_other_per_round": lambda r: r["pair_other_per_round"],
            "public_other_per_node_round": lambda r: r["public_other_per_node_round"]}
    blocked = [rb["blocked_s"]["median"] / ra["blocked_s"]["median"] for ra, rb in zip(a, b)
               if ra.get("blocked_s") and rb.get("blocked_s")]
    return {"ratio_b_over_a": ratios, "blocked_ratio_b_over_a": blocked,
            "A": {k: quantiles([f(r)["median"] for r in a if f(r)]) for k, f in pick.items()},
            "B": {k: quantiles([f(r)["median"] for r in b if f(r)]) for k, f in pick.items()},
            "payload_m": max((r["payload_m"] for r in runs), default=0.0)}


def markdown(result: dict[str, Any]) -> str:
    a, s = result["args"], result["summary"]
    m = s["payload_m"]
    lines = [f"# NAT: 4 nodes with 2 behind NAT vs 4 public ({a['cap']:g} Mbit/s up and down, {a['model']}, {a['codec']}, "
             f"{a['steps_per_round']} inner steps per node per round)", "",
             f"All-reduce payload M (one peer's compressed update): {m / 1e6:.3f} MB. Medians (min-max) over the run's rounds "
             "with all 4 nodes in the group.", "",
             "| run | NATed | roles | round s (4-node groups) | compute s | blocked s | reports (ok, 4-node / all) "
             "| nodes 3+4: bytes besides the all-reduce per round, MB | / M "
             "| public node: besides the all-reduce per round, MB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        pair = r["pair_other_per_round"]
        pub = r["public_other_per_node_round"]
        ratio = f"{pair['median'] / m:.3f}" if pair and m else "-"
        roles = ", ".join(f"{n.removeprefix('node-')}: {v}" for n, v in r["roles"].items())
        lines.append(f"| {r['label']} | {r['homes']} | {roles} | {fmt_q(r['round_s'], 2)} | {fmt_q(r.get('compute_s'), 2)} "
                     f"| {fmt_q(r.get('blocked_s'), 2)} | {r['reports']} / {r['reports_all']} "
                     f"| {fmt_q(_mb(pair), 3)} | {ratio} | {fmt_q(_mb(pub), 3)} |")
    ratios = ", ".join(f"{x:.3f}" for x in s["ratio_b_over_a"]) or "-"
    blocked = ", ".join(f"{x:.3f}" for x in s.get("blocked_ratio_b_over_a", [])) or "-"
    lines += ["", f"**Round time B / A per repeat: {ratios}** (goal: within 1.3x). Seconds blocked on the network per round, "
              f"B / A: {blocked} (compute s is the CPU's share: all nodes share this machine's cores).", "",
              "Bytes besides the all-reduce: the link's layer-2 bytes up + down between two of a node's reports minus "
              "1514/1448 x the all-reduce payload it reported sending and receiving. For the NATed nodes (3 and 4 in B), "
              "that is an upper bound on what relays carry for them: every relayed byte crosses their WAN link; the same "
              "nodes in A (public) show what it holds without NAT (DHT, matchmaking, progress, reports, ACKs).", ""]
    return "\n".join(lines)


def _mb(q: dict[str, float] | None) -> dict[str, float] | None:
    return None if q is None else {k: (v / 1e6 if k != "n" else v) for k, v in q.items()}


def build_parser() -> argparse.ArgumentParser:
    p = base_parser("nat", "4 nodes with 2 behind NAT routers vs 4 public ones: round time and relay bytes")
    p.add_argument("--cap", type=float, default=20.0, help="tbf cap up and down on every link, Mbit/s")
    p.add_argument("--codec", default="fp16")
    p.add_argument("--steps-per-round", type=int, default=10, help="inner steps per node per round")
    p.add_argument("--rounds", type=int, default=5, help="rounds to measure per run after the cap (after one to settle)")
    p.add_argument("--repeats", type=int, default=1, help="pairs of runs, interleaved A B A B")
    p.add_argument("--run-seconds", type=float, default=240.0, help="give up on a run after this long")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.loopback:
        print("error: the nat suite needs the namespace testbed (loopback has no NAT)")
        return 2
    if (why := check_testbed(args)) is not None:
        print(f"error: {why}")
        return 2
    fp = fingerprint(manifest_seed=0, sampler_seed="run_id + peer_id", run_ids="nat-<label>-<unix time>")
    with workdir(args, "nat") as work:
        runs = [run(args, work, homes=homes, label=f"{kind}-{k + 1}")
                for k in range(args.repeats) for kind, homes in (("A", 0), ("B", HOMES))]
    result = suite_result("nat", args, fp, runs=runs, summary=summarize(runs))
    chart = bar_chart("round time, 4 nodes", [r["label"] for r in runs],
                      [("median round s", [(r["round_s"] or {}).get("median") for r in runs])],
                      subtitle=f"{args.cap:g} Mbit/s; A: 4 public, B: 2 behind NAT", y_label="s")
    return publish(args.out, result, markdown(result), {"round": chart})
