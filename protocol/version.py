"""Protocol versioning.

``PROTOCOL_VERSION`` is one integer carried in every envelope and in the run manifest.
Policy: schemas only grow (new fields get defaults, decoders ignore unknown fields), so a
version bump is reserved for changes old peers cannot read; a peer refuses any envelope whose
version differs from its own. Golden bytes of each released version live in ``tests/data/``.
"""
from __future__ import annotations

from .errors import IncompatibleVersion

__all__ = ["PROTOCOL_VERSION", "check_compatible"]

PROTOCOL_VERSION = 1


def check_compatible(remote: int) -> None:
    """Raise :class:`IncompatibleVersion` unless ``remote`` is a version we speak."""
    if remote != PROTOCOL_VERSION:
        raise IncompatibleVersion(f"peer speaks protocol version {remote!r}, we speak {PROTOCOL_VERSION}")
