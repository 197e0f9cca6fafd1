"""Where and when a suite ran: CPU, cores, kernel, package versions, git commit, load and steal.

:func:`fingerprint` at the start of a run; ``Fingerprint.finish()`` adds the end-of-run load and
the CPU time stolen by the hypervisor meanwhile (a noisy neighbour shows up there), and returns
the JSON-able record every suite's result carries (``output.suite_result``).
"""
from __future__ import annotations

import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Fingerprint", "fingerprint"]

REPO = Path(__file__).resolve().parents[2]


def _steal() -> int:
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return int(fields[8]) if len(fields) > 8 else 0


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("torch", "hivemind", "numpy", "capaswarm"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "absent"
    return out


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=5)
        return out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


@dataclass
class Fingerprint:
    """Where and when a suite ran; ``finish()`` adds the end-of-run load."""

    cpu: str = field(default_factory=_cpu_model)
    cores: int = field(default_factory=lambda: os.cpu_count() or 0)
    kernel: str = field(default_factory=platform.release)
    versions: dict[str, str] = field(default_factory=_versions)
    git_commit: str = field(default_factory=_git_commit)
    started_at: float = field(default_factory=time.time)
    load_start: tuple[float, ...] = field(default_factory=os.getloadavg)
    steal_start: int = field(default_factory=_steal)
    load_end: tuple[float, ...] = ()
    steal_ticks: int = 0
    seeds: dict[str, Any] = field(default_factory=dict)

    def finish(self) -> dict[str, Any]:
        self.load_end = os.getloadavg()
        self.steal_ticks = _steal() - self.steal_start
        return asdict(self)


def fingerprint(**seeds: Any) -> Fingerprint:
    return Fingerprint(seeds=dict(seeds))
