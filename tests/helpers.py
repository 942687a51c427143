"""Test helpers: real keys, real envelopes, real SQLite files."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from gateway.crypto.envelope import Envelope, EnvelopeHeader, seal_envelope, verify_envelope
from gateway.crypto.keys import GatewaySigningKey, OfficerEncryptionKey, OfficerSigningKey
from gateway.store import IncomingMessage

T0 = 1_767_225_600_000


@dataclass
class Officer:
    signing: OfficerSigningKey = field(default_factory=OfficerSigningKey.generate)
    encryption: OfficerEncryptionKey = field(default_factory=OfficerEncryptionKey.generate)


def make_envelope(sender: Officer, readers: list[Officer], *, priority: str = "flash",
                  to: str = "border-liaison@vn-mps", frm: str = "trafficking@vn-mps",
                  payload: bytes = b'{"text":"test"}', message_id: str | None = None,
                  now: int = T0) -> Envelope:
    mid = message_id or os.urandom(16).hex()
    header = EnvelopeHeader(id=mid, kind="hotline", priority=priority, sender=frm, recipient=to,
                            created=now, expires=now + 86_400_000, thread=mid)
    data = seal_envelope(header, payload, sender.signing, [r.encryption.public for r in readers])
    return verify_envelope(data, sender.signing.public)


def incoming(envelope: Envelope, *, relay_to: str | None = None, now: int = T0) -> IncomingMessage:
    if relay_to is not None:
        return IncomingMessage(envelope, now, "local", envelope.signer, relay_to=relay_to)
    return IncomingMessage(envelope, now, "local", envelope.signer,
                           deliver_to=envelope.header.recipient)


GATEWAY_KEY = GatewaySigningKey(b"\x11" * 32)


def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "gateway.sqlite3"
