"""Key types, one class per role, validated when constructed.

Roles keep keys from being used for the wrong job: a gateway's identity key signs
descriptors, receipts and checkpoints; an officer's signing key signs envelopes and
acknowledgements; an officer's encryption key opens content keys wrapped for the desks
the officer belongs to. The role is part of every key id and fingerprint, so the same
32 bytes presented in two roles give two different ids.

* **key id**: 16 lowercase hex digits, the first 8 bytes of the key digest. It is what
  envelopes and bindings carry to name a key.
* **fingerprint**: the first 20 bytes of the same digest in RFC 4648 base32, eight groups
  of four characters (``"K3JQ 7ZWA ..."``), short enough for two operators to read to
  each other over the phone when they pin each other's gateways.

The digest is ``SHA-256("fpg-key/v1" || 0x0A || role || 0x0A || public key)``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from typing import ClassVar, Self

import nacl.bindings
import nacl.exceptions
import nacl.public
import nacl.signing

from gateway.crypto.errors import BadKeyError, BadSignatureError, DecryptionError

ROLE_GATEWAY_SIGNING = "gateway-signing"
ROLE_OFFICER_SIGNING = "officer-signing"
ROLE_OFFICER_ENCRYPTION = "officer-encryption"
ROLE_ANCHOR_SIGNING = "anchor-signing"

SIGNING_ROLES = frozenset({ROLE_GATEWAY_SIGNING, ROLE_OFFICER_SIGNING, ROLE_ANCHOR_SIGNING})
KEY_SIZE = 32
SIGNATURE_SIZE = 64
KEY_ID_SIZE = 8


def key_digest(role: str, public: bytes) -> bytes:
    """The digest behind a key's id and fingerprint."""
    return hashlib.sha256(b"fpg-key/v1\n" + role.encode("ascii") + b"\n" + public).digest()


def format_fingerprint(digest: bytes) -> str:
    text = base64.b32encode(digest[:20]).decode("ascii")
    return " ".join(text[i : i + 4] for i in range(0, len(text), 4))


def normalize_fingerprint(text: str) -> str:
    """Accept a fingerprint as typed by a person: any case, spaces or dashes."""
    compact = "".join(ch for ch in text.upper() if ch not in " -\t")
    if len(compact) != 32 or any(ch not in "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567" for ch in compact):
        raise BadKeyError("a fingerprint is 32 base32 characters (A-Z, 2-7)")
    return " ".join(compact[i : i + 4] for i in range(0, 32, 4))


def fingerprints_equal(a: str, b: str) -> bool:
    """Constant-time comparison of two fingerprints in any accepted spelling."""
    return hmac.compare_digest(
        normalize_fingerprint(a).encode("ascii"), normalize_fingerprint(b).encode("ascii")
    )


def _check_size(raw: bytes, what: str) -> bytes:
    if not isinstance(raw, bytes | bytearray) or len(raw) != KEY_SIZE:
        raise BadKeyError(f"{what} must be {KEY_SIZE} bytes")
    return bytes(raw)


class _PublicKey:
    """Shared behaviour of public keys: role, raw bytes, id, fingerprint."""

    __slots__ = ("_digest", "key_id", "key_id_bytes", "raw", "role")

    def __init__(self, raw: bytes, role: str) -> None:
        self.raw = raw
        self.role = role
        self._digest = key_digest(role, raw)
        self.key_id_bytes = self._digest[:KEY_ID_SIZE]
        self.key_id = self.key_id_bytes.hex()

    @property
    def fingerprint(self) -> str:
        return format_fingerprint(self._digest)

    def b64(self) -> str:
        return base64.b64encode(self.raw).decode("ascii")

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, _PublicKey)
            and self.role == other.role
            and hmac.compare_digest(self.raw, other.raw)
        )

    def __hash__(self) -> int:
        return hash((self.role, self.raw))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.role}, id={self.key_id})"


class VerifyKey(_PublicKey):
    """An Ed25519 public key in a signing role."""

    __slots__ = ()

    def __init__(self, raw: bytes, role: str) -> None:
        if role not in SIGNING_ROLES:
            raise BadKeyError(f"unknown signing role {role!r}")
        raw = _check_size(raw, "an Ed25519 public key")
        try:
            # Rejects encodings that are not points on the curve.
            nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(raw)
        except (nacl.exceptions.CryptoError, RuntimeError, ValueError) as exc:
            raise BadKeyError("not a valid Ed25519 public key") from exc
        super().__init__(raw, role)

    @classmethod
    def from_b64(cls, text: str, role: str) -> VerifyKey:
        try:
            raw = base64.b64decode(text, validate=True)
        except (ValueError, TypeError) as exc:
            raise BadKeyError("public key is not valid base64") from exc
        return cls(raw, role)

    def verify(self, message: bytes, signature: bytes) -> bytes:
        """Check ``signature`` over ``message``; return the message, now verified."""
        if len(signature) != SIGNATURE_SIZE:
            raise BadSignatureError("a signature is 64 bytes")
        try:
            return bytes(nacl.bindings.crypto_sign_open(signature + message, self.raw))
        except nacl.exceptions.BadSignatureError as exc:
            raise BadSignatureError("signature does not verify") from exc


