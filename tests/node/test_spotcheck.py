"""Spot checks (node/trust/spotcheck.py), in-process on a tiny GPT and real text (the stdlib's sources):
the validator's windows are the very batches the peer's sampler drew; an honest update passes; a
scaled, sign-flipped, random or zero update fails; an update trained on another peer's windows
fails the advantage test once the model is past its generic first steps."""
from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from benchmarks.spotcheck import honest_round
from node.data.load import load_corpus
from node.data.sampler import ByteSampler
from node.train.diloco import inner_optimizer, inner_step
from node.model.gpt import GPT
from node.trust.spotcheck import (Tolerance, assigned_batches, check_update, judge, random_batches, recompute_update, steps_of,
                            update_digest)
from protocol import Hyperparameters, ModelSpec

SPEC = ModelSpec("test", n_layer=1, n_head=2, n_embd=48, block_size=48)
HP = replace(Hyperparameters(), batch_size=8, warmup_steps=1, inner_lr=3e-3)
STEPS = 12
TOKENS = STEPS * HP.batch_size * SPEC.block_size
RUN = "spot-run"


@pytest.fixture(scope="module")
def train():
    return load_corpus(max_bytes=600_000).train


def _round(model, opt, train, peer: str, round_: int):
    """One honest inner phase of ``peer`` (what node.train.trainer does): its windows, then global - local."""
    return honest_round(model, opt, train, peer, round_, STEPS, HP, SPEC.block_size, run=RUN)


def _windows(train, peer: str, round_: int, n=None):
    assigned = assigned_batches(train, run_id=RUN, peer_id=peer, round_=round_, tokens=TOKENS, batch_size=HP.batch_size,
                                block_size=SPEC.block_size, max_batches=n or STEPS)
    rand = random_batches(train, seed=f"validator/{peer}/{round_}", batch_size=HP.batch_size, block_size=SPEC.block_size,
                          n=2 * len(assigned))
    return assigned, rand


@pytest.fixture(scope="module")
def fresh(train):
    """Round 3 of peer A from the seed weights with a fresh optimizer (a peer's first round)."""
    torch.manual_seed(0)
    model = GPT(SPEC)
    global_params, delta = _round(model, inner_optimizer(model.parameters(), HP), train, "peer-A", 3)
    return global_params, delta


@pytest.fixture(scope="module")
def veteran(train):
    """Peers A and B after 150 steps of shared training, each with its own (carried) optimizer."""
    torch.manual_seed(1)
    model = GPT(SPEC)
    opt = inner_optimizer(model.parameters(), HP)
    warm = ByteSampler(train, SPEC.block_size, HP.batch_size, seed=99)
    for _ in range(150):
        x, y = warm.batch()
        inner_step(model, opt, x, y, lr=HP.inner_lr, grad_clip=HP.grad_clip)
    opt_b = inner_optimizer(model.parameters(), HP)
    opt_b.load_state_dict(copy.deepcopy(opt.state_dict()))
    global_params, delta_a = _round(model, opt, train, "peer-A", 7)
    _, delta_b = _round(model, opt_b, train, "peer-B", 7)
    return global_params, delta_a, delta_b


def test_assigned_batches_are_the_ones_the_peer_drew(train):
    sampler = ByteSampler.for_node(train, SPEC.block_size, HP.batch_size, RUN, "peer-A")
    sampler.start_round(5)
    drawn = [sampler.batch() for _ in range(STEPS)]
    every = assigned_batches(train, run_id=RUN, peer_id="peer-A", round_=5, tokens=TOKENS, batch_size=HP.batch_size,
                             block_size=SPEC.block_size, max_batches=100)
    assert len(every) == STEPS and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(every, drawn))
    some = assigned_batches(train, run_id=RUN, peer_id="peer-A", round_=5, tokens=TOKENS, batch_size=HP.batch_size,
                            block_size=SPEC.block_size, max_batches=4)
    assert [torch.equal(s[0], drawn[i][0]) for s, i in zip(some, (0, 4, 7, 11))] == [True] * 4
    other_round = assigned_batches(train, run_id=RUN, peer_id="peer-A", round_=6, tokens=TOKENS, batch_size=HP.batch_size,
                                   block_size=SPEC.block_size, max_batches=1)
    assert not torch.equal(other_round[0][0], drawn[0][0])
    assert steps_of(TOKENS + 5, HP.batch_size, SPEC.block_size) == STEPS


