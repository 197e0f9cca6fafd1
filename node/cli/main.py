"""The ``swarm`` command: a thin layer over the config tree. No logic lives here.

    swarm join         run a node (the volunteer's one command)
    swarm ctl CMD      pause | resume | status | leave a running node (through its state dir's socket)
    swarm demo         a whole local swarm (and its coordinator) on 127.0.0.1
    swarm coordinator  the contribution ledger and dashboard service
    swarm sim          the swarm simulator (sim/)
    swarm plan         before a run: time and $ to the target, admit everyone vs the cost plan (sim/)
    swarm bench SUITE  benchmarks: quality (token-space), bytes, allreduce, ... (benchmarks/)
    swarm export       the global model in the Hugging Face GPT-2 layout, with its model card
    swarm generate     sample text from an export or a state dir
    swarm certificate  verify (offline) or fetch an attribution certificate signed by the run key
    swarm data         prepare a corpus as memory-mapped token shards

coordinator, sim, plan and bench belong to other packages, found by entry point (node/cli/subcommands.py).
"""
from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import sys
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic.fields import FieldInfo

from node.cli.commands import MODEL_COMMANDS, add_model_commands, run_model_command
from node.host.config import NodeConfig
from node.cli.subcommands import find_commands, load_command
from ops.logs import add_log_arguments, setup_logging, setup_logging_from_args
from protocol import PROTOCOL_VERSION, SOFTWARE_VERSION
from protocol.manifest import CODECS as CODEC_NAMES

__all__ = ["build_parser", "join_overrides", "main"]


