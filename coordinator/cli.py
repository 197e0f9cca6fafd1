"""``swarm coordinator``: a thin CLI over :class:`~coordinator.config.CoordinatorConfig`.

Precedence: command-line flag > environment ``SWARM_COORDINATOR_<FLAG>`` (e.g.
``SWARM_COORDINATOR_TARGET_TOKENS``) > manifest / price-table files > defaults.
``node/cli.py`` delegates ``swarm coordinator ...`` here; ``python -m coordinator`` works too.
"""
from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import signal
import tomllib
from pathlib import Path
from typing import Any

from aiohttp import web

from protocol import DecodeError, RunManifest

from .app import create_app
from .config import CoordinatorConfig
from .cost import PriceTable
from .states import StateThresholds

__all__ = ["build_parser", "load_manifest", "load_price_table", "main", "serve"]

logger = logging.getLogger(__name__)
_D = CoordinatorConfig(db_path=Path("ledger.sqlite3"))  # the defaults, to show them in --help


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="swarm coordinator",
        description="Contribution ledger, cost accounting and live dashboard for a capaswarm run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--host", default=_D.host, help="interface to bind (loopback unless told otherwise)")
    p.add_argument("--port", type=int, default=_D.port, help="TCP port; 0 picks a free one")
    p.add_argument("--db", type=Path, default=Path("capaswarm-ledger.sqlite3"), help="SQLite ledger file")
    p.add_argument("--manifest", type=Path, default=None, help="run manifest, TOML or msgpack")
    p.add_argument("--run-id", default="demo", help="run id when no --manifest is given")
    p.add_argument("--target-tokens", type=float, default=_D.target_tokens, help="the run's token target")
    p.add_argument("--max-age", type=float, default=_D.max_age_s, help="oldest report accepted, seconds")
    p.add_argument("--max-future", type=float, default=_D.max_future_s, help="clock skew tolerated, seconds")
    p.add_argument("--rate", type=float, default=_D.rate_per_s, help="per-peer requests per second")
    p.add_argument("--burst", type=float, default=_D.rate_burst, help="per-peer burst")
    p.add_argument("--max-body", type=int, default=_D.max_body_bytes, help="request body cap, bytes")
    p.add_argument("--price-table", type=Path, default=None, help="TOML price table (see docs/coordinator.md)")
    p.add_argument("--electricity", type=float, default=None, help="$ per kWh for volunteer GPUs")
    p.add_argument("--stale-after", type=float, default=_D.thresholds.stale_after_s, help="seconds of silence")
    p.add_argument("--offline-after", type=float, default=_D.thresholds.offline_after_s, help="seconds of silence")
    p.add_argument("--snapshot-interval", type=float, default=_D.snapshot_interval_s, help="seconds")
    p.add_argument("--port-file", type=Path, default=None, help="write the bound port here once listening")
    p.add_argument("--log-level", default="INFO")
    for action in p._actions:  # environment defaults: SWARM_COORDINATOR_TARGET_TOKENS=...
        env = os.environ.get("SWARM_COORDINATOR_" + action.dest.upper())
        if env is not None and action.dest != "help":
            action.default = action.type(env) if callable(action.type) else env
    return p


def load_manifest(path: Path) -> RunManifest:
    """A manifest from TOML (``*.toml``; fields at top level or under ``[manifest]``) or msgpack."""
    if path.suffix.lower() == ".toml":
        data: Any = tomllib.loads(path.read_text())
        if set(data) == {"manifest"}:
            data = data["manifest"]
        return RunManifest.from_wire(data)
    return RunManifest.from_bytes(path.read_bytes())


def load_price_table(path: Path | None, electricity: float | None) -> PriceTable:
    base = PriceTable()
    data: dict[str, Any] = tomllib.loads(path.read_text()) if path else {}
    return PriceTable(
        electricity_usd_per_kwh=float(electricity if electricity is not None else data.get("electricity_usd_per_kwh", base.electricity_usd_per_kwh)),
        gpu_watts={**base.gpu_watts, **{k: float(v) for k, v in data.get("gpu_watts", {}).items()}},
        default_gpu_watts=float(data.get("default_gpu_watts", base.default_gpu_watts)),
        gpu_usd_per_hour={k: float(v) for k, v in data.get("gpu_usd_per_hour", {}).items()},
        cpu_usd_per_hour=float(data.get("cpu_usd_per_hour", base.cpu_usd_per_hour)),
    )


def config_from_args(args: argparse.Namespace) -> CoordinatorConfig:
    manifest = load_manifest(args.manifest) if args.manifest else RunManifest(run_id=args.run_id)
    return CoordinatorConfig(
        db_path=args.db,
        manifest=manifest,
        host=args.host,
        port=args.port,
        target_tokens=int(args.target_tokens),
        max_body_bytes=args.max_body,
        max_age_s=args.max_age,
        max_future_s=args.max_future,
        rate_per_s=args.rate,
        rate_burst=args.burst,
        snapshot_interval_s=args.snapshot_interval,
        thresholds=StateThresholds(stale_after_s=args.stale_after, offline_after_s=args.offline_after),
        prices=load_price_table(args.price_table, args.electricity),
    )


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def serve(config: CoordinatorConfig, *, port_file: Path | None = None, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set or SIGINT/SIGTERM arrives; shut down in order."""
    try:
        if not ipaddress.ip_address(config.host).is_loopback:
            logger.warning("binding to %s: the coordinator is reachable from other machines", config.host)
    except ValueError:
        logger.warning("binding to %s (a name, not a loopback address)", config.host)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(create_app(config), access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port, reuse_address=True)
        await site.start()
        port = runner.addresses[0][1]
        logger.info("coordinator for run %r listening on http://%s:%d/ (ledger %s)", config.run_id, config.host, port, config.db_path)
        if port_file is not None:
            _write_atomically(port_file, f"{port}\n")
        await stop.wait()
        logger.info("shutting down")
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
    except (OSError, ValueError, DecodeError, tomllib.TOMLDecodeError) as e:
        logger.error("bad configuration: %s", e)
        return 2
    try:
        asyncio.run(serve(config, port_file=args.port_file))
    except OSError as e:
        logger.error("cannot serve on %s:%d: %s", config.host, config.port, e)
        return 1
    return 0
