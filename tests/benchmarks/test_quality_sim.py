"""The token-space quality simulation (benchmarks/quality.py): determinism, an exact reduction to
plain AdamW, error feedback, the all-reduce's averages and bytes, and the files the command writes.

Small on purpose: a 1-layer, 32-wide GPT, a few rounds of a few steps; the whole file runs in seconds.
"""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from benchmarks import quality
from benchmarks.quality import QualityConfig, all_reduce, build_parser, config_from_args, main, deterministic, run_baseline, run_diloco
from benchmarks.suites.charts import COLORS
from node.averaging.wire import make_codec
from node.averaging.codecs import quantize_roundtrip
from bench_testing import stdlib_corpus

from node.data.corpus import Corpus
from node.model.gpt import GPT
from protocol import Hyperparameters, ModelSpec

SPEC = ModelSpec("test", n_layer=1, n_head=2, n_embd=32, block_size=32)
CFG = QualityConfig(spec=SPEC, replicas=2, rounds=3, inner_steps=4, hp=replace(Hyperparameters(), batch_size=4, warmup_steps=2),
                    eval_batches=2)


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return stdlib_corpus(60, 6)


@pytest.fixture(autouse=True)
def _deterministic():
    with deterministic():
        yield


def test_same_seed_gives_identical_curves_and_another_seed_does_not(corpus):
    cfg = replace(CFG, replicas=3, hetero=True)
    assert cfg.steps_per_replica() == [2, 4, 6] and sum(cfg.steps_per_replica()) == 3 * cfg.inner_steps
    a, b = run_diloco(cfg, corpus, "q2ef"), run_diloco(cfg, corpus, "q2ef")
    for key in ("val_bpb", "train_loss", "sent_per_round", "final_bpb_alt", "down_rel_err"):
        assert a[key] == b[key], key
    assert all(torch.equal(p, q) for p, q in zip(a["params"], b["params"]))
    c = run_diloco(replace(cfg, seed=1), corpus, "q2ef")
    assert c["val_bpb"][-1] != a["val_bpb"][-1]


def test_loss_decreases(corpus):
    run = run_diloco(CFG, corpus, "int8")
    assert run["tokens"] == [r * 2 * 4 * 4 * 32 for r in range(4)]
    assert run["val_bpb"][-1] < run["val_bpb"][0] - 0.3
    assert run["train_loss"][-1] < run["train_loss"][0]


def test_chunked_sparse_codec_learns_with_its_own_outer_optimizer(corpus):
    """topk2ef runs with the outer optimizer its runs get (lr 2, no momentum: CODEC_OUTER) and learns
    every round; its uplink is what the codec's size says (indices, codes, scales and counts)."""
    cfg = replace(CFG, replicas=4, rounds=6, inner_steps=8)
    run = run_diloco(cfg, corpus, "topk2ef")
    assert run["outer"] == {"lr": 2.0, "momentum": 0.0}
    assert all(b < a for a, b in zip(run["val_bpb"], run["val_bpb"][1:])), run["val_bpb"]
    assert run["val_bpb"][-1] < run["val_bpb"][0] - 0.3
    codec = make_codec("topk2ef").codec
    # parts never span tensors: a tensor of n values sends per chunk a scale and a count, then up to 64 values
    # (2 B index + 2 bits); the model's small tensors (biases, norms) send all of theirs
    most = 0
    for p in GPT(cfg.spec).parameters():
        lengths = [min(4096, p.numel() - lo) for lo in range(0, p.numel(), 4096)]
        kept = sum(min(64, n) for n in lengths)
        most += 4 * len(lengths) + 2 * kept + -(-kept // 4)
    values = sum(p.numel() for p in GPT(cfg.spec).parameters())
    assert codec.bytes_per_value < min(run["bytes_per_value_up"]) <= max(run["bytes_per_value_up"]) <= most / values
    assert run["up_rel_err"] == [0.0] * 6  # on-grid after error feedback: the uplink adds nothing


def test_one_replica_with_plain_outer_sgd_is_local_adamw(corpus):
    """k = 1, no codec, outer lr 1 without momentum: the global step lands on the local weights, so DiLoCo
    is the baseline's AdamW run step for step (same stream, same warmup, AdamW state kept across rounds)."""
    cfg = replace(CFG, replicas=1, rounds=4)
    base = run_baseline(cfg, corpus)
    plain = run_diloco(cfg, corpus, "none", outer_lr=1.0, outer_momentum=0.0)
    worst = max(float((p - q).abs().max()) for p, q in zip(plain["params"], base["params"]))
    assert worst < 1e-5
    assert plain["val_bpb"] == pytest.approx(base["val_bpb"], abs=1e-5)
    nesterov = run_diloco(cfg, corpus, "none")  # the real outer optimizer: a different trajectory
    assert max(float((p - q).abs().max()) for p, q in zip(nesterov["params"], base["params"])) > 100 * worst


@pytest.mark.parametrize("codec", ["q2ef", "topkef", "topk2ef"])
def test_error_feedback_carries_residuals_across_rounds(corpus, codec):
    run = run_diloco(replace(CFG, rounds=6), corpus, codec)
    ef = run["error_feedback"]
    assert ef["identity_error"] < 1e-5  # sum of what was sent + the residual left = sum of true pseudo-gradients
    assert ef["residual_norm"] > 0.01
    assert ef["drift_with_ef"] < ef["drift_without_ef"]  # sending the residual later beats dropping it
    assert run["up_rel_err"] == [0.0] * 6  # the node's EF output re-quantizes to itself: the uplink adds nothing


def _vectors(k: int, seed: int = 0) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(300, 500), (7,), (2**17 + 5,)]  # the last one spans two all-reduce parts
    return [[torch.randn(s, generator=g) for s in shapes] for _ in range(k)]


