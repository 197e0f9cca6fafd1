"""The real ``node.train.trainer.Trainer``, in-process, with a fake swarm (``trainer_fakes``): the tiny GPT
on the CPU, a few rounds in milliseconds.

What is checked is the trainer's own bookkeeping of a round, against arithmetic written out here:
the outer step applies the group's averaged pseudo-gradient; a failed all-reduce discards the
round's work; ``diloco-overlap`` folds round r in at the end of round r+1; a node that finds its
state forked downloads the swarm's; a paused node lands its all-reduce, leaves the rounds and
resynchronises after; and a node resumed from its checkpoint continues bit-identically
(2 rounds + checkpoint + 1 round in a new Trainer == 3 rounds straight).
"""
from __future__ import annotations

import shutil
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from node.net import statesync
from node.host.config import NodeConfig
from node.data.corpus import Corpus
from node.train.diloco import outer_momentum, outer_optimizer, outer_step
from node.host.gate import WorkGate
from node.model.state import GlobalState, NodeCheckpoint, load_checkpoint, save_checkpoint
from node.train.trainer import Trainer
from protocol import Hyperparameters, ModelSpec, RunManifest
from trainer_fakes import FakeSwarm, Peer

SPEC = ModelSpec("test", n_layer=1, n_head=2, n_embd=32, block_size=32)
HP = replace(Hyperparameters(), batch_size=4, warmup_steps=3, inner_lr=3e-3)
STEPS = 2  # inner steps per round
TARGET = STEPS * HP.batch_size * SPEC.block_size  # tokens per round (the fake tracker counts ours only)
CFG = NodeConfig(eval_batches=1)


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    text = np.frombuffer(b"the quick brown fox jumps over the lazy dog. " * 400, np.uint8)
    return Corpus(text[:15000], text[15000:], 1)


def manifest(**changes) -> RunManifest:
    return RunManifest(run_id="inprocess", model=SPEC, hparams=HP, round_tokens=TARGET, **{"codec": "none", **changes})


def peer(seed: int, tokens: int) -> Peer:
    """A peer whose pseudo-gradient of round r is a fixed function of (seed, r)."""
    def contribution(round_: int, shapes: list[torch.Size]) -> tuple[list[torch.Tensor], int]:
        gen = torch.Generator().manual_seed(1000 * seed + round_)
        return [1e-2 * torch.randn(s, generator=gen) for s in shapes], tokens
    return contribution


def trainer(corpus: Corpus, state_dir: Path, m: RunManifest, **swarm) -> tuple[Trainer, FakeSwarm]:
    fake = FakeSwarm(TARGET, **swarm)
    return Trainer(m, corpus, fake, peer_id="peer-0", state_dir=state_dir, cfg=CFG), fake


def clone(tensors) -> list[torch.Tensor]:
    return [t.detach().clone() for t in tensors]


def equal(a, b) -> bool:
    a, b = list(a), list(b)
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def stepped(start: list[torch.Tensor], *averages: list[torch.Tensor]) -> list[torch.Tensor]:
    """The global parameters after outer steps (Nesterov SGD, the manifest's lr and momentum) with ``averages``."""
    params = clone(start)
    opt = outer_optimizer(params, HP.outer_lr, HP.outer_momentum)
    for averaged in averages:
        outer_step(opt, averaged)
    return params


STOP = threading.Event()  # never set: each test runs the rounds it asks for


