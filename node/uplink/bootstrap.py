"""What a node gets from its coordinator before it joins: the signed manifest and bootstrap peers.

Every failure here is a :class:`JoinError` whose message is one line a volunteer can act on
(the CLI prints it without a traceback unless ``-v``).

Trust (hard to undo, so the rule is written here): the manifest is accepted only as an envelope
signed by the run key. With ``--run-key FINGERPRINT`` (the join line the coordinator prints)
that key is pinned before anything is fetched; without it the first key seen is pinned in
``<state_dir>/run_key`` (trust on first use) and a different key later is refused, since it
means another run or someone in between.

Imports: stdlib, ``protocol``, ``node.host.config``; never torch or hivemind (``swarm join --check``
and the CLI's error paths stay light).
"""
from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ops.atomic import write_atomic
from protocol import (
    DEFAULT_MAX_SIZE,
    SOFTWARE_VERSION,
    IncompatibleVersion,
    ProtocolError,
    RunManifest,
    check_software_version,
    open_envelope,
)

__all__ = ["JoinError", "coordinator_get", "fetch_manifest", "fetch_peers", "fetch_signed_manifest", "wait_for_peers"]

logger = logging.getLogger(__name__)

MANIFEST_PATH = "/api/v1/manifest"
SIGNED_MANIFEST_PATH = "/api/v1/manifest/signed"
PEERS_PATH = "/api/v1/peers"
PIN_FILE = "run_key"


class JoinError(Exception):
    """The node cannot join as configured; the message says why and what to do."""


def _url(base: str, path: str) -> str:
    base = base.rstrip("/")
    for known in (SIGNED_MANIFEST_PATH, MANIFEST_PATH, PEERS_PATH):  # a URL pasted with a path on it
        if base.endswith(known):
            base = base[: -len(known)]
    return base + path


def coordinator_get(base: str, path: str, *, timeout: float = 10.0, accept: str = "application/msgpack") -> bytes:
    """GET ``path`` on the coordinator at ``base``: its body, or a :class:`JoinError` that says what went wrong."""
    url = _url(base, path)
    if not url.startswith(("http://", "https://")):
        raise JoinError(f"--coordinator {base!r} is not a URL: it should look like https://swarm.example.org")
    request = urllib.request.Request(url, headers={"Accept": accept, "User-Agent": f"capaswarm/{SOFTWARE_VERSION}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read(DEFAULT_MAX_SIZE + 1)
    except urllib.error.HTTPError as e:
        hint = "is this a capaswarm coordinator of this version?" if e.code == 404 else "try again later"
        raise JoinError(f"the coordinator at {base} answered HTTP {e.code} for {path}: {hint}") from None
    except urllib.error.URLError as e:
        raise JoinError(f"cannot reach the coordinator at {base}: {e.reason}. Check the URL and your connection") from None
    except (TimeoutError, OSError) as e:
        raise JoinError(f"cannot reach the coordinator at {base}: {e}. Check the URL and your connection") from None


def fetch_manifest(base: str, timeout: float = 10.0) -> RunManifest:
    """The manifest's plain bytes (no signature: for tools and old tests; nodes use the signed one)."""
    try:
        return RunManifest.from_bytes(coordinator_get(base, MANIFEST_PATH, timeout=timeout))
    except ProtocolError as e:
        raise JoinError(f"the coordinator at {base} served a manifest that does not parse: {e}") from None


def fetch_signed_manifest(base: str, state_dir: Path | None, run_key: str | None, *, timeout: float = 10.0,
                          version: str = SOFTWARE_VERSION, check_version: bool = True) -> tuple[RunManifest, str]:
    """The run manifest, verified against the pinned run key; returns it and the key's fingerprint."""
    data = coordinator_get(base, SIGNED_MANIFEST_PATH, timeout=timeout)
    try:
        envelope = open_envelope(data)
    except ProtocolError as e:
        raise JoinError(f"the manifest from {base} is not a valid signed document ({e}): refusing it") from None
    if envelope.kind != RunManifest.KIND or not isinstance(envelope.message, RunManifest):
        raise JoinError(f"{base} served a {envelope.kind!r} where the signed manifest should be: refusing it")
    signer = envelope.sender
    pin_path = state_dir / PIN_FILE if state_dir is not None else None
    pinned = run_key or (pin_path.read_text().strip() if pin_path is not None and pin_path.exists() else None)
    if pinned and signer != pinned:
        source = "--run-key" if run_key else f"the run key pinned in {pin_path} on first join"
        raise JoinError(f"the manifest from {base} is signed by {signer}, not by {source} ({pinned}): refusing it. "
                        "Check the join line (or remove the pin if the organizer announced a new run key)")
    if pin_path is not None and not (pin_path.exists() and pin_path.read_text().strip() == signer):
        pin_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(pin_path, signer + "\n", durable=True)
        if not run_key:
            logger.info("pinned run key %s (trust on first use; pass --run-key to pin it from the join line)", signer)
    manifest = envelope.message
    if not check_version:
        return manifest, signer
    try:
        check_software_version(manifest.min_version, version)
    except IncompatibleVersion as e:
        raise JoinError(str(e)) from None
    return manifest, signer


def fetch_peers(base: str, timeout: float = 10.0) -> list[str]:
    """Confirmed multiaddrs of peers in the swarm, from the coordinator (possibly none yet)."""
    body = coordinator_get(base, PEERS_PATH, timeout=timeout, accept="application/json")
    try:
        listed: Any = json.loads(body)["peers"]
        return [str(m) for p in listed for m in p["maddrs"]][:64]
    except (ValueError, KeyError, TypeError) as e:
        raise JoinError(f"the coordinator at {base} served a peer list that does not parse ({e})") from None


def wait_for_peers(base: str, wait_s: float, poll_s: float = 2.0, exclude: str = "",
                   stop: threading.Event | None = None) -> list[str]:
    """Poll the peer list until it names someone other than ``exclude`` (this node), at most
    ``wait_s`` (or until ``stop`` is set)."""
    stop = stop or threading.Event()
    deadline = time.monotonic() + wait_s
    announced = False
    while True:
        peers = [m for m in fetch_peers(base) if not (exclude and m.endswith("/p2p/" + exclude))]
        if peers or time.monotonic() >= deadline or stop.is_set():
            return peers
        if not announced:
            logger.info("the coordinator lists no reachable peer yet; waiting up to %.0f s", wait_s)
            announced = True
        stop.wait(poll_s)