class EncryptionPublicKey(_PublicKey):
    """An X25519 public key to which content keys are wrapped."""

    __slots__ = ()

    ROLE: ClassVar[str] = ROLE_OFFICER_ENCRYPTION

    def __init__(self, raw: bytes, role: str = ROLE_OFFICER_ENCRYPTION) -> None:
        if role != ROLE_OFFICER_ENCRYPTION:
            raise BadKeyError(f"unknown encryption role {role!r}")
        raw = _check_size(raw, "an X25519 public key")
        try:
            # A low-order point gives an all-zero shared secret, which libsodium refuses.
            nacl.bindings.crypto_scalarmult(b"\x01" * 32, raw)
        except (nacl.exceptions.CryptoError, RuntimeError, ValueError) as exc:
            raise BadKeyError("not a usable X25519 public key") from exc
        super().__init__(raw, role)

    @classmethod
    def from_b64(cls, text: str, role: str = ROLE_OFFICER_ENCRYPTION) -> EncryptionPublicKey:
        try:
            raw = base64.b64decode(text, validate=True)
        except (ValueError, TypeError) as exc:
            raise BadKeyError("public key is not valid base64") from exc
        return cls(raw, role)


class SigningKey:
    """An Ed25519 private key; subclasses fix the role."""

    __slots__ = ("_nacl", "public")

    ROLE: ClassVar[str] = ""

    def __init__(self, seed: bytes) -> None:
        seed = _check_size(seed, "an Ed25519 seed")
        self._nacl = nacl.signing.SigningKey(seed)
        self.public = VerifyKey(bytes(self._nacl.verify_key), self.ROLE)

    @classmethod
    def generate(cls) -> Self:
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @property
    def seed(self) -> bytes:
        """The 32 secret bytes; only key files may ask for them."""
        return bytes(self._nacl)

    @property
    def key_id(self) -> str:
        return self.public.key_id

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        return bytes(self._nacl.sign(message).signature)

    def __repr__(self) -> str:  # never shows the secret
        return f"{type(self).__name__}(id={self.key_id})"


class GatewaySigningKey(SigningKey):
    """A gateway's identity: signs descriptors, bindings, receipts and checkpoints."""

    __slots__ = ()
    ROLE = ROLE_GATEWAY_SIGNING


class OfficerSigningKey(SigningKey):
    """An officer's signing key: signs envelopes and acknowledgements."""

    __slots__ = ()
    ROLE = ROLE_OFFICER_SIGNING


class AnchorSigningKey(SigningKey):
    """A trust anchor's key: signs rosters of the gateways it vouches for."""

    __slots__ = ()
    ROLE = ROLE_ANCHOR_SIGNING


class OfficerEncryptionKey:
    """An officer's X25519 private key: unwraps content keys sealed to it."""

    __slots__ = ("_box", "_secret", "public")

    ROLE: ClassVar[str] = ROLE_OFFICER_ENCRYPTION

    def __init__(self, secret: bytes) -> None:
        secret = _check_size(secret, "an X25519 secret key")
        private = nacl.public.PrivateKey(secret)
        self._secret = secret
        self.public = EncryptionPublicKey(bytes(private.public_key))
        self._box = nacl.public.SealedBox(private)

    @classmethod
    def generate(cls) -> Self:
        return cls(bytes(nacl.public.PrivateKey.generate()))

    @property
    def seed(self) -> bytes:
        return self._secret

    @property
    def key_id(self) -> str:
        return self.public.key_id

    def unwrap(self, wrapped: bytes) -> bytes:
        """Open a sealed-box wrapped key addressed to this key."""
        try:
            return bytes(self._box.decrypt(wrapped))
        except nacl.exceptions.CryptoError as exc:
            raise DecryptionError("wrapped content key does not open") from exc

    def __repr__(self) -> str:
        return f"OfficerEncryptionKey(id={self.key_id})"


class DelegatedSigningKey(OfficerSigningKey):
    """An officer's signing key held by another process (the client's unlock agent):
    ``sign`` asks it, and every signature it returns is checked against ``public``
    (from the officer's own key file), so a process that answers in its place cannot
    make the client send a signature of another key. The secret never comes here."""

    __slots__ = ("_signer",)

    def __init__(self, public: VerifyKey, signer: Callable[[bytes], bytes]) -> None:
        if public.role != self.ROLE:
            raise BadKeyError(f"a delegated officer signing key needs a {self.ROLE} key")
        self.public = public
        self._signer = signer

    @property
    def seed(self) -> bytes:
        raise BadKeyError("this signing key is held by the unlock agent, not here")

    def sign(self, message: bytes) -> bytes:
        signature = self._signer(message)
        try:
            self.public.verify(message, signature)
        except BadSignatureError:
            raise BadSignatureError("the unlock agent answered with a signature that is not "
                                    "this officer's") from None
        return signature


class DelegatedEncryptionKey(OfficerEncryptionKey):
    """An officer's encryption key held by another process (the unlock agent): ``unwrap``
    asks it to open one sealed content-key wrap. The secret never comes here."""

    __slots__ = ("_unwrapper",)

    def __init__(self, public: EncryptionPublicKey,
                 unwrapper: Callable[[bytes], bytes]) -> None:
        self.public = public
        self._unwrapper = unwrapper

    @property
    def seed(self) -> bytes:
        raise BadKeyError("this encryption key is held by the unlock agent, not here")

    def unwrap(self, wrapped: bytes) -> bytes:
        return self._unwrapper(wrapped)


SecretKey = GatewaySigningKey | OfficerSigningKey | OfficerEncryptionKey | AnchorSigningKey

SECRET_KEY_CLASSES: dict[str, type[SecretKey]] = {
    ROLE_GATEWAY_SIGNING: GatewaySigningKey,
    ROLE_OFFICER_SIGNING: OfficerSigningKey,
    ROLE_OFFICER_ENCRYPTION: OfficerEncryptionKey,
    ROLE_ANCHOR_SIGNING: AnchorSigningKey,
}
