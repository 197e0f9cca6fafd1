"""Large frees go back to the OS: glibc's malloc with a fixed mmap threshold.

glibc serves an allocation above ``M_MMAP_THRESHOLD`` with its own ``mmap`` and returns it with
``munmap`` on free, but by default it *raises* that threshold (up to 32 MiB) each time such a block
is freed. A node frees many tensors of a few MiB every round (the pseudo-gradient, the averaged
copy, the hashing and checkpoint buffers): after the first round they come from the heap instead,
and the heap cannot give back the holes between live blocks. Measured on ``gpt2-small-bytes``
(86M parameters, CPU): three rounds of that pattern grew a process from 2.68 to 3.46 GB with the
default, and stayed at 2.63 GB with the threshold fixed at 1 MiB (the size benchmark,
``benchmarks/suites/size.py``, has the whole node's figures). Setting it also fixes the trim
threshold. hivemind's averager and DHT processes are forked from the node, so they inherit it.

Only on glibc (Linux); elsewhere, or if ``mallopt`` refuses, nothing changes and the node runs as before.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

__all__ = ["MMAP_THRESHOLD", "return_large_frees"]

logger = logging.getLogger(__name__)
M_MMAP_THRESHOLD = -3  # glibc's malloc.h
MMAP_THRESHOLD = 1 << 20  # blocks from 1 MiB up get their own mapping, unmapped on free


def return_large_frees(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes for this process (and what it forks later).
    Returns whether it was set."""
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError) as e:
        logger.debug("mallopt unavailable: %r", e)
        return False
    if not ok:
        logger.debug("mallopt(M_MMAP_THRESHOLD, %d) refused", threshold)
    return ok
