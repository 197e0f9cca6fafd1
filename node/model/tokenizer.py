"""Vocabularies: bytes (the default, 256 ids) or a BPE vocabulary trained locally with ``tokenizers``.

Both are saved as one Hugging Face ``tokenizer.json`` (the ``tokenizers`` library's format), so an
export ships the very file the run trained with and ``AutoTokenizer.from_pretrained(export)`` loads
it. The byte vocabulary is a byte-level BPE with no merges whose vocabulary maps GPT-2's printable
stand-in for byte ``b`` to id ``b``: encoding is then exactly ``list(text.encode())``.

A vocabulary's identity is the sha256 of its ``tokenizer.json`` bytes; a manifest pins it
(``DataSpec.tokenizer_sha256``) so every node's shards and every export agree on the ids.
The ``tokenizers`` package is only needed to train or apply a BPE vocabulary (``pip install
capaswarm[export]``): nodes train on already-tokenized shards and never import it.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "BYTE_VOCAB", "EOS_TOKEN", "TokenizerFile", "byte_tokenizer_json", "bytes_to_unicode", "load_tokenizer",
    "sha256_file", "train_bpe",
]

BYTE_VOCAB = 256
EOS_TOKEN = "<|endoftext|>"  # BPE vocabularies: id 0, placed between documents (bytes use the 0 byte)
TOKENIZER_FILE = "tokenizer.json"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (what byte-level BPE works on)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return dict(zip(bs, map(chr, cs)))


def byte_tokenizer_json() -> str:
    """The byte vocabulary as a ``tokenizers`` JSON document, written without the library."""
    stand_in = bytes_to_unicode()
    doc: dict[str, Any] = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {stand_in[b]: b for b in range(BYTE_VOCAB)}, "merges": []},
    }
    return json.dumps(doc, ensure_ascii=False, indent=1)


def train_bpe(texts: Iterable[str], vocab_size: int, out: Path) -> str:
    """Train a byte-level BPE vocabulary of ``vocab_size`` ids on ``texts`` (an iterator: the
    trainer streams it) and write ``out``; returns its sha256. Id 0 is :data:`EOS_TOKEN`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size <= BYTE_VOCAB:
        raise ValueError(f"a BPE vocabulary needs more than {BYTE_VOCAB} ids (the bytes), not {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS_TOKEN], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    out.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(out))
    return sha256_file(out)


class TokenizerFile:
    """A vocabulary: the byte one (no file, no library) or a ``tokenizer.json`` applied with ``tokenizers``."""

    def __init__(self, path: Path | None = None):
        self.path = path
        self._tok = None
        if path is not None:
            from tokenizers import Tokenizer

            self._tok = Tokenizer.from_file(str(path))
        self.vocab_size = BYTE_VOCAB if self._tok is None else self._tok.get_vocab_size()
        self.eos_id = 0  # the 0 byte, or EOS_TOKEN (trained first, so id 0)

    @property
    def is_bytes(self) -> bool:
        return self._tok is None

    def json(self) -> str:
        return byte_tokenizer_json() if self.path is None else self.path.read_text()

    def encode(self, text: str) -> list[int]:
        return list(text.encode()) if self._tok is None else self._tok.encode(text).ids

    def encode_batch(self, texts: list[str]) -> Iterator[list[int]]:
        if self._tok is None:
            yield from (list(t.encode()) for t in texts)
        else:
            yield from (e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        if self._tok is None:
            return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")
        return self._tok.decode(ids)


def load_tokenizer(directory: Path) -> TokenizerFile:
    """The vocabulary saved in ``directory`` (an export or a prepared data folder); bytes if none is."""
    path = Path(directory) / TOKENIZER_FILE
    if not path.exists():
        return TokenizerFile(None)
    doc = json.loads(path.read_text())
    if not doc.get("model", {}).get("merges") and len(doc.get("model", {}).get("vocab", {})) == BYTE_VOCAB:
        return TokenizerFile(None)  # the byte vocabulary: no library needed
    return TokenizerFile(path)
