"""Text recognised by content: extension-less files, binaries among text, compressed text, the log."""
from __future__ import annotations

import gzip
import logging
import lzma
import os
import shutil
import sys
from pathlib import Path

import pytest
import zstandard

from node.data.load import load_corpus
from node.data.textfiles import BINARY, CORRUPT, EMPTY, NOT_UTF8, NotText, TextScan, iter_text_files, read_text, why_not_text

LICENSES = Path("/usr/share/common-licenses")
# Debian's license texts: plain text files named without any extension
LICENSE_NAMES = ("Apache-2.0", "GPL-3", "BSD", "MPL-2.0")


def copy_license_texts(dest: Path, every: bool = False) -> list[str]:
    """Copy Debian's extension-less license texts (a few, or ``every`` one); where absent (not a Debian
    machine), write look-alikes: text without a suffix. Returns the file names."""
    dest.mkdir(parents=True, exist_ok=True)
    names = list(LICENSE_NAMES)
    if every and LICENSES.is_dir():
        names = sorted(p.name for p in LICENSES.iterdir() if p.is_file())
    for name in names:
        src = LICENSES / name
        if src.is_file():
            shutil.copyfile(src, dest / name)
        else:
            (dest / name).write_text(f"{name} license\n" + "Permission is hereby granted, free of charge.\n" * 200)
    return names


def test_extension_less_text_files_are_used(tmp_path):
    names = copy_license_texts(tmp_path / "texts")
    for extra in ("README", "NOTES", "paper.tex", "rows.jsonl", "feed.xml", "film.srt"):
        (tmp_path / "texts" / extra).write_text(f"{extra}: some words, and more words.\n" * 50)
    scan = TextScan()
    found = dict(iter_text_files(tmp_path / "texts", scan=scan))
    assert set(found) == set(names) | {"README", "NOTES", "paper.tex", "rows.jsonl", "feed.xml", "film.srt"}
    assert found["GPL-3"] == (tmp_path / "texts" / "GPL-3").read_bytes()
    assert scan.used_files == 10 and scan.skipped_files == 0
    assert scan.used_bytes == sum(len(v) for v in found.values())
    corpus = load_corpus(tmp_path / "texts")
    assert corpus.n_files == 10 and len(corpus.train) > 10_000 and len(corpus.val) > 0


def test_a_binary_among_text_files_is_skipped_and_counted(tmp_path, caplog):
    copy_license_texts(tmp_path)
    (tmp_path / "sub").mkdir()
    shutil.copyfile(os.path.realpath(sys.executable), tmp_path / "sub" / "backend")  # a real ELF binary, no extension
    (tmp_path / "image").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8)
    (tmp_path / "latin1").write_bytes("caf\xe9 cr\xe8me br\xfbl\xe9e ".encode("latin-1") * 100)  # mostly not UTF-8
    (tmp_path / "short-latin1").write_bytes(b"an old text with one caf\xe9 in it\n" * 40)  # 1 bad byte in 33: > 1%
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")  # never entered
    scan = TextScan()
    used = [rel for rel, _ in iter_text_files(tmp_path, scan=scan)]
    assert used == sorted(LICENSE_NAMES)
    assert scan.skipped[BINARY][0] == 2  # the ELF and the PNG
    assert scan.skipped[BINARY][1] == (tmp_path / "sub" / "backend").stat().st_size + (tmp_path / "image").stat().st_size
    assert scan.skipped[NOT_UTF8][0] == 2 and scan.skipped[EMPTY][0] == 1
    with caplog.at_level(logging.INFO, logger="node.data.load"):
        corpus = load_corpus(tmp_path)
    assert corpus.n_files == 4
    line = next(r.getMessage() for r in caplog.records if r.name == "node.data.load")
    assert "used 4 files" in line and "skipped 5" in line and "2 binary (NUL bytes)" in line and "2 not UTF-8 text" in line, line


def test_a_few_replacement_characters_are_tolerated():
    text = ("plain words " * 100).encode() + b"\xe9" + ("more words " * 100).encode()
    assert why_not_text(text) is None
    assert why_not_text(b"abc" + "é".encode()[:1], truncated=True) is None  # a character cut by the size limit
    assert why_not_text(b"abc\xe9", truncated=False) == NOT_UTF8  # 1 bad in 4: too many
    assert why_not_text(b"") == EMPTY and why_not_text(b"a\0b") == BINARY


def test_compressed_text_is_read_decompressed(tmp_path):
    original = (LICENSES / "GPL-3").read_bytes() if (LICENSES / "GPL-3").is_file() else b"GNU GENERAL PUBLIC LICENSE\n" * 800
    (tmp_path / "a.gz").write_bytes(gzip.compress(original))
    (tmp_path / "b.xz").write_bytes(lzma.compress(original))
    (tmp_path / "c.zst").write_bytes(zstandard.ZstdCompressor().compress(original))
    (tmp_path / "no-suffix").write_bytes(gzip.compress(original))  # recognised by its magic bytes, not its name
    (tmp_path / "bin.gz").write_bytes(gzip.compress(bytes(range(256)) * 64))  # compressed binary: still binary
    (tmp_path / "broken.gz").write_bytes(gzip.compress(original)[:200])  # cut short
    scan = TextScan()
    found = dict(iter_text_files(tmp_path, scan=scan))
    assert found == {"a.gz": original, "b.xz": original, "c.zst": original, "no-suffix": original}
    assert scan.compressed_files == 4 and scan.used_bytes == 4 * len(original)
    assert scan.skipped[BINARY][0] == 1 and scan.skipped[CORRUPT][0] == 1
    assert "4 decompressed" in scan.summary()


def test_max_bytes_bounds_what_a_compressed_file_costs(tmp_path):
    bomb = tmp_path / "bomb.gz"
    bomb.write_bytes(gzip.compress(b"a" * 50_000_000))  # 50 MB of text in ~50 KB
    assert len(read_text(bomb, max_bytes=1000)) == 1000
    scan = TextScan()
    [(rel, data)] = list(iter_text_files(bomb, max_bytes=4096, scan=scan))
    assert rel == "bomb.gz" and len(data) == 4096 and scan.truncated_files == 1


def test_no_text_at_all_is_one_clear_error(tmp_path):
    (tmp_path / "x").write_bytes(b"\0" * 100)
    with pytest.raises(ValueError, match=r"no text files under .*skipped 1: 1 binary"):
        load_corpus(tmp_path)
    with pytest.raises(NotText) as e:
        read_text(tmp_path / "x")
    assert e.value.reason == BINARY
