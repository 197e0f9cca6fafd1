"""Coordinator ingest and state-latency benchmark, on loopback.

1. Start ``python -m coordinator`` as a subprocess (its own process, as in production) on a
   fresh ledger: a SQLite file, or a database on a throwaway PostgreSQL server on this machine
   (``benchmarks/pgserver.py``: Unix socket, fsync on); ``--engine both`` (the default) runs one after
   the other and prints them side by side.
2. Pre-seal ``--reports-per-peer`` reports for each of ``--peers`` simulated peers with distinct
   Ed25519 keys (sealing is not what is measured), then POST them concurrently through one
   aiohttp session: reports per second ingested, every one acknowledged only after its commit.
3. ``GET /api/v1/state`` latency with ``--peers`` peers in the ledger, then again after growing
   the ledger to ``--big-peers`` peers; also the snapshot build time the server reports.

Bounded in count (the pre-sealed set) and in time (``--max-seconds`` per phase).

    python benchmarks/coordinator_ingest.py                     # 1,000 peers x 5; then 10,000 peers
    python benchmarks/coordinator_ingest.py --peers 200 --big-peers 1000   # a quick run
    python benchmarks/coordinator_ingest.py --engine sqlite                # one engine
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from node.cli.launcher import start_coordinator  # noqa: E402
from protocol import ContributionReport, GroupClaim, Hardware, Identity, seal  # noqa: E402

RUN_ID = "bench"


def identity(i: int) -> Identity:
    return Identity.from_seed(i.to_bytes(4, "big") * 8)


def seal_reports(first_peer: int, peers: int, per_peer: int) -> list[bytes]:
    """Envelopes in send order: round by round, every peer once per round, groups of 4."""
    now = time.time()
    idents = [identity(first_peer + i) for i in range(peers)]
    out = []
    for rnd in range(per_peer):
        for start in range(0, peers, 4):
            members = idents[start:start + 4]
            group = [GroupClaim(m.peer_id, 1000 + rnd) for m in members]
            for offset, m in enumerate(members):
                out.append(seal(ContributionReport(
                    run_id=RUN_ID, peer_id=m.peer_id, seq=rnd, sent_at=now, round=rnd, tokens=1000 + rnd,
                    samples=8, compute_s=1.0, wall_s=2.0, bytes_sent=1000, bytes_received=1000, group=group,
                    hardware=Hardware(device="NVIDIA GeForce RTX 4090"), public_name=f"peer-{first_peer + start + offset}",
                    val_bpb=3.0 - 0.01 * rnd, payload_bytes=4000,
                ), m))
    return out


async def post_all(url: str, bodies: list[bytes], concurrency: int, max_seconds: float) -> tuple[int, int, float]:
    """POST every body (bounded concurrency and time); return (ok, failed, seconds)."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    ok = failed = 0
    deadline = time.monotonic() + max_seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def worker() -> None:
            nonlocal ok, failed
            while not queue.empty() and time.monotonic() < deadline:
                body = queue.get_nowait()
                async with session.post(url + "/api/v1/reports", data=body, headers={"Content-Type": "application/msgpack"}) as r:
                    await r.read()
                    if r.status == 200:
                        ok += 1
                    else:
                        failed += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return ok, failed, time.perf_counter() - started


async def state_latency(url: str, requests: int) -> dict[str, float]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        latencies, size, peers = [], 0, 0
        for _ in range(requests):
            started = time.perf_counter()
            async with session.get(url + "/api/v1/state") as r:
                body = await r.read()
            latencies.append(time.perf_counter() - started)
            size = len(body)
        peers = json.loads(body)["swarm"]["peers"]
        async with session.get(url + "/metrics") as r:
            metrics = await r.text()
    build = float(re.search(r"^capaswarm_snapshot_build_seconds ([0-9.e+-]+)$", metrics, re.M).group(1))
    latencies.sort()
    return {
        "peers": peers,
        "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))],
        "max_ms": 1000 * latencies[-1],
        "body_kb": size / 1000,
        "snapshot_build_ms": 1000 * build,
    }


async def wait_for_peers(url: str, peers: int, timeout: float) -> None:
    deadline, seen = time.monotonic() + timeout, None
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            async with session.get(url + "/api/v1/state") as r:
                seen = (await r.json())["swarm"]
                if seen["peers"] >= peers:
                    return
            await asyncio.sleep(0.2)
    raise TimeoutError(f"snapshot never showed {peers} peers (last: {seen})")


