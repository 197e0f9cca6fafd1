"""``versus``: wall time to a target validation loss, DiLoCo vs ``--algorithm sync`` (hivemind.Optimizer).

Both algorithms run the same model, data, node count and tbf cap; runs alternate A B A B ...
(``--repeats`` pairs), so slow drift of the shared machine's load hits both alike. Links are capped
from the start (start-up is part of the race). A run's clock starts when every node is up (has
written its status); for each of ``--target-bpb`` it records the first round report at or below it
(from the ledger; every report carries the node's validation figure after that round), and it
stops at the lowest target or after ``--run-seconds``. A run that misses a target counts its
observed time there, and the speed-up becomes a lower bound.

The baseline is what ``--algorithm sync`` runs: hivemind.Optimizer with the manifest's
``target_batch`` samples per global step (tunable here with ``--sync-target-batch``), gradients
and the background state averaging compressed with the run's codec, matchmaking time as given.

Latency: none is emulated. The baseline synchronises every global step, DiLoCo every H inner
steps; each synchronisation pays matchmaking and round trips, so with a real RTT the baseline
loses more than DiLoCo and the speed-up here is conservative in that respect.

    python -m benchmarks.suites versus --out bench-out/netns/versus --nodes 4 --cap 20 --repeats 2
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from benchmarks.suites.charts import line_chart
from benchmarks.suites.analysis import fmt_q, quantiles
from benchmarks.suites.output import publish, suite_result
from benchmarks.suites.provenance import fingerprint
from benchmarks.suites.swarm import (base_parser, bench_swarm, check_testbed, Counters, cpu_lock, make_bed, ledger_reports,
                                     SwarmSpec, tokens_per_step, workdir)

__all__ = ["main"]

logger = logging.getLogger(__name__)


def run(args: argparse.Namespace, work: Path, algorithm: str, label: str) -> dict[str, Any]:
    n = args.nodes
    step_tokens = tokens_per_step(args.model)
    hparams: tuple[tuple[str, object], ...] = ()
    if algorithm == "sync":
        hparams = tuple((k, v) for k, v in (("target_batch", args.sync_target_batch), ("inner_lr", args.sync_lr)) if v)
    matchmaking = args.sync_matchmaking_time_s if algorithm == "sync" and args.sync_matchmaking_time_s else args.matchmaking_time_s
    spec = SwarmSpec(run_id=f"versus-{label}-{int(time.time())}", round_tokens=args.steps_per_round * step_tokens * n,
                     model=args.model, codec=args.codec, algorithm=algorithm, bandwidth_mbps=args.cap or 100.0,
                     matchmaking_time_s=matchmaking, max_seconds=args.run_seconds + 60, hparams=hparams)
    bed = make_bed(n, loopback=args.loopback, up_mbit=args.cap, down_mbit=args.cap)
    with cpu_lock(args.cpu_lock), bed, bench_swarm(bed, work / label, spec) as swarm, Counters(bed) as counters:
        t0 = time.monotonic()  # after the CPU lock: waiting for it is not the run's time
        swarm.start(n)
        swarm.wait(lambda sts: len(sts) == n, timeout=args.run_seconds)
        t_up = time.time()
        lowest = min(args.target_bpb)
        swarm.wait(lambda sts: any((st.get("final_val_bpb") or 99.0) <= lowest for st in sts.values()),
                   timeout=args.run_seconds - (time.monotonic() - t0))
        swarm.stop()
        reports = ledger_reports(swarm)
    curve = sorted((r.sent_at - t_up, r.val_bpb) for r in reports if r.val_bpb is not None and r.sent_at >= t_up)
    hits = {f"{target:g}": next((t for t, v in curve if v <= target), None) for target in args.target_bpb}
    wire: dict[str, float | None] = {}  # bytes all nodes uploaded from "all up" to each target
    for key, hit in hits.items():
        ends = [counters.at(i, t_up + hit) for i in range(1, n + 1)] if hit is not None else []
        starts = [counters.at(i, t_up) for i in range(1, n + 1)]
        wire[key] = sum(e[0] - s[0] for e, s in zip(ends, starts)) if ends and all(ends) and all(starts) else None  # type: ignore[index]
    out = {"label": label, "algorithm": algorithm, "time_to_target_s": hits, "wire_bytes_up_to_target": wire,
           "best_val_bpb": min((v for _, v in curve), default=None), "rounds": len({r.round for r in reports if r.ok}),
           "seconds_observed": round(time.time() - t_up, 1), "curve": curve, "run_seconds": round(time.monotonic() - t0, 1)}
    logger.info("versus %s: time to targets %s (best %.3f)", label, hits, out["best_val_bpb"] or float("nan"))
    return out


def summarize(runs: list[dict[str, Any]], a: str, b: str) -> dict[str, Any]:
    """Per target: median times (a miss counts its observed time) and the speed-up of ``a`` over ``b``."""
    out: dict[str, Any] = {"a": a, "b": b, "targets": {}}
    for key in runs[0]["time_to_target_s"]:
        def times(alg: str) -> list[float]:
            return [r["time_to_target_s"][key] if r["time_to_target_s"][key] is not None else r["seconds_observed"]
                    for r in runs if r["algorithm"] == alg]

        reached = {alg: all(r["time_to_target_s"][key] is not None for r in runs if r["algorithm"] == alg) for alg in (a, b)}
        ta, tb = quantiles(times(a)), quantiles(times(b))
        speedup = tb["median"] / ta["median"] if a != b and ta and tb and ta["median"] > 0 and reached[a] else None
        out["targets"][key] = {"time_a": ta, "time_b": tb, "a_all_reached": reached[a], "b_all_reached": reached[b],
                               "speedup_a_over_b": speedup, "speedup_is_lower_bound": not reached[b]}
    return out


def markdown(result: dict[str, Any]) -> str:
    a = result["args"]
    s = result["summary"]
    keys = list(s["targets"])
    link = "loopback" if a["loopback"] else f"{a['cap']:g} Mbit/s up and down"
    lines = [f"# time to a validation loss: {s['a']} vs {s['b']} ({a['nodes']} nodes, {link})", "",
             "Seconds from 'every node up' to the first round report at or below each target (bits/byte); '-' = not reached.", "",
             "| run | algorithm | " + " | ".join(f"to {k}" for k in keys) + " | best val bits/byte | rounds ok | s observed |",
             "|---|---|" + "---|" * len(keys) + "---|---|---|"]
    for r in result["runs"]:
        cells = " | ".join("-" if r["time_to_target_s"][k] is None else f"{r['time_to_target_s'][k]:.1f}" for k in keys)
        best = f"{r['best_val_bpb']:.3f}" if r["best_val_bpb"] is not None else "-"
        lines.append(f"| {r['label']} | {r['algorithm']} | {cells} | {best} | {r['rounds']} | {r['seconds_observed']:.0f} |")
    lines += ["", f"| target bits/byte | median s, {s['a']} | median s, {s['b']} (a miss counts its observed time) "
              f"| speed-up of {s['a']} |", "|---|---|---|---|"]
    for k, t in s["targets"].items():
        sp = t["speedup_a_over_b"]
        sps = "-" if sp is None else f"{'>= ' if t['speedup_is_lower_bound'] else ''}{sp:.2f}x"
        lines.append(f"| {k} | {fmt_q(t['time_a'], 1)} | {fmt_q(t['time_b'], 1)} | {sps} |")
    lines += ["", "Target (issue): >= 5x less wall time to the target than tuned hivemind.Optimizer at 20 Mbit/s with 4 nodes.", ""]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = base_parser("versus", "time to a target validation loss: DiLoCo vs hivemind.Optimizer")
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--cap", type=float, default=20.0, help="Mbit/s up and down (ignored with --loopback)")
    p.add_argument("--codec", default="fp16")
    p.add_argument("--algorithms", nargs="+", default=["diloco", "sync"], metavar="ALG",
                   help="A B (alternated A B A B ...), or one algorithm alone (a tuning sweep: no speed-up)")
    p.add_argument("--target-bpb", type=float, nargs="+", default=[5.0, 4.5, 4.0, 3.6],
                   help="validation bits per byte to reach (several: one time each; a run stops at the lowest)")
    p.add_argument("--steps-per-round", type=int, default=20, help="DiLoCo inner steps per node per round (H)")
    p.add_argument("--sync-target-batch", type=int, default=None, help="sync: samples per global step (manifest default 256)")
    p.add_argument("--sync-lr", type=float, default=None, help="sync: AdamW learning rate (manifest default: inner_lr, 1e-3)")
    p.add_argument("--matchmaking-time-s", type=float, default=3.0)
    p.add_argument("--sync-matchmaking-time-s", type=float, default=None, help="sync only (default: --matchmaking-time-s)")
    p.add_argument("--repeats", type=int, default=2, help="A B pairs")
    p.add_argument("--run-seconds", type=float, default=170.0)
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.loopback:
        args.cap = None
    if (why := check_testbed(args)) is not None:
        print(f"error: {why}")
        return 2
    if len(args.algorithms) not in (1, 2):
        print("error: --algorithms takes one or two names")
        return 2
    a, b = args.algorithms[0], args.algorithms[-1]
    fp = fingerprint(manifest_seed=0, sampler_seed="run_id + peer_id", run_ids="versus-<label>-<unix time>")
    runs = []
    with workdir(args, "versus") as work:
        for k in range(args.repeats):
            for alg in dict.fromkeys((a, b)):
                runs.append(run(args, work, alg, f"{alg}-{k + 1}"))
    result = suite_result("versus", args, fp, runs=runs, summary=summarize(runs, a, b))
    chart = line_chart(f"validation bits/byte over time ({a} vs {b})", [(r["label"], r["curve"]) for r in runs],
                       subtitle=f"dashed: the lowest target {min(args.target_bpb)}", x_label="seconds since all nodes were up",
                       y_label="val bits/byte", ref=min(args.target_bpb), y_zero=False)
    return publish(args.out, result, markdown(result), {"val": chart})
