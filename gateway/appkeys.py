"""The typed keys under which the aiohttp application holds the gateway's state."""

from __future__ import annotations

from aiohttp import web

from gateway.clock import Clock
from gateway.config import Config
from gateway.crypto.worker import CryptoWorker
from gateway.delivery import Delivery
from gateway.directory import DirectoryService
from gateway.hop import HopVerifier
from gateway.hub import Hub
from gateway.identity import Identity
from gateway.ledger import Ledger
from gateway.metrics import Metrics
from gateway.partners import Partners
from gateway.relay import Receiver
from gateway.service_levels import ServiceLevels
from gateway.sessions import RateLimiter, Sessions
from gateway.stages import Stages
from gateway.store import Store
from gateway.witness import Witness

CONFIG = web.AppKey("config", Config)
IDENTITY = web.AppKey("identity", Identity)
CLOCK = web.AppKey("clock", Clock)
STORE = web.AppKey("store", Store)
LEDGER = web.AppKey("ledger", Ledger)
DIRECTORY = web.AppKey("directory", DirectoryService)
SESSIONS = web.AppKey("sessions", Sessions)
LIMITER = web.AppKey("limiter", RateLimiter)  # per officer
ANON_LIMITER = web.AppKey("anon_limiter", RateLimiter)  # per client address, no token
HUB = web.AppKey("hub", Hub)
DELIVERY = web.AppKey("delivery", Delivery)
CRYPTO_WORKER = web.AppKey("crypto_worker", CryptoWorker)

REQUEST_ID = web.RequestKey("request_id", str)  # per request, set by the error middleware
PARTNERS = web.AppKey("partners", Partners)
HOP = web.AppKey("hop", HopVerifier)
RECEIVER = web.AppKey("receiver", Receiver)
METRICS = web.AppKey("metrics", Metrics)
WITNESS = web.AppKey("witness", Witness)
STAGES = web.AppKey("stages", Stages)
SERVICE_LEVELS = web.AppKey("service_levels", ServiceLevels)
