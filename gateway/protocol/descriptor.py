"""The gateway descriptor: the signed statement of who a gateway is and where to reach it.

Served at ``GET /.well-known/fpg/descriptor`` as a signed note (gateway.crypto.note) whose
text is the line ``fpg descriptor v1`` followed by one line of JSON and signed by the
gateway's identity key under its gateway id. A partner that pinned the gateway's
fingerprint checks the signature before reading anything else.

``key_history`` lists the gateway's key rotation statements (gateway.protocol.rotation), oldest
first, so that a partner that trusts an older key can walk from it to the one that signs
the descriptor: :func:`verify_descriptor_history`.

``limits`` (optional) says how large an envelope and a relay batch body the gateway
accepts, so that a sending gateway refuses at once what the partner would refuse later
(:class:`Limits`); a descriptor without it (an older gateway) leaves both unknown.

``header_fields`` (optional) lists the optional envelope header fields the gateway
understands (docs/PROTOCOL.md 3.2: ``due``, ``handling``, ``state``); a sending gateway
refuses at once a message carrying one its partner does not list.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from gateway.crypto.keys import ROLE_GATEWAY_SIGNING, GatewaySigningKey, VerifyKey
from gateway.errors import MalformedError
from gateway.protocol.rotation import ChainKey, decode_history, encode_history, verify_history
from gateway.protocol.signed import SignedJson

DESCRIPTOR_LINE = "fpg descriptor v1"
DESCRIPTOR_PATH = "/.well-known/fpg/descriptor"
DEFAULT_VALIDITY_MS = 24 * 3600 * 1000
MAX_DESCRIPTOR_SIZE = 256 * 1024
DESCRIPTOR = SignedJson(DESCRIPTOR_LINE, "descriptor", MAX_DESCRIPTOR_SIZE)
# The relay batch body around one message: {"v":1,"messages":[{"envelope":"",
# "binding":""}]} with both values in base64 (docs/PROTOCOL.md 10.4).
ONE_ITEM_OVERHEAD = len(b'{"v":1,"messages":[{"envelope":"","binding":""}]}')


def base64_size(n: int) -> int:
    return 4 * ((n + 2) // 3)


@dataclass(frozen=True)
class Limits:
    """What a gateway accepts from partners; None: not said (an older descriptor)."""

    envelope_bytes: int | None = None
    batch_bytes: int | None = None

    def to_json(self) -> dict[str, int]:
        return {name: value for name, value in (("envelope_bytes", self.envelope_bytes),
                                                 ("batch_bytes", self.batch_bytes))
                if value is not None}

    @classmethod
    def from_json(cls, doc: Any) -> Limits:
        """Unknown members are ignored (a later version may say more); a known one must
        be a positive integer."""
        if not isinstance(doc, dict):
            raise TypeError("limits")
        values = [doc.get(name) for name in ("envelope_bytes", "batch_bytes")]
        for value in values:
            if value is not None and (type(value) is not int or value <= 0):
                raise ValueError("limits")
        return cls(*values)

    def fits(self, envelope: int, binding: int) -> bool:
        """Whether an envelope of ``envelope`` bytes, sent with a binding of ``binding``
        bytes, is within these limits (unknown ones do not refuse it)."""
        if self.envelope_bytes is not None and envelope > self.envelope_bytes:
            return False
        return self.batch_bytes is None or ONE_ITEM_OVERHEAD + base64_size(envelope) \
            + base64_size(binding) <= self.batch_bytes

    def largest_envelope(self, binding: int) -> int | None:
        """The largest envelope these limits let through with a binding of ``binding``
        bytes: the envelope limit, or less when a batch of that envelope alone, in base64,
        would exceed the batch limit. None if neither is known."""
        largest = self.envelope_bytes
        if self.batch_bytes is not None:
            room = self.batch_bytes - ONE_ITEM_OVERHEAD - base64_size(binding)
            in_batch = max(0, 3 * (room // 4))
            largest = in_batch if largest is None else min(largest, in_batch)
        return largest


@dataclass(frozen=True)
class Descriptor:
    gateway: str
    base_url: str
    signing_key: VerifyKey
    ledger_origin: str
    issued: int
    valid_until: int
    key_history: tuple[bytes, ...] = ()  # rotation statements, oldest first
    limits: Limits = Limits()  # what it accepts from partners (unknown: not said)
    header_fields: frozenset[str] = frozenset()  # optional header fields it understands

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "v": 1,
            "gateway": self.gateway,
            "endpoints": {"base": self.base_url},
            "keys": [
                {
                    "role": self.signing_key.role,
                    "key": self.signing_key.b64(),
                    "key_id": self.signing_key.key_id,
                    "fingerprint": self.signing_key.fingerprint,
                }
            ],
            "ledger_origin": self.ledger_origin,
            "issued": self.issued,
            "valid_until": self.valid_until,
            "key_history": encode_history(self.key_history),
        }
        limits = self.limits.to_json()
        if limits:
            doc["limits"] = limits
        if self.header_fields:
            doc["header_fields"] = sorted(self.header_fields)
        return doc


def sign_descriptor(descriptor: Descriptor, key: GatewaySigningKey) -> bytes:
    if key.public != descriptor.signing_key:
        raise MalformedError("descriptor must be signed by the key it announces")
    return DESCRIPTOR.sign(DESCRIPTOR.text(descriptor.to_json()), descriptor.gateway, key)


def _from_doc(doc: Any) -> Descriptor:
    with DESCRIPTOR.fields():
        keys = [k for k in doc["keys"] if k["role"] == ROLE_GATEWAY_SIGNING]
        if doc["v"] != 1 or len(keys) != 1:
            raise MalformedError("descriptor must announce exactly one gateway signing key")
        return Descriptor(
            gateway=str(doc["gateway"]),
            base_url=str(doc["endpoints"]["base"]),
            signing_key=VerifyKey.from_b64(keys[0]["key"], ROLE_GATEWAY_SIGNING),
            ledger_origin=str(doc["ledger_origin"]),
            issued=int(doc["issued"]),
            valid_until=int(doc["valid_until"]),
            key_history=decode_history(doc.get("key_history", [])),
            limits=Limits.from_json(doc["limits"]) if "limits" in doc else Limits(),
            header_fields=_header_fields(doc.get("header_fields", [])),
        )


def _header_fields(value: Any) -> frozenset[str]:
    if not isinstance(value, list) or len(value) > 64 or not all(
            isinstance(v, str) and 0 < len(v) <= 64 for v in value):
        raise ValueError("header_fields")
    return frozenset(value)


def verify_descriptor(data: bytes, gateway: str, key: VerifyKey) -> Descriptor:
    """Verify a descriptor against the pinned ``key`` of ``gateway`` and parse it."""
    _, doc = DESCRIPTOR.open(data, gateway, [key])
    descriptor = _from_doc(doc)
    if descriptor.gateway != gateway or descriptor.signing_key != key:
        raise MalformedError("descriptor names another gateway or key than its signer")
    return descriptor


def verify_descriptor_history(data: bytes, gateway: str,
                              trusted: Collection[str]) -> tuple[Descriptor, tuple[ChainKey, ...]]:
    """Verify a descriptor of ``gateway`` whose key may have been rotated since the key a
    verifier trusts (``trusted``: fingerprints): its key history must verify and lead from
    a trusted key to the key that signed it. Returns the descriptor and the keys from the
    newest trusted one to the current one. Raises CryptoError (KeyHistoryError when the
    history is broken or starts at no trusted key)."""
    unverified = peek_descriptor(data)
    if unverified.gateway != gateway:
        raise MalformedError("descriptor names another gateway")
    history = verify_history(unverified.key_history, gateway, unverified.signing_key)
    chain = history.since_trusted(trusted)
    return verify_descriptor(data, gateway, unverified.signing_key), chain


def peek_descriptor(data: bytes) -> Descriptor:
    """Parse a descriptor WITHOUT trusting it (to show an operator what to pin)."""
    _, doc = DESCRIPTOR.peek(data)
    return _from_doc(doc)
