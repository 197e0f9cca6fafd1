"""Atomic file writes: a reader sees the old file or the new one, never half of one.

The one home for the write-then-rename pattern (node state, checkpoints, the outbox, status files,
shard indexes, the coordinator's port file). The new content goes to ``.NAME.<pid>-<thread>.tmp`` beside
``path`` (same
file system, so ``os.replace`` is atomic; a leading dot keeps it out of ``*.json``-style globs), which
replaces ``path`` only once it is complete. ``durable=True`` also fsyncs the file and its directory,
so the write survives a power cut, not just a crash of this process: for what must not be lost (the
outbox, checkpoints, report sequence numbers); status files skip the cost.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_file", "fsync_dir", "temp_path", "write_atomic"]


def temp_path(path: Path) -> Path:
    """Where ``path``'s next content is written before it replaces ``path``: one name per process and
    thread, so two threads rewriting the same file (a node's status.json) never rename each other's."""
    return path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")


def fsync_dir(directory: Path) -> None:
    """Make a rename inside ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: Path, *, durable: bool = False) -> Iterator[BinaryIO]:
    """``with atomic_file(p) as f: f.write(...)``: ``p`` is replaced when the block ends without an
    error; on an error the temp file is removed and ``p`` keeps its old content."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes | str, *, durable: bool = False) -> None:
    """Replace ``path``'s content with ``data`` (str is written as UTF-8) in one step."""
    with atomic_file(path, durable=durable) as f:
        f.write(data.encode() if isinstance(data, str) else data)
