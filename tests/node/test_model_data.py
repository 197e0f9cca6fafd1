"""The byte-level GPT presets and the default corpus."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from node.data.load import load_corpus

from node.data.sampler import ByteSampler, evaluate_bpb
from node.train.diloco import inner_step
from node.model.gpt import GPT, PRESETS, preset


@pytest.mark.parametrize("name, low, high", [("tiny", 0.5e6, 1.5e6), ("small", 8e6, 12e6), ("gpt2-small-bytes", 80e6, 90e6),
                                             ("gpt2-124m", 124e6, 125e6)])
def test_preset_sizes(name, low, high):
    with torch.device("meta"):
        n = GPT(PRESETS[name]).num_params()
    assert low <= n <= high


def test_gpt2_124m_is_gpt2_small_with_gpt2s_vocabulary_and_nothing_else():
    spec = preset("gpt2-124m", 50257)
    assert (spec.n_layer, spec.n_head, spec.n_embd, spec.block_size, spec.vocab_size) == (12, 12, 768, 1024, 50257)
    with pytest.raises(ValueError, match="gpt2-small-bytes"):
        preset("gpt2-124m", 256)  # over bytes it would be 86M: not what the name says
    assert preset("small", 8000).vocab_size == 8000 and preset("small").vocab_size == 256


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown model preset"):
        preset("huge")


def test_default_corpus_is_the_stdlib_with_a_stable_split():
    a = load_corpus(max_bytes=2_000_000)
    b = load_corpus(max_bytes=2_000_000)
    assert len(a.train) > 100_000 and len(a.val) > 0
    assert a.fingerprint == b.fingerprint
    assert b"import" in a.train[:200_000].tobytes()


def test_user_data_folder(tmp_path):
    (tmp_path / "a.txt").write_text("hello volunteers " * 500)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("# notes\n" * 500)
    (tmp_path / "c.bin").write_bytes(b"\x00\x01" * 100)  # not text: ignored
    c = load_corpus(tmp_path)
    assert c.n_files == 2 and len(c.val) > 0
    with pytest.raises(FileNotFoundError):
        load_corpus(tmp_path / "missing")


def test_samplers_differ_by_peer_and_repeat_by_seed():
    data = np.frombuffer(bytes(range(256)) * 100, dtype=np.uint8)
    s1 = ByteSampler.for_node(data, 16, 4, "run", "peer-a")
    s2 = ByteSampler.for_node(data, 16, 4, "run", "peer-a")
    s3 = ByteSampler.for_node(data, 16, 4, "run", "peer-b")
    x1, y1 = s1.batch()
    assert torch.equal(x1, s2.batch()[0]) and not torch.equal(x1, s3.batch()[0])
    assert torch.equal(x1[:, 1:], y1[:, :-1]), "targets are the inputs shifted by one byte"


def test_untrained_model_is_near_8_bits_per_byte_and_learning_lowers_it():
    torch.manual_seed(0)
    c = load_corpus(max_bytes=1_000_000)
    model = GPT(PRESETS["tiny"])
    before = evaluate_bpb(model, c.val, 128, "cpu", batches=2)
    assert abs(before - 8.0) < 1.0 and math.isfinite(before)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    sampler = ByteSampler(c.train, 128, 8, seed=1)
    for _ in range(30):
        inner_step(model, opt, *sampler.batch(), lr=3e-3, grad_clip=1.0)
    assert evaluate_bpb(model, c.val, 128, "cpu", batches=2) < before - 1.5


def test_validation_at_long_context_runs_in_slices_and_gives_the_whole_batch_mean(monkeypatch):
    from dataclasses import replace

    from node.data import sampler as sampler_mod

    spec = replace(PRESETS["tiny"], block_size=512)  # 4,096 tokens a pass: 8 of the 16 windows at a time
    torch.manual_seed(0)
    model = GPT(spec)
    val = np.frombuffer(b"validation text, long enough for windows of 512 bytes. " * 400, np.uint8)
    rows_seen: list[int] = []
    model.register_forward_pre_hook(lambda _module, args: rows_seen.append(len(args[0])))
    sliced = evaluate_bpb(model, val, 512, "cpu", batches=2)
    assert rows_seen == [8, 8, 8, 8]
    rows_seen.clear()
    monkeypatch.setattr(sampler_mod, "EVAL_TOKENS_PER_FORWARD", 16 * 512)  # the whole batch in one pass
    whole = evaluate_bpb(model, val, 512, "cpu", batches=2)
    assert rows_seen == [16, 16] and math.isclose(sliced, whole, rel_tol=1e-5)
