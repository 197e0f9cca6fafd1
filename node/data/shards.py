"""``swarm data prepare``: text files -> memory-mapped token shards, in bounded memory.

Layout of a prepared folder (the index is written last, atomically: no index, no corpus)::

    index.json         format, dtype, vocab size, tokenizer sha256, and per split the shards
                       (file, tokens, sha256); its own sha256 is the corpus's content hash
    train-00000.bin    raw little-endian tokens (uint8 for bytes, uint16 / uint32 for BPE),
    val-00000.bin      documents separated by the end-of-text id (the 0 byte, or <|endoftext|>)
    tokenizer.json     BPE only: the vocabulary (its sha256 goes into the manifest and the export)

Memory: files are read in blocks of :data:`BLOCK` bytes (cut at a line end), encoded and appended
to the open shard; nothing holds more than one block and its tokens. BPE training streams the
same blocks (the trainer keeps only its pre-token counts) over at most ``bpe_sample_bytes``.
Which files: every file under the inputs whose first 8 KiB decode as UTF-8 and hold no NUL byte
(text by content, not by suffix); the split is by path hash, as for ``--data`` folders (a small
corpus where no path hashes into validation holds out the one with the lowest hash).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from node.data.corpus import Corpus, DataError, is_validation
from node.model.tokenizer import TOKENIZER_FILE, TokenizerFile, sha256_file, train_bpe
from ops.atomic import write_atomic

__all__ = ["INDEX", "find_text_files", "load_shards", "prepare"]

INDEX = "index.json"
FORMAT = "capaswarm-shards-1"
BLOCK = 4 * 1024 * 1024  # bytes of text read, encoded and written at a time
PIECE = 64 * 1024  # characters per string handed to the BPE library
SNIFF = 8192


# The content test here is a stand-in: helper i16's node/data/textfiles.py (text by content, compressed
# text, skip counts) had not landed on main when this was written. Once it has, find_text_files should
# use its ``walk`` and apply ``why_not_text`` to each file's first block (prepare streams files, so it
# cannot take ``iter_text_files``' whole-file bytes).
def _looks_like_text(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(SNIFF)
    except OSError:
        return False
    if not head or b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:  # a multi-byte character cut by the sniff window is fine
        return e.start >= len(head) - 3
    return True


def find_text_files(inputs: list[Path]) -> list[tuple[Path, str]]:
    """(file, name used for the split) for every text file under ``inputs``, in a stable order."""
    out = []
    for root in inputs:
        if not root.exists():
            raise DataError(f"{root} does not exist")
        if root.is_file():
            candidates = [(root, root.name)]
        else:
            candidates = []
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    p = Path(dirpath) / name
                    candidates.append((p, str(p.relative_to(root))))
        out += [(p, rel) for p, rel in candidates if p.is_file() and not p.is_symlink() and _looks_like_text(p)]
    return out


def _pieces(block: str, size: int = PIECE) -> list[str]:
    """``block`` cut after a newline about every ``size`` characters: what the BPE library handles well
    (whole 4 MiB strings cost it ~1 GB of temporary objects and run several times slower)."""
    out, i = [], 0
    while i < len(block):
        j = block.find("\n", i + size)
        j = len(block) if j < 0 else j + 1
        out.append(block[i:j])
        i = j
    return out


def _blocks(path: Path) -> Iterator[str]:
    """The file's text in blocks of about BLOCK bytes, cut after a newline (never inside a character)."""
    with open(path, "rb") as f:
        carry = b""
        while True:
            chunk = f.read(BLOCK)
            if not chunk:
                break
            data = carry + chunk
            cut = data.rfind(b"\n") + 1 or len(data)
            data, carry = data[:cut], data[cut:]
            yield data.decode("utf-8", errors="replace")
        if carry:
            yield carry.decode("utf-8", errors="replace")


class _ShardWriter:
    def __init__(self, out: Path, split: str, dtype: np.dtype, shard_tokens: int):
        self.out, self.split, self.dtype, self.shard_tokens = out, split, dtype, shard_tokens
        self.shards: list[dict[str, Any]] = []
        self._f = None

    def _open(self) -> None:
        name = f"{self.split}-{len(self.shards):05d}.bin"
        self._f = open(self.out / name, "wb")
        self._hash = hashlib.sha256()
        self.shards.append({"file": name, "tokens": 0, "sha256": ""})

    def write(self, tokens: np.ndarray) -> None:
        while len(tokens):
            if self._f is None or self.shards[-1]["tokens"] >= self.shard_tokens:
                self.close()
                self._open()
            room = self.shard_tokens - self.shards[-1]["tokens"]
            part = tokens[:room].astype(self.dtype, copy=False).tobytes()
            self._f.write(part)
            self._hash.update(part)
            self.shards[-1]["tokens"] += min(room, len(tokens))
            tokens = tokens[room:]

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self.shards[-1]["sha256"] = self._hash.hexdigest()
            self._f = None


