"""``swarm coordinator``: a thin CLI over :class:`~coordinator.config.CoordinatorConfig`.

Precedence: command-line flag > environment ``SWARM_COORDINATOR_<FLAG>`` (e.g.
``SWARM_COORDINATOR_TARGET_TOKENS``; the field's name, e.g. ``..._MAX_AGE_S``, works too) >
manifest / price-table files > defaults. The flags that set one config field are generated from
it (``FIELD_FLAGS``: help, type and default from ``CoordinatorConfig``); config fields without a
flag still read ``SWARM_COORDINATOR_<FIELD>`` (pydantic-settings).
``node/cli/main.py`` delegates ``swarm coordinator ...`` here; ``python -m coordinator`` works too.

``swarm coordinator budget --db LEDGER [--url URL] --cap-per-hour X`` changes the budget of a running
coordinator: it signs a ``BudgetChange`` with the run key beside the ledger (only whoever holds that
file can) and posts it to ``/api/v1/budget``; the coordinator logs it as an event and re-plans.
"""
from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import signal
import ssl
import sys
import tomllib
from pathlib import Path
from typing import Any, get_args

from aiohttp import web
from pydantic import ValidationError

from ops.atomic import write_atomic
from ops.logs import add_log_arguments, setup_logging_from_args
from ops.sdnotify import notify
from protocol import DecodeError, RunManifest
from protocol.manifest import parse_manifest_file

from .app import create_app
from .config import TOKEN_COUNTS, CoordinatorConfig
from .cost import PriceTable
from .database import DATABASE_ERRORS, describe, ledger_target
from .keys import JOIN
from .planner import Budget
from .runkey import join_info
from .states import StateThresholds

__all__ = ["build_parser", "load_manifest", "load_price_table", "main", "serve"]

logger = logging.getLogger(__name__)

# flag -> the CoordinatorConfig field it sets; the flag's type, default and help come from the field
FIELD_FLAGS: dict[str, str] = {
    "host": "host", "port": "port", "db": "db_path", "run-key-file": "run_key_path", "target-tokens": "target_tokens",
    "corpus-tokens": "corpus_tokens",
    "initial-checkpoint": "initial_checkpoint", "max-age": "max_age_s", "max-future": "max_future_s", "rate": "rate_per_s",
    "burst": "rate_burst", "max-body": "max_body_bytes", "ip-rate": "ip_rate_per_s", "ip-burst": "ip_rate_burst",
    "sse-per-ip": "sse_per_ip", "sse-max-clients": "sse_max_clients", "sse-lifetime": "sse_max_lifetime_s",
    "sse-retry-after": "sse_retry_after_s", "sse-keepalive": "sse_keepalive_s", "seq-window": "seq_window",
    "round-lead": "max_round_lead", "start-round": "start_round",
    "snapshot-interval": "snapshot_interval_s", "plan-every-rounds": "plan_every_rounds", "plan-interval": "plan_interval_s",
    "public-url": "public_url", "tls-cert": "tls_cert", "tls-key": "tls_key", "trust-forwarded-for": "trust_forwarded_for",
}
_DEFAULT_DB = Path("capaswarm-ledger.sqlite3")


def _env_default(flag: str, field: str | None, kind: Any, default: Any) -> Any:
    """``SWARM_COORDINATOR_<FLAG>`` (or ``_<FIELD>``) when set, else ``default``: the environment sits under the flags."""
    names = [flag.replace("-", "_")] + ([field] if field and field != flag.replace("-", "_") else [])
    for name in names:
        value = os.environ.get("SWARM_COORDINATOR_" + name.upper())
        if value is not None:
            if kind is bool:
                return value.strip().lower() in ("1", "true", "yes", "on")
            return kind(value) if kind is not None else value
    return default


