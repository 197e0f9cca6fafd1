"""The acceptance pipeline: envelope bytes in, a durable ledger entry (or a counted rejection) out.

Checks run on the event loop (an Ed25519 verify is ~0.1 ms); storage runs on one writer thread
with *group commit*: whatever arrived while the previous transaction was being written goes into
the next one, so a burst of N reports costs a few fsyncs, not N. Every caller's future is
resolved only after its transaction committed: nothing is acknowledged that the disk does not
hold.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from protocol import ContributionReport, Heartbeat, RemoteProtocolError, open_envelope

from .config import CoordinatorConfig
from .ledger import RateLimiter, Reject, check_message, reject_from_protocol
from .metrics import Metrics
from .store import Incoming, Outcome, Store

__all__ = ["Ingestor", "StorageUnavailable"]

logger = logging.getLogger(__name__)

_Item = tuple[Incoming, "asyncio.Future[Outcome]"]


class StorageUnavailable(Exception):
    """The ledger could not store a valid message; the sender should retry (HTTP 503)."""


class Ingestor:
    """Owns the writer thread, the per-peer rate limiter and the rejection counts."""

    def __init__(
        self,
        store: Store,
        config: CoordinatorConfig,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self.store, self.config, self.metrics, self.clock = store, config, metrics, clock
        self.on_commit = on_commit
        self.rejections: Counter[str] = Counter()
        self.recent_rejections: deque[dict[str, Any]] = deque(maxlen=config.events_listed)
        self.version = 0  # bumped after every commit that stored something
        self._limiter = RateLimiter(config.rate_per_s, config.rate_burst)
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-writer")
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._writer(), name="ledger-writer")

    async def close(self) -> None:
        """Finish what is queued, then stop the writer."""
        if self._task is not None:
            await self._queue.put(None)
            try:
                await asyncio.wait_for(self._task, timeout=30.0)
            except asyncio.TimeoutError:
                logger.error("ledger writer did not finish in 30 s; cancelling it")
                self._task.cancel()
            self._task = None
        self._executor.shutdown(wait=True)

    # --- the pipeline -------------------------------------------------------------------------

    def reject(self, rejection: Reject) -> Reject:
        """Count and log a rejection (also used by routes for checks made before the body)."""
        self.rejections[rejection.reason] += 1
        self.metrics.rejected.labels(rejection.reason).inc()
        self.recent_rejections.appendleft(
            {"at": self.clock(), "reason": rejection.reason, "peer_id": rejection.peer_id, "detail": rejection.detail}
        )
        level = logging.DEBUG if rejection.reason == "rate_limited" else logging.INFO  # floods stay quiet
        logger.log(level, "rejected a message: %s (peer %s)", rejection, rejection.peer_id or "unknown")
        return rejection

    async def submit(self, body: bytes) -> tuple[str, ContributionReport | Heartbeat]:
        """Accept ``body`` into the ledger: return ``("accepted" | "duplicate", message)``.

        Raises :class:`Reject` (already counted) or :class:`StorageUnavailable`.
        """
        now = self.clock()
        try:
            envelope = open_envelope(body, max_size=self.config.max_body_bytes)
        except RemoteProtocolError as e:
            raise self.reject(reject_from_protocol(e)) from None
        message = envelope.message
        assert isinstance(message, (ContributionReport, Heartbeat))  # MESSAGE_TYPES has just these
        if not self._limiter.allow(envelope.sender, now):
            raise self.reject(Reject("rate_limited", "slow down and retry", envelope.sender))
        try:
            check_message(
                message, run_id=self.config.run_id, now=now,
                max_age_s=self.config.max_age_s, max_future_s=self.config.max_future_s,
            )
        except Reject as rejection:
            raise self.reject(rejection) from None
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        await self._queue.put((Incoming(body, hashlib.sha256(body).digest(), message, now), future))
        outcome = await future
        if isinstance(outcome, Reject):
            raise self.reject(outcome)
        if outcome == "duplicate":
            self.metrics.duplicates.inc()
        else:
            self.metrics.accepted.labels(envelope.kind).inc()
        return outcome, message

    async def _writer(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < self.config.batch_max and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            await self._commit(loop, batch)

    async def _commit(self, loop: asyncio.AbstractEventLoop, batch: list[_Item]) -> None:
        started = time.perf_counter()
        try:
            outcomes = await loop.run_in_executor(self._executor, self.store.apply, [item for item, _ in batch])
        except Exception:
            logger.exception("ledger commit failed for a batch of %d", len(batch))
            for _, future in batch:
                if not future.done():
                    future.set_exception(StorageUnavailable("ledger commit failed"))
            return
        self.metrics.commit_seconds.observe(time.perf_counter() - started)
        self.metrics.batch_size.observe(len(batch))
        for (_, future), outcome in zip(batch, outcomes):
            if not future.done():  # the client may have gone away; the entry is stored anyway
                future.set_result(outcome)
        if any(outcome == "accepted" for outcome in outcomes):
            self.version += 1
            self.on_commit()
