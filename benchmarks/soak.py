"""Forks under load: the overlap and churn swarm tests, run again and again beside a CPU hog.

    python -m benchmarks.soak --repeats 20 --hogs 1 --out bench-out/soak

Each repeat runs ``tests/node/test_overlap.py`` and the two cases of ``tests/node/test_churn.py``
(a peer killed, a peer frozen, mid-all-reduce) under pytest, with ``--hogs`` busy loops
(``yes > /dev/null``) beside them, and keeps each run's node directories. From every node's
``status.json`` it then counts *forked rounds*: rounds, from the one after every node's first
contribution on, that two nodes completed with different global states (``hashes``: round ->
state hash). The goal is 0 (node/policies/agreement.py). A run's pytest verdict is recorded too: a failed
test is a finding, not a reason to stop the soak.

Bounded: ``--repeats`` runs of each test, each under pytest's own timeout and ``--run-timeout-s``;
the hogs are killed when the soak ends, however it ends. Not part of CI (it takes an hour at 20).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["TESTS", "build_parser", "forked_rounds", "main"]

TESTS = {  # name -> pytest arguments
    "overlap": ["tests/node/test_overlap.py"],
    "churn-kill": ["tests/node/test_churn.py", "-k", "kill"],
    "churn-hang": ["tests/node/test_churn.py", "-k", "hang"],
}


def forked_rounds(statuses: dict[str, dict[str, Any]]) -> tuple[list[int], int]:
    """(rounds two nodes hold different states of, rounds checked), from the round after every node's
    first contribution on. Nodes that never contributed are left out; a round counts where at least
    two nodes completed it (a victim's or a late node's rounds included)."""
    nodes = [st for st in statuses.values() if st.get("first_contribution") is not None and st.get("hashes")]
    if len(nodes) < 2:
        return [], 0
    settled = max(int(st["first_contribution"]) for st in nodes) + 1
    held: dict[int, set[str]] = {}
    count: dict[int, int] = {}
    for st in nodes:
        for r, h in st["hashes"].items():
            if int(r) > settled:
                held.setdefault(int(r), set()).add(h)
                count[int(r)] = count.get(int(r), 0) + 1
    checked = sorted(r for r, n in count.items() if n >= 2)
    return [r for r in checked if len(held[r]) > 1], len(checked)


def _statuses(run_dir: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Every test's node statuses under a pytest ``--basetemp``: {test dir: {node: status}}."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for path in sorted(run_dir.glob("*/*/status.json")):
        if path.parent.parent.is_symlink():  # pytest's "<test>current" link to the same directory
            continue
        try:
            out.setdefault(path.parent.parent.name, {})[path.parent.name] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
    return out


def run_once(name: str, run_dir: Path, timeout_s: float) -> dict[str, Any]:
    """One pytest run of test ``name``: its verdict, wall time, and the rounds its nodes forked."""
    t0 = time.monotonic()
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS[name], "--basetemp", str(run_dir)]
    try:
        rc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout_s).returncode
    except subprocess.TimeoutExpired:
        rc = -1
    wall = time.monotonic() - t0
    forked, checked = [], 0
    for sts in _statuses(run_dir).values():
        f, c = forked_rounds(sts)
        forked, checked = forked + f, checked + c
    return {"test": name, "rc": rc, "wall_s": round(wall, 1), "rounds_checked": checked, "forked": forked}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=20, help="runs of each test")
    p.add_argument("--hogs", type=int, default=1, help="busy loops (`yes > /dev/null`) beside the tests")
    p.add_argument("--tests", nargs="+", choices=list(TESTS), default=list(TESTS))
    p.add_argument("--run-timeout-s", type=float, default=900.0, help="the most one pytest run may take")
    p.add_argument("--out", type=Path, default=Path("bench-out/soak"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    hogs = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(args.hogs)]
    rows: list[dict[str, Any]] = []
    try:
        for i in range(args.repeats):
            for name in args.tests:
                rows.append({"repeat": i, **run_once(name, args.out / f"{name}-{i:02d}", args.run_timeout_s)})
                print(json.dumps(rows[-1]), flush=True)
                (args.out / "runs.json").write_text(json.dumps(rows, indent=1))
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    print(f"\n{args.hogs} CPU hog(s) beside the tests\n")
    print("| test | runs | tests failed | rounds checked | forked rounds | median wall s |\n|---|---|---|---|---|---|")
    for name in args.tests:
        mine = [r for r in rows if r["test"] == name]
        if mine:
            walls = sorted(r["wall_s"] for r in mine)
            print(f"| {name} | {len(mine)} | {sum(r['rc'] != 0 for r in mine)} | {sum(r['rounds_checked'] for r in mine)} | "
                  f"{sum(len(r['forked']) for r in mine)} | {walls[len(walls) // 2]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
