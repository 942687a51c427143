"""The gateway's errors: its own hierarchy and crypto's family, in one catalogue.

Every failure the gateway reports is a :class:`GatewayError` or a
:class:`~gateway.crypto.errors.CryptoError` subclass (:data:`ERRORS`, what a boundary
catches) with a stable machine-readable ``code`` (what clients and partners match on) and
an HTTP status (:func:`http_status`, what the error middleware answers with). Each family
also inherits the builtin it most resembles, so generic callers can still catch
``ValueError`` or ``PermissionError``.

Messages are written for a person and never carry plaintext, key material or
passphrases: they name files, config keys, ids and reasons, nothing more.
"""

from __future__ import annotations

# crypto/ has its own error family so that it imports nothing else of the gateway; the
# family is part of this catalogue all the same: import any error from here.
from gateway.crypto.errors import BadKeyError as BadKeyError
from gateway.crypto.errors import BadSignatureError as BadSignatureError
from gateway.crypto.errors import CryptoError as CryptoError
from gateway.crypto.errors import DecryptionError as DecryptionError
from gateway.crypto.errors import KeyFileError as KeyFileError
from gateway.crypto.errors import MalformedError as MalformedError
from gateway.crypto.errors import NotARecipientError as NotARecipientError
from gateway.crypto.errors import SignerMismatchError as SignerMismatchError
from gateway.crypto.errors import WrongPassphraseError as WrongPassphraseError


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose, but crypto's (see ERRORS)."""

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
# CryptoError and its family come from gateway.crypto.errors (imported above): ValueErrors
# with a code, answered 400 (NotARecipientError 403) by http_status below.


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


class GoneError(ClientError):
    code = "gone"
    http_status = 410


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


class MisdirectedError(ClientError):
    """A request whose Host is not one this gateway answers to (DNS rebinding)."""

    code = "unknown_host"
    http_status = 421


class UnsupportedMediaError(ClientError):
    code = "unsupported_media_type"
    http_status = 415


#: Every error the gateway raises on purpose: what a boundary (the error middleware, a
#: command's exit status) turns into a stable code and a one-line message.
ERRORS: tuple[type[GatewayError], type[CryptoError]] = (GatewayError, CryptoError)


def http_status(error: GatewayError | CryptoError) -> int:
    """The HTTP status the gateway answers ``error`` with. crypto/ knows nothing of HTTP:
    its errors are the sender's bytes being wrong (400), or an envelope that was not
    sealed for the officer asking (403)."""
    if isinstance(error, CryptoError):
        return 403 if isinstance(error, NotARecipientError) else 400
    return error.http_status
