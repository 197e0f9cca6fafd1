"""Benchmark suites on shaped links: ``swarm bench SUITE --out DIR`` or ``python -m benchmarks.suites SUITE``.

Map of this package (each suite module exposes ``main(argv) -> int``; docs/benchmarks.md has the protocol)::

    swarm.py        a suite's swarm: its coordinator and ``swarm join`` nodes in a testbed (the one launcher,
                    ``node.cli.launcher.SwarmLauncher``), ledger reports, byte-counter samples, the CPU lock, shared flags
    provenance.py   the run fingerprint: CPU, kernel, versions, git commit, load and steal
    analysis.py     quantiles and traffic bursts from counter samples (pure)
    output.py       a suite's JSON document, markdown and PNG files
    charts.py       bar and line charts as PNG bytes (matplotlib, Agg)
    bytes.py        wire and payload bytes per peer per round vs 2(N-1)/N x compressed payload, every codec
    allreduce.py    all-reduce efficiency: bound time / measured time at tbf caps of 5-100 Mbit/s
    utilization.py  compute utilization of a swarm vs its no-communication twin (one node alone)
    versus.py       time to a target validation loss, DiLoCo vs ``--algorithm sync``, ABAB interleaved
    churn.py        kill a peer in the inner phase and mid-all-reduce, restart it: stall, excursion, catch-up
    nat.py          4 nodes with 2 behind NAT routers vs 4 public: round time B / A, bytes relays may carry per round
    size.py         a real-size model (86M, loopback): peak memory vs ``join --check``, round split, joiner, checkpoint, export

``bench clean`` removes leftover ``csw-`` namespaces (:func:`benchmarks.netns.clean`).
Imports: ``benchmarks.netns``, ``node`` (launcher, config, manifests, codecs), ``protocol`` and matplotlib; the nodes
themselves run as separate ``python -m node join`` processes.
"""
from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable

from node.host.lifeline import unwind_on_signals

__all__ = ["SUITES", "main"]

_NAMES = ("bytes", "allreduce", "utilization", "versus", "churn", "nat", "size")


def _lazy(name: str) -> Callable[[list[str]], int]:
    def run(argv: list[str]) -> int:
        return int(importlib.import_module(f"benchmarks.suites.{name}").main(argv))

    run.__name__ = f"{name}_main"
    run.__doc__ = f"``swarm bench {name}``: see benchmarks/suites/{name}.py"
    return run


SUITES: dict[str, Callable[[list[str]], int]] = {name: _lazy(name) for name in _NAMES}


def _clean(argv: list[str]) -> int:
    from benchmarks.netns import NeedsRootError, clean, require_root

    try:
        require_root()
    except NeedsRootError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    removed = clean()
    print("removed: " + (", ".join(removed) if removed else "nothing"))
    return 0


USAGE = f"""usage: swarm bench {{{','.join(_NAMES)},clean}} --out DIR [options]

  {'  '.join(_NAMES)}   run a suite (``swarm bench SUITE -h`` for its options)
  clean   remove leftover csw- network namespaces and the processes inside them
"""


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``[bench] SUITE ARGS...``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        argv = argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name == "clean":
        return _clean(rest)
    if name not in SUITES:
        print(f"unknown suite {name!r}\n{USAGE}", file=sys.stderr)
        return 2
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    # SIGINT/SIGTERM/SIGHUP unwind, so every ``with`` stops its nodes and removes its namespaces; the
    # first one only: a second (Ctrl-C, then SIGTERM) must not cut that clean-up short
    restore = unwind_on_signals(lambda signum: SystemExit(128 + signum))
    try:
        return SUITES[name](rest)
    finally:
        restore()
