"""ops.atomic: the one atomic-write helper (node state, checkpoints, outbox, status, shard index, port file)."""
from __future__ import annotations

import threading

import pytest

from ops.atomic import atomic_file, temp_path, write_atomic


@pytest.mark.parametrize("durable", [False, True])
def test_write_atomic_replaces_the_whole_file(tmp_path, durable):
    path = tmp_path / "status.json"
    path.write_text("old and longer than the new content")
    write_atomic(path, "new", durable=durable)
    assert path.read_text() == "new"
    write_atomic(path, b"\x00bytes")
    assert path.read_bytes() == b"\x00bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["status.json"]  # no temp file left behind


def test_an_error_mid_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_file(path, durable=True) as f:
            f.write(b"half of the new")
            assert temp_path(path).exists() and path.read_bytes() == b"old"  # readers still see the old one
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"old"
    assert not temp_path(path).exists()


def test_the_temp_file_is_hidden_beside_the_target(tmp_path):
    tmp = temp_path(tmp_path / "000000000001.msgpack")
    assert tmp.parent == tmp_path and tmp.name.startswith(".000000000001.msgpack.") and tmp.name.endswith(".tmp")
    other = []  # another thread writing the same file uses another temp file (a node's status.json)
    thread = threading.Thread(target=lambda: other.append(temp_path(tmp_path / "000000000001.msgpack")))
    thread.start()
    thread.join()
    assert other and other[0] != tmp and other[0].parent == tmp_path
    assert not list(tmp_path.glob("*.msgpack"))  # a glob for the real files never sees a temp one


def test_a_missing_directory_is_an_error_not_a_silent_loss(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "no-such-dir" / "x", "data")
