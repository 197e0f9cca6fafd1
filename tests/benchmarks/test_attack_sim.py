"""The attack suite (benchmarks/attacks.py) on a tiny setting: attackers change what they send as
described, the robust all-reduce reports them (and only them) to the coordinator's flag rule, and
the plain mean reports nothing. Runs in seconds."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from benchmarks.attacks import attack_pseudo, markdown_table, plan, run_attack, summarize
from benchmarks.quality import QualityConfig, all_reduce, deterministic
from node.averaging.wire import make_codec
from bench_testing import stdlib_corpus

from node.data.corpus import Corpus
from protocol import Hyperparameters, ModelSpec

SPEC = ModelSpec("test", n_layer=1, n_head=2, n_embd=32, block_size=32)
CFG = QualityConfig(spec=SPEC, replicas=6, rounds=3, inner_steps=3, hp=replace(Hyperparameters(), batch_size=4, warmup_steps=2),
                    eval_batches=2)


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return stdlib_corpus(30, 3)


def test_what_attackers_send():
    g = [torch.ones(3), torch.full((2,), 2.0)]
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(attack_pseudo("sign_flip", g, None, gen)[1], torch.full((2,), -200.0))
    r = attack_pseudo("random", g, None, gen)
    norm = lambda v: float(torch.cat([x.reshape(-1) for x in v]).norm())  # noqa: E731
    assert norm(r) == pytest.approx(10 * norm(g), rel=1e-5)
    old = [torch.zeros(3), torch.ones(2)]
    assert torch.equal(attack_pseudo("stale", g, old, gen)[1], old[1])
    assert all(float(x.abs().sum()) == 0 for x in attack_pseudo("free_rider", g, None, gen))


def test_robust_all_reduce_stats_name_the_scaled_sender():
    inputs = [[torch.randn(5000) * 0.01] for _ in range(5)]
    inputs[4] = [inputs[0][0] * -100]
    ex = all_reduce(make_codec("fp16"), inputs, [1.0] * 5, "centered_clip")
    reducers = [j for j in range(5) if ex.stats[j][4].parts]  # hivemind's cut: reducers with a share of it
    assert reducers and all(ex.stats[j][4].max_ratio > 10 for j in reducers)
    assert all(ex.stats[j][s].max_ratio < 2 for j in reducers for s in range(4))
    plain = all_reduce(make_codec("fp16"), inputs, [1.0] * 5)
    assert plain.stats == [[type(ex.stats[0][0])() for _ in range(5)] for _ in range(5)]  # the mean reports nothing


@pytest.mark.parametrize("attack", ["sign_flip", "free_rider"])
def test_attackers_are_flagged_by_the_coordinators_rule(corpus, attack):
    with deterministic():
        robust = run_attack(CFG, corpus, attack, 1, "centered_clip")
        plain = run_attack(CFG, corpus, attack, 1, "mean")
    assert robust["attackers_flagged"] == 1 and robust["honest_flagged"] == 0
    assert robust["rounds_to_flag"] == 3  # an outlier in every round; the rule wants 3 of them
    assert plain["attackers_flagged"] == 0 and plain["flagged"] == {}
    report = {"config": {"replicas": 6, "inner_steps": 3, "rounds": 3, "spec": {"preset": "test"}, "params": 1}, "codec": "fp16",
              "summary": summarize([run_attack(CFG, corpus, "none", 0, "mean"), robust, plain])}
    assert "| 1 / 1 |" in markdown_table(report)


def test_plan_runs_clean_references_and_every_attack_with_and_without_defence():
    tasks = plan(["sign_flip", "stale"], [1, 3], ["centered_clip"])
    assert tasks[:2] == [("none", 0, "mean"), ("none", 0, "centered_clip")]
    assert len(tasks) == 2 + 2 * 2 * 2
