"""sim reuses only pure code: an allow-list check that does not go stale as node/ and coordinator/
grow (import-linter's contract is a deny-list of the modules that exist today)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = ("protocol", "node.policies", "coordinator.cost", "coordinator.states", "coordinator.planner", "sim")

_PROBE = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys
    import sim
    for info in pkgutil.walk_packages(sim.__path__, prefix="sim."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    print(json.dumps(sorted(sys.modules)))
    """
)


def _allowed(module: str) -> bool:
    if module in ("node", "coordinator"):  # parent packages run their (light) __init__
        return True
    return any(module == a or module.startswith(a + ".") for a in ALLOWED)


def test_importing_every_sim_module_loads_only_pure_project_code():
    done = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    project = {m for m in loaded if m.split(".")[0] in ("protocol", "node", "coordinator", "sim")}
    assert "sim.swarm" in project and "coordinator.cost" in project  # the probe saw what it should
    assert sorted(m for m in project if not _allowed(m)) == []
    # matplotlib (and numpy with it) only when plots are written: sim.plots imports it inside line_chart
    assert not {"torch", "hivemind", "aiohttp", "libp2p", "numpy", "matplotlib"} & {m.split(".")[0] for m in loaded}


def test_the_allow_list_check_can_fail():
    assert not _allowed("node.train.trainer") and not _allowed("coordinator.store") and not _allowed("nodes")
    assert _allowed("node.policies.grouping") and _allowed("coordinator.cost")
