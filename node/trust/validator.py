"""The validator's side of a spot check: a claim and the round's global state in, a signed
``SpotCheckVerdict`` out (issue 11 item 4). Torch, no hivemind, no I/O of its own.

    sampled = is_sampled(secret, subject, round, rate)            # node.policies.spotcheck
    result  = Validator(manifest, train).check(global_r, subject, round, tokens, update)
    verdict = validator.verdict(peer_id, seq, now, subject, round, tokens, result, update)
    -> reporter.submit(seal(verdict, identity))                      # to the coordinator

What the validator must obtain, and what this module does not do yet: the global state of round r
(a joiner's state download, checked against the announced majority hash: ``node.net.announce``) and the
subject's update of round r (see docs/coordinator.md, "Spot checks": the peer keeps its last rounds'
updates and serves them on request; the digest it committed to must match). ``swarm join --role
validator`` is to wire these into a loop that trains nothing.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from node.data.corpus import Tokens
from node.model.gpt import GPT
from node.trust.spotcheck import (CheckResult, Tolerance, assigned_batches, check_update, random_batches, recompute_update,
                            update_digest)
from protocol import RunManifest, SpotCheckVerdict

__all__ = ["Validator"]


@dataclass
class Validator:
    """Checks claims of one run against its deterministic data windows.

    ``max_batches``: assigned batches evaluated per check (spread over the round); ``random_factor``
    x as many random ones; ``recompute``: also run the round's inner steps (at most ``max_batches``
    of them) for the reference gain; ``secret``: seeds the random windows (and the sample) so peers
    cannot predict them."""

    manifest: RunManifest
    train: Tokens
    tolerance: Tolerance = field(default_factory=Tolerance)
    max_batches: int = 16
    random_factor: int = 2
    recompute: bool = True
    device: str = "cpu"
    secret: bytes = field(default_factory=lambda: os.urandom(32))

    def __post_init__(self) -> None:
        self.model = GPT(self.manifest.model).to(self.device)  # scratch: every check overwrites its parameters

    def check(self, global_params: Sequence[torch.Tensor], subject: str, round_: int, tokens: int,
              update: Sequence[torch.Tensor]) -> CheckResult:
        """Judge ``update`` (global - local) as ``subject``'s work of ``round_`` claimed as ``tokens``."""
        hp, spec = self.manifest.hparams, self.manifest.model
        assigned = assigned_batches(self.train, run_id=self.manifest.run_id, peer_id=subject, round_=round_, tokens=tokens,
                                    batch_size=hp.batch_size, block_size=spec.block_size, max_batches=self.max_batches)
        if not assigned:
            raise ValueError(f"a claim of {tokens} tokens is less than one inner step")
        rand = random_batches(self.train, seed=f"{self.secret.hex()}/{subject}/{round_}", batch_size=hp.batch_size,
                              block_size=spec.block_size, n=self.random_factor * len(assigned))
        reference = recompute_update(self.model, global_params, assigned, hp, self.device) if self.recompute else None
        return check_update(self.model, global_params, update, assigned, rand, self.tolerance, self.device, reference)

    def verdict(self, peer_id: str, seq: int, sent_at: float, subject: str, round_: int, tokens: int, result: CheckResult,
                update: Sequence[torch.Tensor]) -> SpotCheckVerdict:
        """The signed-to-be message for ``result`` (``peer_id``: this validator)."""
        return SpotCheckVerdict(
            run_id=self.manifest.run_id, peer_id=peer_id, seq=seq, sent_at=sent_at, round=round_, subject=subject,
            passed=result.passed, reason=result.reason, tokens=tokens, windows=result.windows,
            gain=_finite(result.gain), random_gain=_finite(result.random_gain), z=_finite(result.z),
            update_sha256=update_digest(update),
            reference_gain=None if result.reference_gain is None else _finite(result.reference_gain),
        )


def _finite(x: float, bound: float = 1e6) -> float:
    """A figure the wire carries (no NaN or infinity) and the coordinator accepts (|x| <= 1e6)."""
    if x != x:
        return -bound  # NaN: only a harmful update gives one
    return max(-bound, min(bound, x))
