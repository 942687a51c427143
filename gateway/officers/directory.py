"""The desk directory: which officers belong to which desk, with which keys.

Two signed statements come from it (both signed notes, see docs/PROTOCOL.md; their texts
and how to open them are in gateway.protocol.officers):

* an **officer binding** (``fpg officer binding v1``): the gateway vouches that an officer
  id holds a signing key and an encryption key, belongs to some desks, until a time;
* the **directory** (``fpg directory v1``): every desk with the current officers' keys and
  bindings, which clients seal for and partners verify senders against, and the former
  officers' bindings with when they ended, so that what they signed stays verifiable.

:class:`Directory` is an immutable snapshot built from the store; :class:`DirectoryService`
keeps the current one and reloads it when the database changes (an operator's command
in another process, an enrollment in this one), so a revocation takes effect at once.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from gateway.clock import Clock
from gateway.crypto.keys import (
    ROLE_OFFICER_SIGNING,
    EncryptionPublicKey,
    GatewaySigningKey,
    VerifyKey,
)
from gateway.protocol.admission import Admission
from gateway.protocol.officers import DIRECTORY
from gateway.store import DirectoryStore

log = structlog.get_logger("gateway.officers.directory")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class Officer:
    id: str
    sign_key: VerifyKey
    enc_key: EncryptionPublicKey
    desks: frozenset[str]  # desk addresses it was admitted to: where it is a member
    requested: frozenset[str]  # desk addresses its binding names (pending where not admitted)
    admissions: Mapping[str, Admission]  # by desk address
    not_before: int
    not_after: int
    revoked_ms: int | None
    binding: bytes

    @property
    def revoked(self) -> bool:
        return self.revoked_ms is not None

    def active(self, now_ms: int) -> bool:
        return not self.revoked and now_ms < self.not_after


@dataclass(frozen=True)
class Desk:
    name: str
    address: str
    supervisor: str | None
    members: tuple[Officer, ...]  # active officers, in enrollment order
    recipient_key_ids: frozenset[str]  # their encryption key ids: what envelopes must name


@dataclass(frozen=True)
class Directory:
    gateway: str
    desks: Mapping[str, Desk]  # by address
    officers: Mapping[str, Officer]  # by officer id
    by_sign_key: Mapping[str, Officer]  # by signing key id
    former: tuple[Officer, ...]  # revoked or expired: kept to verify what they signed
    built_ms: int
    expires_ms: int  # when the first active binding in this snapshot runs out
    _signed: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)

    def desk(self, address: str) -> Desk | None:
        return self.desks.get(address)

    def officer_by_key(self, key_id: str) -> Officer | None:
        return self.by_sign_key.get(key_id)

    def to_json(self) -> dict[str, Any]:
        doc = {
            "v": 1,
            "gateway": self.gateway,
            "issued": self.built_ms,
            "desks": [
                {
                    "desk": desk.address,
                    "supervisor": desk.supervisor,
                    "officers": [
                        {"officer": o.id, "sign_key": o.sign_key.b64(),
                         "sign_key_id": o.sign_key.key_id, "enc_key": o.enc_key.b64(),
                         "enc_key_id": o.enc_key.key_id, "not_after": o.not_after,
                         "binding": _b64(o.binding),
                         **({"admission": o.admissions[desk.address].to_json()}
                            if desk.address in o.admissions else {})}
                        for o in desk.members
                    ],
                }
                for desk in sorted(self.desks.values(), key=lambda d: d.address)
            ],
        }
        if self.former:  # absent while there is none: earlier directories' bytes unchanged
            doc["former"] = [
                {"officer": o.id, "sign_key": o.sign_key.b64(), "sign_key_id": o.sign_key.key_id,
                 "enc_key": o.enc_key.b64(), "desks": sorted(o.desks),
                 "admissions": {d: a.to_json() for d, a in sorted(o.admissions.items())},
                 "not_before": o.not_before, "not_after": o.not_after,
                 "revoked": o.revoked_ms, "binding": _b64(o.binding)}
                for o in self.former
            ]
        return doc

    def signed(self, key: GatewaySigningKey) -> bytes:
        """The directory as a note signed by the gateway (built once per snapshot)."""
        note = self._signed.get(key.key_id)
        if note is None:
            note = self._signed[key.key_id] = DIRECTORY.sign(DIRECTORY.text(self.to_json()),
                                                             self.gateway, key)
        return note


def build_directory(gateway: str, store_desks: list[Any], store_officers: list[Any],
                    now_ms: int) -> Directory:
    officers: dict[str, Officer] = {}
    for row in store_officers:
        admissions = {f"{a.desk}@{gateway}": Admission(a.admitted_by, a.admitted_ms, a.signature)
                      for a in row.admissions if a.desk in row.desks}
        officers[row.id] = Officer(
            id=row.id,
            sign_key=VerifyKey(row.sign_key, ROLE_OFFICER_SIGNING),
            enc_key=EncryptionPublicKey(row.enc_key),
            desks=frozenset(admissions),
            requested=frozenset(f"{d}@{gateway}" for d in row.desks),
            admissions=admissions,
            not_before=row.enrolled_ms,
            not_after=row.not_after_ms,
            revoked_ms=row.revoked_ms,
            binding=row.binding,
        )
    desks: dict[str, Desk] = {}
    for row in store_desks:
        address = f"{row.name}@{gateway}"
        members = tuple(o for o in officers.values() if address in o.desks and o.active(now_ms))
        supervisor = f"{row.supervisor}@{gateway}" if row.supervisor else None
        desks[address] = Desk(row.name, address, supervisor, members,
                              frozenset(o.enc_key.key_id for o in members))
    by_key = {o.sign_key.key_id: o for o in officers.values()}
    expires = min((o.not_after for o in officers.values() if o.active(now_ms)), default=2**62)
    former = tuple(sorted((o for o in officers.values() if not o.active(now_ms)),
                          key=lambda o: o.id))
    return Directory(gateway, desks, officers, by_key, former, now_ms, expires)


class DirectoryService:
    """The current directory snapshot, reloaded whenever the database changed."""

    def __init__(self, store: DirectoryStore, gateway: str, clock: Clock,
                 poll_seconds: float = 0.2):
        self.store = store
        self.gateway = gateway
        self.clock = clock
        self.poll_seconds = poll_seconds
        self._current: Directory | None = None
        self._version = -1
        self.listeners: list[Callable[[Directory], Awaitable[None]]] = []  # after each reload

    async def get(self) -> Directory:
        """The current snapshot; rebuilt when a binding has expired since it was built."""
        current = self._current
        if current is None or self.clock.now_ms() >= current.expires_ms:
            current = await self.reload()
        return current

    async def reload(self) -> Directory:
        version = await self.store.directory_version()
        desks, officers = await self.store.desks(), await self.store.officers()
        self._current = current = build_directory(self.gateway, desks, officers,
                                                  self.clock.now_ms())
        self._version = version
        for listener in self.listeners:
            await listener(current)
        return current

    async def watch(self) -> None:
        """Reload when desks or officers changed, here or in another process (supervised)."""
        while True:
            await self.clock.sleep(self.poll_seconds)
            if await self.store.directory_version() != self._version:
                await self.reload()
                log.debug("directory_reloaded", desks=len(self._current.desks)
                         if self._current else 0)
