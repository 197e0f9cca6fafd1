"""ops.logs: JSON or human lines, a rotating --log-file, one set of flags on both services."""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.logs import setup_logging


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for h in root.handlers:
        if h not in handlers:
            h.close()
    root.handlers[:], root.level = handlers, level


def test_json_lines_to_a_file_rotate_by_size(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "node.log"
    setup_logging("info", log_file=log, log_format="json", max_bytes=2000, backups=2)
    for i in range(200):
        logging.getLogger("node.train.trainer").info("round %d done", i)
    logging.getLogger("x").debug("below the level: dropped")
    files = sorted(p.name for p in log.parent.iterdir())
    assert files == ["node.log", "node.log.1", "node.log.2"], files  # two backups kept, no more
    assert all(p.stat().st_size <= 2000 for p in log.parent.iterdir())
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert entries
    assert entries[-1] == {"ts": entries[-1]["ts"], "level": "info", "logger": "node.train.trainer", "msg": "round 199 done"}
    assert not any("dropped" in p.read_text() for p in log.parent.iterdir())


def test_human_lines_and_levels(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    setup_logging("warning", "coordinator ", log_file=log, log_format="human")
    logging.getLogger("a").info("quiet")
    logging.getLogger("a").warning("loud %s", "and clear")
    (line,) = log.read_text().splitlines()
    assert line.endswith(f"coordinator {logging.getLevelName(logging.WARNING)} loud and clear") and line[:4].isdigit()
    with pytest.raises(ValueError, match="log level 'chatty'"):
        setup_logging("chatty")
    with pytest.raises(ValueError, match="log format 'xml'"):
        setup_logging("info", log_format="xml")


def test_swarm_join_logs_a_config_error_to_its_log_file(tmp_path: Path) -> None:
    from node.cli.main import main

    log = tmp_path / "join.log"
    code = main(["join", "--log-file", str(log), "--log-format", "json", "--state-dir", str(tmp_path / "s"),
                 "--matchmaking-time-s", "-1"])
    assert code == 2
    (entry,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert entry["level"] == "error" and "matchmaking_time_s" in entry["msg"]


def test_unwritable_log_file_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from coordinator.cli import main

    (tmp_path / "file").write_text("")
    code = main(["--log-file", str(tmp_path / "file" / "sub" / "c.log"), "--db", str(tmp_path / "l.sqlite3")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("swarm coordinator: cannot write the log file") and "\n" not in err
