"""A round's all-reduce (launch, land) and the two ways to schedule it around the inner phase.

- :class:`Blocking` (``diloco``): after the inner phase, launch the all-reduce, wait for it, take
  the outer step; the next round starts from the new global parameters.
- :class:`Overlap` (``diloco-overlap``) hides the all-reduce behind compute (a one-round-delayed
  outer update, as in eager / streaming DiLoCo): the all-reduce of round r runs in the background
  while round r+1's inner steps proceed; it lands at the end of round r+1, and round r+2 starts from
  the new global parameters plus this node's own round-(r+1) progress, which is still on its way
  to the others.

Both drive a :class:`TrainerLike` (``t``): its model, global parameters, swarm and accounts; the one
implementation is ``node.train.trainer.Trainer``, which holds its schedule (so this module cannot
import it: the protocol keeps the arrow one way).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from node.host import faults
from node.averaging.group import parse_group, reference_hash, token_ceiling
from node.averaging.robust import MemberStats, outliers
from node.model.state import GlobalState
from node.train.stats import RoundResult, TrainerStats

from node.averaging.codecs import ErrorFeedback
from node.averaging.timeouts import LinkTimeouts
from node.host.config import NodeConfig
from node.net.statesync import StateSync
from node.net.swarm import SwarmHandles
from protocol import RunManifest

__all__ = ["Blocking", "Launch", "Overlap", "Work", "agreement_dissent", "alone", "launch", "land", "reducer_outliers",
           "strategy"]

logger = logging.getLogger(__name__)


class TrainerLike(Protocol):
    """What a schedule reads and drives of the trainer (``node.train.trainer.Trainer``)."""

    cfg: NodeConfig
    manifest: RunManifest
    peer_id: str
    swarm: SwarmHandles
    model: torch.nn.Module
    global_params: list[torch.Tensor]
    error_feedback: ErrorFeedback | None
    timeouts: LinkTimeouts
    statesync: StateSync
    round: int  # the swarm round this node works on
    global_round: int  # rounds folded into the global parameters
    need_resync: bool
    status: str
    step_timeout: float
    stats: TrainerStats

    @property
    def state_hash(self) -> str: ...

    def outer_step(self, averaged: list[torch.Tensor] | None, *, base_differs: bool = False) -> None: ...

    def close_round(self, work: Work, averaged: list[torch.Tensor] | None,
                    group: list[tuple[str, int]]) -> RoundResult: ...

    def restart_from(self, start: list[torch.Tensor]) -> None: ...

    def sync_from_peers(self, at_round: int | None = None) -> bool: ...

    def evaluate(self) -> float: ...

Averaged = tuple[list[torch.Tensor] | None, list[tuple[str, int]]]  # the averaged pseudo-gradient (None: failed), the group


@dataclass
class Launch:
    """An all-reduce started by :func:`launch`."""

    control: Any = None  # hivemind StepControl
    alone: list[torch.Tensor] | None = None  # no peers: our own pseudo-gradient is the average
    residuals_before: list[torch.Tensor] | None = None  # error feedback, restored if the round fails
    failed: bool = False
    state_hash: str = ""  # of the global state the pseudo-gradient applies to
    base_differs: bool = False  # set on landing: our global state was not the group's (we take no outer step)


@dataclass
class Work:
    """One round's local work, from the start of its inner phase to its outer step."""

    t_start: float
    round: int
    sent0: int = 0  # averager byte counters when this round's all-reduce started
    recv0: int = 0
    tokens: int = 0
    samples: int = 0
    compute_s: float = 0.0
    blocked_s: float = 0.0  # waiting on the network inside [t_start, t_end]
    loss: float = float("nan")
    launch: Launch | None = None
    t_end: float | None = None  # overlap: when the next inner phase started (the wait is billed to it)

    def mark_bytes(self, counters: Any) -> None:
        self.sent0, self.recv0 = counters.sent, counters.received

    def traffic(self, counters: Any) -> tuple[int, int]:
        """Bytes sent and received since ``mark_bytes``: this round's all-reduce."""
        return counters.sent - self.sent0, counters.received - self.recv0


def alone(t: TrainerLike) -> bool:
    """The tracker and a fresh DHT look see only us. Never for a node that joined through peers and has
    not averaged or downloaded yet: its DHT view may be empty (a demo's third node stepped alone, CI)."""
    if t.swarm.joined and t.stats.first_contribution is None and t.stats.synced_from_peers is None:
        return False
    return t.swarm.tracker.global_progress.num_peers <= 1 and not t.swarm.others_training()


