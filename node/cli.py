"""The ``swarm`` command: a thin layer over the config tree. No logic lives here.

    swarm join         run a node (the volunteer's one command)
    swarm demo         a whole local swarm (and its coordinator) on 127.0.0.1
    swarm coordinator  the contribution ledger and dashboard service
    swarm sim          the swarm simulator (sim/)
    swarm bench SUITE  benchmarks: quality (token-space), bytes, allreduce, ... (benchmarks/)
"""
from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import sys
from pathlib import Path
from typing import Any

from protocol.manifest import CODECS as CODEC_NAMES

__all__ = ["build_parser", "main"]

# flag -> (config key, argparse options); hyphen and underscore spellings are both accepted
JOIN_FLAGS: dict[str, dict[str, Any]] = {
    "initial-peers": dict(nargs="+", metavar="MADDR", help="multiaddrs of peers already in the swarm"),
    "host-maddrs": dict(nargs="+", metavar="MADDR", help="where to listen (default /ip4/0.0.0.0/tcp/0)"),
    "announce-maddrs": dict(nargs="+", metavar="MADDR", help="addresses others should dial"),
    "identity-path": dict(type=Path, help="Ed25519 key file (created if missing)"),
    "manifest": dict(type=Path, help="run manifest file (TOML or msgpack)"),
    "run-id": dict(help="run id for a new manifest"),
    "new-swarm": dict(action="store_true", default=None, help="start a new swarm (no initial peers)"),
    "public-name": dict(help="your name on the leaderboard"),
    "device": dict(choices=["auto", "cpu", "cuda"]),
    "model": dict(help="model preset for a new manifest: tiny | small | gpt2-124m"),
    "data": dict(type=Path, help="your own text files or folder (default: Python stdlib sources)"),
    "state-dir": dict(type=Path, help="checkpoints, outbox and identity (default ~/.capaswarm)"),
    "coordinator": dict(help="coordinator URL: fetch the run manifest there and report contributions"),
    "codec": dict(choices=sorted(CODEC_NAMES), help="pseudo-gradient codec for a new manifest"),
    "algorithm": dict(choices=["diloco", "diloco-overlap", "sync"],
                      help="diloco; diloco-overlap (all-reduce behind the next round's compute); sync (hivemind.Optimizer)"),
    "round-tokens": dict(type=int, help="swarm-wide tokens per round for a new manifest"),
    "batch-size": dict(type=int, help="sequences per inner step for a new manifest"),
    "price-per-hour": dict(type=float, help="declared cost of this node in $/h"),
    "threads": dict(type=int, help="torch CPU threads"),
    "matchmaking-time-s": dict(type=float, help="seconds peers gather into a group"),
    "bandwidth-mbps": dict(type=float, help="assumed slowest link, Mbit/s (timeouts derive from it)"),
    "status-interval-s": dict(type=float, help="seconds between status lines"),
    "heartbeat-interval-s": dict(type=float, help="seconds between coordinator heartbeats"),
    "max-rounds": dict(type=int, help="stop after this many rounds"),
    "max-seconds": dict(type=float, help="stop after this many seconds"),
    "nat-port-map": dict(action="store_true", default=None, help="ask the router for a port mapping (UPnP)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swarm", description="capaswarm: pre-train one model on volunteered GPUs")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    join = sub.add_parser("join", help="join a swarm and train (the volunteer's one command)")
    join.add_argument("--config", type=Path, help="TOML file with any of the settings below")
    for flag, opts in JOIN_FLAGS.items():
        names = [f"--{flag}"] + ([f"--{flag.replace('-', '_')}"] if "-" in flag else [])
        join.add_argument(*names, dest=flag.replace("-", "_"), **opts)

    demo = sub.add_parser("demo", help="run a whole local swarm on 127.0.0.1")
    demo.add_argument("--nodes", type=int, default=3)
    demo.add_argument("--seconds", type=float, default=None, help="stop by itself after this long")
    demo.add_argument("--report", type=Path, default=None, help="write a JSON report here")
    demo.add_argument("--workdir", type=Path, default=None, help="state of every node (default: a temp dir)")
    demo.add_argument("--model", default="tiny")
    demo.add_argument("--codec", default="fp16", choices=sorted(CODEC_NAMES))
    demo.add_argument("--round-tokens", "--round_tokens", dest="round_tokens", type=int, default=None)
    demo.add_argument("--port", type=int, default=0, help="dashboard port (default: any free port)")
    demo.add_argument("--no-coordinator", action="store_true", help="do not start the coordinator")

    # these own their flags; listed here for --help
    sub.add_parser("coordinator", help="run the contribution ledger and dashboard", add_help=False)
    sub.add_parser("sim", help="simulate a swarm of thousands of nodes", add_help=False)
    sub.add_parser("bench", help="run a benchmark suite: quality, bytes, allreduce, utilization, versus, churn, clean",
                   add_help=False)
    return parser


def _delegate(command: str, argv: list[str]) -> int:
    """Subcommands whose packages own their flags: ``swarm coordinator|sim|bench ...``."""
    if command == "coordinator":
        from coordinator.cli import main as coordinator_main

        return coordinator_main(argv)
    if command == "sim":
        from sim.cli import main as sim_main

        return sim_main(argv)
    if argv and argv[0] == "quality":  # token-space simulation of the training algorithm
        from benchmarks.quality import main as quality_main

        return quality_main(argv[1:])
    from benchmarks.suites import main as suites_main  # shaped-link suites, and `bench clean`

    return suites_main(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("coordinator", "sim", "bench"):
        return _delegate(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    from node.runlog import setup_logging

    setup_logging(logging.DEBUG if args.verbose else logging.INFO)
    if args.command == "demo":
        from node.demo import run_demo

        return run_demo(args)
    mp.set_start_method("fork", force=True)  # hivemind's DHT and averager are forked processes
    from node.config import ConfigError, load_config
    from node.daemon import run_node

    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "verbose", "config")}
    try:
        cfg = load_config(overrides, args.config)
        return run_node(cfg)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        logging.getLogger("swarm").error("%s", e)
        return 2
