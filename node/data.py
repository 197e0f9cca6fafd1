"""Training data: bytes of real text, split by file, sampled per node.

Default corpus: the Python standard library's own ``.py`` sources of the running interpreter
(``sysconfig.get_paths()["stdlib"]``): real code on every machine, nothing to download.
``--data PATH`` takes the user's own text files or folders instead.

Split: a file goes to validation when sha256(relative path) falls below ``val_fraction``, so
every node agrees on the split without talking. Each node draws its own stream of random
windows, seeded by (run id, peer id): nodes see different samples of the same distribution.
"""
from __future__ import annotations

import hashlib
import math
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["Corpus", "ByteSampler", "load_corpus", "stdlib_root"]

TEXT_SUFFIXES = {".py", ".txt", ".md", ".rst", ".json", ".toml", ".yaml", ".yml", ".c", ".h", ".html", ".csv"}
MAX_FILE_BYTES = 4 * 1024 * 1024


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _files(root: Path, suffixes: set[str]) -> list[Path]:
    if root.is_file():
        return [root]
    skip = {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idlelib", "turtledemo"}
    out = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix in suffixes and not skip & set(p.relative_to(root).parts[:-1]):
            out.append(p)
    return out


def _is_validation(rel: str, val_fraction: float) -> bool:
    h = int.from_bytes(hashlib.sha256(rel.encode()).digest()[:8], "big")
    return h / 2**64 < val_fraction


@dataclass
class Corpus:
    train: np.ndarray  # uint8, files concatenated with a 0 byte between them
    val: np.ndarray
    n_files: int

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.train.tobytes()[:1 << 20] + self.val.tobytes()[:1 << 20]).hexdigest()[:16]


def load_corpus(path: str | Path | None = None, val_fraction: float = 0.05, max_bytes: int | None = None) -> Corpus:
    """Read a corpus: the stdlib by default, else the given file or folder (all text suffixes)."""
    root = Path(path) if path else stdlib_root()
    if not root.exists():
        raise FileNotFoundError(f"data path {root} does not exist")
    files = _files(root, {".py"} if path is None else TEXT_SUFFIXES)
    if not files:
        raise ValueError(f"no text files under {root} (looked for {sorted(TEXT_SUFFIXES)})")
    train, val = bytearray(), bytearray()
    for f in files:
        data = f.read_bytes()[:MAX_FILE_BYTES]
        rel = str(f.relative_to(root)) if root.is_dir() else f.name
        (val if _is_validation(rel, val_fraction) else train).extend(data + b"\0")
        if max_bytes and len(train) + len(val) >= max_bytes:
            break
    if not val:  # a tiny user corpus: hold out its tail instead of nothing
        cut = int(len(train) * (1 - max(val_fraction, 0.05)))
        train, val = train[:cut], train[cut:]
    return Corpus(np.frombuffer(bytes(train), dtype=np.uint8), np.frombuffer(bytes(val), dtype=np.uint8), len(files))


def _seed(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("/".join(parts).encode()).digest()[:8], "big")


class ByteSampler:
    """Random windows of ``block_size + 1`` bytes from one split, from a seeded stream."""

    def __init__(self, data: np.ndarray, block_size: int, batch_size: int, seed: int):
        if len(data) <= block_size + 1:
            raise ValueError(f"split of {len(data)} bytes is shorter than one window of {block_size + 1}")
        self.data = torch.from_numpy(data.astype(np.int64))
        self.block_size, self.batch_size = block_size, batch_size
        self.rng = torch.Generator().manual_seed(seed % 2**63)

    @classmethod
    def for_node(cls, data: np.ndarray, block_size: int, batch_size: int, run_id: str, peer_id: str) -> ByteSampler:
        return cls(data, block_size, batch_size, _seed(run_id, peer_id))

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        ix = torch.randint(len(self.data) - self.block_size - 1, (self.batch_size,), generator=self.rng)
        offsets = torch.arange(self.block_size + 1)
        windows = self.data[ix[:, None] + offsets]
        return windows[:, :-1], windows[:, 1:]


@torch.no_grad()
def evaluate_bpb(model: torch.nn.Module, val: np.ndarray, block_size: int, device: str, batches: int = 8, batch_size: int = 16) -> float:
    """Validation bits per byte on a fixed set of windows (same windows on every node and call)."""
    sampler = ByteSampler(val, block_size, batch_size, seed=_seed("validation"))
    was_training = model.training
    model.eval()
    total = 0.0
    for _ in range(batches):
        x, y = sampler.batch()
        _, loss = model(x.to(device), y.to(device))
        total += float(loss)
    model.train(was_training)
    return total / batches / math.log(2)
