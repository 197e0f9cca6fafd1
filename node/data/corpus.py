"""Training data: tokens of real text, split by file, sampled per node.

Default corpus: the Python standard library's own ``.py`` sources of the running interpreter
(``sysconfig.get_paths()["stdlib"]``): real code on every machine, nothing to download.
``--data PATH`` takes the user's own text instead: a file or a folder, every file in it that
*is* text by content (``node/data/textfiles.py``: UTF-8, no NUL bytes; gzip/xz/zstd read decompressed),
whatever its name (the log says how many files and bytes were used and skipped, and why); or a
folder of memory-mapped token shards made by ``swarm data prepare`` (``node.data.shards``: bytes or
BPE, any size, bounded memory). A manifest with ``data.source = "files"`` needs ``--data``, and
may pin the corpus by its content hash (:func:`check_data`).

Split: a file goes to validation when sha256(relative path) falls below ``val_fraction``, so
every node agrees on the split without talking. Each node's windows are a deterministic function
of (run id, peer id, round): the sampler is re-seeded at the start of every round, so anyone can
recompute which windows a peer trained on in a round (what a validator re-checks).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from protocol import RunManifest

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
