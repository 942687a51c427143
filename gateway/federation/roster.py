"""Rosters: lists of gateways signed by a trust anchor the operator configured.

An operator may trust gateways without pinning each one: a regional **trust anchor**
(its name and the fingerprint of its ``anchor-signing`` key are in ``[[trust_anchors]]``)
signs a roster of the gateways it vouches for, and the operator downloads that file and
names it in the same table. The roster is a signed note (gateway.crypto.note) under the
anchor's name::

    fpg roster v1
    {"anchor":NAME,"anchor_key":B64,"gateways":[{"fingerprint":FP,"gateway":ID,
     "not_after":MS,"not_before":MS,"url":URL}, ...],"issued":MS,"v":1,"valid_until":MS}

(one line of JSON, sorted keys, no spaces; ``fingerprint`` in the spaced form ``gateway
keys show`` prints). The note must be signed by ``anchor_key`` and that key must have the
configured fingerprint; an expired roster, a bad signature, another anchor's roster or an
unreadable file stops the gateway at start with one line naming the file and the problem.
Each listed gateway is then a partner exactly like a pinned one, but only from its
``not_before`` to the earlier of its ``not_after`` and the roster's ``valid_until``.
A gateway pinned in ``[[partners]]`` keeps its pinned entry: the roster's is ignored.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config import Config, TrustAnchorSection
from gateway.crypto.keys import (
    ROLE_ANCHOR_SIGNING,
    AnchorSigningKey,
    VerifyKey,
    fingerprints_equal,
    normalize_fingerprint,
)
from gateway.errors import BadKeyError, ConfigError, CryptoError, MalformedError
from gateway.protocol.names import is_name
from gateway.protocol.signed import SignedJson

ROSTER_LINE = "fpg roster v1"
MAX_ROSTER = 1024 * 1024
ROSTER = SignedJson(ROSTER_LINE, "roster", MAX_ROSTER)
MAX_GATEWAYS = 10_000
_URL = re.compile(r"https?://[^\s/]+(/[^\s]*)?")


@dataclass(frozen=True)
class RosterEntry:
    gateway: str
    url: str
    fingerprint: str  # normalised (spaced groups of four)
    not_before: int
    not_after: int

    def to_json(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "gateway": self.gateway,
                "not_after": self.not_after, "not_before": self.not_before, "url": self.url}


@dataclass(frozen=True)
class Roster:
    anchor: str
    anchor_key: VerifyKey
    issued: int
    valid_until: int
    gateways: tuple[RosterEntry, ...]

    def text(self) -> str:
        body = {"anchor": self.anchor, "anchor_key": self.anchor_key.b64(),
                "gateways": [g.to_json() for g in self.gateways], "issued": self.issued,
                "v": 1, "valid_until": self.valid_until}
        return ROSTER.text(body)

    def sign(self, key: AnchorSigningKey) -> bytes:
        if key.public != self.anchor_key:
            raise MalformedError("a roster is signed by the anchor key it names")
        return ROSTER.sign(self.text(), self.anchor, key)


def make_roster(anchor: str, key: AnchorSigningKey, entries: Sequence[RosterEntry],
                issued: int, valid_until: int) -> bytes:
    """A signed roster (checked as a reader would check it)."""
    roster = Roster(anchor, key.public, issued, valid_until, tuple(entries))
    _check(roster)
    return roster.sign(key)


def _entry(doc: Any) -> RosterEntry:
    return RosterEntry(gateway=str(doc["gateway"]), url=str(doc["url"]),
                       fingerprint=normalize_fingerprint(str(doc["fingerprint"])),
                       not_before=int(doc["not_before"]), not_after=int(doc["not_after"]))


def _check(roster: Roster) -> None:
    if not is_name(roster.anchor):
        raise MalformedError("roster anchor is not a valid name")
    if len(roster.gateways) > MAX_GATEWAYS:
        raise MalformedError(f"a roster lists at most {MAX_GATEWAYS} gateways")
    seen: set[str] = set()
    for g in roster.gateways:
        if not is_name(g.gateway):
            raise MalformedError(f"roster gateway id {g.gateway!r} is not a valid name")
        if not _URL.fullmatch(g.url):
            raise MalformedError(f"roster URL of {g.gateway} is not an http(s) URL")
        if g.gateway in seen:
            raise MalformedError(f"roster lists {g.gateway} twice")
        if g.not_after <= g.not_before:
            raise MalformedError(f"roster entry of {g.gateway} ends before it starts")
        seen.add(g.gateway)


def _from_doc(doc: Any) -> Roster:
    with ROSTER.fields():
        if doc["v"] != 1 or not isinstance(doc["gateways"], list):
            raise MalformedError("unsupported roster version")
        roster = Roster(anchor=str(doc["anchor"]),
                        anchor_key=VerifyKey.from_b64(doc["anchor_key"], ROLE_ANCHOR_SIGNING),
                        issued=int(doc["issued"]), valid_until=int(doc["valid_until"]),
                        gateways=tuple(_entry(g) for g in doc["gateways"]))
    _check(roster)
    return roster


def open_roster(note: bytes, anchor: str, fingerprint: str, now_ms: int) -> Roster:
    """Verify a roster signed by ``anchor`` with the key of ``fingerprint``, valid at
    ``now_ms``; raises CryptoError with the reason."""
    roster = _from_doc(ROSTER.peek(note)[1])  # verified below, with the key it names
    if roster.anchor != anchor:
        raise MalformedError(f"the roster is signed by anchor {roster.anchor}, not {anchor}")
    if not fingerprints_equal(roster.anchor_key.fingerprint, fingerprint):
        raise BadKeyError(f"the roster's anchor key has fingerprint "
                          f"{roster.anchor_key.fingerprint}, not the configured one")
    ROSTER.verify(note, anchor, [roster.anchor_key])
    if now_ms >= roster.valid_until:
        raise MalformedError(f"the roster expired (valid until {roster.valid_until} ms)")
    return roster


def _read(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(MAX_ROSTER + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the roster ({exc.strerror})") from None


def peek_roster(path: Path) -> Roster:
    """A roster file's contents WITHOUT verifying it (to show an operator)."""
    try:
        return _from_doc(ROSTER.peek(_read(path))[1])
    except CryptoError as exc:
        raise ConfigError(f"{path}: not a roster ({exc.message})") from None


def _where(config: Config, index: int) -> str:
    return f"{config.path}: [[trust_anchors]] #{index + 1} roster"


def load_rosters(config: Config, now_ms: int) -> list[tuple[TrustAnchorSection, Roster]]:
    """Every configured anchor's roster, verified; ConfigError naming the file and the
    problem if one cannot be read or does not verify (the gateway does not start)."""
    rosters = []
    for i, anchor in enumerate(config.trust_anchors):
        path = Path(anchor.roster)
        try:
            data = _read(path)
        except ConfigError as exc:
            raise ConfigError(f"{_where(config, i)}: {exc.message}") from None
        try:
            roster = open_roster(data, anchor.id, anchor.fingerprint, now_ms)
        except CryptoError as exc:
            raise ConfigError(f"{_where(config, i)}: {path}: roster of {anchor.id} refused "
                              f"({exc.message})") from None
        rosters.append((anchor, roster))
    return rosters
