"""``swarm plan``: before a run, what it costs to admit everyone and what the cost plan saves.

    swarm plan --manifest run.toml --fleet fleet.toml [--prices prices.toml] [--out DIR]
    swarm plan --examples [--out DIR]      the fleets of docs/simulator.md (sim/fleets/*.toml)

Each fleet is simulated twice with the same seed: "admit everyone" (every node that comes trains) and
"plan" (``coordinator.planner`` re-planned every few rounds, paid nodes on standby outside the budget).
Printed: time to the token target, $ to it, $ per 1M confirmed tokens, the highest planned $/h. With
``--out``: ``plan.json`` and one PNG per fleet (confirmed tokens and $ over time, both runs).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from coordinator.cost import PriceTable
from protocol import RunManifest

from .fleet import FleetError, fleet_config, load_fleet, load_manifest
from .run import simulate

__all__ = ["EXAMPLES", "compare", "main"]

EXAMPLES = Path(__file__).parent / "fleets"  # example fleets, each with its manifest beside it


def _figures(result: Any) -> dict[str, Any]:
    s = result.summary
    tgt = s["target"]
    return {
        "time_to_target_h": tgt["reached_h"], "usd_to_target": tgt["usd_at_target"],
        "usd_per_mtok": (
            tgt["usd_per_mtok_at_target"] if tgt["usd_per_mtok_at_target"] is not None else s["cost"]["true_usd_per_mtok"]
        ),
        "tokens_ok": s["tokens"]["ok"], "usd": s["cost"]["true_usd"], "mean_standby": s["plan"]["mean_standby"],
        "max_planned_burn": s["plan"]["max_planned_burn"],
    }


def compare(fleet: dict[str, Any], manifest: RunManifest, prices: PriceTable, name: str = "fleet") -> dict[str, Any]:
    """Both runs of one fleet: figures and the time series the chart draws."""
    runs = {}
    series = {}
    for label, plan in (("everyone", False), ("plan", True)):
        result = simulate(fleet_config(fleet, manifest, prices, name=name, plan=plan))
        runs[label] = _figures(result)
        series[label] = {k: result.series[k] for k in ("t_h", "tokens_ok", "true_usd")}
    e, p = runs["everyone"], runs["plan"]
    verdict = None
    if p["time_to_target_h"] is not None and p["usd_per_mtok"] and e["usd_per_mtok"]:
        verdict = {"cheaper_per_mtok": p["usd_per_mtok"] < e["usd_per_mtok"],  # never reaching it counts as slower
                   "no_slower": e["time_to_target_h"] is None or p["time_to_target_h"] <= e["time_to_target_h"] + 1e-9,
                   "saving": 1 - p["usd_per_mtok"] / e["usd_per_mtok"]}
    cap = fleet.get("budget", {}).get("cap_per_hour")
    return {"fleet": name, "target_tokens": int(float(fleet.get("target_tokens", 0))), "cap_per_hour": cap,
            "everyone": e, "plan": p, "verdict": verdict, "series": series}


def chart(cmp: dict[str, Any]) -> bytes:
    """Two panels side by side would need pyplot; one chart of $ spent against confirmed tokens says it."""
    from .plots import figure, png

    with figure(f"{cmp['fleet']}: $ spent against confirmed tokens", "admit everyone vs the cost plan", 720, 340) as (fig, ax):
        for k, (label, color) in enumerate((("everyone", "#dc2626"), ("plan", "#2563eb"))):
            s = cmp["series"][label]
            ax.plot([t / 1e9 for t in s["tokens_ok"]], s["true_usd"], color=color, linewidth=1.8,
                    label=f"{'admit everyone' if label == 'everyone' else 'plan'}: target in "
                          f"{_h(cmp[label]['time_to_target_h'])}, ${_usd(cmp[label]['usd_to_target'])}")
        target = cmp["target_tokens"] / 1e9
        if target > 0:
            ax.axvline(target, color="#555", linestyle=":", linewidth=1)
        ax.set_xlabel("confirmed tokens (billions)")
        ax.set_ylabel("$ spent")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize="small")
        return png(fig)


def _h(x: float | None) -> str:
    return "never" if x is None else f"{x:.1f} h"


def _usd(x: float | None) -> str:
    return "-" if x is None else f"{x:,.2f}"


def _print(cmp: dict[str, Any]) -> None:
    cap = cmp["cap_per_hour"]
    print(f"{cmp['fleet']}: target {cmp['target_tokens'] / 1e9:g}B tokens, cap {'none' if cap is None else f'${cap}/h'}")
    print(f"  {'':16s} {'time to target':>15s} {'$ to target':>12s} {'$ / 1M tok':>11s} {'standby (mean)':>15s}")
    for label in ("everyone", "plan"):
        f = cmp[label]
        print(f"  {'admit everyone' if label == 'everyone' else 'plan':16s} {_h(f['time_to_target_h']):>15s} "
              f"{_usd(f['usd_to_target']):>12s} {f['usd_per_mtok'] or 0:11.4f} {f['mean_standby']:15.1f}")
    v = cmp["verdict"]
    if v:
        verb = "saves" if v["saving"] >= 0 else "adds"
        print(f"  the plan {verb} {abs(v['saving']):.0%} of the $ per 1M confirmed tokens and is "
              f"{'no slower' if v['no_slower'] else 'slower'} to the target")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="swarm plan", description="time and $ to the token target: admit everyone vs the cost plan")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--fleet", type=Path, help="fleet description, TOML (see sim/fleet.py)")
    what.add_argument("--examples", action="store_true", help=f"the example fleets in {EXAMPLES}")
    p.add_argument("--manifest", type=Path, help="run manifest, TOML or msgpack (with --fleet)")
    p.add_argument("--prices", type=Path, help="price table, TOML (as for swarm coordinator --price-table)")
    p.add_argument("--out", type=Path, help="write plan.json and a PNG chart per fleet here")
    return p


def main(argv: list[str] | None = None) -> int:
    import tomllib

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        prices = PriceTable.from_toml(tomllib.loads(args.prices.read_text()) if args.prices else {})
        if args.examples:
            fleets = [(f, load_fleet(f)) for f in sorted(EXAMPLES.glob("*.toml")) if not f.name.startswith("manifest")]
            jobs = [(f.stem, data, load_manifest(f.with_name(str(data.get("manifest", "manifest.toml"))))) for f, data in fleets]
        else:
            if args.manifest is None:
                raise FleetError("--fleet needs --manifest")
            jobs = [(args.fleet.stem, load_fleet(args.fleet), load_manifest(args.manifest))]
        results = [compare(fleet, manifest, prices, name) for name, fleet, manifest in jobs]
    except (FleetError, OSError, tomllib.TOMLDecodeError, ValueError) as e:
        print(f"swarm plan: {e}", file=sys.stderr)
        return 2
    for cmp in results:
        _print(cmp)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        for cmp in results:
            (args.out / f"plan-{cmp['fleet']}.png").write_bytes(chart(cmp))
        summary = [{k: v for k, v in c.items() if k != "series"} for c in results]
        (args.out / "plan.json").write_text(json.dumps(summary, indent=1) + "\n")
        print(f"wrote plan.json and {len(results)} chart(s) to {args.out}")
    return 0
