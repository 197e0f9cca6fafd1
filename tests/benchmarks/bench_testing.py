"""Shared set-up of the token-space simulation tests (quality, attacks)."""
from __future__ import annotations

import numpy as np

from node.data.corpus import Corpus

from node.data.load import stdlib_root


def stdlib_corpus(files: int, val_files: int) -> Corpus:
    """The first ``files`` top-level stdlib modules, the last ``val_files`` of them for validation: real
    text, without walking the whole tree as load_corpus does."""
    data = [f.read_bytes() for f in sorted(stdlib_root().glob("*.py"))[:files]]
    cut = files - val_files
    return Corpus(np.frombuffer(b"\0".join(data[:cut]), np.uint8), np.frombuffer(b"\0".join(data[cut:]), np.uint8), len(data))
