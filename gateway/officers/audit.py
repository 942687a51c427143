"""The audit trail of officers' access: one log line per invitation, enrollment, sign-in,
admission to a desk, revocation and live stream, whether it succeeded or was refused.

Every line is written by the ``gateway.audit`` logger at info (the configured default
level) and is named ``audit_<what happened>``: ``audit_invited``, ``audit_enrolled``,
``audit_enroll_failed``, ``audit_signed_in``, ``audit_signin_failed``, ``audit_admitted``,
``audit_admission_refused``, ``audit_revoked``,
``audit_stream_opened``, ``audit_stream_closed``. Each carries ``client`` (the peer
address, or ``operator-cli`` for an operator's command), ``officer`` when one is known or
claimed, and for a failure the stable error code the client was answered with (``error``).

A line never holds a secret: no enrollment code, session token, challenge, key or message
content. An enrollment code is named by ``code_hash``, the first 12 hex digits of the
SHA-256 the store keys codes by, which links an invitation to its enrollment and cannot be
redeemed. The channels and the operator commands call these functions; nothing here reads
a request or the store, so what a line may contain is decided in this module alone.
"""

from __future__ import annotations

from collections.abc import Iterable

import structlog

from gateway.errors import ForbiddenError
from gateway.protocol.officers import code_hash

log = structlog.get_logger("gateway.audit")

OPERATOR_CLI = "operator-cli"
CODE_HASH_HEX = 12
MAX_CLAIMED_ID = 64  # an id a client claims is written, but no longer than any real one


def code_ref(code: object) -> str | None:
    """The code's hash prefix, or None for anything that is not a well-formed code."""
    if not isinstance(code, str):
        return None
    try:
        return code_hash(code).hex()[:CODE_HASH_HEX]
    except ForbiddenError:
        return None


def _claimed(officer: object) -> str | None:
    return officer[:MAX_CLAIMED_ID] if isinstance(officer, str) else None


def invited(code: str, desks: Iterable[str], expires_ms: int) -> None:
    log.info("audit_invited", client=OPERATOR_CLI, code_hash=code_ref(code),
             desks=sorted(desks), expires=expires_ms)


def enrolled(client: str | None, officer: str, code: object, desks: Iterable[str]) -> None:
    log.info("audit_enrolled", client=client, officer=officer, code_hash=code_ref(code),
             desks=sorted(desks))


def enroll_failed(client: str | None, code: object, error: str) -> None:
    log.info("audit_enroll_failed", client=client, code_hash=code_ref(code), error=error)


def signed_in(client: str | None, officer: str, expires_ms: int) -> None:
    log.info("audit_signed_in", client=client, officer=officer, expires=expires_ms)


def signin_failed(client: str | None, officer: object, error: str, *,
                  unknown_officer: bool = False) -> None:
    """``unknown_officer``: no such officer, which the client is told only as a bad
    signature, so that sign-in reveals nobody's id."""
    log.info("audit_signin_failed", client=client, officer=_claimed(officer), error=error,
             unknown_officer=unknown_officer)


def admitted(client: str | None, officer: str, desk: str, by: str) -> None:
    """``by``: the admitting officer, or ``operator`` (``client`` then ``operator-cli``)."""
    log.info("audit_admitted", client=client, officer=officer, desk=desk, by=by)


def admission_refused(client: str | None, by: str, officer: object, desk: str,
                      error: str) -> None:
    log.info("audit_admission_refused", client=client, by=by, officer=_claimed(officer),
             desk=desk[:MAX_CLAIMED_ID * 2], error=error)


def revoked(officer: str) -> None:
    log.info("audit_revoked", client=OPERATOR_CLI, officer=officer)


def stream_opened(client: str | None, officer: str, desks: Iterable[str]) -> None:
    log.info("audit_stream_opened", client=client, officer=officer, desks=sorted(desks))


def stream_closed(client: str | None, officer: str, reason: str, seconds: float) -> None:
    """``reason``: the code the stream ended with (revoked, session_expired, no_session),
    resync, too_many_streams (a newer stream of the officer's replaced it), stalled (its
    client stopped reading), shutdown, client_gone, or cancelled or error (the handler was
    stopped)."""
    log.info("audit_stream_closed", client=client, officer=officer, reason=reason,
             seconds=round(seconds, 3))
