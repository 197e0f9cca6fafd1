"""mypy, strict, on protocol/, coordinator/ and node/policies/ (config: pyproject's [tool.mypy]).

A test, so the README's test command (and CI) type-checks what STYLE.md says is checked strictly."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _mypy(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mypy", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_strict_packages_type_check():
    result = _mypy()  # the packages and flags come from pyproject.toml
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout


def test_the_config_is_strict_on_the_three_packages():
    """Guards the guard: dropping a package or ``strict`` would make the check above hollow."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert config["strict"] is True
    assert {"protocol", "coordinator", "node.policies"} <= set(config["packages"])
    for override in config.get("overrides", []):  # relaxed only for third-party modules, never ours
        modules = override["module"] if isinstance(override["module"], list) else [override["module"]]
        assert not [m for m in modules if m.split(".")[0] in ("protocol", "coordinator", "node", "ops", "sim")]


def test_mypy_strict_can_fail(tmp_path):
    (tmp_path / "bad.py").write_text("def f(x):\n    return x + 1\n\n\ny: int = 'text'\n")
    result = _mypy("--strict", "--no-incremental", "bad.py", cwd=tmp_path)
    assert result.returncode == 1
    assert "no-untyped-def" in result.stdout and "assignment" in result.stdout
