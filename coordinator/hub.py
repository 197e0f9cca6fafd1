"""The cached snapshot (health.petals.dev's design): rebuilt in the background, served as bytes.

``Hub.run`` rebuilds the snapshot after the ledger changed (at most every
``snapshot_interval_s``, or twice the last build time if longer) and at least every
``snapshot_max_age_s`` (peer states move with the
clock even when nothing arrives). Readers never wait for a build: ``/api/v1/state`` returns the
last JSON bytes, and each server-sent-event stream wakes up when a newer one is published.
The build runs on the ledger's reader thread, off the event loop.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .config import CoordinatorConfig
from .ingest import Ingestor
from .metrics import Metrics
from .snapshot import build_snapshot
from .store import Store

__all__ = ["Hub"]

logger = logging.getLogger(__name__)


class Hub:
    def __init__(
        self,
        store: Store,
        ingestor: Ingestor,
        config: CoordinatorConfig,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.ingestor, self.config, self.metrics, self.clock = store, ingestor, config, metrics, clock
        self.snapshot: dict[str, Any] = {}
        self.body = b"{}"  # the snapshot as JSON, one line (safe in an SSE data field)
        self.version = 0  # bumped on every publish
        self.built_at = 0.0
        self.build_seconds = 0.0  # how long the last build took
        self.closing = False
        self.sse_clients = 0
        self._dirty = asyncio.Event()
        self._published = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-reader")

    def mark_dirty(self) -> None:
        """The ledger changed (called by the ingestor after each commit)."""
        self._dirty.set()

    def _build(self, rejections: dict[str, int], recent: list[dict[str, Any]], version: int) -> tuple[dict[str, Any], bytes, float]:
        """Runs on the reader thread; the in-memory counts were copied on the loop's thread."""
        started = time.perf_counter()
        snapshot = build_snapshot(
            config=self.config,
            peer_rows=self.store.peers(),
            round_rows=self.store.rounds(self.config.loss_points),
            event_rows=self.store.events(self.config.events_listed),
            rejections=rejections,
            recent_rejections=recent,
            now=self.clock(),
            ledger_version=version,
        )
        body = json.dumps(snapshot, separators=(",", ":"), allow_nan=False).encode()
        return snapshot, body, time.perf_counter() - started

    async def refresh(self) -> None:
        """Rebuild now and publish."""
        self._dirty.clear()
        loop = asyncio.get_running_loop()
        counts, recent, version = dict(self.ingestor.rejections), list(self.ingestor.recent_rejections), self.ingestor.version
        snapshot, body, seconds = await loop.run_in_executor(self._executor, self._build, counts, recent, version)
        self.snapshot, self.body, self.built_at, self.build_seconds = snapshot, body, self.clock(), seconds
        self.version += 1
        self.metrics.snapshot_seconds.set(seconds)
        self.metrics.observe_snapshot(snapshot)
        if seconds > self.config.snapshot_max_age_s:
            logger.warning("snapshot took %.2f s, longer than its %.2f s maximum age", seconds, self.config.snapshot_max_age_s)
        published, self._published = self._published, asyncio.Event()
        published.set()

    async def run(self) -> None:
        """Background loop; cancelled at shutdown. A failed build is logged, never fatal."""
        while not self.closing:
            try:
                await asyncio.wait_for(self._dirty.wait(), timeout=self.config.snapshot_max_age_s)
            except asyncio.TimeoutError:
                pass
            if self.closing:
                break
            try:
                await self.refresh()
            except Exception:
                logger.exception("failed to build the snapshot")
            # a big ledger builds slowly: rest at least twice the build time, so that building
            # snapshots never takes more than a third of the CPU that ingest needs
            await asyncio.sleep(max(self.config.snapshot_interval_s, 2 * self.build_seconds))

    async def wait_newer(self, version: int, timeout: float) -> bool:
        """Wait until a snapshot newer than ``version`` is published (or closing); False on timeout."""
        if self.version != version or self.closing:
            return True
        try:
            await asyncio.wait_for(self._published.wait(), timeout=timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def close(self) -> None:
        """Wake every stream so that it ends; stop the loop."""
        self.closing = True
        self._published.set()
        self._dirty.set()

    def shutdown_executor(self) -> None:
        self._executor.shutdown(wait=True)
