"""HTTP handlers: thin. Each reads from or hands to an app-level service (``app.py`` keys).

::

    POST /api/v1/reports    envelope bytes (application/msgpack) -> 200 {"status": accepted|duplicate}
                            or 4xx {"error": reason, "detail": ...}; 503 when the ledger is down
    GET  /api/v1/state      the cached snapshot (JSON)
    GET  /api/v1/events     server-sent events: one "snapshot" event per published snapshot
    GET  /api/v1/manifest   the run manifest, msgpack (``?format=json`` for humans)
    GET  /metrics           Prometheus text
    GET  /healthz           liveness and the snapshot's age
    GET  /                  the dashboard (static/, no inline scripts)
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiohttp import web

from .keys import CONFIG, HUB, INGESTOR, METRICS, STORE
from .ingest import StorageUnavailable
from .ledger import Reject

__all__ = ["STATIC_DIR", "setup_routes"]

STATIC_DIR = Path(__file__).parent / "static"
_MSGPACK_TYPES = {"application/msgpack", "application/x-msgpack", "application/vnd.msgpack", "application/octet-stream"}


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.json_response(payload, status=status, dumps=lambda o: json.dumps(o, separators=(",", ":")))


def _rejected(rejection: Reject) -> web.Response:
    return _json({"error": rejection.reason, "detail": rejection.detail}, status=rejection.status)


async def post_report(request: web.Request) -> web.Response:
    ingestor = request.app[INGESTOR]
    limit = request.app[CONFIG].max_body_bytes
    if request.content_type not in _MSGPACK_TYPES:
        return _rejected(ingestor.reject(Reject("bad_content_type", "send application/msgpack")))
    if request.content_length is not None and request.content_length > limit:
        return _rejected(ingestor.reject(Reject("oversized", f"body over {limit} bytes")))
    try:
        body = await request.read()  # aiohttp enforces client_max_size on chunked bodies too
    except web.HTTPRequestEntityTooLarge:
        return _rejected(ingestor.reject(Reject("oversized", f"body over {limit} bytes")))
    try:
        status, message = await ingestor.submit(body)
    except Reject as rejection:
        return _rejected(rejection)
    except StorageUnavailable as e:
        return _json({"error": "storage_unavailable", "detail": str(e)}, status=503)
    return _json({"status": status, "peer_id": message.peer_id, "seq": message.seq})


async def get_state(request: web.Request) -> web.Response:
    return web.Response(body=request.app[HUB].body, content_type="application/json", headers={"Cache-Control": "no-store"})


async def get_events(request: web.Request) -> web.StreamResponse:
    hub, config, metrics = request.app[HUB], request.app[CONFIG], request.app[METRICS]
    if hub.sse_clients >= config.sse_max_clients:
        return _json({"error": "too_many_streams", "detail": "try again later"}, status=503)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    hub.sse_clients += 1
    metrics.sse_clients.inc()
    try:
        await response.prepare(request)
        await response.write(b"retry: 2000\n\n")
        sent = -1
        while not hub.closing:
            if hub.version != sent:
                sent = hub.version
                # every event is a whole snapshot, so a reconnecting page misses nothing
                await response.write(b"id: %d\nevent: snapshot\ndata: %s\n\n" % (sent, hub.body))
            elif not await hub.wait_newer(sent, timeout=config.sse_keepalive_s):
                await response.write(b": keepalive\n\n")
    except (ConnectionResetError, ConnectionError):
        pass  # the page went away
    finally:
        hub.sse_clients -= 1
        metrics.sse_clients.dec()
    return response


async def get_manifest(request: web.Request) -> web.Response:
    manifest = request.app[CONFIG].manifest
    if request.query.get("format") == "json":
        return _json({"content_hash": manifest.content_hash, "manifest": manifest.to_wire()})
    return web.Response(body=manifest.to_bytes(), content_type="application/msgpack")


async def get_metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def get_healthz(request: web.Request) -> web.Response:
    hub, config = request.app[HUB], request.app[CONFIG]
    return _json({
        "ok": True,
        "run_id": config.run_id,
        "schema_version": request.app[STORE].schema_version,
        "snapshot_age_s": hub.clock() - hub.built_at,
    })


async def get_index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html")


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/reports", post_report)
    app.router.add_get("/api/v1/state", get_state)
    app.router.add_get("/api/v1/events", get_events)
    app.router.add_get("/api/v1/manifest", get_manifest)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/healthz", get_healthz)
    app.router.add_get("/", get_index)
    app.router.add_static("/static/", STATIC_DIR, follow_symlinks=False)
