"""systemd's readiness protocol, without a dependency: one datagram to ``$NOTIFY_SOCKET``.

A ``Type=notify`` unit is "started" only when the process says ``READY=1``, so ``systemctl start``
(and units ordered after it) wait until the coordinator listens or the node has joined its swarm,
not merely until the process exists. Outside systemd (no ``$NOTIFY_SOCKET``) every call is a no-op.
The socket is a path, or an abstract name when it starts with ``@`` (sd_notify(3)).
"""
from __future__ import annotations

import logging
import os
import socket

__all__ = ["notify"]

logger = logging.getLogger(__name__)


def notify(*states: str) -> bool:
    """Send ``states`` (e.g. ``"READY=1"``, ``"STATUS=..."``) to the service manager. True if sent."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address or not states:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(states).encode())
        return True
    except OSError as e:  # readiness is advisory: never let it stop the service itself
        logger.warning("could not notify systemd at %s: %s", os.environ.get("NOTIFY_SOCKET"), e)
        return False
