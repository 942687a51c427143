"""Who this gateway is: its id and its identity (signing) key, unlocked once at start,
with the key history that links its first key to this one (gateway.protocol.rotation)."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.crypto.keyfile import KeyBundle
from gateway.crypto.keys import ROLE_GATEWAY_SIGNING, GatewaySigningKey, VerifyKey
from gateway.crypto.note import NoteSigner, NoteVerifier
from gateway.errors import CryptoError, KeyFileError
from gateway.protocol.rotation import KeyHistory, verify_history


@dataclass(frozen=True)
class Identity:
    gateway_id: str
    signing_key: GatewaySigningKey
    history: tuple[bytes, ...] = ()  # rotation statements, oldest first
    keys: KeyHistory = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            keys = verify_history(self.history, self.gateway_id, self.signing_key.public)
        except CryptoError as exc:
            raise KeyFileError(f"the gateway key file's key history does not verify "
                               f"({exc.message})") from None
        object.__setattr__(self, "keys", keys)

    @classmethod
    def from_bundle(cls, gateway_id: str, bundle: KeyBundle) -> Identity:
        key = bundle.get(ROLE_GATEWAY_SIGNING)
        if not isinstance(key, GatewaySigningKey):
            raise KeyFileError("the gateway key file holds no gateway signing key")
        return cls(gateway_id, key, bundle.history)

    @property
    def all_keys(self) -> list[VerifyKey]:
        """Every key this gateway has signed with, the current one last."""
        return [k.key for k in self.keys.keys]

    def checkpoint_signer(self, origin: str) -> NoteSigner:
        return NoteSigner(origin, self.signing_key)

    def checkpoint_verifiers(self, origin: str) -> list[NoteVerifier]:
        """Checkpoints signed before a key rotation verify with the key of their time."""
        return [NoteVerifier(origin, key) for key in reversed(self.all_keys)]
