"""The typed keys under which the aiohttp application holds the gateway's state."""

from __future__ import annotations

from aiohttp import web

from gateway.clock import Clock
from gateway.config import Config
from gateway.identity import Identity
from gateway.ledger import Ledger
from gateway.store import Store

CONFIG = web.AppKey("config", Config)
IDENTITY = web.AppKey("identity", Identity)
CLOCK = web.AppKey("clock", Clock)
STORE = web.AppKey("store", Store)
LEDGER = web.AppKey("ledger", Ledger)