def _flag_options(field: FieldInfo) -> dict[str, Any]:
    """argparse options for one NodeConfig field: help from its description, type and choices from its annotation."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    opts: dict[str, Any] = {"help": (field.description or "").replace("%", "%%")}
    if "metavar" in extra:
        opts["metavar"] = extra["metavar"]
    default = field.get_default(call_default_factory=True)
    if default not in (None, "", [], False) and "default" not in opts["help"]:
        shown = " ".join(map(str, default)) if isinstance(default, list) else default
        opts["help"] += f" (default {shown})"
    kinds = [t for t in get_args(field.annotation) if t is not type(None)] if get_origin(field.annotation) in (Union, UnionType) \
        else [field.annotation]
    (kind,) = kinds
    if kind is bool:  # a switch: given means True (--no-X False where the default is True); not given: env/file/default
        opts.update(action=argparse.BooleanOptionalAction if default is True else "store_true", default=None)
    elif get_origin(kind) is list:
        opts["nargs"] = "+"
    elif get_origin(kind) is Literal:
        opts["choices"] = list(get_args(kind))
    elif kind in (int, float, Path):
        opts["type"] = kind
    return opts


# ``swarm join``'s flags, generated from NodeConfig: flag -> argparse options. Every field is a flag
# unless marked ``flag: False``; tests/node/test_config_cli.py freezes the set of names.
JOIN_FLAGS: dict[str, dict[str, Any]] = {
    name.replace("_", "-"): _flag_options(field) for name, field in NodeConfig.model_fields.items()
    if not (isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("flag") is False)
}


# --help lines of the commands other packages register (``capaswarm.commands`` in pyproject.toml)
_OTHER_HELP = {
    "coordinator": "run the contribution ledger and dashboard",
    "sim": "simulate a swarm of thousands of nodes",
    "plan": "time and $ to the token target: admit everyone vs the cost plan",
    "bench": "run a benchmark suite: quality, attacks, bytes, allreduce, utilization, versus, churn, nat, clean",
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("capaswarm")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swarm", description="capaswarm: pre-train one model on volunteered GPUs")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (and tracebacks with errors)")
    parser.add_argument("--version", action="version", version=f"capaswarm {SOFTWARE_VERSION} (protocol {PROTOCOL_VERSION})")
    sub = parser.add_subparsers(dest="command", required=True)

    join = sub.add_parser("join", help="join a swarm and train (the volunteer's one command)")
    join.add_argument("--config", type=Path, help="TOML file with any of the settings below")
    add_log_arguments(join)
    for flag, opts in JOIN_FLAGS.items():
        names = [f"--{flag}"] + ([f"--{flag.replace('-', '_')}"] if "-" in flag else [])
        join.add_argument(*names, dest=flag.replace("-", "_"), **opts)

    ctl = sub.add_parser("ctl", help="pause, resume, show or stop a running node from another terminal")
    ctl.add_argument("action", choices=["pause", "resume", "status", "leave"])
    ctl.add_argument("--state-dir", "--state_dir", dest="state_dir", type=Path,
                     help="the node's state dir (default: as swarm join: SWARM_STATE_DIR or ~/.capaswarm)")
    ctl.add_argument("--reason", default="", help="pause: a note shown with the paused status")
    ctl.add_argument("--json", action="store_true", help="print the node's reply as JSON")

    demo = sub.add_parser("demo", help="run a whole local swarm on 127.0.0.1")
    demo.add_argument("--nodes", type=int, default=3)
    demo.add_argument("--seconds", type=float, default=None, help="stop by itself after this long")
    demo.add_argument("--report", type=Path, default=None, help="write a JSON report here")
    demo.add_argument("--workdir", type=Path, default=None, help="state of every node (default: a temp dir)")
    demo.add_argument("--model", default="tiny")
    demo.add_argument("--codec", default="fp16", choices=sorted(CODEC_NAMES))
    demo.add_argument("--data", type=Path, default=None,
                      help="your own text, a file or a folder, for every node (default: Python stdlib sources)")
    demo.add_argument("--round-tokens", "--round_tokens", dest="round_tokens", type=int, default=None)
    demo.add_argument("--port", type=int, default=0, help="dashboard port (default: any free port)")
    demo.add_argument("--no-coordinator", action="store_true", help="do not start the coordinator")

    add_model_commands(sub)

    # other packages' commands (found by entry point; they own their flags): listed here for --help
    for name in find_commands():
        sub.add_parser(name, help=_OTHER_HELP.get(name, f"`swarm {name} --help` for its options"), add_help=False)
    return parser


def _delegate(target: str, argv: list[str]) -> int:
    """Hand ``swarm NAME ARGS...`` to the ``main(argv) -> int`` another package registered for NAME."""
    return int(load_command(target)(argv))


def _ctl(args: argparse.Namespace) -> int:
    import json

    from node.host.config import ConfigError, NodeConfig
    from node.host.ctl import CtlError, format_reply, request

    try:
        state_dir = Path(args.state_dir).expanduser() if args.state_dir else NodeConfig().state_dir
        reply = request(state_dir, args.action, reason=args.reason)
    except (CtlError, ConfigError, ValueError) as e:
        print(f"swarm ctl: {e}", file=sys.stderr)  # one line for a person, whatever logging is set up
        return 1
    print(json.dumps(reply, indent=1) if args.json else format_reply(args.action, reply), flush=True)
    return 0


def join_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config settings that ``swarm join``'s flags give (logging flags are set up before the config)."""
    not_settings = ("command", "verbose", "config", "log_file", "log_level", "log_format", "log_max_mb", "log_backups")
    return {k: v for k, v in vars(args).items() if k not in not_settings}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    others = find_commands() if argv else {}
    if argv and argv[0] in others:
        return _delegate(others[argv[0]], argv[1:])
    args = build_parser().parse_args(argv)
    if args.command in MODEL_COMMANDS:
        setup_logging(logging.DEBUG if args.verbose else logging.INFO)
        return run_model_command(args)
    if args.command == "demo":
        setup_logging(logging.DEBUG if args.verbose else logging.INFO)
        from node.cli.demo import run_demo

        return run_demo(args)
    if args.command == "ctl":
        return _ctl(args)
    mp.set_start_method("fork", force=True)  # hivemind's DHT and averager are forked processes
    from node.uplink.bootstrap import JoinError
    from node.host.config import ConfigError, load_config
    from node.train.ddp import LocalGroupError

    try:
        setup_logging_from_args(args, verbose=args.verbose)
    except OSError as e:  # an unwritable --log-file
        print(f"swarm: cannot write the log file: {e}", file=sys.stderr)
        return 2
    log = logging.getLogger("swarm")
    try:
        cfg = load_config(join_overrides(args), args.config)
        if cfg.check:
            from node.cli.preflight import run_check

            return run_check(cfg)
        from node.daemon.node import run_node

        return run_node(cfg)
    # errors a person can act on: one line, no traceback (unless -v)
    except JoinError as e:
        log.error("%s", e, exc_info=args.verbose)
        return 1
    except (ConfigError, ValueError, FileNotFoundError) as e:
        log.error("%s", e, exc_info=args.verbose)
        return 2
    except LocalGroupError as e:  # a device's process died: exit non-zero, the supervisor restarts us
        logging.getLogger("swarm").error("%s", e, exc_info=args.verbose)
        return 1
