"""The gateway's one error hierarchy.

Every failure the gateway reports is a :class:`GatewayError` subclass with a stable
machine-readable ``code`` (what clients and partners match on) and an HTTP status (what
the error middleware answers with). Each family also inherits the builtin it most
resembles, so generic callers can still catch ``ValueError`` or ``PermissionError``.

Messages are written for a person and never carry plaintext, key material or
passphrases: they name files, config keys, ids and reasons, nothing more.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""

    code = "gateway_error"
    http_status = 500
    retry_after: float | None = None  # seconds, for answers a client should retry later

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


# --- configuration -------------------------------------------------------------------


class ConfigError(GatewayError, ValueError):
    """A configuration file is missing, unreadable or invalid."""

    code = "config_invalid"


# --- cryptography ----------------------------------------------------------------------


class CryptoError(GatewayError, ValueError):
    """Base of every failure of signing, sealing, opening or key handling."""

    code = "crypto_error"
    http_status = 400


class MalformedError(CryptoError):
    """Bytes that do not have the structure the format requires."""

    code = "malformed"


class BadSignatureError(CryptoError):
    """A signature that does not verify over the bytes it claims to cover."""

    code = "bad_signature"


class SignerMismatchError(CryptoError):
    """The bytes name a different signing key from the one offered to verify them."""

    code = "signer_mismatch"


class NotARecipientError(CryptoError):
    """The envelope holds no wrapped content key for this officer's encryption key."""

    code = "not_a_recipient"
    http_status = 403


class DecryptionError(CryptoError):
    """A wrapped key or the ciphertext failed authentication."""

    code = "decryption_failed"


class BadKeyError(CryptoError):
    """A key of the wrong size, role or encoding."""

    code = "bad_key"


class KeyFileError(CryptoError):
    """A key file that cannot be read, parsed or unlocked."""

    code = "key_file"


class WrongPassphraseError(KeyFileError):
    """The passphrase does not open the key file."""

    code = "wrong_passphrase"


# --- store and ledger ------------------------------------------------------------------


class StoreError(GatewayError):
    """The durable store failed or holds data it should not."""

    code = "store_error"
    http_status = 503


class LedgerError(GatewayError):
    """The ledger is inconsistent with itself or with a signed checkpoint."""

    code = "ledger_error"


class ProofError(LedgerError, ValueError):
    """A Merkle inclusion or consistency proof does not verify."""

    code = "bad_proof"
    http_status = 400


# --- peers and clients -----------------------------------------------------------------


class PeerError(GatewayError):
    """A partner gateway misbehaved or could not be reached."""

    code = "peer_error"
    http_status = 502


class UnavailableError(PeerError):
    """What the request needs from a partner is not available now; retry later."""

    code = "unavailable"
    http_status = 503
    retry_after = 5.0


class HopAuthError(GatewayError, PermissionError):
    """A gateway-to-gateway request without a valid, fresh signature of a partner."""

    code = "hop_unauthenticated"
    http_status = 401
    challenge = "FPG-Hop"  # the WWW-Authenticate scheme answered with it


class ClientError(GatewayError, ValueError):
    """A request from a client or partner that the gateway refuses."""

    code = "bad_request"
    http_status = 400


class ForbiddenError(ClientError):
    """Authenticated, but not allowed to do this (e.g. another desk's inbox)."""

    code = "forbidden"
    http_status = 403


class NotFoundError(ClientError):
    code = "not_found"
    http_status = 404


class ConflictError(ClientError):
    code = "conflict"
    http_status = 409


class TooLargeError(ClientError):
    code = "too_large"
    http_status = 413


class BodyTimeoutError(ClientError):
    """The request body did not arrive whole in time (a slow client)."""

    code = "body_timeout"
    http_status = 408


class UnsupportedMediaError(ClientError):
    code = "unsupported_media_type"
    http_status = 415
