"""The coordinator's run key is created once and then reloaded, never replaced."""
import stat
from pathlib import Path

from coordinator.config import CoordinatorConfig
from coordinator.runkey import load_or_create_run_key


def test_run_key_beside_the_ledger_is_stable(tmp_path: Path) -> None:
    config = CoordinatorConfig(db_path=tmp_path / "ledger.sqlite3")
    first = load_or_create_run_key(config.run_key_file)
    assert config.run_key_file == tmp_path / "ledger.sqlite3.runkey"
    assert stat.S_IMODE(config.run_key_file.stat().st_mode) == 0o600
    assert load_or_create_run_key(config.run_key_file).peer_id == first.peer_id