def test_the_outer_step_applies_the_groups_token_weighted_average(corpus, tmp_path):
    t, swarm = trainer(corpus, tmp_path, manifest(), peers={"peer-a": peer(1, 3 * TARGET)})
    g0, h0 = clone(t.global_params), t.state_hash
    result = t.run_round(STOP)

    ours, averaged = swarm.averager.sent[0], swarm.averager.averaged[0]
    assert result is not None and result.ok and result.round == 0 and result.tokens == TARGET
    assert result.group == [("self", TARGET), ("peer-a", 3 * TARGET)]
    assert not equal(averaged, ours), "the peer's pseudo-gradient must be part of the average"
    # validators can download what we averaged: round, tokens, the state it started from, the update
    (r, tokens, started_from, update), = swarm.averager.published
    assert (r, tokens, started_from) == (0, TARGET, h0) and equal(update, ours)
    assert equal(t.global_params, stepped(g0, averaged))
    assert not equal(t.global_params, stepped(g0, ours))
    # blocking: the next round starts from the new global parameters, in step with the swarm
    assert equal(t.model.parameters(), t.global_params) and t.round == t.global_round == 1
    assert t.state_hash == GlobalState(1, clone(t.global_params), outer_momentum(t.outer_opt)).hash == result.state_hash
    assert NodeCheckpoint.load(tmp_path / "checkpoint.pt").state.hash == t.state_hash
    assert (t.stats.rounds_done, t.stats.tokens_contributed, t.stats.first_contribution) == (1, TARGET, 0)
    assert t.stats.hash_history == {1: t.state_hash} and t.stats.last_group == ["self", "peer-a"]


def test_a_joiner_is_served_a_copy_of_the_current_state_made_when_it_asks(corpus, tmp_path):
    """The trainer keeps no copy of its global state between rounds (at real size, a model's worth): a
    download gets one, made under the lock in shared memory, which later outer steps leave alone."""
    t, swarm = trainer(corpus, tmp_path, manifest(), peers={"peer-a": peer(1, TARGET)})
    shapes = [p.shape for p in t.global_params]
    assert t.run_round(STOP).ok
    meta, tensors = swarm.serve_state()
    served = GlobalState.from_wire(meta, tensors, shapes)
    assert (meta["round"], served.hash, meta["state_hash"]) == (1, t.state_hash, t.state_hash)
    assert all(x.is_shared() and x.data_ptr() != g.data_ptr() for x, g in zip(tensors, t.global_params))
    assert equal(tensors[:len(shapes)], t.global_params) and equal(tensors[len(shapes):], outer_momentum(t.outer_opt))
    assert t.run_round(STOP).ok  # the next outer step changes our state, not what was served
    assert GlobalState.from_wire(meta, tensors, shapes).hash == served.hash != t.state_hash
    assert swarm.serve_state()[0]["state_hash"] == t.state_hash == GlobalState(
        2, clone(t.global_params), outer_momentum(t.outer_opt)).hash


def test_a_failed_allreduce_keeps_the_global_state_and_discards_the_work(corpus, tmp_path):
    t, swarm = trainer(corpus, tmp_path, manifest(codec="q2ef"), peers={"peer-a": peer(1, TARGET)}, fail_rounds={0})
    g0 = clone(t.global_params)
    result = t.run_round(STOP)

    assert result is not None and not result.ok and result.group == [] and result.val_bpb is None
    assert equal(t.global_params, g0) and equal(t.model.parameters(), g0) and t.round == t.global_round == 0
    assert all(not r.any() for r in t.error_feedback.state_dict()), "the discarded round's residual update must be undone"
    assert (t.stats.tokens_total, t.stats.tokens_contributed, t.stats.rounds_done) == (TARGET, 0, 0)
    assert not (tmp_path / "checkpoint.pt").exists()
    again = t.run_round(STOP)  # the same swarm round again, and this time the group holds: residuals are kept
    assert again.ok and again.round == 0 and any(r.any() for r in t.error_feedback.state_dict())


