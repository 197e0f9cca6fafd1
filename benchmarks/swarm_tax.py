"""The communication tax of a loopback swarm, and bytes on the wire against the all-reduce bound.

Runs real ``swarm join`` processes on 127.0.0.1 with a coordinator, and reads every round's
signed report from the ledger:

* throughput of one node alone vs the same kind of node in an N-node swarm: tokens per second of
  round wall time, and compute utilization (compute seconds / round wall seconds);
* bytes sent per node per round vs the butterfly bound 2(G-1)/G x compressed payload, for the
  group size G each round actually had.

On a 2-core machine N nodes also share the CPU, so tokens/s per node falls for that reason too;
utilization (compute time / wall time) separates waiting on the network from sharing the CPU.

    python benchmarks/swarm_tax.py --nodes 3 --seconds 60 --codec fp16 --out bench-out/tax
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.host.config import NodeConfig  # noqa: E402
from node.cli.launcher import SwarmLauncher, loopback_round_tokens  # noqa: E402
from node.uplink.manifests import manifest_from_flags  # noqa: E402

BYTES_PER_PARAM = {"none": 4.0, "fp16": 2.0, "int8": 1.0 + 1032 / 524288}  # hivemind's codecs (int8: codebook per part)


def run_swarm(workdir: Path, nodes: int, seconds: float, codec: str, round_tokens: int, algorithm: str = "diloco") -> list[dict]:
    workdir.mkdir(parents=True, exist_ok=True)
    run_id = f"bench-{nodes}-{codec}-{int(time.time())}"
    manifest = manifest_from_flags(NodeConfig(run_id=run_id, round_tokens=round_tokens, codec=codec, algorithm=algorithm))
    with SwarmLauncher(workdir) as swarm:
        swarm.start_coordinator(manifest)
        swarm.start(nodes)
        time.sleep(seconds)
        swarm.stop()  # the nodes flush their outboxes, then the coordinator stops
    db = sqlite3.connect(workdir / "ledger.sqlite3")
    try:
        rows = db.execute(
            "SELECT r.peer_id, r.round, r.tokens, r.compute_s, r.wall_s, r.bytes_sent, r.bytes_received, r.payload_bytes, r.ok,"
            # the ledger stores what a reporter saw the *other* members claim: group size = that + 1
            " 1 + (SELECT COUNT(*) FROM group_claims g WHERE g.reporter = r.peer_id AND g.seq = r.seq) AS group_size"
            " FROM reports r ORDER BY r.received_at"
        ).fetchall()
    finally:
        db.close()
    keys = ["peer", "round", "tokens", "compute_s", "wall_s", "bytes_sent", "bytes_received", "payload_bytes", "ok", "group"]
    return [dict(zip(keys, r)) for r in rows]


def summarize(rows: list[dict], codec: str) -> dict:
    ok = [r for r in rows if r["ok"]]
    wall = sum(r["wall_s"] for r in ok)
    out = {
        "rounds_reported": len(rows),
        "rounds_ok": len(ok),
        "utilization": sum(r["compute_s"] for r in ok) / wall if wall else 0.0,
    }
    ratios = []
    for r in ok:
        g = r["group"]
        if g >= 2 and r["bytes_sent"] > 0:
            bound = 2 * (g - 1) / g * r["payload_bytes"] / 4 * BYTES_PER_PARAM[codec]
            ratios.append(r["bytes_sent"] / bound)
    if ratios:
        out["bytes_vs_bound"] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios), "n": len(ratios)}
    return out


def per_node_rate(rows: list[dict]) -> float:
    """Mean over nodes of tokens / round wall time (each node's own rate)."""
    rates = []
    for peer in {r["peer"] for r in rows if r["ok"]}:
        mine = [r for r in rows if r["peer"] == peer and r["ok"]]
        wall = sum(r["wall_s"] for r in mine)
        if wall:
            rates.append(sum(r["tokens"] for r in mine) / wall)
    return statistics.mean(rates) if rates else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--codec", default="fp16", choices=sorted(BYTES_PER_PARAM))
    ap.add_argument("--round-tokens", type=int, default=None, help="default: the loopback default for --nodes")
    ap.add_argument("--algorithm", default="diloco", choices=["diloco", "diloco-overlap"])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    args.round_tokens = args.round_tokens or loopback_round_tokens(args.nodes)
    work = Path(tempfile.mkdtemp(prefix="capaswarm-tax-"))
    solo = run_swarm(work / "solo", 1, args.seconds, args.codec, args.round_tokens // args.nodes)
    swarm = run_swarm(work / "swarm", args.nodes, args.seconds, args.codec, args.round_tokens, args.algorithm)
    result = {
        "fingerprint": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
                        "cores": os.cpu_count(), "load": os.getloadavg()},
        "args": {k: str(v) for k, v in vars(args).items()},
        "solo": {**summarize(solo, args.codec), "tokens_per_s": per_node_rate(solo)},
        "swarm": {**summarize(swarm, args.codec), "tokens_per_s_per_node": per_node_rate(swarm)},
    }
    s, w = result["solo"], result["swarm"]
    print("| setting | tokens/s per node | compute utilization | rounds ok |")
    print("|---|---|---|---|")
    print(f"| 1 node alone | {s['tokens_per_s']:,.0f} | {s['utilization']:.3f} | {s['rounds_ok']} |")
    print(f"| {args.nodes}-node swarm, {args.codec}, {args.algorithm} | {w['tokens_per_s_per_node']:,.0f} "
          f"| {w['utilization']:.3f} | {w['rounds_ok']} |")
    if "bytes_vs_bound" in w:
        b = w["bytes_vs_bound"]
        print(f"\nbytes sent per node per round / (2(G-1)/G x compressed payload): median {b['median']:.4f} "
              f"(min {b['min']:.4f}, max {b['max']:.4f}, n={b['n']})")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "swarm_tax.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
