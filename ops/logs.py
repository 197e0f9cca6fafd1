"""Logging set-up for ``swarm join`` and ``swarm coordinator``: one place, one set of flags.

Lines are human (``HH:MM:SS level message``) or JSON (one object per line, for log shippers);
``auto`` picks human on a terminal and JSON elsewhere (a pipe, journald, a container runtime). A
``--log-file`` is rotated by size (``RotatingFileHandler``): at most ``backups`` old files of
``max_bytes`` each, so a node that runs for weeks cannot fill its disk with logs.
"""
from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import sys
import time
from pathlib import Path

__all__ = ["LOG_FORMATS", "LOG_LEVELS", "JsonLines", "add_log_arguments", "setup_logging", "setup_logging_from_args"]

LOG_FORMATS = ("auto", "human", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _human(name: str) -> logging.Formatter:
    formatter = logging.Formatter(f"%(asctime)s {name}%(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    formatter.converter = time.gmtime  # UTC, like the JSON timestamps
    return formatter


def setup_logging(
    level: int | str = logging.INFO,
    name: str = "",
    *,
    log_file: Path | None = None,
    log_format: str = "auto",
    max_bytes: int = 50 * 2**20,
    backups: int = 5,
) -> None:
    """Route the root logger to stderr, or to a rotating ``log_file``, in ``log_format``."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r}: choose one of {', '.join(LOG_FORMATS)}")
    if isinstance(level, str):
        if level.lower() not in LOG_LEVELS:
            raise ValueError(f"log level {level!r}: choose one of {', '.join(LOG_LEVELS)}")
        level = getattr(logging, level.upper())
    handler: logging.Handler
    if log_file is not None:
        log_file = Path(log_file).expanduser()
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(log_file, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        human = log_format == "human"  # a file is read by tools unless asked otherwise
    else:
        handler = logging.StreamHandler(sys.stderr)
        human = log_format == "human" or (log_format == "auto" and sys.stderr.isatty())
    handler.setFormatter(_human(name) if human else JsonLines())
    root = logging.getLogger()
    for old in root.handlers:
        old.close()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("hivemind", "asyncio"):
        logging.getLogger(noisy).setLevel(max(int(level), logging.WARNING))


def add_log_arguments(parser: argparse.ArgumentParser) -> None:
    """The logging flags, identical on every command that runs a service."""
    parser.add_argument("--log-file", dest="log_file", type=Path, default=None,
                        help="write logs to this file (rotated by size) instead of stderr")
    parser.add_argument("--log-level", dest="log_level", type=str.lower, choices=LOG_LEVELS, default=None,
                        help="least severe level logged (default info; -v means debug)")
    parser.add_argument("--log-format", dest="log_format", choices=LOG_FORMATS, default="auto",
                        help="human lines, JSON lines, or auto (human on a terminal, JSON elsewhere)")
    parser.add_argument("--log-max-mb", dest="log_max_mb", type=float, default=50.0,
                        help="rotate the log file past this size, MB")
    parser.add_argument("--log-backups", dest="log_backups", type=int, default=5,
                        help="rotated log files kept")


def setup_logging_from_args(args: argparse.Namespace, name: str = "", verbose: bool = False) -> None:
    """``setup_logging`` from the flags of :func:`add_log_arguments`."""
    level = args.log_level or ("debug" if verbose else "info")
    setup_logging(level, name, log_file=args.log_file, log_format=args.log_format,
                  max_bytes=max(1, int(args.log_max_mb * 2**20)), backups=max(0, args.log_backups))
