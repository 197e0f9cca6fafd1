"""Typed application keys (``aiohttp.web.AppKey``): the services one app owns."""
from __future__ import annotations

from aiohttp import web

from .config import CoordinatorConfig
from .hub import Hub
from .ingest import Ingestor
from .metrics import Metrics
from .store import Store

__all__ = ["CONFIG", "HUB", "INGESTOR", "METRICS", "STORE"]

CONFIG = web.AppKey("config", CoordinatorConfig)
STORE = web.AppKey("store", Store)
INGESTOR = web.AppKey("ingestor", Ingestor)
HUB = web.AppKey("hub", Hub)
METRICS = web.AppKey("metrics", Metrics)
