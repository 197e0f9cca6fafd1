"""``swarm sim`` (and ``python -m sim``): a thin layer over scenarios, ``simulate`` and calibration.

    swarm sim --scenario volunteers --peers 10000 --hours 24 --seed 0 --out runs/vol
    swarm sim --scenario home125m-int8 --grouping bandwidth --out runs/int8-tiers
    swarm sim --calibrate REPORT.json [--loopback-mbps 400] [--out DIR]
    swarm sim --list
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from .agreement import HOSTILE_KINDS
from .calibration import calibrate, summary_from_report
from .catalog import CODECS
from .config import SimConfig
from .report import write_outputs
from .run import simulate
from .scenarios import SCENARIOS, make_scenario

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="swarm sim", description="simulate a capaswarm swarm (discrete events)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--scenario", choices=sorted(SCENARIOS), help="a named scenario (see --list)")
    what.add_argument("--calibrate", type=Path, metavar="REPORT.json", help="predict the run of `swarm demo --report`")
    what.add_argument("--list", action="store_true", help="list the scenarios")
    p.add_argument("--peers", type=int, help="node identities (default: the scenario's)")
    p.add_argument("--hours", type=float, help="simulated hours (default: the scenario's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="write sim.json and the PNG plots here")
    p.add_argument("--no-plots", action="store_true", help="JSON only")
    tune = p.add_argument_group("overrides of the scenario")
    tune.add_argument("--codec", choices=list(CODECS))
    tune.add_argument("--round-tokens", type=int)
    tune.add_argument("--group-size", type=int, help="target all-reduce group size")
    tune.add_argument("--grouping", choices=["random", "bandwidth"])
    tune.add_argument("--straggler-policy", choices=["fail_group", "ban"])
    tune.add_argument("--assumed-mbps", type=float, help="the nodes' assumed slowest link (timeouts)")
    tune.add_argument("--hostile", type=float, metavar="FRACTION", help="share of nodes hostile in the agreement")
    tune.add_argument("--hostile-kind", choices=list(HOSTILE_KINDS), help="what they do (default lie)")
    tune.add_argument("--sample-s", type=float, help="seconds between rows of the time series")
    cal = p.add_argument_group("calibration")
    cal.add_argument("--loopback-mbps", type=float, default=400.0, help="effective all-reduce speed on loopback")
    cal.add_argument("--progress-lag-s", type=float, default=0.0, help="delay before peers notice the round target")
    return p


def _configure(args: argparse.Namespace) -> SimConfig:
    cfg = make_scenario(args.scenario, peers=args.peers, hours=args.hours, seed=args.seed)
    proto_changes: dict[str, Any] = {
        "round_tokens": args.round_tokens,
        "target_group_size": args.group_size,
        "grouping": args.grouping,
        "straggler_policy": args.straggler_policy,
        "assumed_bandwidth_mbps": args.assumed_mbps,
        "hostile_fraction": args.hostile,
        "hostile_kind": args.hostile_kind,
    }
    proto = dataclasses.replace(cfg.protocol, **{k: v for k, v in proto_changes.items() if v is not None})
    changes: dict[str, Any] = {"protocol": proto}
    if args.codec:
        changes["codec"] = args.codec
    if args.sample_s:
        changes["sample_s"] = args.sample_s
    return dataclasses.replace(cfg, **changes)


def _print_summary(s: dict[str, Any]) -> None:
    tok, cost = s["tokens"], s["cost"]
    print(f"{s['scenario']}: {s['peers']['identities']:,} peers ({s['peers']['mean_online']:.0f} online on average), "
          f"{s['hours']:g} h, seed {s['seed']}, {s['codec']}, {s['model']['params'] / 1e6:.1f}M params")
    r = s["rounds"]
    print(f"  rounds closed {r['closed']}, group failures {r['group_failures']}/{r['groups']}; "
          f"node-rounds applied {r['member_applied']:,}, dropped {r['member_dropped']:,}")
    if s["hostile"]["nodes"]:
        dropped = s["tokens"]["wasted_by_cause"]["agreement"] / max(s["tokens"]["computed"], 1)
        print(f"  hostile in the agreement: {s['hostile']['nodes']:,} nodes ({s['hostile']['kind']}); "
              f"the agreement dropped {dropped:.1%} of computed tokens")
    print(f"  tokens/s into the model {tok['ok_per_s']:,.0f}; wasted {tok['wasted'] / max(tok['computed'], 1):.1%} "
          f"of computed; utilization {s['utilization']:.1%}")
    per_m = cost["true_usd_per_mtok"]
    print(f"  cost ${cost['true_usd']:,.2f} true, ${cost['ledger_usd']:,.2f} on the ledger; "
          f"$/1M tokens {per_m if per_m is None else f'{per_m:.5f}'}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        for name, fn in SCENARIOS.items():
            doc = (fn.__doc__ or "").strip().splitlines()
            print(f"{name:18s} {doc[0] if doc else ''}")
        return 0
    if args.calibrate:
        try:
            summary = summary_from_report(json.loads(args.calibrate.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"swarm sim: cannot read {args.calibrate}: {exc}", file=sys.stderr)
            return 1
        fit = calibrate(summary, loopback_mbps=args.loopback_mbps, progress_lag_s=args.progress_lag_s, seed=args.seed)
        for key, p in fit["predicted"].items():
            m, err = fit["measured"][key], fit["relative_error"][key]
            print(f"{key:25s} predicted {'-' if p is None else f'{p:14.2f}'}  measured {'-' if m is None else f'{m:14.2f}'}  "
                  f"error {'-' if err is None else f'{err:+.1%}'}")
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "calibration.json").write_text(json.dumps(fit, indent=1) + "\n")
        return 0
    try:
        cfg = _configure(args)
    except ValueError as exc:
        print(f"swarm sim: {exc}", file=sys.stderr)
        return 1
    result = simulate(cfg)
    _print_summary(result.summary)
    print(f"  {result.events:,} events in {result.wall_s:.1f} s wall; trace {result.trace_sha256[:16]}")
    if args.out:
        written = write_outputs(cfg, result, args.out, with_plots=not args.no_plots)
        print(f"  wrote {', '.join(p.name for p in written)} to {args.out}")
    return 0