def test_overlap_folds_round_r_in_at_the_end_of_round_r_plus_1(corpus, tmp_path):
    t, swarm = trainer(corpus, tmp_path, manifest(algorithm="diloco-overlap"), peers={"peer-a": peer(2, TARGET)})
    g0 = clone(t.global_params)
    sent, averaged = swarm.averager.sent, swarm.averager.averaged

    assert t.run_round(STOP) is None  # round 0's all-reduce is in flight
    assert equal(t.global_params, g0) and (t.round, t.global_round) == (1, 0)
    assert equal(t.model.parameters(), [g - d for g, d in zip(g0, sent[0])])  # consensus + our own progress

    first = t.run_round(STOP)  # lands round 0 at the end of round 1, launches round 1
    assert first is not None and first.ok and first.round == 0
    g1 = stepped(g0, averaged[0])
    assert equal(t.global_params, g1) and (t.round, t.global_round) == (2, 1)
    assert equal(t.model.parameters(), [g - d for g, d in zip(g1, sent[1])])
    assert not equal(sent[1], stepped(g0, averaged[0])), "round 1 ran on top of round 0's own progress"

    landed: list = []
    t.run(STOP, landed.append, max_rounds=0)  # no more rounds: only the last all-reduce lands
    assert [r.round for r in landed] == [1] and landed[0].ok
    assert equal(t.global_params, stepped(g0, averaged[0], averaged[1])) and t.global_round == 2
    assert NodeCheckpoint.load(tmp_path / "checkpoint.pt").state.hash == t.state_hash


def test_blocking_and_overlap_differ_from_round_1_on(corpus, tmp_path):
    """The strategies are not the same schedule under two names: with the same peers, blocking's
    round 1 starts from the stepped state, overlap's from round 0's own progress."""
    peers = {"peer-a": peer(2, TARGET)}
    b, bswarm = trainer(corpus, tmp_path / "b", manifest(), peers=peers)
    o, oswarm = trainer(corpus, tmp_path / "o", manifest(algorithm="diloco-overlap"), peers=peers)
    for _ in range(2):
        b.run_round(STOP)
        o.run_round(STOP)
    assert equal(bswarm.averager.sent[0], oswarm.averager.sent[0])  # the same first round
    assert not equal(bswarm.averager.sent[1], oswarm.averager.sent[1])


def test_a_forked_node_downloads_the_swarms_state_and_adopts_it(corpus, tmp_path):
    other = "ab" * 32  # the state hash both peers hold: the group's majority, not ours
    m = manifest()
    t, swarm = trainer(corpus, tmp_path, m, peers={"peer-a": peer(1, TARGET), "peer-b": peer(2, TARGET)}, peer_hash=other)
    g0, h0 = clone(t.global_params), t.state_hash
    assert t.run_round(STOP).ok  # our work went into the group's average and counts
    assert t.need_resync and swarm.averager.allow_state_sharing is False  # no joiner downloads our fork
    # but our state was not the group's: the average applied to it would be a state no one else holds
    assert equal(t.global_params, g0) and t.global_round == 0 and t.state_hash == h0
    assert set(t.stats.hash_history.values()) == {h0}

    gen = torch.Generator().manual_seed(7)
    theirs = GlobalState(1, [torch.randn(p.shape, generator=gen) for p in t.global_params],
                         [torch.zeros(p.shape) for p in t.global_params])
    swarm.averager.served, swarm.averager.peer_hash = theirs.to_wire(m.content_hash), None
    result = t.run_round(STOP)  # starts with the download, then trains round 1 from it

    synced = dict(t.stats.synced_from_peers)
    assert synced.pop("seconds") >= 0 and synced == {"round": 1, "state_hash": theirs.hash}  # and how long it took
    assert not t.need_resync and swarm.averager.allow_state_sharing is True
    assert result.ok and result.round == 1 and equal(t.global_params, stepped(theirs.params, swarm.averager.averaged[-1]))


def _state_of(t: Trainer, round_: int, seed: int) -> GlobalState:
    gen = torch.Generator().manual_seed(seed)
    return GlobalState(round_, [torch.randn(p.shape, generator=gen) for p in t.global_params],
                       [torch.zeros(p.shape) for p in t.global_params])


