"""The application factory: ``create_app(config)`` builds one coordinator, with no module state.

Lifecycle (aiohttp ``cleanup_ctx``): open the ledger (migrating its schema), start the writer,
publish a first snapshot, start the snapshot loop; on the way out, end the event streams,
stop the loop, let the writer finish what it holds, close the ledger.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from .config import CoordinatorConfig
from .hub import Hub
from .ingest import Ingestor
from .keys import CONFIG, HUB, INGESTOR, JOIN, METRICS, PEERBOOK, PLANNING, RUN_KEY, STORE
from .metrics import Metrics
from .plans import Planning
from .routes import setup_routes
from .peerbook import PeerBook, run_probe
from .runkey import join_info, load_or_create_run_key
from .store import Store

__all__ = ["CONTENT_SECURITY_POLICY", "create_app"]

logger = logging.getLogger(__name__)

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def create_app(config: CoordinatorConfig, *, clock: Callable[[], float] = time.time) -> web.Application:
    """A coordinator for ``config``. ``clock`` is the seam for freshness and state tests."""
    app = web.Application(client_max_size=config.max_body_bytes)
    app[CONFIG] = config
    app[METRICS] = Metrics()
    app[RUN_KEY] = load_or_create_run_key(config.run_key_file)
    app[PLANNING] = planning = Planning(config, app[RUN_KEY])
    scheme = "https" if config.tls_cert else "http"
    app[JOIN] = join_info(config.public_url or f"{scheme}://{config.host}:{config.port}", app[RUN_KEY].peer_id)
    config.check_initial_checkpoint()

    async def services(app: web.Application) -> AsyncIterator[None]:
        store = Store(
            config.db_path, round_lead=config.max_round_lead, round_lag=config.max_round_lag,
            start_round=config.start_round, online_gap_s=config.thresholds.stale_after_s,
            flag_quorum=config.flag_quorum, seq_window=config.seq_window, seq_per_s=config.rate_per_s,
        )
        planning.restore(store.budget_changes(), store.last_plan_envelope())
        ingestor = Ingestor(store, config, app[METRICS], clock=clock, is_standby=planning.is_standby)
        hub = Hub(store, ingestor, config, app[METRICS], clock=clock, planning=planning)
        hub.join = app[JOIN]
        app[PEERBOOK] = PeerBook(
            prober=lambda maddrs: run_probe(config.dialback_command, maddrs, config.dialback_timeout_s),
            clock=clock, concurrency=config.dialback_concurrency, recheck_s=config.dialback_recheck_s,
            retry_s=config.dialback_retry_s, fresh_s=config.thresholds.stale_after_s, listed=config.peers_served,
        )
        ingestor.on_commit = hub.mark_dirty
        await ingestor.start()
        app[STORE], app[INGESTOR], app[HUB] = store, ingestor, hub
        try:
            await hub.refresh()
        except Exception:  # the service starts on any ledger it wrote; the loop retries the build
            logger.exception("could not build the first snapshot")
        task = asyncio.create_task(hub.run(), name="snapshot-loop")
        yield
        hub.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await app[PEERBOOK].close()
        await ingestor.close()
        hub.shutdown_executor()
        store.close()

    async def end_streams(app: web.Application) -> None:
        if HUB in app:
            app[HUB].close()

    app.cleanup_ctx.append(services)
    app.on_shutdown.append(end_streams)
    app.on_response_prepare.append(_security_headers)
    setup_routes(app)
    return app
