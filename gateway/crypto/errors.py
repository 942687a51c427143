"""The errors of signing, sealing, opening and key handling: crypto's own family.

Every class has a stable machine-readable ``code`` (what clients and partners match on)
and inherits ``ValueError`` through :class:`CryptoError`, as PyNaCl's errors inherit the
builtin they resemble. The family has its own root so that crypto/ imports nothing else
of the gateway; gateway.errors re-exports it and says how the gateway answers it (HTTP
status, exit status).

Messages name keys, files and reasons, never key material or passphrases.
"""

from __future__ import annotations


class CryptoError(ValueError):
    """Base of every failure of signing, sealing, opening or key handling."""

    code = "crypto_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


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
