"""The typed keys under which the aiohttp application holds the gateway's state."""

from __future__ import annotations

from aiohttp import web

from gateway.cases.deadlines import CaseDeadlines
from gateway.cases.views import Cases
from gateway.clock import Clock
from gateway.config import Config
from gateway.crypto.worker import CryptoWorker
from gateway.federation.hop import HopVerifier
from gateway.federation.identity import Identity
from gateway.federation.loops import PartnerLoops
from gateway.federation.partners import Partners
from gateway.federation.receiver import Receiver
from gateway.federation.witness import Witness
from gateway.ledger.ledger import Ledger
from gateway.metrics import Metrics
from gateway.officers.delivery import Delivery
from gateway.officers.directory import DirectoryService
from gateway.officers.hub import Hub
from gateway.officers.notices import StoredNotices
from gateway.officers.sessions import AnonymousLine, RateLimiter, Sessions, SignInLimits
from gateway.service_levels.levels import ServiceLevels
from gateway.service_levels.stages import Stages
from gateway.store import Store

CONFIG = web.AppKey("config", Config)
IDENTITY = web.AppKey("identity", Identity)
CLOCK = web.AppKey("clock", Clock)
STORE = web.AppKey("store", Store)
LEDGER = web.AppKey("ledger", Ledger)
DIRECTORY = web.AppKey("directory", DirectoryService)
SESSIONS = web.AppKey("sessions", Sessions)
LIMITER = web.AppKey("limiter", RateLimiter)  # per officer
ANON_LIMITER = web.AppKey("anon_limiter", RateLimiter)  # enrollment, per client address
SIGNIN_LIMITS = web.AppKey("signin_limits", SignInLimits)
ANON_LINE = web.AppKey("anon_line", AnonymousLine)  # all anonymous work, one line
ENROLL_BUDGET = web.AppKey("enroll_budget", RateLimiter)  # enrollment, all addresses together
HUB = web.AppKey("hub", Hub)
NOTICES = web.AppKey("notices", StoredNotices)
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
CASE_DEADLINES = web.AppKey("case_deadlines", CaseDeadlines)
CASES = web.AppKey("cases", Cases)
PARTNER_LOOPS = web.AppKey("partner_loops", PartnerLoops)
