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

from protocol import (
    ContributionReport, Heartbeat, OutlierReport, RemoteProtocolError, SpotCheckVerdict, open_envelope, pack, unpack,
)

from .config import CoordinatorConfig
from .ledger import RateLimiter, Reject, check_message, reject_from_protocol
from .metrics import Metrics
from .plausibility import check_numbers
from .store import Incoming, Outcome, StorageFailure, Store

__all__ = ["Ingestor", "StorageUnavailable"]

logger = logging.getLogger(__name__)

_Item = tuple[Incoming, "asyncio.Future[Outcome]"]
Message = ContributionReport | Heartbeat | OutlierReport | SpotCheckVerdict


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
        is_standby: Callable[[str, int], bool] = lambda peer_id, round_: False,
    ) -> None:
        self.store, self.config, self.metrics, self.clock = store, config, metrics, clock
        self.on_commit = on_commit
        self.is_standby = is_standby  # plans.Planning.is_standby: the plan's rule for a report
        self.rejections: Counter[str] = Counter()
        self.recent_rejections: deque[dict[str, Any]] = deque(maxlen=config.events_listed)
        self.version = 0  # bumped after every commit that stored something
        self._limiter = RateLimiter(config.rate_per_s, config.rate_burst)
        self._ip_limiter = RateLimiter(config.ip_rate_per_s, config.ip_rate_burst)
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-writer")
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._writer(), name="ledger-writer")

    @property
    def running(self) -> bool:
        """The writer task is alive: accepted reports reach the ledger."""
        return self._task is not None and not self._task.done()

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

    def allow_ip(self, address: str) -> bool:
        """The per-IP token bucket, taken before a body is read or a signature checked."""
        return self._ip_limiter.allow(address, self.clock())

    async def submit(self, body: bytes) -> tuple[str, Message]:
        """Accept ``body`` into the ledger: return ``("accepted" | "duplicate", message)``.

        Raises :class:`Reject` (already counted) or :class:`StorageUnavailable`.
        """
        now = self.clock()
        try:
            envelope = open_envelope(body, max_size=self.config.max_body_bytes)
        except RemoteProtocolError as e:
            raise self.reject(reject_from_protocol(e)) from None
        message = envelope.message
        if not isinstance(message, (ContributionReport, Heartbeat, OutlierReport, SpotCheckVerdict)):  # a plan, a DHT record
            raise self.reject(Reject("unknown_kind", f"{envelope.kind!r} messages are not for the coordinator", envelope.sender))
        if isinstance(message, SpotCheckVerdict) and envelope.sender not in self.config.validators:
            # only the operator's validators judge: a stranger's key must not flag honest peers
            raise self.reject(Reject("not_validator", "this peer is not one of the run's validators", envelope.sender))
        if not self._limiter.allow(envelope.sender, now):
            raise self.reject(Reject("rate_limited", "slow down and retry", envelope.sender))
        config = self.config
        try:
            check_message(
                message, run_id=config.run_id, now=now, max_age_s=config.max_age_s,
                max_future_s=config.max_future_s, manifest_hash=config.manifest.content_hash,
            )
            check_numbers(message, model=config.manifest.model, prices=config.prices, limits=config.limits)
        except Reject as rejection:
            raise self.reject(rejection) from None
        stored, stripped = _without_unknown_fields(body, message)
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        standby = isinstance(message, ContributionReport) and self.is_standby(message.peer_id, message.round)
        await self._queue.put((Incoming(stored, hashlib.sha256(body).digest(), message, now, standby, stripped), future))
        outcome = await future
        if isinstance(outcome, Reject):
            raise self.reject(outcome)
        if isinstance(outcome, StorageFailure):
            self.metrics.storage_failures.inc()
            raise StorageUnavailable(f"ledger could not store this message: {outcome}"[:200])
        if outcome == "duplicate":
            self.metrics.duplicates.inc()
        else:
            self.metrics.accepted.labels(envelope.kind).inc()
        return outcome, message

    async def run_in_writer(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the ledger's writer thread (the only thread that writes)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

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


def _without_unknown_fields(body: bytes, message: Message) -> tuple[bytes, bool]:
    """The envelope to keep: ``body`` itself, or, when its payload carries fields this coordinator
    does not know, the same envelope with the payload re-encoded from the known fields only.

    Unknown fields are not stored verbatim: a peer could otherwise park kilobytes of anything in
    the ledger with every report. The price is that a stripped envelope's signature no longer
    verifies (``messages.stripped`` says which); nodes of this version never send such fields.
    """
    version, kind, sender, payload, signature = unpack(body, max_size=len(body))
    known = pack(message.to_wire())
    if known == payload:
        return body, False
    return pack([version, kind, sender, known, signature]), True
