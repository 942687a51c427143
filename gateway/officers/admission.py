"""Admitting an officer to a desk, on the gateway's side (docs/PROTOCOL.md 7.6).

An officer whose binding names a desk is *pending* there until admitted: by a member of
the desk or of its supervisor desk, whose client signs an admission statement
(gateway.protocol.admission) after both officers compared the safety code; or by the
operator, with the gateway's key, while the desk has no member (its first member, at
enrollment, or ``gateway officers admit`` to start a desk again). The gateway checks the
statement before it stores it; clients check the whole chain again before they seal.
"""

from __future__ import annotations

import base64
import binascii

from gateway.crypto.keys import GatewaySigningKey
from gateway.errors import (
    BadSignatureError,
    ClientError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
)
from gateway.officers.directory import Directory, Officer
from gateway.protocol.admission import OPERATOR, admission_text
from gateway.store import AdmissionRow, AdmissionStore, OfficerRow


def operator_admission(key: GatewaySigningKey, gateway: str, officer: OfficerRow, desk: str,
                       now_ms: int) -> AdmissionRow:
    """The operator's admission of ``officer`` to ``desk`` (local name), signed."""
    text = admission_text(f"{desk}@{gateway}", officer.id, _b64(officer.sign_key),
                          _b64(officer.enc_key), OPERATOR, now_ms)
    return AdmissionRow(desk, OPERATOR, now_ms, key.sign(text))


def pending(directory: Directory, desk: str, now_ms: int) -> list[Officer]:
    """Officers whose binding names ``desk`` (address) and is in force, not admitted yet."""
    return [o for o in directory.officers.values()
            if desk in o.requested and desk not in o.desks and o.active(now_ms)]


def may_see(officer: Officer, directory: Directory, desk: str) -> bool:
    """Members of a desk and of its supervisor desk see its members and pending joins."""
    entry = directory.desk(desk)
    return entry is not None and (desk in officer.desks or (
        entry.supervisor is not None and entry.supervisor in officer.desks))


async def admit(store: AdmissionStore, directory: Directory, admitter: Officer, desk: str,
                officer_id: str, at_ms: int, signature_b64: str, now_ms: int,
                skew_ms: int) -> AdmissionRow:
    """Check and store ``admitter``'s signed admission of ``officer_id`` to ``desk``."""
    if not may_see(admitter, directory, desk):
        raise ForbiddenError(f"only a member of {desk} or of its supervisor desk admits "
                             "officers to it", code="not_a_member")
    officer = _waiting(directory, officer_id, desk, now_ms)
    if not now_ms - skew_ms <= at_ms <= now_ms + skew_ms:
        raise ClientError("the admission's time is too far from the gateway's clock",
                          code="bad_time")
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        admitter.sign_key.verify(admission_text(desk, officer.id, officer.sign_key.b64(),
                                                officer.enc_key.b64(), admitter.id, at_ms),
                                 signature)
    except (binascii.Error, ValueError, BadSignatureError):
        raise ClientError("the admission is not signed by your key over this officer's "
                          "keys", code="bad_signature") from None
    row = AdmissionRow(desk.partition("@")[0], admitter.id, at_ms, signature)
    await store.admit(officer.id, row, now_ms)
    return row


async def admit_by_operator(store: AdmissionStore, directory: Directory,
                            key: GatewaySigningKey, officer_id: str, desk: str,
                            now_ms: int) -> AdmissionRow:
    """The operator admits a pending officer to a desk that has no member."""
    officer = _waiting(directory, officer_id, desk, now_ms)
    if directory.desks[desk].members:
        raise ConflictError(f"desk {desk} has members: one of them admits new officers",
                            code="desk_has_members")
    text = admission_text(desk, officer.id, officer.sign_key.b64(), officer.enc_key.b64(),
                          OPERATOR, now_ms)
    row = AdmissionRow(desk.partition("@")[0], OPERATOR, now_ms, key.sign(text))
    await store.admit(officer.id, row, now_ms, operator=True)
    return row


def _waiting(directory: Directory, officer_id: str, desk: str, now_ms: int) -> Officer:
    officer = directory.officers.get(officer_id)
    if officer is None or officer not in pending(directory, desk, now_ms):
        raise NotFoundError(f"no officer {officer_id[:64]!r} is waiting to join {desk}",
                            code="not_pending")
    return officer


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
