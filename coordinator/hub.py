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

from protocol import Plan

from .config import CoordinatorConfig
from .ingest import Ingestor
from .metrics import Metrics
from .plans import Planning
from .snapshot import build_snapshot
from .store import Store
from .streams import StreamSlots

__all__ = ["Hub"]

logger = logging.getLogger(__name__)


def plan_row(plan: Plan, swarm: dict[str, Any]) -> dict[str, Any]:
    """One row of the plans table (``Store.save_plan``): the plan's figures and the ledger's when it was made."""
    return {"seq": plan.seq, "made_at": plan.made_at, "round": plan.round, "cap_usd_per_hour": plan.cap_usd_per_hour,
            "planned_burn": plan.burn_usd_per_hour, "ledger_burn": swarm["burn_usd_per_hour"], "spent_usd": swarm["usd"],
            "usd_to_target": plan.usd_to_target, "usd_to_target_low": plan.usd_to_target_low,
            "usd_to_target_high": plan.usd_to_target_high, "standby": sum(p.state == "standby" for p in plan.peers)}


def add_plan(snapshot: dict[str, Any], planning: Planning, history: list[dict[str, Any]], made: Any) -> None:
    """The plan's part of the snapshot: ``plan`` (budget, forecast), ``plans`` (one row per plan over
    time: the ledger's burn against the cap, spend against the forecast) and each peer's plan state."""
    snapshot["plan"] = planning.view()
    rows = [row for row in history if made is None or row["seq"] != made[0].seq]
    if made is not None:  # the plan just made is stored after this build: show it now
        rows.append(plan_row(made[0], snapshot["swarm"]))
    snapshot["plans"] = rows
    states = planning.peer_states()
    for p in snapshot["peers"]:
        state, reason = states.get(p["peer_id"], ("active", "not planned yet"))
        p["plan_state"], p["plan_reason"] = state, reason


class Hub:
    def __init__(
        self,
        store: Store,
        ingestor: Ingestor,
        config: CoordinatorConfig,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        planning: Planning | None = None,
    ) -> None:
        self.store, self.ingestor, self.config, self.metrics, self.clock = store, ingestor, config, metrics, clock
        self.planning = planning
        self.join: dict[str, Any] = {}  # runkey.join_info, shown on the dashboard
        self.snapshot: dict[str, Any] = {}
        self.body = b"{}"  # the snapshot as JSON, one line (safe in an SSE data field)
        self.version = 0  # bumped on every publish
        self.built_at = 0.0
        self.build_seconds = 0.0  # how long the last build took
        self.closing = False
        self.streams = StreamSlots(config.sse_max_clients, config.sse_per_ip)  # live dashboard streams
        self._dirty = asyncio.Event()
        self._published = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-reader")

    def mark_dirty(self) -> None:
        """The ledger changed (called by the ingestor after each commit)."""
        self._dirty.set()

    def _build(
        self, rejections: dict[str, int], recent: list[dict[str, Any]], version: int
    ) -> tuple[dict[str, Any], bytes, float, Any]:
        """Runs on the reader thread; the in-memory counts were copied on the loop's thread. Makes a
        new plan when one is due (returned last, for the writer to store)."""
        started = time.perf_counter()
        peer_rows = self.store.peers()
        now = self.clock()
        current = self.store.confirmed_round()
        snapshot = build_snapshot(
            config=self.config,
            peer_rows=peer_rows,
            # the curves stop at the run's current round: claims past it are nobody's but their own
            round_rows=self.store.rounds(self.config.loss_points, up_to=current),
            current_round=max(current or 0, self.config.start_round),
            flags=self.store.flags(),
            event_rows=self.store.events(self.config.events_listed),
            outlier_rows=self.store.outlier_rows(),
            rejections=rejections,
            recent_rejections=recent,
            now=now,
            ledger_version=version,
            join=dict(self.join),
        )
        made = None
        if self.planning is not None:
            current = self.planning.plan.seq if self.planning.plan is not None else 0
            self.planning.follow(self.store.budget_changes(after_seq=self.planning.budget_seq),
                                 self.store.last_plan_envelope(newer_than=current), self.store.lead())
            try:
                made = self.planning.maybe_plan(snapshot, peer_rows, now, self.store.link_rates)
            except Exception:  # the plan in force stays; the dashboard must not stop updating with it
                logger.exception("could not make a plan (the last one stays in force)")
            add_plan(snapshot, self.planning, self.store.plans(self.config.loss_points), made)
        body = json.dumps(snapshot, separators=(",", ":"), allow_nan=False).encode()
        return snapshot, body, time.perf_counter() - started, made

    async def refresh(self) -> None:
        """Rebuild now and publish."""
        self._dirty.clear()
        loop = asyncio.get_running_loop()
        counts, recent, version = dict(self.ingestor.rejections), list(self.ingestor.recent_rejections), self.ingestor.version
        snapshot, body, seconds, made = await loop.run_in_executor(self._executor, self._build, counts, recent, version)
        self.snapshot, self.body, self.built_at, self.build_seconds = snapshot, body, self.clock(), seconds
        self.version += 1
        self.metrics.snapshot_seconds.set(seconds)
        self.metrics.observe_snapshot(snapshot)
        if seconds > self.config.snapshot_max_age_s:
            logger.warning("snapshot took %.2f s, longer than its %.2f s maximum age", seconds, self.config.snapshot_max_age_s)
        published, self._published = self._published, asyncio.Event()
        published.set()
        if made is not None:  # after publishing: a refresh that overtakes this one must not be overwritten
            await self._store_plan(snapshot, *made)

    async def _store_plan(
        self, snapshot: dict[str, Any], plan: Plan, envelope: bytes, changes: list[tuple[str, str, str]]
    ) -> None:
        try:
            await self.ingestor.run_in_writer(self.store.save_plan, plan_row(plan, snapshot["swarm"]), envelope, changes)
        except Exception:
            logger.exception("could not store plan %d (it is served all the same)", plan.seq)
        if changes:
            logger.info("plan %d: %s", plan.seq, ", ".join(f"{p[:12]}.. {state}" for p, state, _ in changes))
            self._dirty.set()  # its events show in the next snapshot

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

    async def read(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the ledger's reader thread (the one thread that reads the store)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

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
