"""Gateway key rotation: a new signing key announced by the old one, and the chain of such
announcements that partners walk to follow a gateway from the key they trust to its
current one (docs/PROTOCOL.md, "Key rotation").

A **rotation statement** is a signed note (gateway.crypto.note) under the gateway id::

    fpg key rotation v1
    {"gateway":ID,"new_key":B64,"new_key_id":HEX,"old_key":B64,"old_key_id":HEX,"time":MS,"v":1}

signed by the old key (the authority) and by the new key (proof that the gateway holds
it). A gateway's **key history** is the list of its rotation statements, oldest first:
statement ``i`` replaces the key that statement ``i - 1`` introduced, so the history is a
chain from the gateway's first key to its current one. The descriptor carries it.

:func:`verify_history` checks a whole history: every step must be signed by the key it
replaces and by the key it introduces, times never go backwards, and the chain must end
at the key the descriptor announces. :meth:`KeyHistory.since_trusted` then gives the keys
from the newest one a partner already trusts to the current one: a history in which no
key is trusted is refused, so rotation never creates trust, it only carries it forward.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.crypto.keyfile import KeyBundle
from gateway.crypto.keys import ROLE_GATEWAY_SIGNING, GatewaySigningKey, VerifyKey
from gateway.crypto.note import NoteSigner, NoteVerifier, sign_note, split_note, verify_note
from gateway.errors import BadSignatureError, CryptoError, KeyFileError, MalformedError
from gateway.protocol import jsontext

ROTATION_LINE = "fpg key rotation v1"
MAX_HISTORY = 64  # rotation statements a descriptor may carry
MAX_STATEMENT = 4096


class KeyHistoryError(CryptoError):
    """A key history that is malformed, broken, or starts at no trusted key."""

    code = "bad_key_history"


@dataclass(frozen=True)
class Rotation:
    """What a rotation statement says: ``gateway``'s key ``old_key`` is replaced by
    ``new_key`` from ``time`` on."""

    gateway: str
    old_key: VerifyKey
    new_key: VerifyKey
    time: int

    def text(self) -> str:
        body = {
            "gateway": self.gateway, "new_key": self.new_key.b64(),
            "new_key_id": self.new_key.key_id, "old_key": self.old_key.b64(),
            "old_key_id": self.old_key.key_id, "time": self.time, "v": 1,
        }
        return f"{ROTATION_LINE}\n{json.dumps(body, sort_keys=True, separators=(',', ':'))}\n"


def sign_rotation(gateway: str, old: GatewaySigningKey, new: GatewaySigningKey,
                  time_ms: int) -> bytes:
    """The rotation statement from ``old`` to ``new``, signed by both (old first)."""
    if old.public == new.public:
        raise MalformedError("a rotation needs a new key")
    text = Rotation(gateway, old.public, new.public, time_ms).text()
    return sign_note(text, [NoteSigner(gateway, old), NoteSigner(gateway, new)])


def _parse(text: str) -> Rotation:
    lines = text.split("\n")
    if len(lines) != 3 or lines[0] != ROTATION_LINE or lines[2] != "":
        raise MalformedError("not a v1 key rotation statement")
    try:
        doc: Any = jsontext.loads(lines[1])
        if doc["v"] != 1:
            raise MalformedError("unsupported key rotation version")
        rotation = Rotation(
            gateway=str(doc["gateway"]),
            old_key=VerifyKey.from_b64(doc["old_key"], ROLE_GATEWAY_SIGNING),
            new_key=VerifyKey.from_b64(doc["new_key"], ROLE_GATEWAY_SIGNING),
            time=int(doc["time"]),
        )
        if doc["old_key_id"] != rotation.old_key.key_id or \
                doc["new_key_id"] != rotation.new_key.key_id:
            raise MalformedError("key rotation key ids do not match its keys")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, CryptoError):
            raise
        raise MalformedError("key rotation JSON lacks a field or has a wrong type") from None
    if rotation.old_key == rotation.new_key:
        raise MalformedError("key rotation to the same key")
    return rotation


def peek_rotation(note: bytes) -> Rotation:
    """Parse a rotation statement WITHOUT verifying it."""
    text, _ = split_note(note, max_size=MAX_STATEMENT)
    return _parse(text)


def open_rotation(note: bytes, gateway: str, previous: VerifyKey) -> Rotation:
    """Verify that ``note`` rotates ``gateway``'s key ``previous`` to a new key, signed by
    ``previous`` and by the new key; the statement."""
    rotation = peek_rotation(note)
    if rotation.gateway != gateway:
        raise MalformedError(f"key rotation names {rotation.gateway}, not {gateway}")
    if rotation.old_key != previous:
        raise BadSignatureError(f"key rotation replaces key {rotation.old_key.key_id}, not "
                                f"the previous key {previous.key_id}")
    verify_note(note, [NoteVerifier(gateway, previous)], max_size=MAX_STATEMENT)
    verify_note(note, [NoteVerifier(gateway, rotation.new_key)], max_size=MAX_STATEMENT)
    return rotation


@dataclass(frozen=True)
class ChainKey:
    """One key of a gateway's history and when it was in use (Unix ms; None: open)."""

    key: VerifyKey
    since: int | None  # time of the rotation that introduced it; None for the first key
    retired: int | None  # time of the rotation that replaced it; None for the current key