def _add_field_flag(p: argparse.ArgumentParser, flag: str, field: str) -> None:
    info = CoordinatorConfig.model_fields[field]
    kind: Any = next(t for t in get_args(info.annotation) or (info.annotation,) if t is not type(None))
    kind = float if field in TOKEN_COUNTS else ledger_target if field == "db_path" else kind
    default = _DEFAULT_DB if field == "db_path" else info.get_default(call_default_factory=True)
    opts: dict[str, Any] = {"help": info.description}
    if kind is bool:
        opts["action"] = "store_true"
    elif kind is not str:
        opts["type"] = kind
    p.add_argument(f"--{flag}", dest=flag.replace("-", "_"), default=_env_default(flag, field, kind, default), **opts)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="swarm coordinator",
        description="Contribution ledger, cost accounting and live dashboard for a capaswarm run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )

    def add(flag: str, kind: Any, default: Any, help: str) -> None:  # a flag that sets no one field
        opts: dict[str, Any] = {"action": "store_true"} if kind is bool else {"type": kind}
        p.add_argument(f"--{flag}", dest=flag.replace("-", "_"), default=_env_default(flag, None, kind, default), help=help,
                       **opts)

    for flag, field in FIELD_FLAGS.items():
        _add_field_flag(p, flag, field)
    thresholds = StateThresholds()
    add("manifest", Path, None, "run manifest, TOML or msgpack")
    add("run-id", str, "demo", "run id when no --manifest is given")
    add("price-table", Path, None, "TOML price table (see docs/coordinator.md)")
    add("electricity", float, None, "$ per kWh for volunteer GPUs")
    add("stale-after", float, thresholds.stale_after_s, "seconds of silence")
    add("offline-after", float, thresholds.offline_after_s, "seconds of silence")
    add("cap-per-hour", float, None, "budget: $/h the active peers may cost together")
    add("budget-total", float, None, "budget: $ the whole run may cost")
    add("deadline", float, None, "budget: reach the token target by this unix time")
    add("port-file", Path, None, "write the bound port here once listening")
    add("no-dialback", bool, False, "do not dial nodes back (and so list no bootstrap peers)")
    p.add_argument("--validator", dest="validator", action="append", default=None, metavar="PEER_ID",
                   help="a peer id whose spot-check verdicts count (repeat it; env SWARM_COORDINATOR_VALIDATORS=id1,id2)")
    add("flag-quorum", int, 2, "distinct validators whose failed verdicts on one (peer, round) take its credit away")
    add_log_arguments(p)
    return p


def load_manifest(path: Path) -> RunManifest:
    """A manifest from TOML (``*.toml``; fields at top level or under ``[manifest]``) or msgpack."""
    return parse_manifest_file(path.read_bytes(), path.name)


def load_price_table(path: Path | None, electricity: float | None) -> PriceTable:
    return PriceTable.from_toml(tomllib.loads(path.read_text()) if path else {}, electricity)


def config_from_args(args: argparse.Namespace) -> CoordinatorConfig:
    """The config from the flags (each default already the environment's value, or the field's)."""
    settings: dict[str, Any] = {field: getattr(args, flag.replace("-", "_")) for flag, field in FIELD_FLAGS.items()}
    settings.update(
        manifest=load_manifest(args.manifest) if args.manifest else RunManifest(run_id=args.run_id),
        thresholds=StateThresholds(stale_after_s=args.stale_after, offline_after_s=args.offline_after),
        prices=load_price_table(args.price_table, args.electricity),
        budget=Budget(cap_usd_per_hour=args.cap_per_hour, total_usd=args.budget_total, deadline=args.deadline),
    )
    if args.validator:  # else SWARM_COORDINATOR_VALIDATORS or none
        settings["validators"] = tuple(args.validator)
    settings["flag_quorum"] = args.flag_quorum
    if args.no_dialback:  # else SWARM_COORDINATOR_DIALBACK or the default
        settings["dialback"] = False
    try:
        return CoordinatorConfig(**settings)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'config'}: {err['msg']}" for err in e.errors())
        raise ValueError(problems) from None


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
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port, reuse_address=True, ssl_context=_ssl_context(config))
        await site.start()
        port = runner.addresses[0][1]
        scheme = "https" if config.tls_cert else "http"
        logger.info("coordinator for run %r listening on %s://%s:%d/ (ledger %s)", config.run_id, scheme, config.host, port,
                    describe(config.db_path))
        join = app[JOIN]
        if not config.public_url:  # the port is known only now (0 picks one)
            join.update(join_info(f"{scheme}://{config.host}:{port}", join["run_key"]))
        print(f"Volunteers join this run with:\n  {join['join_line']}", flush=True)
        if port_file is not None:
            write_atomic(port_file, f"{port}\n")
        notify("READY=1", f"STATUS=listening on {config.host}:{port}, run {config.run_id}")
        await stop.wait()
        logger.info("shutting down")
        notify("STOPPING=1")
    finally:
        await runner.cleanup()


