"""A node's freed round buffers go back to the OS (node/host/heap.py), where glibc's default keeps them."""
from __future__ import annotations

import subprocess
import sys

# Frees 4 MiB blocks between small live ones, as a round frees its pseudo-gradient and copies; prints
# how much of the 400 MiB freed is still resident
PATTERN = """
import sys
from node.host.heap import return_large_frees
if sys.argv[1] == "fixed":
    assert return_large_frees()
def rss():
    return int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0]) * 1024
first = bytearray(4 << 20); del first  # glibc's default raises its mmap threshold past 4 MiB here
before = rss()
big, small = [], []
for _ in range(100):
    b = bytearray(4 << 20)
    b[::4096] = b"x" * len(b[::4096])  # resident
    big.append(b)
    small.append(bytearray(64 << 10))  # a live block after each one
del big
print((rss() - before) >> 20)
"""


def _kept_mib(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", PATTERN, mode], capture_output=True, text=True, timeout=60, check=True)
    return int(done.stdout.split()[-1])


def test_large_frees_go_back_to_the_os_with_the_threshold_fixed():
    assert _kept_mib("fixed") < 40  # the small blocks only (100 x 64 KiB), plus noise
    assert _kept_mib("default") > 200  # what the node kept before: the heap could not give the holes back
