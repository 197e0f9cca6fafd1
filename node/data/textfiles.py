"""Text files found by content, not by name: what ``--data`` (and ``swarm data prepare``) reads.

A file is text when its bytes, once decompressed, hold no NUL byte and decode as UTF-8 with few
replacement characters (at most ``MAX_REPLACEMENT_FRACTION`` of the characters: a Latin-1 file with
a few accented letters passes, a binary does not). Its name does not matter: ``README``, ``GPL-3``,
``notes.tex``, ``subs.srt`` and ``rows.jsonl`` are all text. Compressed text is recognised by its
magic bytes (gzip, xz, zstd; zstd needs the ``zstandard`` package) and read decompressed, never
past ``max_bytes`` (a decompression bomb costs at most that much memory).

API (stdlib only, plus ``zstandard`` when a ``.zst`` file is met)::

    scan = TextScan()
    for rel, data in iter_text_files(root, scan=scan, max_bytes=4 << 20):
        ...                                  # rel: path relative to root ("name" for a file); data: bytes
    logger.info("data: %s", scan.summary())  # files and bytes used, and skipped by reason

    read_text(path, max_bytes) -> bytes      # or raises NotText(reason)
    why_not_text(data) -> str | None         # the content test alone, on bytes already in memory

Walk order is sorted by relative path, so every node reading the same folder sees the same files
in the same order. Version-control and cache folders (``.git``, ``__pycache__``, ...) are not
entered; symlinked folders are not followed (a loop would never end).
"""
from __future__ import annotations

import gzip
import lzma
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["MAX_REPLACEMENT_FRACTION", "NotText", "SKIP_DIRS", "TextScan", "iter_text_files", "read_text", "walk", "why_not_text"]

MAX_REPLACEMENT_FRACTION = 0.01
SKIP_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".tox", ".venv",
                       "node_modules"})
_GZIP, _XZ, _ZSTD = b"\x1f\x8b", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd"

# reasons a file is skipped (the keys of TextScan.skipped)
BINARY = "binary (NUL bytes)"
NOT_UTF8 = "not UTF-8 text"
EMPTY = "empty"
UNREADABLE = "unreadable"
CORRUPT = "corrupt compressed data"
NO_ZSTD = "zstd-compressed (install the zstandard package to read it)"