def build_budget_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="swarm coordinator budget",
                                description="change a running run's budget (signed with the run key)")
    p.add_argument("--db", type=ledger_target, required=True,
                   help="the coordinator's ledger (a SQLite ledger's run key file lies beside it)")
    p.add_argument("--run-key-file", type=Path, default=None, help="the run key, if not beside the ledger")
    p.add_argument("--url", default="http://127.0.0.1:8080", help="the running coordinator")
    p.add_argument("--cap-per-hour", type=float, default=None, help="$/h cap; negative clears it")
    p.add_argument("--total", type=float, default=None, help="$ for the whole run; negative clears it")
    p.add_argument("--deadline", type=float, default=None, help="unix time to reach the target by; negative clears it")
    p.add_argument("--target-tokens", type=float, default=None, help="the run's token target")
    return p


def budget_main(argv: list[str]) -> int:
    """Sign a budget change with the run key and post it. One line out, exit 0 when applied."""
    import json
    import time
    import urllib.error
    import urllib.request

    from protocol import BudgetChange, Identity, seal

    args = build_budget_parser().parse_args(argv)
    try:
        key_file = args.run_key_file or CoordinatorConfig(db_path=args.db).run_key_file
    except ValueError as e:
        print(f"swarm coordinator budget: {e}", file=sys.stderr)
        return 2
    if not key_file.exists():
        print(f"swarm coordinator budget: no run key at {key_file} (give --db of the running coordinator's ledger)",
              file=sys.stderr)
        return 2
    if all(v is None for v in (args.cap_per_hour, args.total, args.deadline, args.target_tokens)):
        print("swarm coordinator budget: nothing to change (give --cap-per-hour, --total, --deadline or --target-tokens)",
              file=sys.stderr)
        return 2
    url = args.url.rstrip("/")
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=10) as resp:
            run_id = json.loads(resp.read())["run_id"]
        change = BudgetChange(run_id=run_id, seq=time.time_ns() // 1000, sent_at=time.time(), cap_usd_per_hour=args.cap_per_hour,
                              total_usd=args.total, deadline=args.deadline,
                              target_tokens=None if args.target_tokens is None else int(args.target_tokens))
        body = seal(change, Identity.load(key_file))
        request = urllib.request.Request(url + "/api/v1/budget", data=body, headers={"Content-Type": "application/msgpack"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            print(json.loads(resp.read())["detail"])
        return 0
    except urllib.error.HTTPError as e:
        print(f"swarm coordinator budget: refused ({e.code}): {e.read().decode(errors='replace')[:300]}", file=sys.stderr)
        return 1
    except (OSError, ValueError, KeyError) as e:
        print(f"swarm coordinator budget: cannot reach {url}: {e}", file=sys.stderr)
        return 1


def _ssl_context(config: CoordinatorConfig) -> ssl.SSLContext | None:
    if config.tls_cert is None and config.tls_key is None:
        return None
    if config.tls_cert is None or config.tls_key is None:
        raise ValueError("--tls-cert and --tls-key go together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_cert, config.tls_key)
    return context


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "budget":
        return budget_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        setup_logging_from_args(args, name="coordinator ")
    except OSError as e:  # an unwritable --log-file
        print(f"swarm coordinator: cannot write the log file: {e}", file=sys.stderr)
        return 2
    try:
        config = config_from_args(args)
        config.check_initial_checkpoint()
    except (OSError, ValueError, DecodeError, tomllib.TOMLDecodeError) as e:
        logger.error("bad configuration: %s", e)
        return 2
    try:
        asyncio.run(serve(config, port_file=args.port_file))
    except ssl.SSLError as e:
        logger.error("cannot load the TLS certificate/key: %s", e)
        return 2
    except ValueError as e:
        logger.error("bad configuration: %s", e)
        return 2
    except DATABASE_ERRORS as e:  # a server that is down, refuses us, or a file that is not a ledger
        logger.error("cannot open the ledger %s: %s", describe(config.db_path), str(e).strip().splitlines()[0])
        return 1
    except OSError as e:
        logger.error("cannot serve on %s:%d: %s", config.host, config.port, e)
        return 1
    return 0
