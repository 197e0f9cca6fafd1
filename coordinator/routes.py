"""HTTP handlers: thin. Each reads from or hands to an app-level service (``app.py`` keys).

::

    POST /api/v1/reports    envelope bytes (application/msgpack) -> 200 {"status": accepted|duplicate}
                            (for a heartbeat also "reachability": public|private|unknown, the dial-back's
                            verdict on the addresses it claimed) or 4xx {"error": reason, "detail": ...};
                            503 when the ledger is down; 429 ip_rate_limited past the per-IP bucket
                            (before any signature check)
    GET  /api/v1/state      the cached snapshot (JSON)
    GET  /api/v1/events     server-sent events: one "snapshot" event per published snapshot, until
                            the client stops reading or the stream's lifetime ends (streams.py);
                            429 {"error": too_many_streams | streams_full, "detail", "retry_after"}
                            with Retry-After past ``sse_per_ip`` or ``sse_max_clients`` (the page
                            shows the detail, polls /state and retries)
    GET  /api/v1/manifest   the run manifest, msgpack (``?format=json`` for humans)
    GET  /api/v1/plan       the cost plan: an envelope signed with the run key (``?format=json`` for humans);
                            503 before the first plan
    POST /api/v1/budget     a BudgetChange envelope signed with the run key -> 200 {"status": "applied", ...}
                            or 4xx {"error": "budget_rejected", "detail": ...}
    GET  /api/v1/manifest/signed  the manifest as an envelope signed by the run key (nodes verify it)
    GET  /api/v1/peers      {"peers": [{"peer_id", "maddrs", ...}]}: fresh, dial-back-confirmed, bounded
    GET  /api/v1/join       {"url", "run_key", "join_line", "manifest_hash", "software_version", "min_version"}
    GET  /api/v1/price      ``?device=NAME&count=N&declared=USD_PER_H``: what this coordinator would bill such a
                            node (plans.price_quote), for ``swarm join --check``; 400 on a bad query
    GET  /api/v1/certificate  an attribution certificate signed by the run key (certificates.py);
                            ``?state_hash=H`` (default: the latest), ``&peer=ID`` (one volunteer's own)
    GET  /api/v1/checkpoint/{sha256}  the manifest's initial checkpoint file (nodes verify the hash)
    GET  /metrics           Prometheus text
    GET  /healthz           liveness and the snapshot's age
    GET  /readyz            readiness: 200 when the ledger is open and its writer runs, else 503
    GET  /                  the dashboard (static/, no inline scripts)
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from aiohttp import web

from protocol import SOFTWARE_VERSION, Hardware, Heartbeat, seal

from .certificates import CertificateRefused, build_certificate, gather, sign
from .keys import CONFIG, HUB, INGESTOR, JOIN, METRICS, PEERBOOK, PLANNING, RUN_KEY, STORE
from .plans import price_quote
from .ingest import StorageUnavailable
from .ledger import Reject
from .plans import BudgetRejected
from .streams import serve_stream

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
    if not ingestor.allow_ip(_address(request)):
        return _rejected(ingestor.reject(Reject("ip_rate_limited", "too many requests from this address; retry later")))
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
    answer: dict[str, Any] = {"status": status, "peer_id": message.peer_id, "seq": message.seq}
    if isinstance(message, Heartbeat) and config_dialback(request):
        book = request.app[PEERBOOK]
        if status == "accepted":  # a replayed old heartbeat changes nothing
            answer["reachability"] = book.observe(message.peer_id, message.maddrs, client_ip(request))
        else:
            answer["reachability"] = book.verdict(message.peer_id)
    return _json(answer)


def config_dialback(request: web.Request) -> bool:
    return request.app[CONFIG].dialback


def client_ip(request: web.Request) -> str | None:
    """The address the request came from; behind a trusted reverse proxy, the one it saw."""
    if request.app[CONFIG].trust_forwarded_for:
        forwarded = request.headers.get("X-Forwarded-For", "")
        if forwarded:
            return forwarded.split(",")[-1].strip()
    return request.remote


async def get_state(request: web.Request) -> web.Response:
    return web.Response(body=request.app[HUB].body, content_type="application/json", headers={"Cache-Control": "no-store"})


def _address(request: web.Request) -> str:
    """The peer address of the connection (no X-Forwarded-For: a client could write anything)."""
    return request.remote or "unknown"


async def get_events(request: web.Request) -> web.StreamResponse:
    """A live stream (streams.py), or 429 with a reason the page shows and ``Retry-After``."""
    hub, config, metrics = request.app[HUB], request.app[CONFIG], request.app[METRICS]
    address = client_ip(request) or "unknown"
    refused = hub.streams.admit(address)
    if refused is not None:
        rejection = request.app[INGESTOR].reject(Reject(*refused))
        retry_after = math.ceil(config.sse_retry_after_s)
        refusal = _json({"error": rejection.reason, "detail": rejection.detail, "retry_after": retry_after},
                        status=rejection.status)
        refusal.headers["Retry-After"] = str(retry_after)
        return refusal
    metrics.sse_clients.inc()
    why = "gone"
    try:
        response, why = await serve_stream(request, hub, config)
    finally:
        hub.streams.release(address)
        metrics.sse_clients.dec()
        metrics.sse_closed.labels(why).inc()
    return response


async def get_manifest(request: web.Request) -> web.Response:
    manifest = request.app[CONFIG].manifest
    if request.query.get("format") == "json":
        return _json({"content_hash": manifest.content_hash, "manifest": manifest.to_wire()})
    return web.Response(body=manifest.to_bytes(), content_type="application/msgpack")


async def get_plan(request: web.Request) -> web.Response:
    planning = request.app[PLANNING]
    plan, envelope = planning.plan, planning.envelope
    if plan is None or envelope is None:
        return _json({"error": "no_plan_yet", "detail": "the first plan is made with the first snapshot"}, status=503)
    if request.query.get("format") == "json":
        return _json({"signer": planning.run_key.peer_id, "plan": plan.to_wire(), "view": planning.view()})
    return web.Response(body=envelope, content_type="application/msgpack", headers={"Cache-Control": "no-store"})


async def post_budget(request: web.Request) -> web.Response:
    """An authenticated operator action: only the run key can sign a budget change."""
    planning, hub, store = request.app[PLANNING], request.app[HUB], request.app[STORE]
    limit = request.app[CONFIG].max_body_bytes
    if request.content_type not in _MSGPACK_TYPES:
        return _json({"error": "bad_content_type", "detail": "send application/msgpack"}, status=415)
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _json({"error": "oversized", "detail": f"body over {limit} bytes"}, status=413)
    try:
        change = planning.check_budget_change(body, hub.clock())
    except BudgetRejected as e:
        return _json({"error": "budget_rejected", "detail": str(e)}, status=e.status)
    fields = {k: getattr(change, k) for k in ("cap_usd_per_hour", "total_usd", "deadline", "target_tokens")}
    try:  # durable first, then in force
        await request.app[INGESTOR].run_in_writer(store.save_budget_change, change.seq, hub.clock(), fields, body,
                                                  f"budget #{change.seq} signed by the run key")
    except Exception as e:
        return _json({"error": "storage_unavailable", "detail": str(e)}, status=503)
    detail = planning.apply(change)
    hub.mark_dirty()  # re-plan now
    return _json({"status": "applied", "seq": change.seq, "detail": detail})


async def get_signed_manifest(request: web.Request) -> web.Response:
    # Ed25519 signing is deterministic: the same bytes on every request
    body = seal(request.app[CONFIG].manifest, request.app[RUN_KEY])
    return web.Response(body=body, content_type="application/msgpack")


async def get_peers(request: web.Request) -> web.Response:
    return _json({"peers": request.app[PEERBOOK].listing()}) if PEERBOOK in request.app else _json({"peers": []})


async def get_join(request: web.Request) -> web.Response:
    manifest, join = request.app[CONFIG].manifest, request.app[JOIN]
    return _json({**join, "manifest_hash": manifest.content_hash, "software_version": SOFTWARE_VERSION,
                  "min_version": manifest.min_version})


async def get_price(request: web.Request) -> web.Response:
    config, q = request.app[CONFIG], request.query
    try:
        device, count, declared = q.get("device", "")[:64], int(q.get("count", "1")), float(q.get("declared", "0"))
    except ValueError:
        return _json({"error": "bad_query", "detail": "count must be an integer and declared a number"}, status=400)
    if not 0 <= count <= config.limits.max_devices or not math.isfinite(declared) or declared < 0:
        return _json({"error": "bad_query", "detail": f"count must be 0..{config.limits.max_devices}, declared >= 0"},
                     status=400)
    hardware = Hardware(device=device or "cpu", count=count, memory_gb=0.0)
    return _json(price_quote(hardware, declared, config.prices, config.limits, config.max_price_markup))


_HEX = frozenset("0123456789abcdef")


async def get_certificate(request: web.Request) -> web.Response:
    hub, config = request.app[HUB], request.app[CONFIG]
    requested, peer = request.query.get("state_hash", ""), request.query.get("peer", "")
    if len(requested) not in (0, 64) or not _HEX.issuperset(requested) or len(peer) > 128 or not peer.isalnum() and peer:
        return _json({"error": "bad_request", "detail": "state_hash is 64 lowercase hex digits; peer a peer id"}, status=400)
    try:
        round_, state_hash, rows = await hub.read(gather, request.app[STORE], requested)
        certificate = build_certificate(config.manifest, round_, state_hash, rows, now=hub.clock(), peer=peer)
    except CertificateRefused as e:
        return _json({"error": e.reason, "detail": e.detail}, status=e.status)
    name = f"certificate-round{round_}{'-' + peer[-8:] if peer else ''}.capaswarm"
    return web.Response(body=sign(certificate, request.app[RUN_KEY]), content_type="application/msgpack",
                        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})


async def get_checkpoint(request: web.Request) -> web.StreamResponse:
    config = request.app[CONFIG]
    wanted = request.match_info["sha256"]
    if not config.manifest.init_sha256 or wanted != config.manifest.init_sha256 or config.initial_checkpoint is None:
        return _json({"error": "unknown_checkpoint", "detail": "this coordinator serves only its run's initial checkpoint"},
                     status=404)
    return web.FileResponse(config.initial_checkpoint, headers={"Content-Type": "application/octet-stream"})


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


async def get_readyz(request: web.Request) -> web.Response:
    """Readiness (Kubernetes readinessProbe, load balancers): can a report be stored right now?"""
    app = request.app
    checks = {
        "ledger_open": STORE in app and app[STORE].is_open,
        "writer_running": INGESTOR in app and app[INGESTOR].running,
        "accepting": HUB in app and not app[HUB].closing,
    }
    ready = all(checks.values())
    return _json({"ready": ready, **checks}, status=200 if ready else 503)


async def get_index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html")


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/reports", post_report)
    app.router.add_get("/api/v1/state", get_state)
    app.router.add_get("/api/v1/events", get_events)
    app.router.add_get("/api/v1/manifest", get_manifest)
    app.router.add_get("/api/v1/plan", get_plan)
    app.router.add_post("/api/v1/budget", post_budget)
    app.router.add_get("/api/v1/manifest/signed", get_signed_manifest)
    app.router.add_get("/api/v1/peers", get_peers)
    app.router.add_get("/api/v1/join", get_join)
    app.router.add_get("/api/v1/price", get_price)
    app.router.add_get("/api/v1/certificate", get_certificate)
    app.router.add_get("/api/v1/checkpoint/{sha256}", get_checkpoint)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/healthz", get_healthz)
    app.router.add_get("/readyz", get_readyz)
    app.router.add_get("/", get_index)
    app.router.add_static("/static/", STATIC_DIR, follow_symlinks=False)
