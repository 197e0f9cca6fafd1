"""``churn``: kill a peer (SIGKILL) in the inner phase and in the middle of an all-reduce, then restart it.

One run per scenario (each under its own CPU lock, a few minutes at most). N nodes train on
capped links until every node has two rounds in the full group; then node N (the victim) is
killed:

* ``inner``: while it computes (its link quiet, its status "training");
* ``allreduce``: as soon as its uplink carries the all-reduce (rate above half the cap, seen in
  the 50 ms counter samples, so within ~0.1 s of the start of the transfer).

Survivors then train on; after two of their rounds the victim restarts from its state directory
(checkpoint, then a state download from a peer) and the run ends once it completed a round.
Measured, from the ledger, the counters and the harness's clock:

* stall: wall time of the survivors' round hit by the kill minus their median round before it
  (and whether that round's work survived: ``ok``), median over survivors;
* time from the kill to the survivors' first good round without the victim;
* loss excursion: survivors' validation bits/byte in the rounds after the kill minus the last value before;
* catch-up: restart to the victim's first good round; its state download (the largest download
  burst after the restart) in seconds and as a share of the link's TCP goodput.

Latency: none is emulated. Failure detection here is by connection reset (a killed process's
sockets close at once); a peer that vanishes behind a NAT or a dead link is only detected by
timeouts (``next_chunk_timeout``, the progress records' expiration), so real stalls can be longer.

    python -m benchmarks.suites churn --out bench-out/netns/churn --nodes 4 --cap 20
"""
from __future__ import annotations

import argparse
import logging
import signal
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.netns import TCP_FRAMING
from benchmarks.suites.allreduce import WIRE_FRAMING
from benchmarks.suites.charts import line_chart
from benchmarks.suites.analysis import bursts
from benchmarks.suites.output import publish, suite_result
from benchmarks.suites.provenance import fingerprint
from benchmarks.suites.swarm import (assemble, base_parser, bench_swarm, check_testbed, Counters, cpu_lock, ledger_reports,
                                     make_bed, name, Report, SwarmSpec, tokens_per_step, workdir)

__all__ = ["analyse", "main"]

logger = logging.getLogger(__name__)


def _upload_rate(counters: Counters, node: int, window_s: float = 0.1) -> float:
    s = counters.samples
    if len(s) < 2 or node not in s[-1][1]:
        return 0.0
    t1, c1 = s[-1]
    k = len(s) - 2
    while k > 0 and t1 - s[k][0] < window_s:
        k -= 1
    t0, c0 = s[k]
    return (c1[node][0] - c0.get(node, c1[node])[0]) / max(1e-9, t1 - t0)


def _rounds(sts: dict[str, dict[str, Any]], nodes: list[int]) -> dict[int, int]:
    return {i: sts.get(name(i), {}).get("rounds", 0) for i in nodes}


def analyse(reports: list[Report], *, victim: int, t_kill: float, t_restart: float | None, survivors: list[int],
            counters: Counters | None, goodput_bytes_s: float | None) -> dict[str, Any]:
    """Stall, excursion and catch-up figures of one kill (see the module docstring)."""
    out: dict[str, Any] = {}
    stalls, work_lost, to_good, excursions = [], [], [], []
    for i in survivors:
        mine = sorted((r for r in reports if r.node == i), key=lambda r: r.seq)
        before = [r for r in mine if r.sent_at < t_kill]
        after = [r for r in mine if r.sent_at >= t_kill]
        if len(before) < 2 or not after:
            continue
        normal = statistics.median(r.wall_s for r in before[1:])
        hit = after[0]
        stalls.append(hit.wall_s - normal)
        work_lost.append(0.0 if hit.ok else hit.compute_s)
        good = next((r for r in after if r.ok and r.group == len(survivors)), None)
        if good is not None:
            to_good.append(good.sent_at - t_kill)
        last_val = next((r.val_bpb for r in reversed(before) if r.val_bpb is not None), None)
        vals = [r.val_bpb for r in after[:3] if r.val_bpb is not None]
        if last_val is not None and vals:
            excursions.append(max(vals) - last_val)
        out.setdefault("affected_round_ok", []).append(hit.ok)
        out.setdefault("normal_round_wall_s", []).append(normal)
    out["stall_s"] = statistics.median(stalls) if stalls else None
    out["stall_s_per_survivor"] = stalls
    out["work_lost_compute_s"] = statistics.median(work_lost) if work_lost else None
    out["work_lost_compute_s_max"] = max(work_lost) if work_lost else None
    out["stall_s_max"] = max(stalls) if stalls else None
    out["kill_to_good_round_s"] = statistics.median(to_good) if to_good else None
    out["val_excursion_bpb"] = max(excursions) if excursions else None
    if t_restart is not None:
        back = sorted((r for r in reports if r.node == victim and r.sent_at > t_restart and r.ok), key=lambda r: r.seq)
        out["catch_up_s"] = back[0].sent_at - t_restart if back else None
        if counters is not None and back:
            downs = bursts(counters.samples, victim, 1, 0.3 * (goodput_bytes_s or 0), t_restart, back[0].sent_at)
            if downs:
                big = max(downs, key=lambda b: b.nbytes)  # wire bytes: TCP payload is 1448 of every 1514
                out["state_download"] = {"wire_bytes": big.nbytes, "seconds": big.seconds,
                                         "share_of_goodput": big.nbytes / WIRE_FRAMING / big.seconds / goodput_bytes_s
                                         if goodput_bytes_s else None}
    return out


