"""Architecture checks: the layering in pyproject's import-linter contracts, what each package
drags in at runtime, and protocol's curated public API.

The runtime checks import every submodule of a package (not just its ``__init__``) in a fresh
interpreter, so they keep their meaning as the packages grow, and they also see what
import-linter cannot: imports done through a third-party package or by ``importlib``.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
import types
from pathlib import Path

import pytest

import protocol

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_hold():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    result = subprocess.run(
        [exe, "--no-cache", "--no-logo"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_finds_no_unused_or_undefined_names():
    """pyflakes-level lint (config in pyproject): unused imports, undefined names, syntax errors, and
    lines longer than the project's line length."""
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_line_length_exemptions_only_shrink():
    """E501 is on; the files still exempt (pyproject per-file-ignores) are a shrinking to-do list, and
    the strictly typed, pure packages are never on it."""
    lint = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]
    assert "E501" in lint["select"]
    exempt = [path for path, codes in lint.get("per-file-ignores", {}).items() if "E501" in codes]
    assert len(exempt) <= 25, "wrap the long lines instead of exempting another file"
    assert [p for p in exempt if p.startswith(("protocol/", "ops/", "sim/", "node/policies/"))] == []
    assert [p for p in exempt if not (ROOT / p).is_file()] == []  # no stale entries (and no globs)


@pytest.mark.parametrize(
    "package, heavy",
    [
        ("protocol", {"torch", "hivemind"}),
        ("coordinator", {"torch", "hivemind"}),
        ("node.policies", {"torch", "hivemind"}),
        ("sim", {"torch", "hivemind"}),
    ],
)
def test_import_linter_has_a_contract_keeping_heavy_packages_out(package, heavy):
    """Guards the guard: a deleted or loosened contract would make the check above vacuous."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    forbidden = set()
    for contract in config["contracts"]:
        if contract["type"] == "forbidden" and package in contract["source_modules"]:
            forbidden |= set(contract["forbidden_modules"])
    assert heavy <= forbidden


_LOADED_AFTER_IMPORT = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys

    for name in sys.argv[1:]:
        package = importlib.import_module(name)
        for info in pkgutil.walk_packages(package.__path__, prefix=name + "."):
            if info.name.rsplit(".", 1)[-1] != "__main__":  # running it would start the program
                importlib.import_module(info.name)
    print(json.dumps(sorted(sys.modules)))
    """
)


def _modules_loaded_by_importing(*packages: str) -> set[str]:
    """``sys.modules`` of a fresh interpreter after importing ``packages`` and all their submodules."""
    result = subprocess.run(
        [sys.executable, "-c", _LOADED_AFTER_IMPORT, *packages],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


def _offenders(loaded: set[str], forbidden: set[str]) -> list[str]:
    return sorted(m for m in loaded if any(m == f or m.startswith(f + ".") for f in forbidden))


def test_pure_packages_load_neither_torch_nor_hivemind():
    loaded = _modules_loaded_by_importing("protocol", "node.policies", "sim")
    assert {"protocol.envelope", "node.policies"} <= loaded  # the probe imported what it should
    assert _offenders(loaded, {"torch", "hivemind"}) == []


def test_coordinator_loads_no_torch_hivemind_or_node():
    loaded = _modules_loaded_by_importing("coordinator")
    assert "coordinator" in loaded and "protocol" in loaded
    assert _offenders(loaded, {"torch", "hivemind", "node"}) == []


def test_the_probe_sees_what_submodules_drag_in():
    """The checks above can fail: ``xmlrpc/__init__`` imports nothing, but ``xmlrpc.server``
    (found by the walk) imports ``http.server``."""
    loaded = _modules_loaded_by_importing("xmlrpc")
    assert "http.server" in _offenders(loaded, {"http"})
    assert _offenders({"torch.nn", "torchvision", "hivemind"}, {"torch", "hivemind"}) == ["hivemind", "torch.nn"]


# --- protocol's public API ---------------------------------------------------------------------


def test_protocol_all_names_exist():
    missing = [name for name in protocol.__all__ if not hasattr(protocol, name)]
    assert missing == []
    assert len(set(protocol.__all__)) == len(protocol.__all__)


def test_protocol_public_names_are_all_exported():
    """Everything public in ``protocol`` is in ``__all__`` (submodules aside), like httpx."""
    public = {
        name
        for name, value in vars(protocol).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType) and name != "annotations"
    }
    assert public - set(protocol.__all__) == set()


@pytest.mark.parametrize(
    "module", sorted(m for m, v in vars(protocol).items() if isinstance(v, types.ModuleType) and m != "annotations")
)
def test_protocol_submodule_all_names_exist(module):
    sub = getattr(protocol, module)
    assert hasattr(sub, "__all__"), f"protocol.{module} has no __all__"
    assert [name for name in sub.__all__ if not hasattr(sub, name)] == []


# --- package maps --------------------------------------------------------------------------------

_MAPPED_PACKAGES = ["protocol", "ops", "node", "node/policies", "coordinator", "sim", "benchmarks", "benchmarks/suites"]


def _map_of(package: Path) -> str:
    import ast

    return ast.get_docstring(ast.parse((package / "__init__.py").read_text())) or ""


def _unnamed_modules(package: Path) -> list[str]:
    """Modules (``x.py``) and sub-packages (``x/``) of ``package`` its ``__init__`` docstring does not name."""
    doc = _map_of(package)
    names = [p.name for p in package.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    names += [p.name + "/" for p in package.iterdir() if (p / "__init__.py").exists()]
    return sorted(n for n in names if not re.search(r"(?<![\w./])" + re.escape(n) + r"(?![\w/])", doc))


@pytest.mark.parametrize("package", _MAPPED_PACKAGES)
def test_package_map_names_every_module(package):
    """Each package opens with a true map: its ``__init__`` docstring names every file in it."""
    assert _unnamed_modules(ROOT / package) == []


def test_package_map_check_can_fail(tmp_path):
    (tmp_path / "__init__.py").write_text('"""Map::\n\n    a.py  the a, not data.py\n    sub/  the sub\n"""\n')
    for name in ("a.py", "b.py", "ta.py", "__main__.py"):
        (tmp_path / name).write_text("")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "__init__.py").write_text("")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "__init__.py").write_text("")
    assert _unnamed_modules(tmp_path) == ["b.py", "other/", "ta.py"]  # data.py names neither a.py nor ta.py