def launch(t: TrainerLike, tokens: int, pseudo: list[torch.Tensor]) -> Launch:
    """Start the all-reduce of ``pseudo`` (weighted by ``tokens``); alone in the swarm, keep our own."""
    if alone(t):
        return Launch(alone=pseudo)
    t.status = "averaging"
    t.timeouts.expect_group(t.swarm.tracker.global_progress.num_peers)
    residuals_before = None
    if (scale := faults.poison_scale()) is not None:  # test seam: a poisoning node (CAPASWARM_FAULT=poison:S)
        pseudo = [g * scale for g in pseudo]
    t.swarm.averager.publish_update(t.round, tokens, t.state_hash, pseudo)  # for validators' spot checks
    if t.error_feedback is not None:  # send what the codec can carry; keep the rest for next round
        residuals_before = t.error_feedback.state_dict()
        pseudo = t.error_feedback.apply(pseudo)
    with t.swarm.averager.get_tensors() as buffers:
        for b, g in zip(buffers, pseudo):
            b.copy_(g)
    try:
        control = t.swarm.averager.step(
            gather={"tokens": tokens, "state_hash": t.state_hash, "state_round": t.global_round,
                    "serves": not t.swarm.averager.client_mode},
            weight=float(max(tokens, 1)),
            timeout=t.step_timeout,
            allow_retries=False,  # a retry would run on buffers a failed attempt already overwrote
            wait=False,
        )
    except Exception as e:
        logger.warning("round %d: could not start the all-reduce: %r", t.round, e)
        control = None
    return Launch(control=control, residuals_before=residuals_before, failed=control is None, state_hash=t.state_hash)


def land(t: TrainerLike, launched: Launch, round_: int) -> Averaged:
    """Wait for a launched all-reduce: the averaged pseudo-gradient (valid until the next launch) and
    the group's claims, or None."""
    if launched.alone is not None:
        return launched.alone, [(t.peer_id, -1)]
    gathered = None
    if not launched.failed:
        try:
            gathered = launched.control.result()
        except Exception as e:  # a failed group is an expected event in a volunteer swarm
            logger.warning("round %d: all-reduce failed: %r", round_, e)
    averager = t.swarm.averager
    if gathered:
        with averager.get_tensors() as buffers:
            if not all(torch.isfinite(b).all() for b in buffers):
                logger.error("round %d: the group's average is not finite; round abandoned", round_)
                gathered = None
    if not gathered:
        if launched.residuals_before is not None:  # the round's work is discarded: so is its residual update
            t.error_feedback.load_state_dict(launched.residuals_before)
        return None, []
    # values from other members are untrusted: malformed or implausible ones drop that member
    members = parse_group(gathered, token_ceiling(t.manifest.round_tokens))
    group = [(m.peer_id, m.tokens) for m in members]
    reference = reference_hash(members)
    if reference is not None and launched.state_hash != reference:
        logger.warning("round %d: our global state differs from the group's; no outer step, will resynchronise", round_)
        launched.base_differs = True
        t.need_resync = True
        t.statesync.forked(t.global_round)
    # the averager's buffers, not a copy (a model's worth): unchanged until our next launch, folded before it
    with averager.get_tensors() as buffers:
        return list(buffers), group


def reducer_outliers(averager: Any, round_: int, ok: bool) -> list[tuple[int, dict[str, MemberStats]]]:
    """What our reducer saw of each sender since the last call: (members, {outlier: stats}) per all-reduce, logged."""
    seen = averager.drain_reducer_stats()
    found = [(len(stats), flagged) for stats in seen if (flagged := outliers(stats))] if ok else []
    for _, flagged in found:
        logger.warning("round %d: our reducer clipped or found empty the parts of %s", round_,
                       ", ".join(f"{p[-8:]} (norm x{s.max_ratio:.2f}..x{s.min_ratio:.2f})" for p, s in flagged.items()))
    return found


def agreement_dissent(averager: Any, ok: bool) -> list[tuple[int, list[str]]]:
    """Members our agreement found claiming reducer failures no one else saw, since the last call:
    (group members, [peer id]) per all-reduce (``node.policies.agreement``); reported like outliers."""
    seen = averager.drain_dissent()
    return seen if ok else []


class Blocking:
    """Launch, wait, step: the round ends when its all-reduce lands."""

    # every inner phase starts from the global parameters themselves (the outer step and a download
    # change them only between phases), so the trainer keeps no separate copy of its start point
    anchor_is_global = True

    def __init__(self, t: TrainerLike):
        self.t = t

    def end_round(self, work: Work, pseudo: list[torch.Tensor]) -> RoundResult | None:
        t = self.t
        work.mark_bytes(t.swarm.averager.counters)
        t_launch = time.perf_counter()
        work.launch = launch(t, work.tokens, pseudo)
        averaged, group = land(t, work.launch, work.round)
        work.blocked_s += time.perf_counter() - t_launch  # matchmaking and the whole all-reduce
        if averaged is not None and work.launch.control is not None:
            seconds = time.perf_counter() - t_launch - t.cfg.matchmaking_time_s
            t.timeouts.measured(t.swarm.averager.counters.sent - work.sent0, seconds)
        t.outer_step(averaged, base_differs=work.launch.base_differs)
        if averaged is not None:
            with t.swarm.tracker.pause_updates():
                t.round = t.swarm.tracker.update_epoch(t.round + 1)
        # a failed group keeps the old global state; if some members did step, the swarm's
        # round moves past ours and the next round starts with a download
        t.restart_from(t.global_params)
        return t.close_round(work, averaged, group)

    def land_pending(self) -> RoundResult | None:
        return None  # nothing runs in the background

    def drop_pending(self) -> None:
        pass

    def adopts(self, state: GlobalState) -> bool:
        return True

    def state_round_needed(self) -> int:
        """The global round a download must bring us to: the swarm's (a landed round moves its epoch)."""
        return max(self.t.global_round, self.t.swarm.tracker.global_epoch)

    def round_after_sync(self, state: GlobalState) -> int:
        return self.t.round  # the state's round: its servers work on that round

    def holds_current_state(self) -> bool:
        return True  # every average we did not fold, a download at the round's start brings

    def evaluate_global(self) -> float:
        """Validation bits per byte of the global parameters: the local model restarted from them."""
        return self.t.evaluate()


