"""What a suite writes: its JSON document, markdown table and PNG charts.

:func:`suite_result` builds the JSON document (suite, arguments, fingerprint, figures);
:func:`write_outputs` writes ``<name>.json``, ``<name>.md`` and ``<name>-<chart>.png``;
:func:`publish` does that, lists the files and prints the table.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["publish", "suite_result", "write_outputs"]


def write_outputs(out: Path, name: str, result: dict[str, Any], markdown: str, charts: dict[str, bytes]) -> list[Path]:
    """``<name>.json``, ``<name>.md`` and ``<name>-<chart>.png`` (PNG bytes from ``charts.py``) under
    ``out``; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.json", out / f"{name}.md"]
    paths[0].write_text(json.dumps(result, indent=1, default=str) + "\n")
    paths[1].write_text(markdown)
    for chart, png in charts.items():
        path = out / f"{name}-{chart}.png"
        path.write_bytes(png)
        paths.append(path)
    return paths


def suite_result(suite: str, args: argparse.Namespace, fp: Any, **body: Any) -> dict[str, Any]:
    """A suite's JSON document: its name, its arguments, the run's fingerprint, then its figures."""
    return {"suite": suite, "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "fingerprint": fp.finish(), **body}


def publish(out: Path, result: dict[str, Any], md: str, charts: dict[str, bytes]) -> int:
    """Write a suite's outputs (:func:`write_outputs`), list them, print its table; the exit code 0."""
    for path in write_outputs(out, result["suite"], result, md, charts):
        print(path)
    print(md)
    return 0
