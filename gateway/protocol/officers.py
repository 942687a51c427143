"""The exact texts an officer's client and its home gateway sign and check.

* **enrollment** (``fpg enroll v1``): the new officer's signing key signs
  ``fpg enroll v1\\n<gateway>\\n<code>\\n<signing key b64>\\n<encryption key b64>\\n`` to
  prove it holds the key it asks the gateway to vouch for; the one-time code has the
  form ``FPG-XXXX-XXXX-XXXX-XXXX-XXXX`` and only its SHA-256 is stored;
* **session** (``fpg session v1``): the officer signs
  ``fpg session v1\\n<gateway>\\n<officer>\\n<base64 challenge>\\n`` to sign in;
* **read acknowledgement** (``fpg read v1``): an officer of the recipient desk signs
  ``fpg read v1\\n<message id>\\n<envelope SHA-256>\\n<read time ms>\\n``;
* the **officer binding** (``fpg officer binding v1``) and the **desk directory**
  (``fpg directory v1``): signed notes by the gateway (see gateway.officers.directory,
  which builds them from the store), which clients and partners open here.

The gateway's side of each step lives in gateway/officers/; the client's in
gateway/client/. Both take the texts from here, so they cannot drift apart.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.crypto.errors import CryptoError
from gateway.crypto.keys import (
    ROLE_OFFICER_SIGNING,
    EncryptionPublicKey,
    GatewaySigningKey,
    VerifyKey,
)
from gateway.errors import ForbiddenError, MalformedError
from gateway.protocol.admission import Admission, Member, check_members
from gateway.protocol.rotation import ChainKey
from gateway.protocol.signed import SignedJson

ENROLL_LINE = "fpg enroll v1"
SESSION_LINE = "fpg session v1"
READ_LINE = "fpg read v1"
BINDING_LINE = "fpg officer binding v1"
DIRECTORY_LINE = "fpg directory v1"
BINDING = SignedJson(BINDING_LINE, "officer binding", 16 * 1024)
DIRECTORY = SignedJson(DIRECTORY_LINE, "desk directory", 4 * 1024 * 1024)

_CODE = re.compile(r"FPG(-[A-Z2-7]{4}){5}")


# --- enrollment, sessions, read acknowledgements ----------------------------------------


def code_hash(code: str) -> bytes:
    normalized = code.strip().upper()
    if not _CODE.fullmatch(normalized):
        raise ForbiddenError("an enrollment code looks like FPG-XXXX-XXXX-XXXX-XXXX-XXXX",
                             code="enrollment_code_invalid")
    return hashlib.sha256(normalized.encode("ascii")).digest()


def enroll_text(gateway: str, code: str, sign_key_b64: str, enc_key_b64: str) -> bytes:
    code = code.strip().upper()
    return f"{ENROLL_LINE}\n{gateway}\n{code}\n{sign_key_b64}\n{enc_key_b64}\n".encode()


def session_text(gateway: str, officer: str, challenge: bytes) -> bytes:
    b64 = base64.b64encode(challenge).decode("ascii")
    return f"{SESSION_LINE}\n{gateway}\n{officer}\n{b64}\n".encode()


def read_text(message_id: str, digest: str, read_ms: int) -> bytes:
    return f"{READ_LINE}\n{message_id}\n{digest}\n{read_ms}\n".encode()


def read_claim(ack: bytes, signature_size: int = 64) -> int | None:
    """The read time an officer signed in a kept acknowledgement (text then signature);
    None if it is not one."""
    try:
        line, message_id, digest, read_field, end = (
            ack[:-signature_size].decode("ascii").split("\n"))
        read_ms = int(read_field)
    except (UnicodeDecodeError, ValueError):
        return None
    if line != READ_LINE or end != "" or read_text(message_id, digest, read_ms) != ack[
            :-signature_size]:
        return None
    return read_ms


# --- officer bindings and desk directories -----------------------------------------------


def _one_line(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Binding:
    """What an officer binding states."""

    gateway: str
    officer: str
    desks: tuple[str, ...]  # desk addresses
    sign_key: VerifyKey
    enc_key: EncryptionPublicKey
    not_before: int
    not_after: int

    def text(self) -> str:
        body = {
            "desks": list(self.desks), "enc_key": self.enc_key.b64(),
            "enc_key_id": self.enc_key.key_id, "gateway": self.gateway,
            "not_after": self.not_after, "not_before": self.not_before,
            "officer": self.officer, "sign_key": self.sign_key.b64(),
            "sign_key_id": self.sign_key.key_id, "v": 1,
        }
        return BINDING.text(body)

    def sign(self, key: GatewaySigningKey) -> bytes:
        return BINDING.sign(self.text(), self.gateway, key)


def open_binding(note: bytes, gateway: str, key: VerifyKey) -> Binding:
    """Verify an officer binding signed by ``gateway`` with ``key`` and parse it."""
    _, doc = BINDING.open(note, gateway, [key])
    with BINDING.fields():
        binding = Binding(
            gateway=doc["gateway"], officer=doc["officer"], desks=tuple(doc["desks"]),
            sign_key=VerifyKey.from_b64(doc["sign_key"], ROLE_OFFICER_SIGNING),
            enc_key=EncryptionPublicKey.from_b64(doc["enc_key"]),
            not_before=int(doc["not_before"]), not_after=int(doc["not_after"]),
        )
    if binding.gateway != gateway:
        raise MalformedError("officer binding names another gateway")
    return binding


def directory_text(doc: dict[str, Any]) -> str:
    """The text of a desk directory note (the gateway signs it)."""
    return DIRECTORY.text(doc)


@dataclass(frozen=True)
class DirectoryEntry:
    """One desk of a verified directory, as a client sees it."""

    address: str
    members: tuple[dict[str, Any], ...]
    supervisor: str | None = None

    def encryption_keys(self) -> list[EncryptionPublicKey]:
        return [EncryptionPublicKey.from_b64(m["enc_key"]) for m in self.members]


@dataclass(frozen=True)
class FormerOfficer:
    """An officer whose binding was revoked or ran out, as a directory lists it: what
    they signed while it held stays verifiable."""

    officer: str
    sign_key: VerifyKey
    desks: frozenset[str]  # desk addresses
    not_before: int
    not_after: int
    revoked: int | None  # Unix ms
    enc_key_b64: str = ""
    admissions: Mapping[str, Admission] = field(default_factory=dict)  # by desk address

    def ended(self) -> int:
        return min(self.not_after, self.revoked if self.revoked is not None else 2**62)


@dataclass(frozen=True)
class Signer:
    """Who signed an envelope, by the directory; ``former`` if the binding has ended."""

    officer: str
    key: VerifyKey
    desks: frozenset[str]
    former: FormerOfficer | None = None


@dataclass(frozen=True)
class VerifiedDirectory:
    desks: dict[str, DirectoryEntry]  # by address
    former: dict[str, FormerOfficer]  # by signing key id

    def check_members(self, desk: str, operator_keys: Sequence[ChainKey]) -> None:
        """Prove every member of ``desk`` by its admission chain (UnprovenMemberError)."""
        with DIRECTORY.fields():
            officers, supervisors = self._chain_view()
            listed = [m["officer"] for m in self.desks[desk].members]
        check_members(desk, listed, officers, supervisors, operator_keys)

    def proven_member_key(self, desk: str, officer: str,
                          operator_keys: Sequence[ChainKey]) -> VerifyKey:
        """The signing key of ``officer``, once its admission to ``desk`` is proven (it may
        be a former member): UnprovenMemberError otherwise."""
        with DIRECTORY.fields():
            officers, supervisors = self._chain_view()
        check_members(desk, [officer], officers, supervisors, operator_keys)
        return officers[officer].sign_key

    def _chain_view(self) -> tuple[dict[str, Member], dict[str, str | None]]:
        return self._chain

    @functools.cached_property
    def _chain(self) -> tuple[dict[str, Member], dict[str, str | None]]:
        """Every officer listed, current and former, as the chain check sees it; and each
        desk's supervisor desk (built once per directory: a client seals many times with
        one directory, and building it costs a key per officer listed)."""
        officers: dict[str, Member] = {}
        for former in self.former.values():
            officers[former.officer] = Member(former.officer, former.sign_key,
                                              former.enc_key_b64, former.not_after,
                                              former.ended(), former.admissions)
        admissions: dict[str, dict[str, Admission]] = {}
        for entry in self.desks.values():
            for m in entry.members:
                if "admission" in m:
                    admissions.setdefault(m["officer"], {})[entry.address] = Admission.from_json(
                        m["admission"])
        for entry in self.desks.values():
            for m in entry.members:
                officers[m["officer"]] = Member(
                    m["officer"], VerifyKey.from_b64(m["sign_key"], ROLE_OFFICER_SIGNING),
                    m["enc_key"], int(m["not_after"]), int(m["not_after"]),
                    admissions.get(m["officer"], {}))
        return officers, {e.address: e.supervisor for e in self.desks.values()}

    def signer(self, key_id: str) -> Signer | None:
        """The officer holding signing key ``key_id``: a current one first."""
        found: tuple[str, VerifyKey] | None = None
        desks: set[str] = set()
        for entry in self.desks.values():
            for member in entry.members:
                if member["sign_key_id"] == key_id:
                    found = (member["officer"],
                             VerifyKey.from_b64(member["sign_key"], ROLE_OFFICER_SIGNING))
                    desks.add(entry.address)
        if found is not None:
            return Signer(found[0], found[1], frozenset(desks))
        former = self.former.get(key_id)
        if former is None:
            return None
        return Signer(former.officer, former.sign_key, former.desks, former)


def check_signed_while_bound(signer: Signer, sender_desk: str, created_ms: int) -> None:
    """Refuse an envelope its signer could not send: from a desk the officer is not on,
    or, for an officer whose binding has ended, created outside the binding's validity
    (the accepting gateway refused a ``created`` far from its clock, and a binding that
    had ended)."""
    if sender_desk not in signer.desks:
        raise CryptoError(f"the signer is not an officer of {sender_desk}",
                          code="unknown_sender")
    former = signer.former
    if former is not None and not former.not_before <= created_ms < former.ended():
        raise CryptoError("the signer's binding was not valid when the message was made "
                          f"(it ended at {former.ended()} ms)", code="unknown_sender")


def open_directory(note: bytes, gateway: str, key: VerifyKey, *,
                   directory_of: str | None = None) -> dict[str, DirectoryEntry]:
    """Verify a directory signed by ``gateway`` with ``key``; its desks by address.

    ``directory_of``: the directory is a partner's, countersigned by ``gateway`` (an
    officer's home gateway vouching for a partner's directory it verified).
    """
    return open_directory_history(note, gateway, key, directory_of=directory_of).desks


def check_partner_signature(note: bytes, partner: str, key: VerifyKey) -> None:
    """A partner's directory, as the home gateway passed it on, still carries the
    partner's own signature by ``key`` (BadSignatureError otherwise): the home gateway's
    countersignature alone would let it change what the partner said."""
    DIRECTORY.verify(note, partner, [key])


def open_directory_history(note: bytes, gateway: str, key: VerifyKey, *,
                           directory_of: str | None = None) -> VerifiedDirectory:
    """As :func:`open_directory`, with the former officers (``former``, absent from a
    directory without any)."""
    _, doc = DIRECTORY.open(note, gateway, [key])
    with DIRECTORY.fields():
        if doc["gateway"] != (directory_of or gateway):
            raise MalformedError("directory names another gateway")
        desks = {d["desk"]: DirectoryEntry(d["desk"], tuple(d["officers"]), d.get("supervisor"))
                 for d in doc["desks"]}
        former = {}
        for f in doc.get("former", []):
            revoked = f["revoked"]
            officer = FormerOfficer(
                officer=str(f["officer"]),
                sign_key=VerifyKey.from_b64(f["sign_key"], ROLE_OFFICER_SIGNING),
                desks=frozenset(str(d) for d in f["desks"]), not_before=int(f["not_before"]),
                not_after=int(f["not_after"]), revoked=None if revoked is None else int(revoked),
                enc_key_b64=str(f.get("enc_key", "")),
                admissions={str(d): Admission.from_json(a)
                            for d, a in dict(f.get("admissions", {})).items()})
            if officer.sign_key.key_id != f["sign_key_id"]:
                raise MalformedError("a former officer's sign_key_id is not its key's id")
            former[officer.sign_key.key_id] = officer
        return VerifiedDirectory(desks, former)
