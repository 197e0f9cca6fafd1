"""The deterministic event core: one heap of ``(time, seq, callback, args)``, named random streams,
and a running hash of the trace.

The whole scheduler is SimPy's idea in a few lines: events pop in time order, and the sequence
number breaks ties in insertion order, so the same seed replays the same run bit for bit. There are
no processes or generators: an event is a plain callback with its arguments, which is what lets one
Python process push ten thousand nodes through a simulated day (see the package docstring).

Time is simulated seconds from the start of the run, always passed explicitly (``engine.now``).
"""
from __future__ import annotations

import hashlib
import heapq
import itertools
import random
from collections.abc import Callable
from typing import Any

__all__ = ["Engine", "Streams", "Trace"]


class Engine:
    """A heap of pending events. ``before`` (if given) runs whenever time is about to advance, with
    the new time, so that integrals of piecewise-constant quantities (nodes online, swarm rate) can
    be accumulated exactly without an event per node."""

    def __init__(self, before: Callable[[float], None] | None = None) -> None:
        self.now = 0.0
        self.events = 0  # events run so far
        self._queue: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = itertools.count()
        self._before = before

    def at(self, time: float, callback: Callable[..., None], *args: Any) -> None:
        """Run ``callback(*args)`` at simulated ``time`` (never earlier than now)."""
        if time < self.now:
            raise ValueError(f"cannot schedule in the past: {time} < {self.now}")
        heapq.heappush(self._queue, (time, next(self._seq), callback, args))

    def after(self, delay: float, callback: Callable[..., None], *args: Any) -> None:
        self.at(self.now + delay, callback, *args)

    def run(self, until: float) -> None:
        """Run every event scheduled before ``until``; leave the clock at ``until``."""
        queue, before = self._queue, self._before
        while queue and queue[0][0] < until:
            time, _, callback, args = heapq.heappop(queue)
            if time != self.now:
                if before is not None:
                    before(time)
                self.now = time
            self.events += 1
            callback(*args)
        if before is not None:
            before(until)
        self.now = max(self.now, until)

    def pending(self) -> int:
        return len(self._queue)


class Streams:
    """Independent ``random.Random`` streams derived from one seed and a name.

    Each subsystem draws from its own stream ("links", "churn", "matchmaking", ...), so adding a
    draw to one does not shift the numbers every other subsystem sees. The derivation uses SHA-256,
    not ``hash()``, which Python salts per process for strings.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._streams: dict[str, random.Random] = {}

    def __call__(self, name: str) -> random.Random:
        rng = self._streams.get(name)
        if rng is None:
            digest = hashlib.sha256(f"capaswarm-sim:{self.seed}:{name}".encode()).digest()
            rng = self._streams[name] = random.Random(int.from_bytes(digest[:8], "big"))
        return rng


class Trace:
    """A running SHA-256 over ``(time, kind, node)`` records, optionally kept as a list too.

    Two runs are the same run when their trace hashes match; the hash covers every state change of
    every node (joins, leaves, downloads, rounds, groups), with times printed to the nanosecond.
    """

    def __init__(self, keep: bool = False) -> None:
        self._hash = hashlib.sha256()
        self.records: list[tuple[float, str, int]] | None = [] if keep else None
        self.count = 0

    def __call__(self, time: float, kind: str, node: int = -1) -> None:
        self._hash.update(b"%.9f %s %d\n" % (time, kind.encode(), node))
        self.count += 1
        if self.records is not None:
            self.records.append((time, kind, node))

    def hexdigest(self) -> str:
        return self._hash.hexdigest()
