"""Versions: the wire protocol's and the software's.

``PROTOCOL_VERSION`` is one integer carried in every envelope and in the run manifest.
Policy: schemas only grow (new fields get defaults, decoders ignore unknown fields), so a
version bump is reserved for changes old peers cannot read; a peer refuses any envelope whose
version differs from its own. Golden bytes of each released version live in ``tests/data/``.

``SOFTWARE_VERSION`` is the release of this code (``swarm --version``; pyproject reads it from
here, so it has one home). It travels in heartbeats; a run manifest may name a ``min_version``
that a node must meet before it trains (:func:`check_software_version`), e.g. after a fix that
changes what a round computes without changing the wire.
"""
from __future__ import annotations

import re

from .errors import IncompatibleVersion

__all__ = ["PROTOCOL_VERSION", "SOFTWARE_VERSION", "check_compatible", "check_software_version", "is_older", "parse_version"]

PROTOCOL_VERSION = 1
SOFTWARE_VERSION = "0.2.0"

_VERSION = re.compile(r"^(\d{1,6})(?:\.(\d{1,6}))?(?:\.(\d{1,6}))?([+-][0-9A-Za-z.+-]{0,32}|(?:rc|a|b|dev)[0-9]{0,6})?$")


def check_compatible(remote: int) -> None:
    """Raise :class:`IncompatibleVersion` unless ``remote`` is a version we speak."""
    if remote != PROTOCOL_VERSION:
        raise IncompatibleVersion(f"peer speaks protocol version {remote!r}, we speak {PROTOCOL_VERSION}")


def parse_version(text: str) -> tuple[int, int, int]:
    """``"1.2.3"`` (or ``"1.2"``, ``"1.2.3rc1"``-style suffixes ignored) -> ``(1, 2, 3)``.

    Raises ``ValueError`` for anything else: versions come from manifests and heartbeats.
    """
    m = _VERSION.match(text.strip()) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"not a version number: {str(text)[:40]!r} (expected e.g. 0.2.0)")
    return int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0)


def check_software_version(required: str, ours: str = SOFTWARE_VERSION) -> None:
    """Raise :class:`IncompatibleVersion` when ``ours`` is older than ``required`` ("" = no minimum)."""
    if required and parse_version(ours) < parse_version(required):
        raise IncompatibleVersion(
            f"this run needs capaswarm {required} or newer, you run {ours}: upgrade "
            f"(pip install -U capaswarm) and join again"
        )


def is_older(version: str, than: str) -> bool | None:
    """Whether ``version`` < ``than``; None when either is empty or unparseable (unknown)."""
    try:
        return parse_version(version) < parse_version(than)
    except ValueError:
        return None