@pytest.mark.parametrize("served_in_time", [True, False])
def test_an_overlap_joiner_fetches_the_state_its_group_launches_with(corpus, tmp_path, monkeypatch, served_in_time):
    """A joiner of an overlapped swarm downloads state 1 while round 1's all-reduce is in flight, so it
    works on round 2, even if its tracker still says round 1; before launching round 2 it fetches state
    2 (round 1 folded), the state its group launches round 2 with. Without it (no peer serves state 2
    in time) it launches with state 1 and the group's vote settles it."""
    monkeypatch.setattr(statesync, "SYNC_RETRY_S", 0.0)
    m = manifest(algorithm="diloco-overlap")
    t, swarm = trainer(corpus, tmp_path, m, peers={"peer-a": peer(2, TARGET)})
    swarm.tracker.global_epoch = 1  # the tracker's view lags: the swarm launched round 1 already
    one, two = _state_of(t, 1, 7), _state_of(t, 2, 8)
    swarm.averager.served = [one.to_wire(m.content_hash), *([two.to_wire(m.content_hash)] if served_in_time else [])]

    assert t.run_round(STOP) is None  # downloads state 1, trains round 2, launches it
    base = two if served_in_time else one
    assert (t.stats.synced_from_peers["round"], t.stats.synced_from_peers["state_hash"]) == (2, base.hash)
    (r, _, launched_on, update), = swarm.averager.published
    assert (r, launched_on, t.global_round, t.state_hash) == (2, base.hash, base.round, base.hash)
    assert t.round == 3 and equal(t.global_params, base.params)
    assert t.rounds.holds_current_state() is served_in_time  # a state still lacking round 1 is not announced
    assert equal(t.model.parameters(), [g - d for g, d in zip(base.params, update)])  # the state + our progress


@pytest.mark.parametrize("joined", [True, False])
def test_only_a_first_node_steps_alone_before_it_averaged_or_downloaded(corpus, tmp_path, joined):
    """Seeing no one else, a swarm's first node steps alone; a node that joined through peers launches the
    all-reduce instead (its fresh DHT view may still be empty: a step of its own would fork the state)."""
    t, swarm = trainer(corpus, tmp_path, manifest())
    swarm.joined = joined
    assert t.run_round(STOP).ok
    assert len(swarm.averager.sent) == (1 if joined else 0)
    swarm.averager.sent.clear()
    assert t.run_round(STOP).ok  # it has averaged (or stepped) once: alone now means alone
    assert swarm.averager.sent == []


