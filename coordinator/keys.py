"""Typed application keys (``aiohttp.web.AppKey``): the services one app owns."""
from __future__ import annotations

from typing import Any

from aiohttp import web

from protocol import Identity

from .config import CoordinatorConfig
from .hub import Hub
from .ingest import Ingestor
from .metrics import Metrics
from .peerbook import PeerBook
from .plans import Planning
from .store import Store

__all__ = ["CONFIG", "HUB", "INGESTOR", "JOIN", "METRICS", "PEERBOOK", "PLANNING", "RUN_KEY", "STORE"]

CONFIG = web.AppKey("config", CoordinatorConfig)
STORE = web.AppKey("store", Store)
INGESTOR = web.AppKey("ingestor", Ingestor)
HUB = web.AppKey("hub", Hub)
METRICS = web.AppKey("metrics", Metrics)
RUN_KEY = web.AppKey("run_key", Identity)  # the organizer's key (runkey.py)
PLANNING = web.AppKey("planning", Planning)  # the budget in force and the signed plan (plans.py)
# runkey.join_info: url, run_key, join_line (the url is set once bound)
JOIN: web.AppKey[dict[str, Any]] = web.AppKey("join", dict)
PEERBOOK = web.AppKey("peerbook", PeerBook)  # dial-back-confirmed addresses for bootstrap
