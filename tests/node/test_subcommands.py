"""``swarm coordinator | sim | plan | bench``: found by entry point (node/cli/subcommands.py), not imported by node."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from node.cli.subcommands import GROUP, find_commands, load_command

ROOT = Path(__file__).resolve().parents[2]


def _registered() -> dict[str, str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"][GROUP]


def test_pyproject_registers_the_commands_node_used_to_import():
    assert set(_registered()) == {"coordinator", "sim", "plan", "bench"}


@pytest.mark.parametrize("name", sorted(_registered()))
def test_each_registered_command_loads_to_a_main(name):
    target = find_commands()[name]
    assert target == _registered()[name]  # the source tree's table wins over older installed metadata
    assert callable(load_command(target))


def test_the_source_tree_table_is_read_only_from_capaswarms_own_pyproject(tmp_path):
    other = tmp_path / "pyproject.toml"
    other.write_text(f'[project]\nname = "someone-else"\n[project.entry-points."{GROUP}"]\nevil = "os:system"\n')
    assert "evil" not in find_commands(other)
    other.write_text(f'[project]\nname = "capaswarm"\n[project.entry-points."{GROUP}"]\nextra = "json:dumps"\n')
    assert find_commands(other)["extra"] == "json:dumps"
    other.write_text("not toml [")
    assert "extra" not in find_commands(other)  # a broken file is no table, not a crash


@pytest.mark.parametrize("name", ["coordinator", "plan", "bench"])
def test_python_m_node_hands_the_command_to_its_package(name):
    result = subprocess.run([sys.executable, "-m", "node", name, "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"swarm {name}" in result.stdout


def test_unknown_command_is_still_an_error():
    from node.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(["no-such-command"])
    assert e.value.code == 2