def test_a_state_older_than_ours_is_refused(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(statesync, "SYNC_RETRY_S", 0.0)  # refused every time: no pause between the attempts
    m = manifest()
    t, swarm = trainer(corpus, tmp_path, m, peers={"peer-a": peer(1, TARGET)})
    t.run_round(STOP)
    swarm.averager.served = GlobalState(0, clone(t.global_params), outer_momentum(t.outer_opt)).to_wire(m.content_hash)
    before = clone(t.global_params)
    assert t.sync_from_peers() is False and equal(t.global_params, before) and t.stats.synced_from_peers is None


def test_a_paused_node_lands_its_allreduce_leaves_the_rounds_and_resyncs_after(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(statesync, "SYNC_RETRY_S", 0.0)
    gate, swarm = WorkGate(), FakeSwarm(TARGET, peers={"peer-a": peer(2, TARGET)})
    t = Trainer(manifest(algorithm="diloco-overlap"), corpus, swarm, peer_id="peer-0", state_dir=tmp_path, cfg=CFG, gate=gate)
    assert t.run_round(STOP) is None  # round 0's all-reduce is in flight
    tracker = swarm.tracker
    gate.set("paused", True, "paused by its volunteer")
    landed: list = []

    def on_round(result) -> None:  # the volunteer resumes as soon as the paused node has landed its round
        landed.append(result)
        gate.set("paused", False)

    t.pause(STOP, on_round)
    assert [r.round for r in landed] == [0] and landed[0].ok and t.global_round == 1
    assert tracker.shut_down and swarm.tracker is not tracker, "it left the round's progress tracking, then rejoined"
    assert t.need_resync and t.status == "joining" and t.stats.pauses == 1
    assert swarm.averager.allow_state_sharing is False  # its state went stale while it waited
    assert t.run_round(STOP) is None  # no peer serves newer state: it goes on from its own, and shares it again
    assert not t.need_resync and swarm.averager.allow_state_sharing is True


# ------------------------------------------------------------------------------ resume equivalence

RESUME_PEERS = {"peer-a": peer(3, 2 * TARGET)}


def _state(t: Trainer) -> dict[str, list[torch.Tensor]]:
    inner = t.inner_opt.state_dict()["state"]
    return {
        "global": clone(t.global_params), "momentum": outer_momentum(t.outer_opt), "local": clone(t.model.parameters()),
        "adam": [s[k] for _, s in sorted(inner.items()) for k in ("exp_avg", "exp_avg_sq", "step")],
        "residuals": list(t.error_feedback.state_dict()),
    }


def _resume_and_train_one(corpus: Corpus, state_dir: Path, m: RunManifest) -> Trainer:
    t, _ = trainer(corpus, state_dir, m, peers=RESUME_PEERS)
    assert t.round == 2 and t.stats.resumed_from is not None
    assert t.run_round(STOP).ok
    return t


@pytest.fixture(scope="module")
def resume_runs(corpus, tmp_path_factory):
    """3 rounds straight; 2 rounds, then a new Trainer on the same state dir for the third."""
    m = manifest(codec="q2ef")  # error feedback: its residuals are part of what a checkpoint carries
    straight, _ = trainer(corpus, tmp_path_factory.mktemp("straight"), m, peers=RESUME_PEERS)
    for _ in range(3):
        assert straight.run_round(STOP).ok
    first_dir = tmp_path_factory.mktemp("resumed")
    first, _ = trainer(corpus, first_dir, m, peers=RESUME_PEERS)
    for _ in range(2):
        assert first.run_round(STOP).ok
    return m, straight, first, first_dir


def test_a_resumed_node_continues_bit_identically(corpus, resume_runs):
    m, straight, first, first_dir = resume_runs
    saved_hash = first.state_hash
    copy_dir = first_dir.parent / (first_dir.name + "-copy")
    shutil.copytree(first_dir, copy_dir)  # the parametrized test below resumes from first_dir too
    resumed = _resume_and_train_one(corpus, copy_dir, m)

    assert resumed.stats.resumed_from == {"round": 2, "state_hash": saved_hash}
    a, b = _state(straight), _state(resumed)
    for key in a:
        assert equal(a[key], b[key]), key
    assert resumed.state_hash == straight.state_hash and resumed.round == straight.round == 3
    for counter in ("inner_steps", "tokens_total", "tokens_contributed", "rounds_done", "bytes_sent", "val_history"):
        assert getattr(resumed.stats, counter) == getattr(straight.stats, counter), counter


@pytest.mark.parametrize("forget", ["momentum", "inner_opt", "ef_residuals"])
def test_resume_equivalence_notices_a_checkpoint_that_forgets(corpus, resume_runs, tmp_path, forget):
    """The comparison above can fail: drop one part of the checkpoint and the third round differs."""
    m, straight, first, first_dir = resume_runs
    shutil.copytree(first_dir, tmp_path / "state")
    path = tmp_path / "state" / "checkpoint.pt"
    payload = load_checkpoint(path)
    if forget == "momentum":
        payload["momentum"] = [torch.zeros_like(x) for x in payload["momentum"]]
    elif forget == "inner_opt":
        payload["inner_opt"] = {"state": {}, "param_groups": payload["inner_opt"]["param_groups"]}
    else:
        payload["ef_residuals"] = None
    save_checkpoint(path, payload)
    resumed = _resume_and_train_one(corpus, tmp_path / "state", m)
    assert not equal(resumed.global_params, straight.global_params)
