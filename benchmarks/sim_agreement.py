"""The swarm at scale with the node's grouping and agreement rules, and hostile members, in the simulator.

    python benchmarks/sim_agreement.py                    # 100, 1,000, 10,000 peers x 24 h, volunteers
    python benchmarks/sim_agreement.py --peers 1000 --hours 6

For every size: one group of every ready peer (the node's default), random groups of 16 and of 3,
and bandwidth tiers of 16 (``node.policies.grouping.form_groups``); each honest, then with 10 % of
the nodes lying in the agreement on failed reducers, then with 10 % withholding their records
(``sim/agreement.py`` runs ``node.policies.agreement.settle``). Prints a markdown table (node-rounds
applied and dropped, tokens the agreement dropped, utilization, bytes per peer) and a JSON line.
Deterministic (seed 0); single process, single thread.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.run import simulate  # noqa: E402
from sim.scenarios import SCENARIOS, make_scenario  # noqa: E402

GROUPINGS = {"one group": (None, "random"), "random 16": (16, "random"), "tiers 16": (16, "bandwidth"),
             "random 3": (3, "random")}
FAULTS = {"honest": (0.0, "lie"), "10 % lie": (0.1, "lie"), "10 % withhold": (0.1, "withhold")}


def run(scenario: str, peers: int, hours: float, grouping: str, fault: str, seed: int) -> dict:
    cfg = make_scenario(scenario, peers=peers, hours=hours, seed=seed)
    size, how = GROUPINGS[grouping]
    fraction, kind = FAULTS[fault]
    proto = dataclasses.replace(cfg.protocol, target_group_size=size, grouping=how, hostile_fraction=fraction, hostile_kind=kind)
    t0 = time.perf_counter()
    s = simulate(dataclasses.replace(cfg, protocol=proto)).summary
    tok = s["tokens"]
    return {"peers": peers, "grouping": grouping, "fault": fault, "wall_s": round(time.perf_counter() - t0, 2),
            "rounds": s["rounds"]["closed"], "applied": s["rounds"]["member_applied"], "dropped": s["rounds"]["member_dropped"],
            "agreement_dropped": tok["wasted_by_cause"]["agreement"] / max(tok["computed"], 1),
            "utilization": s["utilization"], "mtok_per_s": tok["ok_per_s"] / 1e6,
            "gb_per_peer_p50": s["bytes"]["per_peer_total"]["p50"] / 1e9}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="volunteers", choices=sorted(SCENARIOS))
    parser.add_argument("--peers", type=int, nargs="+", default=[100, 1000, 10_000])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{args.scenario}, {args.hours:g} h, seed {args.seed}\n")
    print("| peers | groups | members | rounds | node-rounds applied | dropped | tokens the agreement dropped "
          "| utilization | M tokens/s | GB per peer (p50) | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for peers in args.peers:
        for grouping in GROUPINGS:
            for fault in FAULTS:
                r = run(args.scenario, peers, args.hours, grouping, fault, args.seed)
                rows.append(r)
                print(f"| {peers:,} | {grouping} | {fault} | {r['rounds']} | {r['applied']:,} | {r['dropped']:,} "
                      f"| {r['agreement_dropped']:.1%} | {r['utilization']:.1%} | {r['mtok_per_s']:.2f} "
                      f"| {r['gb_per_peer_p50']:.2f} | {r['wall_s']:.1f} |", flush=True)
    print(json.dumps({"benchmark": "sim_agreement", "scenario": args.scenario, "hours": args.hours, "seed": args.seed,
                      "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
