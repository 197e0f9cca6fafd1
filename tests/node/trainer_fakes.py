"""Small stand-ins for the hivemind side of a node, to drive the real ``node.train.trainer.Trainer`` in-process.

Each implements only what the trainer calls (``node.net.swarm.SwarmHandles``, hivemind's
``ProgressTracker``, ``node.averaging.averager.PseudoGradientAverager``), with the arithmetic of a real
group spelled out once here: an all-reduce returns the token-weighted mean of our pseudo-gradient
and those of scripted peers. No network, no processes: a round of the tiny model takes milliseconds.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import torch

# a peer's contribution to round r: (its pseudo-gradient, its token claim)
Peer = Callable[[int, list[torch.Size]], tuple[list[torch.Tensor], int]]


class FakeTracker:
    """hivemind's ProgressTracker, counting this node's tokens only: the round ends at ``target``."""

    def __init__(self, target: int, num_peers: int = 1):
        self.target, self.tokens, self.global_epoch = target, 0, 0
        self.local_epoch = 0  # the round this node last reported progress for
        self.global_progress = SimpleNamespace(num_peers=num_peers)
        self.training_progress_key = "fake_progress"
        self.shut_down = False

    def report_local_progress(self, round_: int, tokens: int) -> None:
        self.local_epoch, self.tokens = round_, tokens

    @property
    def ready_to_update_epoch(self) -> bool:
        return self.tokens >= self.target

    @contextlib.contextmanager
    def pause_updates(self) -> Iterator[None]:
        yield

    def update_epoch(self, epoch: int) -> int:
        self.global_epoch, self.tokens = epoch, 0
        return epoch

    def shutdown(self) -> None:
        self.shut_down = True


class FakeControl:
    """hivemind's StepControl of a launched all-reduce: ``result()`` is the gathered claims (or raises)."""

    def __init__(self, gathered: dict[str, Any] | None, error: Exception | None = None):
        self.gathered, self.error = gathered, error

    def result(self) -> dict[str, Any]:
        if self.error is not None:
            raise self.error
        assert self.gathered is not None
        return self.gathered


class FakeAverager:
    """An averager whose group is this node plus ``peers`` (scripted): ``step`` averages at once.

    ``round_of()``: the round an all-reduce belongs to (the peers' contributions depend on it).
    ``fail_rounds``: the first all-reduce of each of these rounds fails (``result()`` raises). ``peer_hash``: the
    state hash the peers claim (default: ours). ``served``: the ``(metadata, tensors)`` a state
    download gets, if the trainer's check accepts it; or a list of them, one per download (the
    last one stays)."""

    client_mode = False

    def __init__(self, shapes: list[torch.Size], round_of: Callable[[], int], peers: dict[str, Peer],
                 fail_rounds: frozenset[int] = frozenset(), peer_hash: str | None = None):
        self.round_of = round_of
        self.buffers = [torch.zeros(s) for s in shapes]
        self.shapes, self.peers, self.fail_rounds, self.peer_hash = shapes, peers, set(fail_rounds), peer_hash
        self.counters = SimpleNamespace(sent=0, received=0)
        self.allow_state_sharing, self.state_sharing_priority = True, 0.0
        self.sent: list[list[torch.Tensor]] = []  # what this node put into each all-reduce
        self.averaged: list[list[torch.Tensor]] = []  # what each all-reduce returned
        self.timeouts: list[tuple[float, float]] = []
        self.served: Any = None  # (metadata, tensors), or a list of them
        self.published: list[tuple[int, int, str, list[torch.Tensor]]] = []  # updates kept for validators

    @contextlib.contextmanager
    def get_tensors(self) -> Iterator[list[torch.Tensor]]:
        yield self.buffers

    def step(self, *, gather: dict[str, Any], weight: float, timeout: float, allow_retries: bool, wait: bool) -> FakeControl:
        round_ = self.round_of()
        ours = [b.clone() for b in self.buffers]
        self.sent.append(ours)
        self.counters.sent += 4 * sum(b.numel() for b in ours)
        self.counters.received += 4 * sum(b.numel() for b in ours)
        if round_ in self.fail_rounds:
            self.fail_rounds.discard(round_)  # once: the retry of the same round goes through
            return FakeControl(None, RuntimeError("the group fell apart"))
        total, parts = weight, [[weight * b for b in ours]]
        gathered = {"self": dict(gather)}
        for name, peer in self.peers.items():
            tensors, tokens = peer(round_, self.shapes)
            total += tokens
            parts.append([tokens * t for t in tensors])
            gathered[name] = {**gather, "tokens": tokens, "state_hash": self.peer_hash or gather["state_hash"]}
        averaged = [sum(p[i] for p in parts) / total for i in range(len(self.buffers))]
        for b, a in zip(self.buffers, averaged):
            b.copy_(a)
        self.averaged.append([a.clone() for a in averaged])
        return FakeControl(gathered)

    def drain_reducer_stats(self) -> list[Any]:
        return []

    def drain_dissent(self) -> list[tuple[int, list[str]]]:
        return []

    def publish_update(self, round_: int, tokens: int, state_hash: str, update: list[torch.Tensor]) -> None:
        self.published.append((round_, tokens, state_hash, [u.clone() for u in update]))

    def set_timeouts(self, *, chunk_s: float, allreduce_s: float) -> None:
        self.timeouts.append((chunk_s, allreduce_s))

    def load_state_from_peers(self, *, timeout: float, accept: Callable[[Any, list[Any]], str | None]) -> Any:
        served = self.served
        if isinstance(served, list):
            served = served.pop(0) if len(served) > 1 else served[0]
        if served is None or accept(*served) is not None:
            return None
        return served


class FakeSwarm:
    """``node.net.swarm.SwarmHandles`` without a DHT: it hands the trainer a fake tracker and averager."""

    def __init__(self, target: int, peers: dict[str, Peer] | None = None, **averager: Any):
        self.target, self.peers, self.averager_options = target, peers or {}, averager
        self.dht = None
        self.tracker: FakeTracker | None = None
        self.averager: FakeAverager | None = None
        self.swarm_epoch = 0  # what a fresh look at the DHT would say the swarm's round is
        self.joined = False  # SwarmHandles.joined: bootstrapped from peers

    def start_training(self, manifest: Any, cfg: Any, shapes: list[torch.Size], serve_state: Callable[[], Any]) -> None:
        self.serve_state = serve_state
        self.tracker = FakeTracker(self.target, num_peers=1 + len(self.peers))
        self.averager = FakeAverager(shapes, lambda: self.tracker.local_epoch, self.peers, **self.averager_options)

    def restart_tracker(self) -> None:
        self.tracker = FakeTracker(self.target, num_peers=1 + len(self.peers))

    def others_training(self) -> bool:
        return bool(self.peers)

    def swarm_round(self) -> int:
        return max(self.tracker.global_epoch, self.swarm_epoch)
