"""``allreduce``: all-reduce efficiency at each tbf cap, as bound time / measured time.

For each cap (5, 20, 50, 100 Mbit/s up and down by default), a fresh testbed first measures the
TCP goodput of one 2-node transfer through the cap (the real ceiling: ~0.956 x the tbf rate after
Ethernet/IP/TCP framing), then N nodes train a few short rounds. Per round:

* bound time  T_b = 2(G-1)/G x compressed payload / goodput (what a perfect all-reduce needs);
* measured    T_m = from the first to the last byte of the round's all-reduce over all members,
  from the veth counters (sampled every 50 ms; each member's last upload and download burst before
  its report, 1%..99% of its bytes, background traffic subtracted). Nothing is added to node code;
  the ledger gives each round's group size and payload bytes;
* efficiency  eta = T_b / T_m.

The payload is chosen per cap so that the ideal transfer takes seconds, not tenths (a 0.4 s
transfer measures fixed costs, not the link): by default the tiny model in fp32 at 5 Mbit/s and
the small (10.8M) model at 20 (int8), 50 (fp16) and 100 Mbit/s (fp32).

Latency: links here have no delay (no netem). With an RTT, each of the all-reduce's two stages
and every part's request/response add round trips, and TCP needs bandwidth x RTT of window to
fill a link, so measured efficiency here is an upper bound for a WAN.

    python -m benchmarks.suites allreduce --out bench-out/netns/allreduce --caps 5 20 50 100 --nodes 4
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from benchmarks.netns import measure_goodput
from benchmarks.suites.bytes import bound_bytes
from benchmarks.suites.charts import line_chart
from benchmarks.suites.analysis import fmt_q, group_span, quantiles
from benchmarks.suites.output import publish, suite_result
from benchmarks.suites.provenance import fingerprint
from benchmarks.suites.swarm import (assemble, base_parser, bench_swarm, check_testbed, Counters, cpu_lock, make_bed, Report,
                                     ledger_reports, SwarmSpec, tokens_per_step, workdir)

__all__ = ["main", "round_times"]

logger = logging.getLogger(__name__)
WIRE_FRAMING = 1514 / 1448  # Ethernet + IP + TCP headers per full segment
DEFAULT_PAYLOADS = {5.0: ("tiny", "none"), 20.0: ("small", "int8"), 50.0: ("small", "fp16"), 100.0: ("small", "none")}


def payload_for(cap: float, model: str | None, codec: str | None) -> tuple[str, str]:
    if model and codec:
        return model, codec
    nearest = min(DEFAULT_PAYLOADS, key=lambda c: abs(c - cap))
    m, c = DEFAULT_PAYLOADS[nearest]
    return model or m, codec or c


def round_times(samples: list[tuple[float, dict[int, tuple[int, int]]]], reports: list[Report], codec: str,
                goodput_bytes_s: float, cap_bytes_s: float, tail_s: float = 3.0) -> list[dict[str, Any]]:
    """Per group of 2+ in a round: bound time, measured time, efficiency.

    Measured time: the span of the group's summed uploads above half its total capacity (G x the
    cap), from 1% to 99% of its bytes (background subtracted), scaled to 100%. The window runs from
    the members' previous reports to 3 s after their last report of this round (a member reports
    once its own share arrived, while it may still be returning parts to others). A group is
    *complete* when its members sent at least 0.97 x G x the bound (no sender was banned and no
    reducer failed), and *clean* when it is complete and the span's bytes are 0.95..1.15 x what
    the members reported sending, framed: no state download or other group's transfer overlapped it.
    """
    previous: dict[int, Report] = {}
    groups: dict[tuple[int, frozenset[str]], list[tuple[Report, Report]]] = {}  # a round may split into several groups
    for r in sorted(reports, key=lambda r: (r.node, r.seq)):
        prev, previous[r.node] = previous.get(r.node), r
        if r.ok and r.group >= 2 and r.bytes_sent > 0 and prev is not None:
            groups.setdefault((r.round, r.members), []).append((prev, r))
    rows = []
    for (rnd, _), pairs in sorted(groups.items(), key=lambda kv: min(r.sent_at for _, r in kv[1])):
        group = max(r.group for _, r in pairs)
        if len(pairs) < group:  # a member's report is missing: the group's traffic is not all accounted for
            continue
        nodes = [r.node for _, r in pairs]
        span = group_span(samples, nodes, 0.5 * group * cap_bytes_s, min(p.sent_at for p, _ in pairs),
                          max(r.sent_at for _, r in pairs) + tail_s)
        if span is None:
            continue
        sent = sum(r.bytes_sent for _, r in pairs)
        bound = bound_bytes(pairs[0][1].payload_bytes, codec, group)
        t_bound = bound / goodput_bytes_s
        complete = sent >= 0.97 * group * bound  # a banned sender or failed reducer moves fewer bytes
        rows.append({"round": rnd, "group": group, "complete": complete,
                     "clean": complete and 0.95 <= span.nbytes / (sent * WIRE_FRAMING) <= 1.15,
                     "bound_bytes": bound, "t_bound": t_bound, "t_measured": span.seconds,
                     "efficiency": t_bound / span.seconds if span.seconds > 0 else None, "start": span.start,
                     "payload_sent": [r.bytes_sent for _, r in pairs], "wire_over_payload": span.nbytes / sent,
                     "non_compute_s": [round(r.wall_s - r.compute_s, 3) for _, r in pairs]})
    return rows


def summarize_cell(cell: dict[str, Any]) -> dict[str, Any]:
    rows = cell["rounds"]
    clean = [r for r in rows if r["clean"]]
    cell.update(efficiency=quantiles([r["efficiency"] for r in clean if r["efficiency"]]),
                efficiency_all=quantiles([r["efficiency"] for r in rows if r["efficiency"]]),
                t_measured=quantiles([r["t_measured"] for r in clean]), t_bound=quantiles([r["t_bound"] for r in clean]),
                wire_over_payload=quantiles([r["wire_over_payload"] for r in clean]), clean_rounds=len(clean),
                complete_rounds=sum(r.get("complete", True) for r in rows))
    return cell


def run_cap(args: argparse.Namespace, cap: float, work: Path) -> dict[str, Any]:
    model, codec = payload_for(cap, args.payload_model, args.payload_codec)
    n = args.nodes
    step_tokens = tokens_per_step(model, args.batch_size)
    # timing only: small batches and one validation batch keep rounds short on a shared CPU
    spec = SwarmSpec(run_id=f"allreduce-{cap:g}-{int(time.time())}", round_tokens=args.steps_per_round * step_tokens * n,
                     model=model, codec=codec, bandwidth_mbps=args.bandwidth_mbps or cap, max_seconds=args.cell_seconds + 60, batch_size=args.batch_size,
                     env=(("SWARM_EVAL_BATCHES", "1"),))
    bed = make_bed(n, loopback=False, up_mbit=None, down_mbit=None)
    with cpu_lock(args.cpu_lock), bed:
        t0 = time.monotonic()  # after the CPU lock: waiting for it is not the cell's time
        bed.shape(cap, cap)
        goodput = measure_goodput(bed, 1, 2, nbytes=max(2_000_000, int(cap * 250_000)))
        bed.shape(None, None)
        with bench_swarm(bed, work, spec) as swarm, Counters(bed, 0.05) as counters:
            t_capped = assemble(swarm, bed, n, cap, cap, timeout=args.cell_seconds / 2)
            base = {i: st.get("rounds", 0) for i, st in swarm.statuses().items()}
            complete = swarm.wait(lambda sts: len(sts) == n and all(st.get("rounds", 0) >= base.get(i, 0) + args.rounds
                                                                    for i, st in sts.items()),
                                  timeout=args.cell_seconds - (time.monotonic() - t0))
            swarm.stop()
            reports = ledger_reports(swarm)
            rows = round_times(counters.samples, [r for r in reports if r.sent_at > t_capped], codec, goodput * 1e6 / 8,
                               cap_bytes_s=cap * 1e6 / 8)
            samples = counters.samples
    cell = summarize_cell({"cap_mbit": cap, "nodes": n, "model": model, "codec": codec, "goodput_mbit": goodput,
                           "goodput_over_cap": goodput / cap, "complete": complete, "seconds": round(time.monotonic() - t0, 1),
                           "rounds": rows})
    (args.out / "samples").mkdir(parents=True, exist_ok=True)
    with open(args.out / "samples" / f"allreduce-{cap:g}mbit.json", "w") as f:  # the raw counters, for anyone to re-derive
        json.dump({"t": [round(t, 3) for t, _ in samples], "up_down": [c for _, c in samples], "capped_at": t_capped,
                   "cell": {k: v for k, v in cell.items() if k != "rounds"},
                   "reports": [{**r.__dict__, "members": sorted(r.members)} for r in reports]}, f)
    logger.info("allreduce %g Mbit/s: goodput %.2f, efficiency %s", cap, goodput, fmt_q(cell["efficiency"]))
    return cell


def markdown(result: dict[str, Any]) -> str:
    lines = ["# all-reduce efficiency = bound time / measured time", "",
             "Bound time: 2(G-1)/G x compressed payload / measured TCP goodput through the same cap. Measured: the span of "
             "the group's summed uploads (veth counters, 50 ms samples) above half the group's capacity, 1%-99% of its bytes "
             "scaled to 100%. Median (min-max) over clean rounds: complete (the members sent >= 0.97 x G x the bound: "
             "no sender banned, no reducer failed) and with a span that carried the all-reduce and nothing else "
             "(0.95-1.15 x the members' payload x framing). No added latency.", "",
             "| cap Mbit/s | N | model, codec | TCP goodput Mbit/s (/cap) | bound MB per peer | bound s | measured s | efficiency "
             "| efficiency, all rounds | wire / payload | clean / complete / all rounds |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in result["cells"]:
        mb = c["rounds"][0]["bound_bytes"] / 1e6 if c["rounds"] else float("nan")
        lines.append(f"| {c['cap_mbit']:g} | {c['nodes']} | {c['model']}, {c['codec']} | {c['goodput_mbit']:.2f} "
                     f"({c['goodput_over_cap']:.3f}) | {mb:.2f} | {fmt_q(c['t_bound'], 2)} | {fmt_q(c['t_measured'], 2)} "
                     f"| {fmt_q(c['efficiency'])} | {fmt_q(c['efficiency_all'])} | {fmt_q(c['wire_over_payload'])} "
                     f"| {c['clean_rounds']} / {c['complete_rounds']} / {len(c['rounds'])} |")
    lines += ["", "Target (issue): efficiency >= 0.93 at every cap from 5 to 100 Mbit/s.", ""]
    return "\n".join(lines)


def charts(result: dict[str, Any]) -> dict[str, bytes]:
    pts = [(c["cap_mbit"], c["efficiency"]["median"]) for c in result["cells"] if c["efficiency"]]
    lo = [(c["cap_mbit"], c["efficiency"]["min"]) for c in result["cells"] if c["efficiency"]]
    if not pts:
        return {}
    return {"efficiency": line_chart("all-reduce efficiency vs tbf cap", [("median", pts), ("worst round", lo)],
                                     subtitle="bound time / measured time; dashed: the 0.93 target", x_label="cap, Mbit/s",
                                     y_label="efficiency", ref=0.93)}


def build_parser() -> argparse.ArgumentParser:
    p = base_parser("allreduce", "all-reduce efficiency (bound time / measured time) at each tbf cap")
    p.add_argument("--caps", type=float, nargs="+", default=[5.0, 20.0, 50.0, 100.0], help="Mbit/s, up and down")
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--payload-model", default=None, help="model for every cap (default: chosen per cap)")
    p.add_argument("--payload-codec", default=None, help="codec for every cap (default: chosen per cap)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps-per-round", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=4, help="sequences per inner step (timing only: small is quick)")
    p.add_argument("--cell-seconds", type=float, default=170.0)
    p.add_argument("--bandwidth-mbps", type=float, default=None,
                   help="what nodes assume their link is (their timeouts derive from it); default: the cap")
    p.add_argument("--reanalyse", action="store_true", help="recompute OUT/allreduce.* from OUT/samples (runs nothing)")
    return p


def reanalyse(args: argparse.Namespace) -> dict[str, Any]:
    """Recompute every cell from the raw samples a previous run kept under ``OUT/samples`` (no swarm runs)."""
    old = json.loads((args.out / "allreduce.json").read_text()) if (args.out / "allreduce.json").exists() else {}
    old_cells = {c["cap_mbit"]: c for c in old.get("cells", [])}
    cells = []
    for path in sorted((args.out / "samples").glob("allreduce-*mbit.json"), key=lambda p: float(p.stem.split("-")[1][:-4])):
        raw = json.loads(path.read_text())
        meta = raw.get("cell") or old_cells[float(path.stem.split("-")[1][:-4])]
        samples = [(t, {int(k): (v[0], v[1]) for k, v in c.items()}) for t, c in zip(raw["t"], raw["up_down"])]
        reports = [Report(**{**r, "members": frozenset(r["members"])}) for r in raw["reports"]]
        cap = meta["cap_mbit"]
        rows = round_times(samples, [r for r in reports if r.sent_at > raw["capped_at"]], meta["codec"],
                           meta["goodput_mbit"] * 1e6 / 8, cap_bytes_s=cap * 1e6 / 8)
        keep = ("cap_mbit", "nodes", "model", "codec", "goodput_mbit", "goodput_over_cap", "complete", "seconds")
        cells.append(summarize_cell({**{k: meta[k] for k in keep}, "rounds": rows}))
    return {"suite": "allreduce", "args": old.get("args", {}), "fingerprint": old.get("fingerprint", {}), "cells": cells,
            "reanalysed_at": time.time()}


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.reanalyse:
        result = reanalyse(args)
        return publish(args.out, result, markdown(result), charts(result))
    if args.loopback:
        print("error: allreduce measures time through tbf caps; it has no loopback mode")
        return 2
    if (why := check_testbed(args)) is not None:
        print(f"error: {why}")
        return 2
    fp = fingerprint(manifest_seed=0, sampler_seed="run_id + peer_id", run_ids="allreduce-<cap>-<unix time>")
    args.out.mkdir(parents=True, exist_ok=True)
    with workdir(args, "allreduce") as work:
        cells = [run_cap(args, cap, work / f"cap{cap:g}") for cap in args.caps]
    result = suite_result("allreduce", args, fp, cells=cells)
    return publish(args.out, result, markdown(result), charts(result))
