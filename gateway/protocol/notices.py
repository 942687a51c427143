"""Signed non-delivery notices: what the sending desk gets when a message is not delivered.

A message queued for a partner that has not taken it before the message's ``expires``
time, that the partner refused for good, or that this gateway's operator returned
(``gateway queue return``) is taken out of the outbox, and the gateway signs a notice for
the sending desk. The notice is a signed note (gateway.crypto.note) by the sending
gateway whose text is ``fpg non-delivery v1`` and one line of canonical JSON:

    {"digest": SHA-256 hex of the envelope, "expires": the message's expiry (Unix ms),
     "gateway": this gateway, "id": message id, "partner": the gateway it was queued for,
     "reason": "expired", the partner's refusal code, or "returned",
     "recipient": desk address, "sender": desk address,
     "time": when the notice was made (Unix ms), "v": 1}

A returned message's notice also holds ``"note"``: the operator's reason, as typed (one
line, at most MAX_NOTE characters, no control characters). Other notices have no
``note`` key, so their bytes are what they were before.

The notice is kept with the message, written to the ledger as an ``expired`` or
``rejected`` event and pushed to the sending desk's officers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.crypto.keys import GatewaySigningKey, VerifyKey
from gateway.errors import MalformedError
from gateway.protocol.signed import SignedJson

NOTICE_LINE = "fpg non-delivery v1"
MAX_NOTICE_SIZE = 4096
NOTICE = SignedJson(NOTICE_LINE, "non-delivery notice", MAX_NOTICE_SIZE)
EXPIRED = "expired"
RETURNED = "returned"  # the reason of a notice for a message the operator returned
MAX_NOTE = 300  # characters of an operator's reason


@dataclass(frozen=True)
class NonDeliveryNotice:
    gateway: str  # the sending gateway (which signs)
    partner: str  # the gateway the message was queued for
    message_id: str
    digest: str
    sender: str
    recipient: str
    expires_ms: int
    reason: str
    time_ms: int
    note: str | None = None  # the operator's reason for a returned message

    def text(self) -> str:
        body: dict[str, Any] = {
            "digest": self.digest, "expires": self.expires_ms, "gateway": self.gateway,
            "id": self.message_id, "partner": self.partner, "reason": self.reason,
            "recipient": self.recipient, "sender": self.sender, "time": self.time_ms, "v": 1,
        }
        if self.note is not None:
            body["note"] = self.note
        return NOTICE.text(body)

    def sign(self, key: GatewaySigningKey) -> bytes:
        return NOTICE.sign(self.text(), self.gateway, key)


def check_note(note: str) -> str:
    """``note`` if it may be an operator's reason: 1 to MAX_NOTE characters, printable
    (no control characters: it is shown to officers on a terminal), not only spaces;
    raises MalformedError saying what is wrong otherwise."""
    if not note.strip():
        raise MalformedError("the reason is empty")
    if len(note) > MAX_NOTE:
        raise MalformedError(f"the reason is {len(note)} characters long; at most {MAX_NOTE}")
    if not note.isprintable():
        raise MalformedError("the reason holds control characters (a newline, a tab, an "
                             "escape sequence...); write it on one line")
    return note


def open_notice(note: bytes, gateway: str, key: VerifyKey) -> NonDeliveryNotice:
    """Verify a non-delivery notice signed by ``gateway`` with ``key`` and parse it."""
    text, doc = NOTICE.open(note, gateway, [key])
    with NOTICE.fields():
        notice = NonDeliveryNotice(
            gateway=str(doc["gateway"]), partner=str(doc["partner"]),
            message_id=str(doc["id"]), digest=str(doc["digest"]), sender=str(doc["sender"]),
            recipient=str(doc["recipient"]), expires_ms=int(doc["expires"]),
            reason=str(doc["reason"]), time_ms=int(doc["time"]),
            note=None if doc.get("note") is None else str(doc["note"]),
        )
    if doc.get("v") != 1 or notice.gateway != gateway:
        raise MalformedError("non-delivery notice has a wrong version or gateway")
    if notice.note is not None:
        check_note(notice.note)
    NOTICE.check_canonical(notice.text(), text)
    return notice


BREACH_LINE = "fpg service-level breach v1"
BREACH_NOTICE = SignedJson(BREACH_LINE, "breach notice", MAX_NOTICE_SIZE)


@dataclass(frozen=True)
class BreachNotice:
    gateway: str  # which signs
    message_id: str
    desk: str  # the desk that must act
    supervisor: str  # the desk told
    kind: str
    priority: str
    stage: str
    accepted_ms: int
    due_ms: int
    time_ms: int

    def text(self) -> str:
        body: dict[str, Any] = {
            "accepted": self.accepted_ms, "desk": self.desk, "due": self.due_ms,
            "gateway": self.gateway, "id": self.message_id, "kind": self.kind,
            "priority": self.priority, "stage": self.stage, "supervisor": self.supervisor,
            "time": self.time_ms, "v": 1,
        }
        return BREACH_NOTICE.text(body)

    def sign(self, key: GatewaySigningKey) -> bytes:
        return BREACH_NOTICE.sign(self.text(), self.gateway, key)


def open_breach_notice(note: bytes, gateway: str, key: VerifyKey) -> BreachNotice:
    """Verify a breach notice signed by ``gateway`` with ``key`` and parse it."""
    text, doc = BREACH_NOTICE.open(note, gateway, [key])
    with BREACH_NOTICE.fields():
        notice = BreachNotice(
            gateway=str(doc["gateway"]), message_id=str(doc["id"]), desk=str(doc["desk"]),
            supervisor=str(doc["supervisor"]), kind=str(doc["kind"]),
            priority=str(doc["priority"]), stage=str(doc["stage"]),
            accepted_ms=int(doc["accepted"]), due_ms=int(doc["due"]),
            time_ms=int(doc["time"]),
        )
    if doc.get("v") != 1 or notice.gateway != gateway:
        raise MalformedError("breach notice has a wrong version or gateway")
    BREACH_NOTICE.check_canonical(notice.text(), text)
    return notice


CASE_DEADLINE_LINE = "fpg case deadline v1"
CASE_DEADLINE_NOTICE = SignedJson(CASE_DEADLINE_LINE, "case deadline notice", MAX_NOTICE_SIZE)
REMINDER, OVERDUE = "reminder", "overdue"


@dataclass(frozen=True)
class CaseDeadlineNotice:
    """A gateway's word that a request's due day nears (``reminder``) or has passed
    (``overdue``), for a desk of the request or its supervisor desk. Only the fields of
    the signed headers: the request's id, desks, due day and state."""

    gateway: str  # which signs
    case: str  # the request's thread id (its case message)
    what: str  # REMINDER | OVERDUE
    desk: str  # the desk of this gateway that must act (requester or executor)
    told: str  # the desk told: ``desk`` or its supervisor desk
    requester: str
    executor: str
    due: str  # YYYY-MM-DD
    state: str
    time_ms: int

    def text(self) -> str:
        body: dict[str, Any] = {
            "case": self.case, "desk": self.desk, "due": self.due, "executor": self.executor,
            "gateway": self.gateway, "requester": self.requester, "state": self.state,
            "time": self.time_ms, "told": self.told, "v": 1, "what": self.what,
        }
        return CASE_DEADLINE_NOTICE.text(body)

    def sign(self, key: GatewaySigningKey) -> bytes:
        return CASE_DEADLINE_NOTICE.sign(self.text(), self.gateway, key)


def open_case_deadline_notice(note: bytes, gateway: str, key: VerifyKey) -> CaseDeadlineNotice:
    """Verify a case deadline notice signed by ``gateway`` with ``key`` and parse it."""
    text, doc = CASE_DEADLINE_NOTICE.open(note, gateway, [key])
    with CASE_DEADLINE_NOTICE.fields():
        notice = CaseDeadlineNotice(
            gateway=str(doc["gateway"]), case=str(doc["case"]), what=str(doc["what"]),
            desk=str(doc["desk"]), told=str(doc["told"]), requester=str(doc["requester"]),
            executor=str(doc["executor"]), due=str(doc["due"]), state=str(doc["state"]),
            time_ms=int(doc["time"]),
        )
    if doc.get("v") != 1 or notice.gateway != gateway or notice.what not in (REMINDER, OVERDUE):
        raise MalformedError("case deadline notice has a wrong version, gateway or kind")
    CASE_DEADLINE_NOTICE.check_canonical(notice.text(), text)
    return notice
