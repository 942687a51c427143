"""Officers join desks: one-time enrollment codes, proof of key possession, bindings.

1. An operator creates a code for one or more desks (``gateway officers invite``). The
   code is shown once; only its SHA-256 is stored, with the desks and an expiry.
2. The officer's client makes its keys locally and sends the code, both public keys and
   a signature by the new signing key over
   ``fpg enroll v1\\n<gateway>\\n<code>\\n<signing key b64>\\n<encryption key b64>\\n``
   (proof that the officer holds the key it asks the gateway to vouch for).
3. The gateway consumes the code and the officer's binding is signed and stored in one
   transaction; a code works once.
4. The officer is a member of a desk once admitted there (gateway.officers.admission): by
   the operator, in that same transaction, if the desk has no member; else it is pending
   until a member of the desk or of its supervisor desk admits it.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

from gateway.clock import Clock
from gateway.crypto.keys import (
    ROLE_OFFICER_SIGNING,
    EncryptionPublicKey,
    GatewaySigningKey,
    VerifyKey,
)
from gateway.errors import BadKeyError, BadSignatureError, ClientError
from gateway.officers.admission import operator_admission
from gateway.protocol.officers import Binding, code_hash, enroll_text
from gateway.store import EnrollmentStore, OfficerRow


def new_code() -> str:
    """A fresh one-time code: 100 random bits, base32, readable over the phone."""
    text = base64.b32encode(os.urandom(25)).decode("ascii")[:20]
    return "FPG-" + "-".join(text[i : i + 4] for i in range(0, 20, 4))


def new_officer_id() -> str:
    return "off-" + os.urandom(8).hex()


@dataclass(frozen=True)
class Enrolled:
    officer: OfficerRow
    binding: Binding


async def enroll(store: EnrollmentStore, gateway: str, key: GatewaySigningKey, clock: Clock,
                 binding_ms: int, code: str, sign_key_b64: str, enc_key_b64: str,
                 signature_b64: str) -> Enrolled:
    """Check the proof of possession, consume the code, sign and store the binding."""
    digest = code_hash(code)
    try:
        sign_key = VerifyKey.from_b64(sign_key_b64, ROLE_OFFICER_SIGNING)
        enc_key = EncryptionPublicKey.from_b64(enc_key_b64)
        signature = base64.b64decode(signature_b64, validate=True)
    except (BadKeyError, ValueError):
        raise ClientError("sign_key, enc_key and signature must be valid base64 keys",
                          code="bad_key") from None
    try:
        sign_key.verify(enroll_text(gateway, code, sign_key_b64, enc_key_b64), signature)
    except BadSignatureError:
        raise ClientError("the signature does not prove possession of sign_key",
                          code="bad_signature") from None
    now = clock.now_ms()
    made: list[Binding] = []

    def make_officer(desks: tuple[str, ...]) -> OfficerRow:
        officer_id = new_officer_id()
        binding = Binding(gateway, officer_id, tuple(f"{d}@{gateway}" for d in desks), sign_key,
                          enc_key, now, now + binding_ms)
        made.append(binding)
        return OfficerRow(officer_id, sign_key.raw, sign_key.key_id, enc_key.raw,
                          enc_key.key_id, binding.sign(key), now, now + binding_ms, None, desks)

    officer = await store.redeem_enrollment_code(
        digest, now, make_officer,
        lambda row, desk: operator_admission(key, gateway, row, desk, now))
    return Enrolled(officer, made[-1])
