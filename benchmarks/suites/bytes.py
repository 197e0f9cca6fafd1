"""``bytes``: bytes per peer per round against the butterfly bound, every codec, N = 2, 4, 8.

For each (N, codec) cell, N real nodes train the tiny model for a few short rounds. Per round and
peer, against the bound 2(G-1)/G x compressed payload (G = the group size the round had, from the
ledger; compressed payload = fp32 payload x the codec's bytes per value):

* payload: what the node reported sending (protobuf bytes of all-reduce parts, from the ledger);
* wire (netns only): the node's uplink bytes at layer 2 between its previous report and this one
  (veth counters sampled every 0.1 s, interpolated at each report's ``sent_at``). That window
  holds the round's all-reduce plus everything else the node sent meanwhile (matchmaking, DHT,
  progress records, reports, TCP ACKs of what it received), so wire/payload is the whole tax of
  the stack per round. (The all-reduce alone is timed and counted by the ``allreduce`` suite.)

The sparse codecs' (``topkef``, ``topk2ef``) downlinks carry the union of the senders' supports (up
to G x denser than the uplink, at more bytes per value), so their ratio to the dense formula is
above 1 by construction; ``sim.catalog.CodecModel.down`` models that downlink.

    python -m benchmarks.suites bytes --out bench-out/bytes --nodes 2 4 8 --rate 100
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.suites.charts import bar_chart
from benchmarks.suites.analysis import fmt_q, quantiles
from benchmarks.suites.output import publish, suite_result, write_outputs
from benchmarks.suites.provenance import fingerprint
from benchmarks.suites.swarm import (assemble, base_parser, bench_swarm, check_testbed, Counters, cpu_lock, make_bed, Report,
                                     ledger_reports, SwarmSpec, tokens_per_step, workdir)
from protocol.manifest import CODECS

__all__ = ["bound_bytes", "main", "round_rows"]

logger = logging.getLogger(__name__)
ALL_CODECS = CODECS  # every codec a manifest may name


def bytes_per_value(codec: str) -> float:
    from node.averaging.codecs import get_codec

    return get_codec(codec).bytes_per_value


def bound_bytes(payload_fp32: int, codec: str, group: int) -> float:
    """Butterfly lower bound on what each member sends (and receives): 2(G-1)/G x compressed payload."""
    return 2 * (group - 1) / group * payload_fp32 / 4 * bytes_per_value(codec) if group > 1 else 0.0


def round_rows(counters: Counters, reports: list[Report], codec: str) -> list[dict[str, Any]]:
    """One row per (node, ok round in a group of 2 or more) with payload and wire ratios to the bound."""
    rows = []
    previous: dict[int, Report] = {}
    for r in sorted(reports, key=lambda r: (r.node, r.seq)):
        prev, previous[r.node] = previous.get(r.node), r
        if not r.ok or r.group < 2 or r.bytes_sent <= 0:
            continue
        bound = bound_bytes(r.payload_bytes, codec, r.group)
        group_id = hashlib.sha1(" ".join(sorted(r.members)).encode()).hexdigest()[:10]
        row: dict[str, Any] = {"node": r.node, "round": r.round, "group": r.group, "group_id": group_id, "bound": bound,
                               "payload_sent": r.bytes_sent, "payload_received": r.bytes_received,
                               "payload_sent_ratio": r.bytes_sent / bound, "payload_received_ratio": r.bytes_received / bound}
        if prev is not None and not counters.bed.loopback:  # the first window holds the node's joining traffic
            c0, c1 = counters.at(r.node, prev.sent_at), counters.at(r.node, r.sent_at)
            if c0 and c1:
                up, down = c1[0] - c0[0], c1[1] - c0[1]
                row.update(wire_up=up, wire_down=down, wire_up_ratio=up / bound, wire_down_ratio=down / bound,
                           wire_over_payload=up / r.bytes_sent)
        rows.append(row)
    return rows


def group_payload_ratios(rows: list[dict[str, Any]]) -> list[float]:
    """Per group-round with every member's report: the members' payload sent together / (G x bound).

    Reducers' shares are whole parts, so single peers sit above or below the bound; the group's
    total is what the bound says it must be.
    """
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["round"], row.get("group_id", str(row["group"]))), []).append(row)
    return [sum(r["payload_sent"] for r in rs) / (rs[0]["group"] * rs[0]["bound"]) for rs in groups.values() if len(rs) == rs[0]["group"]]


def run_cell(args: argparse.Namespace, n: int, codec: str, work: Path) -> dict[str, Any]:
    spec = SwarmSpec(run_id=f"bytes-{codec}-{n}-{int(time.time())}", round_tokens=args.steps_per_round * tokens_per_step(args.model) * n,
                     model=args.model, codec=codec, bandwidth_mbps=args.rate or 1000.0, max_seconds=args.cell_seconds + 60)
    bed = make_bed(n, loopback=args.loopback, up_mbit=None, down_mbit=None)
    with cpu_lock(args.cpu_lock), bed, bench_swarm(bed, work, spec) as swarm, Counters(bed) as counters:
        t0 = time.monotonic()  # after the CPU lock: waiting for it is not the cell's time
        # the swarm assembles on open links, then they are capped; only rounds after that count
        t_capped = assemble(swarm, bed, n, args.rate, args.rate, timeout=args.cell_seconds / 2)
        base = {i: st.get("rounds", 0) for i, st in swarm.statuses().items()}
        complete = swarm.wait(lambda sts: len(sts) == n and all(st.get("rounds", 0) >= base.get(i, 0) + args.rounds
                                                                for i, st in sts.items()),
                              timeout=args.cell_seconds - (time.monotonic() - t0))
        swarm.stop()
        reports = ledger_reports(swarm)
        rows = round_rows(counters, [r for r in reports if r.sent_at > t_capped], codec)
    counted = [r for r in reports if r.sent_at > t_capped]
    cell: dict[str, Any] = {
        "nodes": n, "codec": codec, "bytes_per_value": bytes_per_value(codec), "complete": complete,
        "seconds": round(time.monotonic() - t0, 1), "reports": len(counted), "rounds_ok": sum(r.ok for r in counted),
        "groups": dict(Counter(r.group for r in counted if r.ok)), "payload_fp32": max((r.payload_bytes for r in reports), default=0),
        "rounds": rows,
    }
    for key in ("payload_sent_ratio", "payload_received_ratio", "wire_up_ratio", "wire_down_ratio", "wire_over_payload"):
        cell[key] = quantiles([row[key] for row in rows if key in row])
    cell["wire_up_mb_per_round"] = quantiles([row["wire_up"] / 1e6 for row in rows if "wire_up" in row])
    logger.info("bytes N=%d %s: payload/bound %s wire/bound %s", n, codec, fmt_q(cell["payload_sent_ratio"]), fmt_q(cell["wire_up_ratio"]))
    return cell


def markdown(result: dict[str, Any]) -> str:
    a = result["args"]
    where = "loopback, unshaped" if a["loopback"] else f"netns, tbf {a['rate']:g} Mbit/s up and down"
    lines = [f"# bytes per peer per round vs 2(G-1)/G x compressed payload ({where})", "",
             "Median (min-max) over (node, round), or over group-rounds for the group's total; G = the round's group size "
             "from the ledger (a node records the other members' claims).", "",
             "| N | codec | B/value | rounds ok | groups (G: reports) | group payload / (G x bound) | payload sent / bound "
             "| payload received / bound | round wire up / bound | round wire down / bound | round wire up / payload "
             "| round wire MB up |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in result["cells"]:
        c["group_payload_ratio"] = quantiles(group_payload_ratios(c["rounds"]))
        groups = ", ".join(f"{g}: {k}" for g, k in sorted(c["groups"].items()))
        lines.append(f"| {c['nodes']} | {c['codec']} | {c['bytes_per_value']:.3f} | {c['rounds_ok']}/{c['reports']} | {groups} "
                     f"| {fmt_q(c['group_payload_ratio'], 4)} | {fmt_q(c['payload_sent_ratio'])} | {fmt_q(c['payload_received_ratio'])} "
                     f"| {fmt_q(c['wire_up_ratio'])} "
                     f"| {fmt_q(c['wire_down_ratio'])} | {fmt_q(c['wire_over_payload'])} | {fmt_q(c['wire_up_mb_per_round'], 2)} |")
    lines += ["", "Round wire: every byte the node's link carried between two of its reports (all-reduce, matchmaking, DHT, "
              "progress records, reports, ACKs), from the veth counters. The all-reduce's own wire/payload ratio needs "
              "transfers that last seconds to time apart from the rest: see the allreduce suite (1.03-1.06).",
              "", "topkef, topk2ef: the downlink carries the union of the senders' top-k supports, so their ratio to the "
              "dense bound exceeds 1 by design.", ""]
    return "\n".join(lines)


def charts(result: dict[str, Any]) -> dict[str, bytes]:
    cells = result["cells"]
    codecs = list(dict.fromkeys(c["codec"] for c in cells))
    ns = sorted({c["nodes"] for c in cells})
    out = {}
    for key, title in (("payload_sent_ratio", "payload sent per peer per round / bound"),
                       ("wire_up_ratio", "wire bytes up per peer per round (all traffic) / bound")):
        series = []
        for n in ns:
            by_codec = {c["codec"]: c[key]["median"] if c.get(key) else None for c in cells if c["nodes"] == n}
            series.append((f"N={n}", [by_codec.get(codec) for codec in codecs]))
        if any(v is not None for _, vs in series for v in vs):
            out[key.removesuffix("_ratio")] = bar_chart(title, codecs, series, subtitle="median over rounds; dashed: the bound",
                                                        y_label="ratio to 2(G-1)/G x M", ref=1.0)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = base_parser("bytes", __doc__.splitlines()[0].strip("`"))
    p.add_argument("--nodes", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--codecs", nargs="+", default=list(ALL_CODECS), choices=ALL_CODECS)
    p.add_argument("--rate", type=float, default=100.0, help="tbf cap up and down, Mbit/s (ignored with --loopback)")
    p.add_argument("--rounds", type=int, default=4, help="stop a cell once every node completed this many rounds")
    p.add_argument("--steps-per-round", type=int, default=2, help="inner steps per node per round (round tokens = N x this x 2048)")
    p.add_argument("--cell-seconds", type=float, default=150.0, help="give up on a cell after this long")
    p.add_argument("--rerender", action="store_true", help="rewrite OUT/bytes.md and charts from OUT/bytes.json (runs nothing)")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.rerender:  # tables and charts again from OUT/bytes.json (runs nothing)
        result = json.loads((args.out / "bytes.json").read_text())
        for path in write_outputs(args.out, "bytes", result, markdown(result), charts(result)):
            print(path)
        return 0
    if args.loopback:
        args.rate = None
    if (why := check_testbed(args)) is not None:
        logger.error("%s", why)
        print(f"error: {why}")
        return 2
    fp = fingerprint(manifest_seed=0, sampler_seed="run_id + peer_id", run_ids="bytes-<codec>-<N>-<unix time>")
    cells = []
    with workdir(args, "bytes") as work:
        for n in args.nodes:
            for codec in args.codecs:
                cells.append(run_cell(args, n, codec, work / f"n{n}-{codec}"))
    result = suite_result("bytes", args, fp, cells=cells)
    return publish(args.out, result, markdown(result), charts(result))