async def run(args: argparse.Namespace, workdir: Path, db: str | Path | None) -> dict[str, float]:
    """One coordinator on ``db`` (None: a SQLite file in ``workdir``); the figures it reached."""
    figures: dict[str, float] = {}
    coordinator = start_coordinator(workdir, db=db, args=[
        "--run-id", RUN_ID, "--rate", "10000", "--burst", "10000",
        "--ip-rate", "1e9", "--ip-burst", "1e9",  # every simulated peer posts from 127.0.0.1
        "--snapshot-interval", "0.5", "--log-level", "WARNING"])
    url = coordinator.url
    try:
        started = time.perf_counter()
        bodies = seal_reports(0, args.peers, args.reports_per_peer)
        print(f"sealed {len(bodies)} reports from {args.peers} peers in {time.perf_counter() - started:.1f} s")
        ok, failed, seconds = await post_all(url, bodies, args.concurrency, args.max_seconds)
        figures["ingest"] = ok / seconds
        print(f"ingest: {ok} accepted, {failed} refused in {seconds:.2f} s = {ok / seconds:,.0f} reports/s "
              f"(concurrency {args.concurrency}, one session)")
        await wait_for_peers(url, args.peers, 30)
        small = await state_latency(url, args.state_requests)
        figures.update({f"small_{k}": v for k, v in small.items()})
        print("state with {peers:,} peers: p50 {p50_ms:.2f} ms, p95 {p95_ms:.2f} ms, max {max_ms:.2f} ms; "
              "body {body_kb:,.0f} kB; snapshot build {snapshot_build_ms:.0f} ms".format(**small))
        if args.big_peers > args.peers:
            more = seal_reports(args.peers, args.big_peers - args.peers, 1)
            ok2, failed2, seconds2 = await post_all(url, more, args.concurrency, args.max_seconds)
            figures["grow"] = ok2 / seconds2
            print(f"grew the ledger by {ok2} peers ({failed2} refused) at {ok2 / seconds2:,.0f} reports/s")
            await wait_for_peers(url, args.big_peers, 60)
            big = await state_latency(url, args.state_requests)
            figures.update({f"big_{k}": v for k, v in big.items()})
            print("state with {peers:,} peers: p50 {p50_ms:.2f} ms, p95 {p95_ms:.2f} ms, max {max_ms:.2f} ms; "
                  "body {body_kb:,.0f} kB; snapshot build {snapshot_build_ms:.0f} ms".format(**big))
    finally:
        coordinator.stop(30)
    return figures


def side_by_side(results: dict[str, dict[str, float]], args: argparse.Namespace) -> str:
    rows = [("ingest, {n:,} reports from {p:,} keys (reports/s)", "ingest", "{:,.0f}"),
            ("ingest, {g:,} more peers x 1 report (reports/s)", "grow", "{:,.0f}"),
            ("/api/v1/state p50 / p95 with {p:,} peers (ms)", "small", None),
            ("snapshot build with {p:,} peers (ms)", "small_snapshot_build_ms", "{:,.0f}"),
            ("/api/v1/state p50 / p95 with {b:,} peers (ms)", "big", None),
            ("snapshot build with {b:,} peers (ms)", "big_snapshot_build_ms", "{:,.0f}")]
    names = list(results)
    lines = ["| measure | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, key, fmt in rows:
        cells = []
        for name in names:
            r = results[name]
            if fmt is None:
                cells.append(f"{r[key + '_p50_ms']:.2f} / {r[key + '_p95_ms']:.2f}" if key + "_p50_ms" in r else "-")
            else:
                cells.append(fmt.format(r[key]) if key in r else "-")
        text = label.format(n=args.peers * args.reports_per_peer, p=args.peers, g=args.big_peers - args.peers,
                            b=args.big_peers)
        lines.append(f"| {text} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    results: dict[str, dict[str, float]] = {}
    engines = ["sqlite", "postgresql"] if args.engine == "both" else [args.engine]
    for engine in engines:
        print(f"--- {engine}")
        with tempfile.TemporaryDirectory() as tmp:
            if engine == "sqlite":
                results[engine] = await run(args, Path(tmp), None)
                continue
            from benchmarks.pgserver import PostgresServer

            with PostgresServer() as server:
                results[engine] = await run(args, Path(tmp), server.create_database())
    print(side_by_side(results, args))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", type=int, default=1000)
    parser.add_argument("--reports-per-peer", type=int, default=5)
    parser.add_argument("--big-peers", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--state-requests", type=int, default=50)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--engine", choices=("sqlite", "postgresql", "both"), default="both")
    asyncio.run(main(parser.parse_args()))
