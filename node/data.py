"""Training data: tokens of real text, split by file, sampled per node.

Default corpus: the Python standard library's own ``.py`` sources of the running interpreter
(``sysconfig.get_paths()["stdlib"]``): real code on every machine, nothing to download.
``--data PATH`` takes the user's own text instead: a file or a folder, every file in it that
*is* text by content (``node/textfiles.py``: UTF-8, no NUL bytes; gzip/xz/zstd read decompressed),
whatever its name (the log says how many files and bytes were used and skipped, and why); or a
folder of memory-mapped token shards made by ``swarm data prepare`` (``node.shards``: bytes or
BPE, any size, bounded memory). A manifest with ``data.source = "files"`` needs ``--data``, and
may pin the corpus by its content hash (:func:`check_data`).

Split: a file goes to validation when sha256(relative path) falls below ``val_fraction``, so
every node agrees on the split without talking. Each node's windows are a deterministic function
of (run id, peer id, round): the sampler is re-seeded at the start of every round, so anyone can
recompute which windows a peer trained on in a round (what a validator re-checks).
"""
from __future__ import annotations

import hashlib
import logging
import math
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from node.textfiles import TextScan, iter_text_files
from protocol import RunManifest

__all__ = ["Corpus", "ByteSampler", "DataError", "check_data", "is_validation", "load_corpus", "stdlib_root"]

logger = logging.getLogger(__name__)
MAX_FILE_BYTES = 4 * 1024 * 1024
# the default corpus: the stdlib's own sources, without vendored packages, tests and GUI demos
STDLIB_SKIP = frozenset({"site-packages", "dist-packages", "__pycache__", "test", "tests", "idlelib", "turtledemo"})


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _stdlib_source(rel: str) -> bool:
    parts = rel.split("/")
    return parts[-1].endswith(".py") and not STDLIB_SKIP & set(parts[:-1])


class DataError(ValueError):
    """The data a node was given does not fit the run; the message says what to do."""


def is_validation(rel: str, val_fraction: float) -> bool:
    h = int.from_bytes(hashlib.sha256(rel.encode()).digest()[:8], "big")
    return h / 2**64 < val_fraction


Tokens = np.ndarray | list[np.ndarray]  # one array, or segments (shards) that windows never cross


@dataclass
class Corpus:
    train: Tokens  # uint8 bytes (files with a 0 byte between them), or token shards (memory-mapped)
    val: Tokens
    n_files: int
    content_hash: str = ""  # sha256 naming this corpus (data.sha256 in a manifest pins it)
    vocab_size: int = 256
    tokenizer_sha256: str = ""  # "" = bytes

    @property
    def fingerprint(self) -> str:
        first = lambda t: (t[0] if isinstance(t, list) else t)[:1 << 20].tobytes()  # noqa: E731
        return hashlib.sha256(first(self.train) + first(self.val)).hexdigest()[:16]


def check_data(corpus: Corpus, manifest: RunManifest, given: bool) -> None:
    """Refuse data that does not fit ``manifest``: missing --data for a files run, another corpus
    than the pinned one, another vocabulary or size than the model's."""
    spec = manifest.data
    if spec.source == "files" and not given:
        raise DataError(f"run {manifest.run_id!r} trains on its own corpus (manifest data.source = 'files'): "
                        "pass --data PATH with the run's text files or prepared shards")
    if spec.sha256 and corpus.content_hash != spec.sha256:
        raise DataError(f"--data has content hash {corpus.content_hash[:16]}..., the run pins {spec.sha256[:16]}...: "
                        "every node must train on the same corpus (swarm data prepare prints the hash)")
    if corpus.tokenizer_sha256 != spec.tokenizer_sha256:
        theirs = spec.tokenizer_sha256[:16] + "..." if spec.tokenizer_sha256 else "bytes"
        ours = corpus.tokenizer_sha256[:16] + "..." if corpus.tokenizer_sha256 else "bytes"
        raise DataError(f"--data is tokenized with {ours}, the run's vocabulary is {theirs}")
    if corpus.vocab_size > manifest.model.vocab_size:
        raise DataError(f"--data has {corpus.vocab_size} token ids, the model only {manifest.model.vocab_size}")


def load_corpus(path: str | Path | None = None, val_fraction: float = 0.05, max_bytes: int | None = None) -> Corpus:
    """Read a corpus: the stdlib's ``.py`` sources by default, else every text file in the given file or
    folder, or a folder prepared by ``swarm data prepare`` (memory-mapped, whatever its size)."""
    root = Path(path) if path else stdlib_root()
    if not root.exists():
        raise FileNotFoundError(f"data path {root} does not exist")
    from node.shards import INDEX, load_shards

    if (root / INDEX).is_file():
        return load_shards(root)
    scan = TextScan()
    train, val = bytearray(), bytearray()
    digest = hashlib.sha256(b"capaswarm/text-files\0")
    for rel, data in iter_text_files(root, max_bytes=MAX_FILE_BYTES, scan=scan,
                                     accept=_stdlib_source if path is None else None):
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


def _seed(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("/".join(parts).encode()).digest()[:8], "big")


class ByteSampler:
    """Random windows of ``block_size + 1`` tokens from one split (one array or shards), from a seeded
    stream. Windows are copied out per batch: a memory-mapped corpus is never read whole."""

    def __init__(self, data: Tokens, block_size: int, batch_size: int, seed: int):
        segments = data if isinstance(data, list) else [data]
        self.segments = [d for d in segments if len(d) > block_size + 1]
        if not self.segments:
            raise ValueError(f"split of {sum(len(d) for d in segments)} tokens has no window of {block_size + 1}")
        self.starts = np.cumsum([0] + [len(d) - block_size - 1 for d in self.segments])  # window starts before each segment
        self.block_size, self.batch_size = block_size, batch_size
        self.rng = torch.Generator().manual_seed(seed % 2**63)
        self.parts: tuple[str, ...] = ()

    @classmethod
    def for_node(cls, data: Tokens, block_size: int, batch_size: int, run_id: str, peer_id: str) -> ByteSampler:
        sampler = cls(data, block_size, batch_size, _seed(run_id, peer_id))
        sampler.parts = (run_id, peer_id)
        return sampler

    def start_round(self, round_: int) -> None:
        """Re-seed from (run, peer, round): a round's windows depend on nothing else."""
        self.rng.manual_seed(_seed(*self.parts, str(round_)) % 2**63)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        ix = torch.randint(int(self.starts[-1]), (self.batch_size,), generator=self.rng).numpy()
        seg = np.searchsorted(self.starts, ix, side="right") - 1
        n = self.block_size + 1
        rows = [self.segments[s][o:o + n] for s, o in zip(seg, ix - self.starts[seg])]
        windows = torch.from_numpy(np.stack(rows).astype(np.int64))
        return windows[:, :-1], windows[:, 1:]


@torch.no_grad()
def evaluate_bpb(
    model: torch.nn.Module, val: np.ndarray, block_size: int, device: str, batches: int = 8, batch_size: int = 16
) -> float:
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
