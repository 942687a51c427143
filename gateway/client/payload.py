"""What officers write: the plaintext inside an envelope, as UTF-8 JSON.

Only clients ever see these; the gateway carries them encrypted. Kinds:

* ``hotline``: ``{"type": "hotline", "text": ...}`` (a short urgent alert);
* ``case``: ``{"type": "case", "case_ref", "legal_basis", "offence", "requested_actions":
  [...], "deadline" (YYYY-MM-DD), "text"}``;
* ``reply``: ``{"type": "reply", "text": ...}``;
* ``handover``: ``{"type": "handover", "received_at" (ISO 8601 with offset), "place"
  (optional), "persons" (optional, typed), "text" (optional)}``: the receiving officer's
  signed acknowledgement that the persons an alert announced were handed over;
* ``forward``: ``{"type": "forward", "text" (optional), "original": the forwarded
  envelope (base64), "content_key": its content key (base64)}``;
* ``status``: ``{"type": "status", "text": ...}`` (a note in a thread), or a move of the
  request: ``{"type": "status", "state": one of the header's states, "text" (optional),
  "missing": [...] (required for ``returned_incomplete``), "grounds" (required for
  ``refused``)}``; the state is the one its signed header carries;

each optionally with ``"attachments": [{"name", "media_type", "data" (base64)}]``.

Hotline alerts and cases may carry typed fields (gateway.client.typed): an alert's
``alert_type``, ``place``, ``border_gate``, ``time``, ``persons`` and ``documents``; a
request's ``request_type``, ``requesting_authority``, ``executing_authority``,
``treaty``, ``languages`` and ``translations`` (which attachments translate the request,
into which language).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from gateway.client import typed
from gateway.client.typed import PayloadError
from gateway.crypto.envelope import CASE_STATES, EnvelopeHeader
from gateway.protocol import jsontext

LEGAL_BASES = ("treaty", "reciprocity", "convention", "other")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
MAX_TEXT = 64 * 1024
MAX_ATTACHMENTS = 32


__all__ = ["PayloadError", "check_header", "decode", "encode", "validate"]


def _text(value: Any, name: str, *, required: bool = True, limit: int = MAX_TEXT) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise PayloadError(f"{name} must be non-empty text")
    if len(value) > limit:
        raise PayloadError(f"{name} is longer than {limit} characters")
    return value


def attachment(name: str, media_type: str, data: bytes) -> dict[str, str]:
    return {"name": name, "media_type": media_type,
            "data": base64.b64encode(data).decode("ascii")}


def _check_attachments(items: Any) -> None:
    if items is None:
        return
    if not isinstance(items, list) or len(items) > MAX_ATTACHMENTS:
        raise PayloadError(f"attachments must be a list of at most {MAX_ATTACHMENTS}")
    for item in items:
        if not isinstance(item, dict):
            raise PayloadError("each attachment is an object")
        _text(item.get("name"), "attachment name", limit=255)
        _text(item.get("media_type"), "attachment media_type", limit=255)
        try:
            base64.b64decode(_text(item.get("data"), "attachment data", limit=2**31),
                             validate=True)
        except (binascii.Error, ValueError):
            raise PayloadError("attachment data must be base64") from None


def validate(doc: Any, kind: str) -> dict[str, Any]:
    """Check a payload of envelope kind ``kind``; return it."""
    if not isinstance(doc, dict) or doc.get("type") != kind:
        raise PayloadError(f"the payload of a {kind} message has type {kind!r}")
    if kind == "case":
        _text(doc.get("case_ref"), "case_ref", limit=200)
        if doc.get("legal_basis") not in LEGAL_BASES:
            raise PayloadError(f"legal_basis must be one of {', '.join(LEGAL_BASES)}")
        _text(doc.get("offence"), "offence", limit=500)
        actions = doc.get("requested_actions")
        if not isinstance(actions, list) or not actions:
            raise PayloadError("requested_actions must be a non-empty list")
        for action in actions:
            _text(action, "requested action", limit=1000)
        deadline = doc.get("deadline")
        if not isinstance(deadline, str) or not _DATE.fullmatch(deadline):
            raise PayloadError("deadline must be a date YYYY-MM-DD")
        _text(doc.get("text"), "text", required=False)
        attached = doc.get("attachments")
        typed.check_request(doc, len(attached) if isinstance(attached, list) else 0)
    elif kind == "status" and "state" in doc:
        _check_move(doc)
    elif kind == "handover":
        _text(doc.get("text"), "text", required=False)
        typed.check_handover(doc)
    elif kind == "forward":
        _text(doc.get("text"), "text", required=False)
        for name, size in (("original", None), ("content_key", 32)):
            try:
                raw = base64.b64decode(_text(doc.get(name), name, limit=2**31), validate=True)
            except (binascii.Error, ValueError):
                raise PayloadError(f"{name} must be base64") from None
            if size is not None and len(raw) != size:
                raise PayloadError(f"{name} must be {size} bytes")
    else:
        _text(doc.get("text"), "text")
        if kind == "hotline":
            typed.check_alert(doc)
    _check_attachments(doc.get("attachments"))
    return doc


def _check_move(doc: dict[str, Any]) -> None:
    state = doc["state"]
    if state not in CASE_STATES:
        raise PayloadError(f"state must be one of {', '.join(CASE_STATES)}")
    _text(doc.get("text"), "text", required=False)
    missing = doc.get("missing")
    if state == "returned_incomplete":
        if not isinstance(missing, list) or not missing:
            raise PayloadError("a request returned incomplete says what is missing")
    if missing is not None:
        if not isinstance(missing, list) or len(missing) > 100:
            raise PayloadError("missing must be a list of at most 100 items")
        for item in missing:
            _text(item, "missing item", limit=1000)
    if state == "refused" or doc.get("grounds") is not None:
        _text(doc.get("grounds"), "grounds for refusal", limit=MAX_TEXT)


def check_header(doc: dict[str, Any], header: EnvelopeHeader) -> None:
    """The sealed payload and the signed header must tell the same state and due day
    (both are the sender's; a difference is a faulty or dishonest client)."""
    if header.kind == "status" and doc.get("state") != header.state:
        raise PayloadError("the sealed state differs from the header's")
    if header.kind == "case" and header.due is not None and doc.get("deadline") != header.due:
        raise PayloadError("the sealed deadline differs from the header's due day")


def encode(doc: dict[str, Any], kind: str) -> bytes:
    return json.dumps(validate(doc, kind), ensure_ascii=False, sort_keys=True,
                      separators=(",", ":")).encode("utf-8")


def decode(data: bytes, kind: str) -> dict[str, Any]:
    try:
        doc = jsontext.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise PayloadError("the payload is not UTF-8 JSON") from None
    return validate(doc, kind)
