"""The ``swarm`` subcommands other packages own (``swarm coordinator | sim | plan | bench``), found by
entry point, so ``node`` imports nothing of ``coordinator``, ``sim`` or ``benchmarks`` (import-linter).

A package registers a command in pyproject.toml's ``[project.entry-points."capaswarm.commands"]`` as
``NAME = "module:main"``, with ``main(argv: list[str]) -> int``. The table is read from the installed
distribution's metadata and, when ``node`` runs from a source tree (a checkout on ``PYTHONPATH``, or an
editable install made before a command was added), from that tree's pyproject.toml, which wins: it is
the truth of the code being run.
"""
from __future__ import annotations

import importlib
import tomllib
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

__all__ = ["GROUP", "find_commands", "load_command"]

GROUP = "capaswarm.commands"
_SOURCE_PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _from_source_tree(pyproject: Path) -> dict[str, str]:
    try:
        project = tomllib.loads(pyproject.read_text()).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    if project.get("name") != "capaswarm":  # a site-packages dir beside someone else's pyproject
        return {}
    return dict(project.get("entry-points", {}).get(GROUP, {}))


def find_commands(pyproject: Path = _SOURCE_PYPROJECT) -> dict[str, str]:
    """``{name: "module:function"}`` of every registered subcommand."""
    commands = {ep.name: ep.value for ep in entry_points(group=GROUP)}
    commands.update(_from_source_tree(pyproject))
    return commands


def load_command(target: str) -> Callable[[list[str]], int]:
    """The function ``"module:function"`` names (its module is imported only now)."""
    module, _, attr = target.partition(":")
    fn: Callable[[list[str]], int] = getattr(importlib.import_module(module), attr)
    return fn
