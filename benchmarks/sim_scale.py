"""Simulator scale: 10,000 peers x 24 simulated hours must take under 60 s of wall time.

    python benchmarks/sim_scale.py                       # volunteers, 10,000 peers, 24 h
    python benchmarks/sim_scale.py --scenario mass-leave --peers 20000 --hours 48

Prints one line per run and a JSON summary line last (wall seconds, events, events/s, peak RSS).
Single process, single thread: safe to run beside other work on a small machine.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.run import simulate  # noqa: E402
from sim.scenarios import SCENARIOS, make_scenario  # noqa: E402

BUDGET_S = 60.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="volunteers", choices=sorted(SCENARIOS))
    parser.add_argument("--peers", type=int, default=10_000)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    walls = []
    for k in range(args.repeat):
        cfg = make_scenario(args.scenario, peers=args.peers, hours=args.hours, seed=args.seed)
        t0 = time.perf_counter()
        result = simulate(cfg)
        wall = time.perf_counter() - t0
        walls.append(wall)
        s = result.summary
        print(f"run {k}: {args.scenario} {args.peers:,} peers x {args.hours:g} h: {wall:.2f} s wall, "
              f"{result.events:,} events ({result.events / wall:,.0f}/s), {s['rounds']['closed']} rounds, "
              f"{s['peers']['mean_online']:.0f} online on average (peak {s['peers']['peak_online']})", flush=True)
    best = min(walls)
    print(json.dumps({
        "benchmark": "sim_scale", "scenario": args.scenario, "peers": args.peers, "hours": args.hours,
        "wall_s": [round(w, 3) for w in walls], "best_wall_s": round(best, 3), "budget_s": BUDGET_S,
        "within_budget": best < BUDGET_S, "events": result.events, "peak_rss_mb":
        round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "python": platform.python_version(), "machine": platform.machine(),
    }))
    return 0 if best < BUDGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