@dataclass(frozen=True)
class KeyHistory:
    """A verified key history: every key from the first to the current, oldest first."""

    gateway: str
    keys: tuple[ChainKey, ...]
    statements: tuple[bytes, ...]

    @property
    def current(self) -> VerifyKey:
        return self.keys[-1].key

    def since_trusted(self, fingerprints: Collection[str]) -> tuple[ChainKey, ...]:
        """The keys from the newest one whose fingerprint is in ``fingerprints`` to the
        current one; raises KeyHistoryError if no key of the history is trusted."""
        for i in range(len(self.keys) - 1, -1, -1):
            if self.keys[i].key.fingerprint in fingerprints:
                return self.keys[i:]
        raise KeyHistoryError(f"no key in the key history of {self.gateway} is trusted "
                              f"(current key {self.current.fingerprint})")


def verify_history(statements: Sequence[bytes], gateway: str,
                   current: VerifyKey) -> KeyHistory:
    """Check a whole key history ending at ``current``; raises KeyHistoryError."""
    if len(statements) > MAX_HISTORY:
        raise KeyHistoryError(f"a key history holds at most {MAX_HISTORY} rotations")
    try:
        previous = peek_rotation(statements[0]).old_key if statements else current
        keys: list[ChainKey] = []
        since: int | None = None
        for i, note in enumerate(statements):
            rotation = open_rotation(note, gateway, previous)
            if since is not None and rotation.time < since:
                raise KeyHistoryError(f"rotation {i + 1} of {gateway} is older than the "
                                      "one before it")
            keys.append(ChainKey(previous, since, rotation.time))
            previous, since = rotation.new_key, rotation.time
    except KeyHistoryError:
        raise
    except CryptoError as exc:
        raise KeyHistoryError(f"key history of {gateway}: {exc.message}") from None
    if previous != current:
        raise KeyHistoryError(f"the key history of {gateway} ends at key {previous.key_id}, "
                              f"not at its current key {current.key_id}")
    keys.append(ChainKey(current, since, None))
    return KeyHistory(gateway, tuple(keys), tuple(statements))


def encode_history(statements: Sequence[bytes]) -> list[str]:
    """Statements as base64 strings (how descriptors and key files carry them)."""
    return [base64.b64encode(s).decode("ascii") for s in statements]


def decode_history(items: Any) -> tuple[bytes, ...]:
    """The inverse of :func:`encode_history`; raises MalformedError."""
    if not isinstance(items, list) or len(items) > MAX_HISTORY:
        raise MalformedError(f"a key history is a list of at most {MAX_HISTORY} statements")
    try:
        return tuple(base64.b64decode(item, validate=True) for item in items)
    except (TypeError, ValueError, binascii.Error):
        raise MalformedError("a key history statement is not base64") from None


def rotate_bundle(bundle: KeyBundle, gateway: str, time_ms: int,
                  new_key: GatewaySigningKey | None = None) -> KeyBundle:
    """``bundle`` with a new gateway signing key (``new_key`` or a fresh one) and its key
    history extended by the rotation statement signed by the old key and the new one."""
    old = bundle.get(ROLE_GATEWAY_SIGNING)
    if not isinstance(old, GatewaySigningKey):
        raise KeyFileError("the key file holds no gateway signing key")
    verify_history(bundle.history, gateway, old.public)  # never extend a broken history
    new = new_key or GatewaySigningKey.generate()
    statement = sign_rotation(gateway, old, new, time_ms)
    keys = dict(bundle.keys)
    keys[ROLE_GATEWAY_SIGNING] = new
    return KeyBundle(bundle.owner, keys, bundle.insecure, (*bundle.history, statement))
