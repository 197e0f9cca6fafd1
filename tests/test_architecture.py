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

_MAPPED_PACKAGES = ["protocol", "ops", "node", "node/policies", "node/averaging", "node/cli", "node/daemon",
                    "node/data", "node/host", "node/model", "node/net", "node/train", "node/trust", "node/uplink",
                    "coordinator", "sim", "benchmarks", "benchmarks/suites"]


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


# --- import cycles and module size --------------------------------------------------------------

_PROJECT = ["protocol", "ops", "node", "coordinator", "sim", "benchmarks"]


def _import_graph(root: Path, packages: list[str]) -> dict[str, set[str]]:
    """Module -> the project modules it imports, read from the source: every import counts, at the
    top, inside a function, or under ``TYPE_CHECKING`` (each is an arrow a reader follows)."""
    import ast

    modules: dict[str, Path] = {}
    for package in packages:
        for path in (root / package).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for n in ast.walk(ast.parse(path.read_text())):
            if isinstance(n, ast.ImportFrom):
                base = here.split(".")[: len(here.split(".")) - n.level + 1] if n.level else []
                module = ".".join(base + ([n.module] if n.module else []))
                targets |= {module} | {f"{module}.{a.name}" for a in n.names}
            elif isinstance(n, ast.Import):
                targets |= {a.name for a in n.names}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                found.append(sorted(component + [v]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_no_import_cycle_in_the_project():
    graph = _import_graph(ROOT, _PROJECT)
    assert len(graph) > 120 and graph["node.train.trainer"]  # the walk found the project's modules
    assert _cycles(graph) == []


def test_cycle_check_can_fail(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("from pkg.b import x\n")
    (tmp_path / "pkg" / "b.py").write_text("def f():\n    from pkg import a\n")  # a lazy import closes it
    (tmp_path / "pkg" / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c2 import y\n")
    (tmp_path / "pkg" / "c2.py").write_text("from .c import z\n")
    (tmp_path / "pkg" / "d.py").write_text("from pkg.a import x\n")  # into a cycle, not in one
    assert _cycles(_import_graph(tmp_path, ["pkg"])) == [["pkg.a", "pkg.b"], ["pkg.c", "pkg.c2"]]


def test_no_node_module_past_350_lines():
    """node/ is rooms of small files; a module that grows past 350 lines is split by job."""
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in (ROOT / "node").rglob("*.py")}
    assert len(sizes) > 50 and [p for p, n in sizes.items() if n > 350] == []
