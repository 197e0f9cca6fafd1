"""What a trainer counts: one round's figures (``RoundResult``) and the running totals (``TrainerStats``).

Both trainers fill them (the DiLoCo ``Trainer`` and the ``sync`` baseline); the daemon turns a
``RoundResult`` into a signed ``ContributionReport`` and ``TrainerStats`` into ``status.json``,
heartbeats and ``/metrics``; the checkpoint carries the totals named in
``node.model.state.CHECKPOINT_COUNTERS``. Plain data, no torch.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from node.averaging.robust import MemberStats

__all__ = ["RoundResult", "TrainerStats"]

ROUND_LOG_ROUNDS = 500  # status.json's round log keeps the last this many rounds
VAL_HISTORY_ROUNDS = 2000  # the model card's curve keeps the last this many evaluations


@dataclass
class RoundResult:
    round: int  # the round this work went into
    tokens: int
    samples: int
    compute_s: float
    wall_s: float
    bytes_sent: int
    bytes_received: int
    ok: bool  # False: the all-reduce failed and the local work was discarded
    group: list[tuple[str, int]] = field(default_factory=list)  # (peer id, claimed tokens), this node included
    train_loss: float | None = None  # nats per byte
    val_bpb: float | None = None
    state_hash: str = ""  # of the global state after this round
    payload_bytes: int = 0
    blocked_s: float | None = None  # of wall_s, waiting on the network (None: not measured)
    # robust aggregation: per all-reduce our reducer ran, (members aggregated, {outlier peer id: stats})
    outliers: list[tuple[int, dict[str, MemberStats]]] = field(default_factory=list)
    # the agreement: per all-reduce, (members, [peer ids that claimed reducer failures no one else saw])
    dissent: list[tuple[int, list[str]]] = field(default_factory=list)


@dataclass
class TrainerStats:
    """A node's running totals since it first joined this run (the checkpointed ones survive restarts)."""

    inner_steps: int = 0
    tokens_total: int = 0  # every token this node processed in reported rounds
    tokens_contributed: int = 0  # tokens of rounds that went into the model (ok all-reduce)
    rounds_done: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    compute_s: float = 0.0  # seconds in forward/backward/optimizer, all rounds
    eval_s: float = 0.0  # seconds spent on validation
    evaluations: int = 0  # validation runs (one per applied round, and one at the start)
    checkpoints: int = 0  # checkpoints written (one per applied round)
    checkpoint_s: float = 0.0  # seconds spent writing them
    blocked_s: float = 0.0  # seconds the training loop waited on the network, all rounds
    initial_val_bpb: float | None = None
    last_val_bpb: float | None = None
    val_history: list[tuple[int, int, float]] = field(default_factory=list)  # (global round, our contributed tokens, val bpb)
    resumed_from: dict[str, Any] | None = None  # {"round", "state_hash"} of the checkpoint we resumed from
    synced_from_peers: dict[str, Any] | None = None  # ... of the last state downloaded from peers, and its "seconds"
    hash_history: dict[int, str] = field(default_factory=dict)  # round -> global state hash after it
    first_contribution: int | None = None  # round of our first successful all-reduce
    round_log: dict[int, tuple[float, int]] = field(default_factory=dict)  # round -> (unix time it ended, our tokens in it)
    last_group: list[str] = field(default_factory=list)  # peer ids of the last round's all-reduce group
    pauses: int = 0  # times the work gate held this node back
    paused_s: float = 0.0  # seconds spent held back
    round_count: int = 0  # rounds timed (completed or failed), for /metrics
    round_s_sum: float = 0.0
    last_round_s: float | None = None

    def counters(self, names: tuple[str, ...]) -> dict[str, Any]:
        """The totals a checkpoint keeps (``names``: ``node.model.state.CHECKPOINT_COUNTERS``)."""
        return {k: getattr(self, k) for k in names}

    def restore(self, saved: dict[str, Any]) -> None:
        """Totals from a checkpoint; one an older checkpoint lacks keeps its default."""
        for k, v in saved.items():
            setattr(self, k, v)

    def count_work(self, tokens: int, compute_s: float, blocked_s: float, sent: int, received: int) -> None:
        """A round's work and traffic, whether or not its all-reduce succeeded."""
        self.bytes_sent += sent
        self.bytes_received += received
        self.tokens_total += tokens
        self.compute_s += compute_s
        self.blocked_s += blocked_s

    def count_contribution(self, round_: int, tokens: int, group: list[tuple[str, int]], global_round: int,
                           state_hash: str) -> None:
        """A round whose all-reduce succeeded: its tokens went into the model at ``global_round``."""
        self.rounds_done += 1
        self.tokens_contributed += tokens
        self.round_log[round_] = (time.time(), tokens)
        self.round_log.pop(round_ - ROUND_LOG_ROUNDS, None)
        if self.first_contribution is None:
            self.first_contribution = round_
        self.last_group = [p for p, _ in group]
        self.hash_history[global_round] = state_hash

    def count_evaluation(self, global_round: int, val_bpb: float) -> None:
        self.last_val_bpb = val_bpb
        self.val_history.append((global_round, self.tokens_contributed, val_bpb))
        del self.val_history[:-VAL_HISTORY_ROUNDS]  # bounded: a long run keeps its last rounds

    def time_round(self, wall_s: float) -> None:
        self.round_count, self.round_s_sum, self.last_round_s = self.round_count + 1, self.round_s_sum + wall_s, wall_s