def prepare(inputs: list[Path], out: Path, *, vocab: str = "bytes", val_fraction: float = 0.05,
            shard_tokens: int = 64 * 1024 * 1024, bpe_sample_bytes: int = 256 * 1024 * 1024) -> dict[str, Any]:
    """Tokenize ``inputs`` into ``out``; returns the index plus the content hash."""
    files = find_text_files([Path(p) for p in inputs])
    if not files:
        raise DataError(f"no text files under {', '.join(map(str, inputs))}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / INDEX).unlink(missing_ok=True)  # a half-written folder is never mistaken for a corpus
    if vocab == "bytes":
        tokenizer = TokenizerFile(None)
    elif vocab.startswith("bpe:") and vocab[4:].isdigit():
        def sample() -> Iterator[str]:
            seen = 0
            for path, _ in files:
                for block in _blocks(path):
                    yield from _pieces(block)
                    seen += len(block)
                    if seen >= bpe_sample_bytes:
                        return

        train_bpe(sample(), int(vocab[4:]), out / TOKENIZER_FILE)
        tokenizer = TokenizerFile(out / TOKENIZER_FILE)
    else:
        raise DataError(f"--vocab is 'bytes' or 'bpe:N' (N ids), not {vocab!r}")
    dtype = np.dtype(np.uint8 if tokenizer.vocab_size <= 256 else np.uint16 if tokenizer.vocab_size <= 65536 else np.uint32)
    writers = {"train": _ShardWriter(out, "train", dtype, shard_tokens), "val": _ShardWriter(out, "val", dtype, shard_tokens)}
    n_bytes = 0
    eos = np.array([tokenizer.eos_id], dtype=np.int64)
    val = {rel for _, rel in files if is_validation(rel, val_fraction)}
    if not val and len(files) > 1:  # a small corpus: hold out the one file whose path hashes lowest
        val = {min((rel for _, rel in files), key=lambda r: hashlib.sha256(r.encode()).digest())}
    for path, rel in files:
        writer = writers["val" if rel in val else "train"]
        for block in _blocks(path):
            raw = block.encode()
            n_bytes += len(raw)
            if tokenizer.is_bytes:
                writer.write(np.frombuffer(raw, dtype=np.uint8))
                continue
            pieces = _pieces(block)
            for k in range(0, len(pieces), 16):  # about 1 MiB of text per call into the library
                for ids in tokenizer.encode_batch(pieces[k:k + 16]):
                    writer.write(np.asarray(ids, dtype=np.int64))
        writer.write(eos)
    for w in writers.values():
        w.close()
    if not writers["val"].shards or not writers["train"].shards:
        raise DataError("a corpus of one file has no validation split; give at least two files")
    index = {
        "format": FORMAT, "dtype": dtype.name, "vocab_size": tokenizer.vocab_size,
        "tokenizer_sha256": "" if tokenizer.is_bytes else sha256_file(out / TOKENIZER_FILE),
        "files": len(files), "text_bytes": n_bytes,
        "train": writers["train"].shards, "val": writers["val"].shards,
    }
    write_atomic(out / INDEX, json.dumps(index, indent=1))
    return {**index, "content_hash": sha256_file(out / INDEX),
            "tokens": {s: sum(x["tokens"] for x in index[s]) for s in ("train", "val")}}


def load_shards(folder: Path, verify: bool = True) -> Corpus:
    """Memory-map a prepared folder. ``verify`` re-hashes every shard (streamed) against the index."""
    folder = Path(folder)
    try:
        index = json.loads((folder / INDEX).read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{folder / INDEX}: not a prepared corpus ({e})") from None
    if index.get("format") != FORMAT:
        raise DataError(f"{folder / INDEX}: unknown format {index.get('format')!r} (expected {FORMAT})")
    dtype = np.dtype(index["dtype"])
    splits: dict[str, list[np.ndarray]] = {}
    for split in ("train", "val"):
        splits[split] = []
        for shard in index[split]:
            path = folder / shard["file"]
            if not path.is_file() or path.stat().st_size != shard["tokens"] * dtype.itemsize:
                raise DataError(f"{path}: missing or not {shard['tokens']} tokens long; prepare the corpus again")
            if verify and sha256_file(path) != shard["sha256"]:
                raise DataError(f"{path} does not match its sha256 in {INDEX}: the shard changed on disk")
            if shard["tokens"]:
                splits[split].append(np.memmap(path, dtype=dtype, mode="r"))
    if index["tokenizer_sha256"] and sha256_file(folder / TOKENIZER_FILE) != index["tokenizer_sha256"]:
        raise DataError(f"{folder / TOKENIZER_FILE} does not match the index's tokenizer hash")
    return Corpus(splits["train"], splits["val"], int(index["files"]), sha256_file(folder / INDEX),
                  int(index["vocab_size"]), index["tokenizer_sha256"])