class Overlap:
    """Land the all-reduce that ran behind this inner phase, then launch this round's."""

    anchor_is_global = False  # an inner phase starts from global minus our own in-flight update

    def __init__(self, t: TrainerLike):
        self.t = t
        self.in_flight: Work | None = None  # the round whose all-reduce runs behind the current inner phase

    def end_round(self, work: Work, pseudo: list[torch.Tensor]) -> RoundResult | None:
        t = self.t
        finished = None
        if self.in_flight is not None:
            prev, self.in_flight = self.in_flight, None
            t_wait = time.perf_counter()
            averaged, group = land(t, prev.launch, prev.round)
            work.blocked_s += time.perf_counter() - t_wait  # only what the inner phase did not hide
            t.outer_step(averaged, base_differs=prev.launch.base_differs)
            finished = t.close_round(prev, averaged, group)
        # catch up: we lack an average the others folded (the round in flight when we downloaded, or one
        # our landing dropped): fetch the state they launch this round with; if none is announced in
        # time, launch with ours and the vote settles it (stale launches had forked a current node, CI)
        if t.global_round < work.round:
            t_sync = time.perf_counter()
            t.sync_from_peers(at_round=work.round)
            work.blocked_s += time.perf_counter() - t_sync
        work.mark_bytes(t.swarm.averager.counters)  # after the previous all-reduce landed: only ours counts
        t_launch = time.perf_counter()
        work.launch = launch(t, work.tokens, pseudo)
        work.blocked_s += time.perf_counter() - t_launch
        with t.swarm.tracker.pause_updates():
            t.round = t.swarm.tracker.update_epoch(t.round + 1)
        t.restart_from([g - d for g, d in zip(t.global_params, pseudo)])  # consensus + our own progress
        work.t_end = time.perf_counter()
        self.in_flight = work
        return finished

    def land_pending(self) -> RoundResult | None:
        """Land the all-reduce still in flight and account for it (before a pause or the end)."""
        if self.in_flight is None:
            return None
        prev, self.in_flight = self.in_flight, None
        averaged, group = land(self.t, prev.launch, prev.round)
        self.t.outer_step(averaged, base_differs=prev.launch.base_differs)
        return self.t.close_round(prev, averaged, group)

    def drop_pending(self) -> None:
        """Before a download, wait out the all-reduce in flight (the averager's buffers are busy)."""
        if self.in_flight is not None:
            land(self.t, self.in_flight.launch, self.in_flight.round)
            self.in_flight = None

    def adopts(self, state: GlobalState) -> bool:
        # we join the round after the one in flight, assuming the state is the newest folded one: an
        # older (if majority-announced) state would fork us at once; the next round retries
        epoch = self.t.swarm.tracker.global_epoch
        if state.round + 1 < epoch:
            logger.info("downloaded state of round %d is behind the swarm's round %d; not adopted", state.round, epoch)
            return False
        return True

    def state_round_needed(self) -> int:
        """The global round a download must bring us to: one behind the swarm's epoch (its all-reduce is in
        flight). Asking for less took the lagging vote's older state, which ``adopts`` then refused, round
        after round: a node that took no step on a stale state never caught up (seen in a loaded CI run)."""
        return max(self.t.global_round, self.t.swarm.tracker.global_epoch - 1)

    def holds_current_state(self) -> bool:
        """Our state has every average folded but ours in flight: not after a download (until we catch
        up) nor a dropped landing. Else it is not announced: two joiners' votes outvoted a current node."""
        return self.t.global_round + (self.in_flight is not None) >= self.t.round

    def round_after_sync(self, state: GlobalState) -> int:
        """The state's round is in flight (its servers launched it as they folded the one before): join the
        round after it (the tracker's epoch alone lagged at start-up: two joiners averaged apart)."""
        return max(self.t.round, self.t.swarm.tracker.global_epoch, state.round + 1)

    def evaluate_global(self) -> float:
        """Validation bits per byte of the global parameters (the local model runs ahead of them)."""
        t = self.t
        with torch.no_grad():
            local = [p.detach().clone() for p in t.model.parameters()]
            for p, g in zip(t.model.parameters(), t.global_params):
                p.copy_(g)
            bpb = t.evaluate()
            for p, x in zip(t.model.parameters(), local):
                p.copy_(x)
        return bpb


def strategy(t: TrainerLike) -> Blocking | Overlap:
    return Overlap(t) if t.manifest.algorithm == "diloco-overlap" else Blocking(t)
