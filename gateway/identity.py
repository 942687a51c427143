"""Who this gateway is: its id and its identity (signing) key, unlocked once at start."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.crypto.keyfile import KeyBundle
from gateway.crypto.keys import ROLE_GATEWAY_SIGNING, GatewaySigningKey
from gateway.crypto.note import NoteSigner, NoteVerifier
from gateway.errors import KeyFileError


@dataclass(frozen=True)
class Identity:
    gateway_id: str
    signing_key: GatewaySigningKey

    @classmethod
    def from_bundle(cls, gateway_id: str, bundle: KeyBundle) -> Identity:
        key = bundle.get(ROLE_GATEWAY_SIGNING)
        if not isinstance(key, GatewaySigningKey):
            raise KeyFileError("the gateway key file holds no gateway signing key")
        return cls(gateway_id, key)

    def checkpoint_signer(self, origin: str) -> NoteSigner:
        return NoteSigner(origin, self.signing_key)

    def checkpoint_verifiers(self, origin: str) -> list[NoteVerifier]:
        return [NoteVerifier(origin, self.signing_key.public)]
