"""The one error middleware every channel's application uses (the gateway's, the admin
socket's): each error the gateway raises on purpose (gateway.errors.ERRORS) becomes a
JSON answer ``{"error": code, "message": ...}`` with its stable code and HTTP status;
anything else is a logged 500. It also gives every request an id (``X-Request-Id``),
bound to the log context while the request runs.

Refusals are logged at a bounded rate (:class:`RefusalLog`): anyone can make the gateway
refuse requests as fast as it answers, and a line for each filled the disk at about
370 KB/s under a flood of sign-in requests (bench/abuse.py). Every refusal is still
counted in ``fpg_rejected_requests_total``; the audit lines (``gateway.officers.audit``)
are not affected."""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from gateway.appkeys import METRICS, REQUEST_ID
from gateway.errors import ERRORS, http_status

log = structlog.get_logger("gateway.channels.errors")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

REFUSAL_LINES = 20  # ``request_refused`` lines per error code per window
REFUSAL_WINDOW = 10.0  # seconds


class RefusalLog:
    """``request_refused`` lines, at most ``lines`` per error code in each ``every``
    seconds; the refusals held back are counted by code and said in one line,
    ``request_refused_held_back``, at the first refusal of the next window. Error codes
    are a fixed set, so this holds a few counters at most."""

    def __init__(self, lines: int = REFUSAL_LINES, every: float = REFUSAL_WINDOW,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.lines, self.every, self.now = lines, every, now
        self._started: float | None = None
        self._logged: Counter[str] = Counter()
        self.held_back: Counter[str] = Counter()

    def refused(self, code: str, status: int, path: str) -> None:
        now = self.now()
        if self._started is None or now - self._started >= self.every:
            if self.held_back:
                log.warning("request_refused_held_back", held_back=dict(self.held_back),
                            every_seconds=self.every, lines_per_code=self.lines)
            self._started = now
            self._logged.clear()
            self.held_back.clear()
        if self._logged[code] >= self.lines:
            self.held_back[code] += 1
            return
        self._logged[code] += 1
        log.info("request_refused", code=code, status=status, path=path)


#: One for the process: every application's refusals share it.
refusal_log = RefusalLog()


def error_body(code: str, message: str) -> dict[str, str]:
    return {"error": code, "message": message}


_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get("X-Request-Id", "")
    request_id = given if _REQUEST_ID.fullmatch(given) else os.urandom(8).hex()
    request[REQUEST_ID] = request_id
    structlog.contextvars.bind_contextvars(request_id=request_id)
    try:
        response = await handler(request)
    except ERRORS as exc:
        status = http_status(exc)
        refusal_log.refused(exc.code, status, request.path)
        _count_refusal(request, exc.code)
        response = web.json_response(error_body(exc.code, exc.message), status=status)
        if status == 401:
            response.headers["WWW-Authenticate"] = getattr(exc, "challenge", "Bearer")
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            response.headers["Retry-After"] = str(max(1, round(retry_after)))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
            exc.status, "http_error"
        )
        refusal_log.refused(code, exc.status, request.path)
        _count_refusal(request, code)
        response = web.json_response(error_body(code, exc.reason), status=exc.status)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
    except Exception:  # the one catch-all, at the request boundary
        log.exception("request_failed", path=request.path)
        response = web.json_response(error_body("internal", "internal error"), status=500)
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
    if not response.prepared:  # a stream has sent its headers already (with the id)
        response.headers["X-Request-Id"] = request_id
    return response


def _count_refusal(request: web.Request, code: str) -> None:
    metrics = request.app.get(METRICS)
    if metrics is not None:  # the admin channel shares the middleware, not the metrics
        metrics.rejected.labels(code).inc()