def run_scenario(args: argparse.Namespace, work: Path, scenario: str) -> dict[str, Any]:
    n, victim = args.nodes, args.nodes
    survivors = list(range(1, n))
    step_tokens = tokens_per_step(args.model)
    spec = SwarmSpec(run_id=f"churn-{scenario}-{int(time.time())}", round_tokens=args.steps_per_round * step_tokens * n,
                     model=args.model, codec=args.codec, algorithm=args.algorithm, bandwidth_mbps=args.cap,
                     max_seconds=args.run_seconds + 60)
    bed = make_bed(n, loopback=False, up_mbit=None, down_mbit=None)
    threshold = 0.5 * args.cap * 1e6 / 8
    t_restart = None
    with cpu_lock(args.cpu_lock), bed, bench_swarm(bed, work / scenario, spec) as swarm, Counters(bed, 0.05) as counters:
        t0 = time.monotonic()  # after the CPU lock: waiting for it is not the run's time

        def left() -> float:
            return max(1.0, args.run_seconds - (time.monotonic() - t0))

        assemble(swarm, bed, n, args.cap, args.cap, timeout=left() / 2)
        base = _rounds(swarm.statuses(), list(range(1, n + 1)))
        swarm.wait(lambda sts: all(r >= base[i] + 2 for i, r in _rounds(sts, list(base)).items()), timeout=left())
        if scenario == "inner":  # just after it reported a round: its next inner phase has begun
            done = (swarm.status(name(victim)) or {}).get("rounds", 0)
            swarm.wait(lambda sts: _rounds(sts, [victim])[victim] > done, timeout=left(), poll_s=0.05)
            time.sleep(1.0)
        else:  # the moment its uplink carries the all-reduce
            deadline = time.monotonic() + min(60.0, left())
            while time.monotonic() < deadline and _upload_rate(counters, victim) < threshold:
                time.sleep(0.02)
        victim_rounds = (swarm.status(name(victim)) or {}).get("rounds", 0)  # its checkpoint holds at most this many
        t_kill = time.time()
        rate_at_kill = _upload_rate(counters, victim)
        swarm.stop_node(name(victim), signal.SIGKILL)
        after = _rounds(swarm.statuses(), survivors)
        swarm.wait(lambda sts: all(r >= after[i] + 2 for i, r in _rounds(sts, survivors).items()), timeout=left())
        if left() > 30:
            t_restart = time.time()
            swarm.start_node(name(victim), [swarm.wait_for_maddr(name(1))])
            swarm.wait(lambda sts: _rounds(sts, [victim])[victim] > victim_rounds, timeout=left())
            time.sleep(1.0)
        swarm.stop()
        reports = ledger_reports(swarm)
        goodput = args.cap * 1e6 / 8 * TCP_FRAMING
        figures = analyse(reports, victim=victim, t_kill=t_kill, t_restart=t_restart, survivors=survivors,
                          counters=counters, goodput_bytes_s=goodput)
    out = {"scenario": scenario, "nodes": n, "cap_mbit": args.cap, "algorithm": args.algorithm,
           "victim_uplink_at_kill_mbit": rate_at_kill * 8 / 1e6, "restarted": t_restart is not None,
           "seconds": round(time.monotonic() - t0, 1), **figures,
           "reports": [{"node": r.node, "round": r.round, "ok": r.ok, "group": r.group, "wall_s": round(r.wall_s, 3),
                        "compute_s": round(r.compute_s, 3), "val_bpb": r.val_bpb, "t": round(r.sent_at - t_kill, 2)} for r in reports]}
    logger.info("churn %s: stall %s s, catch-up %s s", scenario, figures.get("stall_s"), figures.get("catch_up_s"))
    return out


