"""swarm data prepare: text files -> token shards; loading them memory-mapped; a run's data checks."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from node.cli.main import main
from node.data.corpus import DataError, check_data
from node.data.load import load_corpus
from node.data.sampler import ByteSampler, evaluate_bpb
from node.model.gpt import GPT, PRESETS
from node.data.shards import INDEX, find_text_files, load_shards, prepare
from node.model.tokenizer import TokenizerFile
from protocol import DataSpec, RunManifest

WORDS = "the swarm trains one model together on volunteered machines while the ledger counts every token".split()


def write_corpus(root, n_files=40, words=600, seed=0):
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        sub = root / f"part{i % 3}"
        sub.mkdir(exist_ok=True)
        lines = [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(words // 12)]
        (sub / f"doc{i}.txt").write_text("\n".join(lines) + "\n")
    (root / "part0" / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00" + bytes(range(256)) * 8)  # binary: skipped
    (root / "part1" / "latin1.dat").write_bytes("caf\xe9 na\xefve\n".encode("latin-1"))  # not UTF-8: skipped
    return root


def test_prepare_bytes_round_trips_the_text(tmp_path):
    src = write_corpus(tmp_path / "src")
    files = find_text_files([src])
    assert len(files) == 40 and not any(p.suffix in (".png", ".dat") for p, _ in files)
    summary = prepare([src], tmp_path / "out", shard_tokens=20_000)
    assert summary["dtype"] == "uint8" and len(summary["train"]) > 1, "small shards: several of them"
    corpus = load_corpus(tmp_path / "out")
    assert isinstance(corpus.train, list) and isinstance(corpus.train[0], np.memmap)
    text = b"".join(bytes(s) for s in corpus.train) + b"".join(bytes(s) for s in corpus.val)
    originals = sum(p.stat().st_size for p, _ in files)
    assert len(text) == originals + len(files), "every byte plus one separator per file"
    assert corpus.content_hash == summary["content_hash"] and corpus.vocab_size == 256
    # same input, same shards, same hash: nodes that prepare the corpus themselves agree
    assert prepare([src], tmp_path / "again", shard_tokens=20_000)["content_hash"] == summary["content_hash"]


def test_prepare_bpe_writes_the_vocabulary_and_decodes_back(tmp_path):
    src = write_corpus(tmp_path / "src")
    summary = prepare([src], tmp_path / "out", vocab="bpe:300")
    assert summary["dtype"] == "uint16" and summary["vocab_size"] == 300 and summary["tokenizer_sha256"]
    corpus = load_corpus(tmp_path / "out")
    tok = TokenizerFile(tmp_path / "out" / "tokenizer.json")
    ids = np.concatenate([np.asarray(s) for s in corpus.train])
    assert ids.max() < 300 and summary["tokens"]["train"] < summary["text_bytes"], "BPE is shorter than bytes"
    first_doc = ids[: int(np.argmax(ids == tok.eos_id))].tolist()
    assert tok.decode(first_doc).split()[0] in WORDS


def test_the_shard_sampler_reads_windows_without_loading_the_corpus(tmp_path):
    prepare([write_corpus(tmp_path / "src")], tmp_path / "out", shard_tokens=10_000)
    corpus = load_corpus(tmp_path / "out")
    s = ByteSampler.for_node(corpus.train, 64, 8, "run", "peer-a")
    s.start_round(3)
    x, y = s.batch()
    assert x.shape == (8, 64) and torch.equal(x[:, 1:], y[:, :-1])
    s.start_round(4)
    other = s.batch()[0]
    s.start_round(3)
    assert torch.equal(s.batch()[0], x), "a round's windows are a function of (run, peer, round)"
    assert not torch.equal(other, x)
    t = ByteSampler.for_node(corpus.train, 64, 8, "run", "peer-b")
    t.start_round(3)
    assert not torch.equal(t.batch()[0], x)
    bpb = evaluate_bpb(GPT(PRESETS["tiny"]), corpus.val, 64, "cpu", batches=1)
    assert 6.0 < bpb < 10.0


def test_tampered_shards_and_bad_folders_are_refused(tmp_path):
    prepare([write_corpus(tmp_path / "src")], tmp_path / "out", shard_tokens=20_000)
    shard = tmp_path / "out" / "train-00000.bin"
    data = bytearray(shard.read_bytes())
    data[100] ^= 1
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError, match="does not match its sha256"):
        load_shards(tmp_path / "out")
    (tmp_path / "out" / INDEX).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(DataError, match="unknown format"):
        load_corpus(tmp_path / "out")
    with pytest.raises(DataError, match="no text files"):
        (tmp_path / "empty").mkdir()
        prepare([tmp_path / "empty"], tmp_path / "o2")


def test_a_files_run_needs_its_data_and_the_pinned_corpus(tmp_path):
    prepare([write_corpus(tmp_path / "src")], tmp_path / "out")
    corpus = load_corpus(tmp_path / "out")
    files_run = RunManifest(run_id="ft", data=DataSpec(source="files"))
    with pytest.raises(DataError, match="pass --data"):
        check_data(load_corpus(max_bytes=200_000), files_run, given=False)
    check_data(corpus, files_run, given=True)
    pinned = RunManifest(run_id="ft", data=DataSpec(source="files", sha256="0" * 64))
    with pytest.raises(DataError, match="same corpus"):
        check_data(corpus, pinned, given=True)
    check_data(corpus, pinned.with_changes(data=DataSpec(source="files", sha256=corpus.content_hash)), given=True)
    bpe = prepare([tmp_path / "src"], tmp_path / "bpe", vocab="bpe:300")
    with pytest.raises(DataError, match="vocabulary"):
        check_data(load_corpus(tmp_path / "bpe"), files_run, given=True)
    bpe_run = RunManifest(run_id="ft", data=DataSpec(source="files", tokenizer_sha256=bpe["tokenizer_sha256"]))
    with pytest.raises(DataError, match="the model only 256"):
        check_data(load_corpus(tmp_path / "bpe"), bpe_run, given=True)


def test_swarm_data_prepare_cli(tmp_path, capsys):
    src = write_corpus(tmp_path / "src", n_files=12)
    assert main(["data", "prepare", str(src), "--out", str(tmp_path / "out")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["files"] == 12 and summary["content_hash"]
    assert main(["data", "prepare", str(src), "--out", str(tmp_path / "o"), "--vocab", "words"]) == 2
    assert "bpe:N" in capsys.readouterr().err
