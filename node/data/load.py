"""Reading a corpus: the stdlib's ``.py`` sources by default, else every text file under ``--data``,
or a folder prepared by ``swarm data prepare`` (``node/data/shards.py``, memory-mapped)."""
from __future__ import annotations

import hashlib
import logging
import sysconfig
from pathlib import Path

import numpy as np

from node.data.textfiles import SKIP_DIRS, TextScan, iter_text_files
from node.data.corpus import Corpus, is_validation
from node.data.shards import INDEX, load_shards

logger = logging.getLogger(__name__)
MAX_FILE_BYTES = 4 * 1024 * 1024
# the default corpus: the stdlib's own sources, without vendored packages, tests and GUI demos
STDLIB_SKIP = frozenset({"site-packages", "dist-packages", "__pycache__", "test", "tests", "idlelib", "turtledemo"})


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _stdlib_source(rel: str) -> bool:
    parts = rel.split("/")
    return parts[-1].endswith(".py") and not STDLIB_SKIP & set(parts[:-1])


def load_corpus(path: str | Path | None = None, val_fraction: float = 0.05, max_bytes: int | None = None) -> Corpus:
    """Read a corpus: the stdlib's ``.py`` sources by default, else every text file in the given file or
    folder, or a folder prepared by ``swarm data prepare`` (memory-mapped, whatever its size)."""
    root = Path(path) if path else stdlib_root()
    if not root.exists():
        raise FileNotFoundError(f"data path {root} does not exist")


    if (root / INDEX).is_file():
        return load_shards(root)
    scan = TextScan()
    train, val = bytearray(), bytearray()
    digest = hashlib.sha256(b"capaswarm/text-files\0")
    # the stdlib's own folders are pruned, not filtered file by file: site-packages alone (torch,
    # hivemind) holds ~70k files, and walking it cost every node start 2-4 s of CPU
    stdlib = path is None
    for rel, data in iter_text_files(root, max_bytes=MAX_FILE_BYTES, scan=scan,
                                     skip_dirs=SKIP_DIRS | STDLIB_SKIP if stdlib else SKIP_DIRS,
                                     accept=_stdlib_source if stdlib else None):
        digest.update(f"{rel}\0{len(data)}\0".encode() + data)
        (val if is_validation(rel, val_fraction) else train).extend(data + b"\0")
        if max_bytes and len(train) + len(val) >= max_bytes:
            break
    if not scan.used_files:
        raise ValueError(f"no text files under {root} ({scan.summary()})")
    logger.info("data %s: %s", root, scan.summary())
    if not val:  # a tiny user corpus: hold out its tail instead of nothing
        cut = int(len(train) * (1 - max(val_fraction, 0.05)))
        train, val = train[:cut], train[cut:]
    return Corpus(np.frombuffer(bytes(train), dtype=np.uint8), np.frombuffer(bytes(val), dtype=np.uint8), scan.used_files,
                  digest.hexdigest())