class NotText(ValueError):
    """A file that is not usable text; ``reason`` is one of the module's reason strings."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass
class TextScan:
    """What a walk found: files and bytes used, and files and bytes skipped for each reason."""

    used_files: int = 0
    used_bytes: int = 0
    compressed_files: int = 0  # of the used files, how many were read decompressed
    truncated_files: int = 0  # of the used files, how many were cut at ``max_bytes``
    skipped: dict[str, list[int]] = field(default_factory=dict)  # reason -> [files, bytes on disk]

    def use(self, nbytes: int, *, compressed: bool, truncated: bool) -> None:
        self.used_files += 1
        self.used_bytes += nbytes
        self.compressed_files += compressed
        self.truncated_files += truncated

    def skip(self, reason: str, nbytes: int) -> None:
        entry = self.skipped.setdefault(reason, [0, 0])
        entry[0] += 1
        entry[1] += nbytes

    @property
    def skipped_files(self) -> int:
        return sum(files for files, _ in self.skipped.values())

    def summary(self) -> str:
        """One line: ``used 12 files (3.4 MB of text, 2 decompressed); skipped 3: 2 binary (NUL bytes) (1.1 MB), ...``."""
        used = f"used {self.used_files} files ({_mb(self.used_bytes)} of text"
        used += f", {self.compressed_files} decompressed" if self.compressed_files else ""
        used += f", {self.truncated_files} cut at the per-file limit" if self.truncated_files else ""
        used += ")"
        if not self.skipped:
            return used + "; skipped none"
        parts = [f"{files} {reason} ({_mb(nbytes)})" for reason, (files, nbytes) in sorted(self.skipped.items())]
        return f"{used}; skipped {self.skipped_files}: " + ", ".join(parts)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n:,} bytes"


def why_not_text(data: bytes, *, truncated: bool = False) -> str | None:
    """``None`` when ``data`` is text, else the reason. ``truncated``: ``data`` was cut, so an
    incomplete UTF-8 sequence at its very end is not held against it."""
    if not data:
        return EMPTY
    if b"\0" in data:
        return BINARY
    text = data.decode("utf-8", errors="replace")
    bad = text.count("\ufffd")
    if truncated and text.endswith("\ufffd"):
        bad -= min(3, len(text) - len(text.rstrip("\ufffd")))  # the bytes of one character cut in two
    if bad > MAX_REPLACEMENT_FRACTION * len(text):
        return NOT_UTF8
    return None


def _read_bounded(read: Callable[[int], bytes], limit: int) -> tuple[bytes, bool]:
    """Read up to ``limit`` bytes (and one more, to learn whether there was more)."""
    chunks, got = [], 0
    while got <= limit:
        chunk = read(min(1 << 20, limit + 1 - got))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    data = b"".join(chunks)
    return data[:limit], len(data) > limit


def _decompressed(path: Path, magic: bytes, limit: int) -> tuple[bytes, bool]:
    if magic.startswith(_GZIP):
        with gzip.open(path, "rb") as f:
            return _read_bounded(f.read, limit)
    if magic.startswith(_XZ):
        with lzma.open(path, "rb") as f:
            return _read_bounded(f.read, limit)
    try:
        import zstandard
    except ImportError:
        raise NotText(NO_ZSTD, str(path)) from None
    try:
        with open(path, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as f:
            return _read_bounded(f.read, limit)
    except zstandard.ZstdError as e:
        raise NotText(CORRUPT, f"{path}: {e}") from None


def _compression(magic: bytes) -> bool:
    return magic.startswith((_GZIP, _XZ, _ZSTD))


def read_text(path: Path, max_bytes: int | None = None) -> bytes:
    """The text in ``path`` (decompressed if it is gzip, xz or zstd), at most ``max_bytes`` of it.

    Raises :class:`NotText` (with ``.reason``) for a binary, non-UTF-8, empty, unreadable or
    corrupt compressed file.
    """
    data, _, _ = _read(path, max_bytes)
    return data


def _read(path: Path, max_bytes: int | None) -> tuple[bytes, bool, bool]:
    """(text, compressed, truncated) or :class:`NotText`."""
    limit = max_bytes if max_bytes is not None else 1 << 62
    compressed = False
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
            compressed = _compression(magic)
            if not compressed:
                f.seek(0)
                data, truncated = _read_bounded(f.read, limit)
        if compressed:
            data, truncated = _decompressed(path, magic, limit)
    except NotText:
        raise
    except (EOFError, lzma.LZMAError, zlib.error, gzip.BadGzipFile) as e:
        raise NotText(CORRUPT, f"{path}: {e}") from None
    except OSError as e:
        raise NotText(UNREADABLE, f"{path}: {e}") from None
    reason = why_not_text(data, truncated=truncated)
    if reason:
        raise NotText(reason, str(path))
    return data, compressed, truncated


def walk(root: Path, skip_dirs: frozenset[str] = SKIP_DIRS) -> Iterator[tuple[str, Path]]:
    """``(relative path, path)`` of every regular file under ``root`` (or ``root`` itself), sorted."""
    if root.is_file():
        yield root.name, root
        return
    found = []
    for dirpath, dirnames, filenames in os.walk(root):  # does not follow symlinked folders
        dirnames[:] = [d for d in dirnames if d not in skip_dirs]
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_file():  # a symlink to a file counts; to a folder, a fifo or a socket does not
                found.append((path.relative_to(root).as_posix(), path))
    yield from sorted(found, key=lambda item: item[0].split("/"))  # by path components, as pathlib sorts


def iter_text_files(root: str | Path, *, max_bytes: int | None = None, scan: TextScan | None = None,
                    skip_dirs: frozenset[str] = SKIP_DIRS,
                    accept: Callable[[str], bool] | None = None) -> Iterator[tuple[str, bytes]]:
    """``(relative path, text bytes)`` of every text file under ``root``, sorted by path.

    ``max_bytes`` caps what is read of each file (after decompression). ``accept(rel)`` pre-filters by
    name (the default stdlib corpus keeps ``.py`` only); files it rejects are not counted. Every other
    file is either used or counted in ``scan.skipped`` under its reason.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"data path {root} does not exist")
    scan = scan if scan is not None else TextScan()
    for rel, path in walk(root, skip_dirs):
        if accept is not None and not accept(rel):
            continue
        try:
            data, compressed, truncated = _read(path, max_bytes)
        except NotText as e:
            try:
                size = path.stat().st_size
            except OSError:
                size = 0
            scan.skip(e.reason, size)
            continue
        scan.use(len(data), compressed=compressed, truncated=truncated)
        yield rel, data
