"""The typed keys under which the aiohttp application holds the gateway's state."""

from __future__ import annotations

from aiohttp import web

from gateway.clock import Clock
from gateway.config import Config
from gateway.identity import Identity

CONFIG = web.AppKey("config", Config)
IDENTITY = web.AppKey("identity", Identity)
CLOCK = web.AppKey("clock", Clock)
