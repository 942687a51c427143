"""The gateway descriptor: the signed statement of who a gateway is and where to reach it.

Served at ``GET /.well-known/fpg/descriptor`` as a signed note (gateway.crypto.note) whose
text is the line ``fpg descriptor v1`` followed by one line of JSON and signed by the
gateway's identity key under its gateway id. A partner that pinned the gateway's
fingerprint checks the signature before reading anything else.

``key_history`` lists the gateway's key rotation statements (gateway.protocol.rotation), oldest
first, so that a partner that trusts an older key can walk from it to the one that signs
the descriptor: :func:`verify_descriptor_history`.
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


@dataclass(frozen=True)
class Descriptor:
    gateway: str
    base_url: str
    signing_key: VerifyKey
    ledger_origin: str
    issued: int
    valid_until: int
    key_history: tuple[bytes, ...] = ()  # rotation statements, oldest first

    def to_json(self) -> dict[str, Any]:
        return {
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
        )


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
