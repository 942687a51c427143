"""Admission to a desk: the statement a member signs, the safety code, the chain check.

An officer's binding makes it a member of a desk only once someone admits it there:

* an **admission statement** (``fpg admission v1``) names the desk, the new officer and
  both its public keys, who admits it and when::

      fpg admission v1\\n<desk address>\\n<officer id>\\n<sign_key b64>\\n<enc_key b64>\\n
      <admitted by: officer id, or "operator">\\n<time, Unix ms>\\n

  signed (Ed25519, raw signature) by the admitting officer's signing key, or, for the
  first member of a desk that has none, by the gateway's signing key (``operator``);
* the **safety code** both clients show before an admission: 20 digits from the SHA-256 of
  ``fpg safety v1\\n<desk address>\\n<officer id>\\n<sign_key b64>\\n<enc_key b64>\\n``. If
  the new officer's screen and the admitting officer's screen show the same code, the
  keys the gateway presented are the new officer's own;
* the **chain check** a client runs on a desk's members before it seals for them: every
  member's admission verifies, by an officer who was itself validly admitted to the desk
  or to its supervisor desk and bound at the time, or by the operator while the desk had
  no member. A dishonest gateway can withhold a message, but cannot add a reader.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.crypto.keys import VerifyKey
from gateway.errors import BadSignatureError, ClientError, MalformedError
from gateway.protocol.rotation import ChainKey

ADMISSION_LINE = "fpg admission v1"
SAFETY_LINE = "fpg safety v1"
OPERATOR = "operator"  # who admitted a desk's first member
SAFETY_DIGITS = 20  # about 66 bits: out of reach of a gateway grinding keys to match
MAX_CHAIN = 256  # admissions followed for one member before giving up


def admission_text(desk: str, officer: str, sign_key_b64: str, enc_key_b64: str, by: str,
                   at_ms: int) -> bytes:
    return (f"{ADMISSION_LINE}\n{desk}\n{officer}\n{sign_key_b64}\n{enc_key_b64}\n{by}\n"
            f"{at_ms}\n").encode()


def safety_code(desk: str, officer: str, sign_key_b64: str, enc_key_b64: str) -> str:
    """The code both officers compare out of band, e.g. ``0123 4567 8901 2345 6789``."""
    digest = hashlib.sha256(
        f"{SAFETY_LINE}\n{desk}\n{officer}\n{sign_key_b64}\n{enc_key_b64}\n".encode()).digest()
    digits = str(int.from_bytes(digest[:12], "big") % 10**SAFETY_DIGITS).zfill(SAFETY_DIGITS)
    return " ".join(digits[i : i + 4] for i in range(0, SAFETY_DIGITS, 4))


def safety_codes_equal(typed: str, expected: str) -> bool:
    """Compare a code as a person typed it (spaces, dashes) with one shown, in constant
    time."""
    def compact(code: str) -> bytes:
        return "".join(ch for ch in code if ch not in " -\t").encode("ascii", "replace")
    return hmac.compare_digest(compact(typed), compact(expected))


@dataclass(frozen=True)
class Admission:
    by: str  # officer id, or OPERATOR
    at: int  # Unix ms
    signature: bytes

    def to_json(self) -> dict[str, Any]:
        return {"by": self.by, "at": self.at,
                "signature": base64.b64encode(self.signature).decode("ascii")}

    @classmethod
    def from_json(cls, doc: Any) -> Admission:
        try:
            by, at = doc["by"], doc["at"]
            signature = base64.b64decode(doc["signature"], validate=True)
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise MalformedError("an admission needs by, at and a base64 signature") from None
        if not isinstance(by, str) or type(at) is not int or len(signature) != 64:
            raise MalformedError("an admission has a wrong type")
        return cls(by, at, signature)


@dataclass(frozen=True)
class Member:
    """One officer as the chain check sees it: keys, binding span, admissions by desk."""

    officer: str
    sign_key: VerifyKey
    enc_key_b64: str
    not_after: int
    ended: int  # revocation, else not_after
    admissions: Mapping[str, Admission]  # by desk address


class UnprovenMemberError(ClientError):
    """A desk member whose admission does not check out: do not seal for the desk."""

    code = "unproven_member"


class _Chain:
    def __init__(self, officers: Mapping[str, Member], supervisors: Mapping[str, str | None],
                 operator_keys: Sequence[ChainKey]) -> None:
        self.officers = officers
        self.supervisors = supervisors
        self.operator_keys = operator_keys
        self.proven: set[tuple[str, str]] = set()

    def prove(self, officer: str, desk: str, trail: tuple[tuple[str, str], ...] = ()) -> None:
        """Raise UnprovenMemberError unless ``officer``'s admission to ``desk`` holds."""
        if (officer, desk) in self.proven:
            return
        if (officer, desk) in trail or len(trail) > MAX_CHAIN:
            raise UnprovenMemberError(f"the admissions of {officer} to {desk} go round in a "
                                      "circle")
        member = self.officers.get(officer)
        admission = member.admissions.get(desk) if member else None
        if member is None or admission is None:
            raise UnprovenMemberError(f"{officer} is listed on {desk} without an admission")
        text = admission_text(desk, officer, member.sign_key.b64(), member.enc_key_b64,
                              admission.by, admission.at)
        if admission.at >= member.ended:
            raise UnprovenMemberError(f"{officer} was admitted to {desk} after its binding "
                                      "ended")
        if admission.by == OPERATOR:
            self._operator(member, desk, admission, text)
        else:
            self._by_member(member, desk, admission, text, (*trail, (officer, desk)))
        self.proven.add((officer, desk))

    def _operator(self, member: Member, desk: str, admission: Admission, text: bytes) -> None:
        # The gateway's key when the admission was made: it may have rotated since.
        keys = [k.key for k in self.operator_keys
                if (k.since is None or k.since <= admission.at)
                and (k.retired is None or admission.at < k.retired)]
        if not any(_signed(key, text, admission) for key in keys):
            raise UnprovenMemberError(f"the admission of {member.officer} to {desk} is not "
                                      f"signed by the operator (the key of its gateway then)")
        for other in self.officers.values():  # the desk had no member then
            earlier = other.admissions.get(desk)
            if other.officer != member.officer and earlier is not None and (
                earlier.at <= admission.at < other.ended
            ):
                raise UnprovenMemberError(
                    f"{member.officer} was admitted to {desk} by the operator while "
                    f"{other.officer} was a member: only a member could admit it")

    def _by_member(self, member: Member, desk: str, admission: Admission, text: bytes,
                   trail: tuple[tuple[str, str], ...]) -> None:
        admitter = self.officers.get(admission.by)
        if admitter is None:
            raise UnprovenMemberError(f"{member.officer} was admitted to {desk} by "
                                      f"{admission.by}, whom the directory does not list")
        self._verify(admitter.sign_key, text, admission, member.officer, desk)
        if not admission.at < admitter.ended:
            raise UnprovenMemberError(f"{admission.by} admitted {member.officer} to {desk} "
                                      "after its own binding ended")
        for via in (desk, self.supervisors.get(desk)):
            held = admitter.admissions.get(via) if via else None
            if via and held is not None and held.at <= admission.at:
                self.prove(admitter.officer, via, trail)
                return
        raise UnprovenMemberError(f"{admission.by}, who admitted {member.officer}, was not "
                                  f"a member of {desk} or of its supervisor desk then")

    @staticmethod
    def _verify(key: VerifyKey, text: bytes, admission: Admission, officer: str,
                desk: str) -> None:
        if not _signed(key, text, admission):
            raise UnprovenMemberError(f"the admission of {officer} to {desk} is not signed "
                                      f"by {admission.by}")


def _signed(key: VerifyKey, text: bytes, admission: Admission) -> bool:
    try:
        key.verify(text, admission.signature)
    except BadSignatureError:
        return False
    return True


def check_members(desk: str, members: list[str], officers: Mapping[str, Member],
                  supervisors: Mapping[str, str | None],
                  operator_keys: Sequence[ChainKey]) -> None:
    """Prove each of ``members`` (officer ids) of ``desk``, or raise UnprovenMemberError.

    ``officers``: every officer the directory lists, current and former, by id;
    ``supervisors``: each desk's supervisor desk; ``operator_keys``: the key history of
    the desk's gateway (an operator's admission must be signed by the key in use then)."""
    chain = _Chain(officers, supervisors, operator_keys)
    for officer in members:
        chain.prove(officer, desk)