def test_all_reduce_of_fp32_is_the_weighted_mean_at_the_bandwidth_bound():
    inputs, weights = _vectors(3), [1.0, 2.0, 5.0]
    ex = all_reduce(make_codec("none"), inputs, weights)
    n = sum(t.numel() for t in inputs[0])
    for t, avg in enumerate(ex.averaged):
        exact = sum(w * x[t] for w, x in zip(weights, inputs)) / sum(weights)
        torch.testing.assert_close(avg, exact, rtol=1e-6, atol=1e-6)
    for sent in ex.sent:  # 2(k-1)/k x 4 B x n; shares are whole parts, so within one part of it
        assert abs(sent - 2 * 2 / 3 * 4 * n) < 4 * 2**17


def test_all_reduce_members_receive_the_downlink_codes():
    inputs, weights = _vectors(4, seed=1), [1.0] * 4
    dense = all_reduce(make_codec("int8"), inputs, weights)
    codec = make_codec("int8").codec
    for avg in dense.averaged:
        torch.testing.assert_close(quantize_roundtrip(codec, avg), avg, rtol=0, atol=0)  # on the int8 grid
    exact = [sum(x[t] for x in inputs) / 4 for t in range(3)]
    assert 0 < max(float((a - e).abs().max()) for a, e in zip(dense.averaged, exact)) < 0.05
    topk = make_codec("topkef")
    sent = [[quantize_roundtrip(topk.codec, t) for t in x] for x in inputs]  # as the node's error feedback sends them
    sparse = all_reduce(topk, sent, weights)
    nnz = sum(int(torch.count_nonzero(a)) for a in sparse.averaged)
    assert sparse.down_bytes == 6 * nnz  # top-k's downlink: index + fp16 value of every non-zero of the average
    exact_nnz = sum(int(torch.count_nonzero(sum(x[t] for x in sent))) for t in range(3))
    assert nnz == exact_nnz > 3.5 * max(sum(int(torch.count_nonzero(t)) for t in x) for x in sent)  # ~the union of supports


def test_command_writes_json_table_and_plots(tmp_path, capsys, monkeypatch, corpus, read_png):
    monkeypatch.setattr(quality, "load_corpus", lambda: corpus)
    out = tmp_path / "q"
    argv = ["--out", str(out), "--model", "micro", "--replicas", "2", "--inner-steps", "2", "--rounds", "2",
            "--eval-batches", "1", "--codecs", "none", "q2ef"]
    assert main(argv) == 0
    report = json.loads((out / "quality.json").read_text())
    assert list(report["runs"]) == ["baseline", "none", "q2ef"]
    rows = {r["config"]: r for r in report["summary"]}
    assert rows["none"]["vs_none_pct"] == 0 and rows["baseline"]["vs_baseline_pct"] == 0
    # DP sends 4 B/value every step; DiLoCo none ~4 B/value once per H = 2 steps
    assert rows["none"]["reduction_vs_dp"] == pytest.approx(2, rel=0.01)
    assert rows["q2ef"]["reduction_vs_dp"] == pytest.approx(2 * 4 / (2 / 8 + 2 / 128), rel=0.01)
    assert "| q2ef |" in capsys.readouterr().out and "| q2ef |" in (out / "quality.md").read_text()
    for name in ("quality_bpb.png", "quality_delta.png"):
        png = read_png(out / name, 720, 380)
        # three curves (baseline, none, q2ef): their colours cover more than a legend entry (~60 px); no fourth
        assert min(png.count(c) for c in COLORS[:3]) > 150, [png.count(c) for c in COLORS[:4]]
        assert png.count(COLORS[3]) == 0


def test_cli_surface_and_token_budget():
    parser = build_parser()
    options = {s for a in parser._actions for s in a.option_strings}
    assert options == {"-h", "--help", "--out", "--replicas", "--rounds", "--inner-steps", "--tokens", "--model", "--batch-size",
                       "--codecs", "--seed", "--eval-batches", "--hetero", "--jobs"}
    args = parser.parse_args(["--model", "micro", "--inner-steps", "50", "--tokens", "10000000"])
    cfg = config_from_args(args)
    assert cfg.tokens_per_round == 4 * 50 * 16 * 64 and cfg.rounds == 10_000_000 // cfg.tokens_per_round
    assert args.codecs == ["none", "fp16", "int8", "q4", "q2ef", "topkef", "topk2ef"]