def test_fresh_round_honest_passes_and_cheats_fail(train, fresh):
    global_params, delta = fresh
    assigned, rand = _windows(train, "peer-A", 3)
    scratch = GPT(SPEC)
    reference = recompute_update(scratch, global_params, assigned, HP)
    # a first round is a fresh AdamW at the same learning rate: the recompute is bit-identical
    assert update_digest(reference) == update_digest(delta)
    honest = check_update(scratch, global_params, delta, assigned, rand, reference=reference)
    assert honest.passed and honest.reason == "ok" and honest.gain > 0.1, honest
    noise = [torch.randn_like(d) * d.norm() / d.numel() ** 0.5 for d in delta]
    cheats = {
        "x100": ([d * 100 for d in delta], {"harmful"}),
        "zero": ([torch.zeros_like(d) for d in delta], {"no_gain"}),
        "tiny": ([d * 0.01 for d in delta], {"no_gain"}),
        "noise": (noise, {"harmful", "no_gain"}),
        "sign": ([-d for d in delta], {"harmful", "no_gain"}),
    }
    for name, (update, reasons) in cheats.items():
        result = check_update(scratch, global_params, update, assigned, rand, reference=reference)
        assert not result.passed and result.reason in reasons, (name, result)


def test_without_a_reference_only_harm_and_nothing_are_caught(train, fresh):
    global_params, delta = fresh
    assigned, rand = _windows(train, "peer-A", 3)
    scratch = GPT(SPEC)
    assert check_update(scratch, global_params, delta, assigned, rand).passed
    assert check_update(scratch, global_params, [d * 100 for d in delta], assigned, rand).reason == "harmful"
    assert check_update(scratch, global_params, [d * 0 for d in delta], assigned, rand).reason == "no_gain"
    assert check_update(scratch, global_params, delta[:-1], assigned, rand).reason == "harmful"  # wrong shapes


def test_veteran_round_another_peers_update_fails_the_advantage_test(train, veteran):
    global_params, delta_a, delta_b = veteran
    assigned, rand = _windows(train, "peer-A", 7)
    scratch = GPT(SPEC)
    reference = recompute_update(scratch, global_params, assigned, HP)
    strict = Tolerance(min_z=3.0)
    honest = check_update(scratch, global_params, delta_a, assigned, rand, strict, reference=reference)
    assert honest.passed and honest.z > 3.0, honest
    copied = check_update(scratch, global_params, delta_b, assigned, rand, strict, reference=reference)
    assert not copied.passed and copied.reason in {"no_gain", "not_assigned"}, copied
    assert copied.z < honest.z


def test_judge_rule():
    tol = Tolerance(min_z=2.0)
    assert judge(float("nan"), 0.0, 0.0, tol) == (False, "harmful")
    assert judge(-0.01, 0.0, 0.0, tol) == (False, "harmful")
    assert judge(0.0, 0.0, 0.0, tol) == (False, "no_gain")
    assert judge(0.05, 0.0, 5.0, tol, reference_gain=0.2) == (False, "no_gain")
    assert judge(0.05, 0.04, 1.0, tol) == (False, "not_assigned")
    assert judge(0.05, 0.01, 5.0, tol, reference_gain=0.06) == (True, "ok")


def test_validator_signs_verdicts_the_coordinator_can_read(train, fresh):
    from coordinator.plausibility import Limits, check_numbers
    from coordinator.cost import PriceTable
    from node.trust.validator import Validator
    from protocol import Identity, RunManifest, open_envelope, seal

    global_params, delta = fresh
    manifest = RunManifest(run_id=RUN, model=SPEC, hparams=HP)
    me, subject = Identity.from_seed(b"\x05" * 32), "peer-A"
    validator = Validator(manifest, train, max_batches=STEPS)
    for update, passed, reason in ((delta, True, "ok"), ([d * 100 for d in delta], False, "harmful")):
        result = validator.check(global_params, subject, 3, TOKENS, update)
        assert (result.passed, result.reason) == (passed, reason), result
        verdict = validator.verdict(me.peer_id, 1, 1.0, Identity.from_seed(b"\x06" * 32).peer_id, 3, TOKENS, result, update)
        opened = open_envelope(seal(verdict, me)).message
        assert opened == verdict and opened.windows == STEPS * HP.batch_size
        check_numbers(opened, model=SPEC, prices=PriceTable(), limits=Limits())  # within the coordinator's bounds
    with pytest.raises(ValueError):
        validator.check(global_params, subject, 3, 10, delta)  # less than one inner step


