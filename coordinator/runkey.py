"""The organizer's run key: one Ed25519 identity that the coordinator holds for a run.

It signs what only the organizer may say: the run manifest, the cost plan, budget changes and
attribution certificates. Its fingerprint is its peer-id string (``12D3KooW...``): the join line
pins it, and nodes open every such document with ``protocol.open_signed_by(data, fingerprint)``.
The key file uses the same libp2p protobuf format (0600) as a node's identity, so one loader and
one format serve both; losing the file means a new run key and a new join line, so keep it with
the ledger (it defaults to a file beside it).

The join line (:func:`join_info`) is the whole command a volunteer types; the coordinator prints
it at start and the dashboard shows it. It carries the coordinator's URL and the run key's
fingerprint, so a node that is pointed at an impostor (or sits behind one) refuses its manifest.
"""
from __future__ import annotations

import logging
import shlex
from pathlib import Path
from typing import Any

from protocol import Identity

__all__ = ["join_info", "load_or_create_run_key"]

log = logging.getLogger(__name__)


def load_or_create_run_key(path: Path) -> Identity:
    """The run key at ``path``, created (0600) on first use."""
    existed = path.exists()
    key = Identity.load_or_create(path)
    log.info("%s run key %s (%s)", "loaded" if existed else "created", key.peer_id, path)
    return key


def join_info(url: str, run_key: str) -> dict[str, Any]:
    """``{"url", "run_key", "join_line"}`` for the dashboard, ``/api/v1/join`` and the start-up log."""
    url = url.rstrip("/")
    line = f"swarm join --coordinator {shlex.quote(url)} --run-key {run_key} --public-name NAME"
    return {"url": url, "run_key": run_key, "join_line": line}