def _f(v: Any, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def markdown(result: dict[str, Any]) -> str:
    a = result["args"]
    lines = [f"# churn: SIGKILL of one of {a['nodes']} nodes, then a restart ({a['cap']:g} Mbit/s, {a['algorithm']}, "
             f"{a['steps_per_round']} inner steps per round)", "",
             "| kill | victim's uplink at the kill | survivors' affected round ok | stall s, median (max) "
             "| work lost, compute s, median (max) | kill to good round s | val excursion bits/byte | catch-up s "
             "| state download: wire MB in s (share of goodput) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in result["scenarios"]:
        dl = s.get("state_download")
        dls = f"{dl['wire_bytes'] / 1e6:.2f} in {dl['seconds']:.2f} ({_f(dl['share_of_goodput'], 3)})" if dl else "-"
        ok = ", ".join("ok" if v else "failed" for v in s.get("affected_round_ok", []))
        lines.append(f"| {s['scenario']} | {s['victim_uplink_at_kill_mbit']:.1f} Mbit/s | {ok} "
                     f"| {_f(s.get('stall_s'))} ({_f(s.get('stall_s_max'))}) "
                     f"| {_f(s.get('work_lost_compute_s'))} ({_f(s.get('work_lost_compute_s_max'))}) "
                     f"| {_f(s.get('kill_to_good_round_s'))} | {_f(s.get('val_excursion_bpb'), 3)} "
                     f"| {_f(s.get('catch_up_s'))} | {dls} |")
    lines += ["", "inner: killed 1 s after it reported a round (in its next inner phase); allreduce: killed as soon as its "
              "uplink carried more than half the cap. Stall: wall time of the survivors' round hit by the kill minus their "
              "median round before it; work lost: compute seconds of that round when it failed. "
              "Targets (issue): stall after a peer dies mid-all-reduce <= 5 s; rejoin state download >= 85% of link goodput.", ""]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = base_parser("churn", "kill a peer in the inner phase and mid-all-reduce, then restart it")
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--cap", type=float, default=20.0, help="Mbit/s up and down")
    p.add_argument("--codec", default="none", help="fp32 by default, so the all-reduce lasts long enough to be hit")
    p.add_argument("--algorithm", default="diloco", choices=["diloco", "diloco-overlap"])
    p.add_argument("--scenarios", nargs="+", default=["inner", "allreduce"], choices=["inner", "allreduce"])
    p.add_argument("--steps-per-round", type=int, default=8)
    p.add_argument("--run-seconds", type=float, default=170.0)
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.loopback:
        print("error: churn reads byte counters and shapes links; it has no loopback mode")
        return 2
    if (why := check_testbed(args)) is not None:
        print(f"error: {why}")
        return 2
    fp = fingerprint(manifest_seed=0, sampler_seed="run_id + peer_id", run_ids="churn-<scenario>-<unix time>")
    with workdir(args, "churn") as work:
        scenarios = [run_scenario(args, work, s) for s in args.scenarios]
    result = suite_result("churn", args, fp, scenarios=scenarios)
    charts = {}
    for sc in scenarios:
        series = []
        for node in sorted({r["node"] for r in sc["reports"]}):
            pts = [(r["t"], r["wall_s"]) for r in sc["reports"] if r["node"] == node]
            series.append((f"node {node}" + (" (victim)" if node == args.nodes else ""), pts))
        charts[f"{sc['scenario']}-rounds"] = line_chart(
            f"round wall time around the kill ({sc['scenario']})", series, x_label="seconds since the kill (report time)",
            y_label="round wall s", subtitle=f"{args.nodes} nodes, {args.cap:g} Mbit/s; the victim restarts after the survivors' 2 rounds")
    return publish(args.out, result, markdown(result), charts)