def test_sampling_is_keyed_and_near_its_rate():
    from node.policies.spotcheck import is_sampled

    picks = [is_sampled(b"k1", "peer", r, 0.1) for r in range(2000)]
    assert 120 < sum(picks) < 280
    assert picks != [is_sampled(b"k2", "peer", r, 0.1) for r in range(2000)]  # another secret, another sample
    assert picks == [is_sampled(b"k1", "peer", r, 0.1) for r in range(2000)]
    assert not any(is_sampled(b"k1", "peer", r, 0.0) for r in range(50))
    assert all(is_sampled(b"k1", "peer", r, 1.0) for r in range(50))


class _Averager:
    """What ``ValidatorRole`` asks of the averager: each peer's last update, as the peer serves it."""

    def __init__(self):
        self.served: dict[str, object] = {}

    def load_update(self, peer, timeout):
        return self.served.get(peer)


class _Swarm:
    dht = None

    def __init__(self):
        self.averager = _Averager()

    def start_validating(self, manifest, cfg, shapes):
        self.shapes = shapes


def test_the_validator_role_judges_each_served_round_once_against_the_state_it_started_from(train, fresh):
    """node/trust/validating.py in-process: the served update of a round whose starting state the validator
    holds is judged once, and the signed verdict sent; a zero update (a free rider) fails; updates from
    a state it does not hold, with malformed metadata or of the wrong shapes are not judged."""
    from node.host.config import NodeConfig
    from node.data.corpus import Corpus
    from node.model.state import GlobalState
    from node.trust.validating import ValidatorRole
    from protocol import Identity, RunManifest

    global_params, delta = fresh
    manifest = RunManifest(run_id=RUN, model=SPEC, hparams=HP)
    swarm, sent, me = _Swarm(), [], Identity.from_seed(b"\x07" * 32)
    role = ValidatorRole(manifest, Corpus(train, train[:1000], 1), swarm, cfg=NodeConfig(), identity=me,
                         device="cpu", send=sent.append, next_seq=iter(range(100)).__next__)
    state = GlobalState(3, [g.clone() for g in global_params], [torch.zeros_like(g) for g in global_params])
    role.states[state.hash] = state
    honest, rider = "peer-A", "peer-B"
    swarm.averager.served = {
        honest: ({"round": 3, "tokens": TOKENS, "state_hash": state.hash}, delta),
        rider: ({"round": 3, "tokens": TOKENS, "state_hash": state.hash}, [torch.zeros_like(d) for d in delta]),
        "stranger": ({"round": 3, "tokens": TOKENS, "state_hash": "0" * 64}, delta),  # a state we never held
        "garbled": ({"round": "3", "tokens": TOKENS, "state_hash": state.hash}, delta),
        "negative": ({"round": 3, "tokens": -TOKENS, "state_hash": state.hash}, delta),
        "not-a-map": ([3, TOKENS, state.hash], delta),
        "misshapen": ({"round": 3, "tokens": TOKENS, "state_hash": state.hash}, [d.flatten() for d in delta]),
    }
    claims = role.fetch_updates([honest, rider, honest, "stranger", "garbled", "negative", "not-a-map", "misshapen"])
    assert sorted(c.peer for c in claims) == [honest, rider]  # the honest round, served twice, is kept once
    for claim in claims:
        role.judge(claim)
    verdicts = sorted((v.subject, v.round, v.passed, v.reason) for v in sent)
    assert verdicts == [(honest, 3, True, "ok"), (rider, 3, False, "no_gain")]
    assert sorted(v.seq for v in sent) == [0, 1] and role.verdicts == {"ok": 1, "no_gain": 1}
    assert role.fetch_updates([honest, rider]) == []  # judged once
    with pytest.raises(ValueError, match="diloco-overlap"):
        ValidatorRole(replace(manifest, algorithm="diloco-overlap"), Corpus(train, train[:1000], 1), _Swarm(), cfg=NodeConfig(),
                      identity=me, device="cpu", send=sent.append, next_seq=lambda: 0)
