"""Sealed envelopes, format v1: seal once for a whole desk, sign the bytes that travel.

An officer's client seals a payload: it draws a random 32-byte content key and a 24-byte
nonce, encrypts the payload once with XChaCha20-Poly1305 (the header bytes are the
associated data), wraps the content key for every recipient officer's X25519 key in the
libsodium sealed-box construction, and signs every preceding byte with the officer's
Ed25519 key. The layout (big-endian integers; docs/PROTOCOL.md has it with test vectors)::

    "FPGE" | 0x01 | signer key id (8) | u16 H | header (H bytes, UTF-8 JSON)
    | u16 N | N x wrapped key (80) | nonce (24) | u32 C | ciphertext (C) | signature (64)

A gateway can only *verify* (:func:`verify_envelope`): it reads the signer's key id at a
fixed offset, checks the signature over the exact bytes before parsing anything else,
then parses the framing and the header. A recipient *opens* (:func:`open_envelope`) an
:class:`Envelope`, which only :func:`verify_envelope` creates, so nothing can be
decrypted without having been verified first.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import struct
from collections.abc import Awaitable, Coroutine, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import nacl.bindings
import nacl.exceptions

from gateway.crypto.errors import (
    BadSignatureError,
    CryptoError,
    DecryptionError,
    MalformedError,
    NotARecipientError,
    SignerMismatchError,
)
from gateway.crypto.keys import (
    KEY_ID_SIZE,
    SIGNATURE_SIZE,
    EncryptionPublicKey,
    OfficerEncryptionKey,
    OfficerSigningKey,
    VerifyKey,
)
from gateway.crypto.worker import CryptoWorker

MAGIC = b"FPGE"
VERSION = 1
CONTENT_KEY_SIZE = 32
NONCE_SIZE = 24
TAG_SIZE = 16
WRAP_SIZE = 32 + 16 + CONTENT_KEY_SIZE  # ephemeral X25519 key, MAC, content key
MAX_HEADER_SIZE = 4096
MAX_RECIPIENTS = 64
#: Hard protocol ceiling; gateways configure a lower limit.
MAX_ENVELOPE_SIZE = 64 * 1024 * 1024
DEFAULT_MAX_ENVELOPE_SIZE = 8 * 1024 * 1024

_PREFIX = struct.Struct(">4sB8sH")  # magic, version, signer key id, header length
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_MIN_SIZE = _PREFIX.size + 2 + 2 + WRAP_SIZE + NONCE_SIZE + 4 + TAG_SIZE + SIGNATURE_SIZE

KINDS = ("hotline", "case", "reply", "status", "forward", "handover")
PRIORITIES = ("flash", "immediate", "priority", "routine")
#: Handling codes (in the spirit of Europol's SIENA H0-H3): what the recipient may do
#: with the content. H0 no restriction among law enforcement; H1 not for use as evidence
#: without the originator's permission; H2 no onward dissemination without permission;
#: H3 other restrictions, stated inside the sealed payload.
HANDLING_CODES = ("H0", "H1", "H2", "H3")
#: The states a ``status`` message moves a request (a ``case`` thread) to; the moves
#: allowed between them are in gateway.protocol.cases.
CASE_STATES = ("received", "returned_incomplete", "resubmitted", "in_progress", "executed",
               "partly_executed", "refused", "withdrawn")
_HEADER_FIELDS = frozenset(
    {"v", "id", "kind", "priority", "from", "to", "created", "expires", "thread",
     "in_reply_to", "recipients"}
)
#: Fields a header may carry or leave out (left out, they are absent from its bytes):
#: the handling code, and the case fields gateways count outcomes and deadlines by.
OPTIONAL_FIELDS = ("due", "forwards", "handling", "permit", "state")
_OPTIONAL = frozenset(OPTIONAL_FIELDS)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_PERMIT = re.compile(r"[A-Za-z0-9+/]{86}==")  # an Ed25519 signature, standard base64
_ID = re.compile(r"[0-9a-f]{32}")
_KEY_ID = re.compile(r"[0-9a-f]{16}")
#: A gateway or desk name as gateway.protocol.names spells it, written again here because
#: crypto/ imports nothing else of the gateway (tests/test_envelope.py: the two agree).
NAME = r"[a-z0-9][a-z0-9-]{0,62}(?<!-)"
#: ``desk@gateway``: two names.
_ADDRESS = re.compile(rf"{NAME}@{NAME}")
_MAX_TIME_MS = 2**53


def new_message_id() -> str:
    """A fresh random message id: 128 bits as 32 lowercase hex digits."""
    return os.urandom(16).hex()


def is_address(value: object) -> bool:
    return isinstance(value, str) and _ADDRESS.fullmatch(value) is not None


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise MalformedError("header has a duplicate field")
    return result


# Duplicate fields are refused: two parsers that keep different copies would route the
# same signed bytes differently.
_HEADER_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicate_keys)


@dataclass(frozen=True)
class EnvelopeHeader:
    """What routing and metrics need, and nothing more. Times are Unix milliseconds."""

    id: str
    kind: str
    priority: str
    sender: str  # desk address, JSON field "from"
    recipient: str  # desk address, JSON field "to"
    created: int
    expires: int
    thread: str
    in_reply_to: str | None = None
    recipients: tuple[str, ...] = ()  # X25519 key ids, in the order of the wrapped keys
    v: int = VERSION
    handling: str | None = None  # H0..H3, or None: not stated
    state: str | None = None  # on a ``status``: the state it moves its request to
    due: str | None = None  # on a ``case`` (or a resubmission): YYYY-MM-DD, UTC day
    forwards: str | None = None  # on a ``forward``: the id of the message it embeds
    permit: str | None = None  # on a ``forward``: its sender's permission to pass it on

    def __post_init__(self) -> None:
        self._validate()

    def _validate(self) -> None:
        """Every rule: the form of each field, then the rules between fields."""
        if type(self.v) is not int or self.v != VERSION:
            raise MalformedError(f"unsupported envelope version {self.v!r}")
        if not isinstance(self.id, str) or not _ID.fullmatch(self.id):
            raise MalformedError("id must be 32 lowercase hex digits")
        if self.kind not in KINDS:
            raise MalformedError(f"kind must be one of {', '.join(KINDS)}")
        if self.priority not in PRIORITIES:
            raise MalformedError(f"priority must be one of {', '.join(PRIORITIES)}")
        if not is_address(self.sender):
            raise MalformedError("from must be a desk address like desk@gateway")
        if not is_address(self.recipient):
            raise MalformedError("to must be a desk address like desk@gateway")
        for name in ("created", "expires"):
            if type(getattr(self, name)) is not int:
                raise MalformedError(f"{name} must be Unix time in milliseconds")
        if not isinstance(self.thread, str) or not _ID.fullmatch(self.thread):
            raise MalformedError("thread must be 32 lowercase hex digits")
        if self.in_reply_to is not None and (
            not isinstance(self.in_reply_to, str) or not _ID.fullmatch(self.in_reply_to)
        ):
            raise MalformedError("in_reply_to must be null or 32 lowercase hex digits")
        if not isinstance(self.recipients, tuple):
            raise MalformedError("recipients must be a list of key ids")
        for kid in self.recipients:
            if not isinstance(kid, str) or not _KEY_ID.fullmatch(kid):
                raise MalformedError("recipients must be key ids of 16 lowercase hex digits")
        if self.handling is not None and self.handling not in HANDLING_CODES:
            raise MalformedError(f"handling must be one of {', '.join(HANDLING_CODES)}")
        if self.state is not None and self.state not in CASE_STATES:
            raise MalformedError(f"state must be one of {', '.join(CASE_STATES)}")
        if self.due is not None and (not isinstance(self.due, str)
                                     or not _DATE.fullmatch(self.due)):
            raise MalformedError("due must be a date YYYY-MM-DD")
        if self.forwards is not None and (not isinstance(self.forwards, str)
                                          or not _ID.fullmatch(self.forwards)):
            raise MalformedError("forwards must be 32 lowercase hex digits")
        if self.permit is not None and (not isinstance(self.permit, str)
                                        or not _PERMIT.fullmatch(self.permit)):
            raise MalformedError("permit must be a signature in base64")
        self._check_rules()

    def _check_rules(self) -> None:
        """The rules between fields (the canonical fast path has checked each field's form)."""
        if not 0 <= self.created < self.expires < _MAX_TIME_MS:
            if self.expires <= self.created:
                raise MalformedError("expires must be after created")
            raise MalformedError("created and expires must be Unix time in milliseconds")
        if self.in_reply_to is None:
            if self.kind in ("reply", "status", "handover"):
                raise MalformedError(
                    f"a {self.kind} must name the message it answers (in_reply_to)"
                )
            if self.thread != self.id:
                raise MalformedError("a message that starts a thread has thread == id")
        recipients = self.recipients
        if len(recipients) > MAX_RECIPIENTS:
            raise MalformedError(f"recipients lists more than {MAX_RECIPIENTS} keys")
        if len(recipients) > 1 and len(set(recipients)) != len(recipients):
            raise MalformedError("recipients lists a key twice")
        if self.state is not None and self.kind != "status":
            raise MalformedError("only a status message carries a state")
        if (self.forwards is not None) != (self.kind == "forward"):
            raise MalformedError("a forward, and only a forward, names what it forwards")
        if self.permit is not None and self.kind != "forward":
            raise MalformedError("only a forward carries a permit")
        if self.kind == "forward" and self.in_reply_to is not None:
            raise MalformedError("a forward starts a thread of its own")
        if self.due is not None:
            if not (self.kind == "case" or self.state == "resubmitted"):
                raise MalformedError("due is set by a case, or by its resubmission")
            try:
                datetime.date.fromisoformat(self.due)
            except ValueError:
                raise MalformedError(f"due {self.due!r} is not a calendar date") from None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "created": self.created,
            "expires": self.expires,
            "from": self.sender,
            "id": self.id,
            "in_reply_to": self.in_reply_to,
            "kind": self.kind,
            "priority": self.priority,
            "recipients": list(self.recipients),
            "thread": self.thread,
            "to": self.recipient,
            "v": self.v,
        }
        for name in OPTIONAL_FIELDS:  # absent, not null: older headers stay byte-identical
            value = getattr(self, name)
            if value is not None:
                doc[name] = value
        return doc

    @property
    def extensions(self) -> frozenset[str]:
        """The optional fields this header carries (a partner must understand them)."""
        return frozenset(n for n in OPTIONAL_FIELDS if getattr(self, n) is not None)

    def encode(self) -> bytes:
        """Canonical bytes: sorted keys, no spaces, UTF-8. Readers accept any valid JSON."""
        return json.dumps(
            self.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")

    @classmethod
    def decode(cls, data: bytes) -> EnvelopeHeader:
        if data.isascii():
            match = _CANONICAL.fullmatch(data.decode("ascii"))
            if match is not None:
                return cls._from_canonical(match)
        try:
            obj = _HEADER_DECODER.decode(data.decode("utf-8"))
        except MalformedError:
            raise
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise MalformedError("header is not a UTF-8 JSON object") from None
        if not isinstance(obj, dict):
            raise MalformedError("header is not a JSON object")
        keys = obj.keys()
        if keys - _OPTIONAL != _HEADER_FIELDS:
            missing = sorted(_HEADER_FIELDS - keys)
            unknown = sorted(keys - _HEADER_FIELDS - _OPTIONAL)
            raise MalformedError(
                "header " + (f"lacks {', '.join(missing)}" if missing else "")
                + (" and " if missing and unknown else "")
                + (f"has unknown field {', '.join(unknown)}" if unknown else "")
            )
        recipients = obj["recipients"]
        if not isinstance(recipients, list):
            raise MalformedError("recipients must be a list")
        for name in keys & _OPTIONAL:
            if obj[name] is None:
                raise MalformedError(f"{name} is left out when not set, never null")
        # Fast path of __init__ for the gateway's hot loop: fill the fields directly and
        # run the same validation. (A frozen dataclass's __init__ costs more than the
        # JSON parse.)
        header = object.__new__(cls)
        header.__dict__.update(
            v=obj["v"], id=obj["id"], kind=obj["kind"], priority=obj["priority"],
            sender=obj["from"], recipient=obj["to"], created=obj["created"],
            expires=obj["expires"], thread=obj["thread"], in_reply_to=obj["in_reply_to"],
            recipients=tuple(recipients), handling=obj.get("handling"),
            state=obj.get("state"), due=obj.get("due"), forwards=obj.get("forwards"),
            permit=obj.get("permit"),
        )
        header._validate()
        return header

    @classmethod
    def _from_canonical(cls, m: re.Match[str]) -> EnvelopeHeader:
        """Fast path for headers in exactly the canonical encoding (what clients send).

        The regular expression has already checked the field set, their order and the form
        of every value, so no JSON parser is needed; the rules between fields still run.
        Tests check that both paths agree.
        """
        (created, due, expires, forwards, sender, handling, mid, reply_to, kind, permit,
         priority, recips, state, thread, to) = m.groups()
        header = object.__new__(cls)
        header.__dict__.update(
            v=VERSION, id=mid, kind=kind, priority=priority, sender=sender, recipient=to,
            created=int(created), expires=int(expires), thread=thread, in_reply_to=reply_to,
            recipients=tuple(recips[1:-1].split('","')) if recips else (),
            handling=handling, state=state, due=due, forwards=forwards, permit=permit,
        )
        header._check_rules()
        return header


_INT = r"(0|[1-9][0-9]{0,15})"
_QADDR = rf'"({NAME}@{NAME})"'
_CANONICAL = re.compile(
    r'\{"created":' + _INT + r'(?:,"due":"([0-9]{4}-[0-9]{2}-[0-9]{2})")?'
    + r',"expires":' + _INT + r'(?:,"forwards":"([0-9a-f]{32})")?'
    + r',"from":' + _QADDR + r'(?:,"handling":"(H[0-3])")?'
    + r',"id":"([0-9a-f]{32})","in_reply_to":(?:null|"([0-9a-f]{32})")'
    + r',"kind":"(' + "|".join(KINDS) + r')"'
    + r'(?:,"permit":"([A-Za-z0-9+/]{86}==)")?'
    + r',"priority":"(' + "|".join(PRIORITIES) + r')"'
    + r',"recipients":\[((?:"[0-9a-f]{16}",)*"[0-9a-f]{16}")?\]'
    + r'(?:,"state":"(' + "|".join(CASE_STATES) + r')")?'
    + r',"thread":"([0-9a-f]{32})","to":' + _QADDR + r',"v":1\}',
    re.ASCII,
)


class Envelope(NamedTuple):
    """A verified envelope. Only :func:`verify_envelope` makes one.

    (A named tuple rather than a frozen dataclass: it is built once per message on the
    gateway's hottest path, and a tuple is built several times faster.)
    """

    raw: bytes
    header: EnvelopeHeader
    header_bytes: bytes
    signer: str  # key id of the officer signing key, hex
    wraps: tuple[bytes, ...]
    nonce: bytes
    ciphertext: bytes
    signature: bytes

    @property
    def digest(self) -> str:
        """SHA-256 of the whole envelope, hex: what the ledger records."""
        return hashlib.sha256(self.raw).hexdigest()


def _wrap(content_key: bytes, recipient: EncryptionPublicKey, ephemeral_seed: bytes) -> bytes:
    """libsodium ``crypto_box_seal``, with the ephemeral key drawn from a given seed.

    ``ephemeral_pk || crypto_box(content_key, blake2b-24(ephemeral_pk || recipient_pk),
    recipient_pk, ephemeral_sk)``; ``crypto_box_seal_open`` opens it. Taking the seed as an
    argument is what lets the test vectors fix every random input.
    """
    epk, esk = nacl.bindings.crypto_box_seed_keypair(ephemeral_seed)
    nonce = hashlib.blake2b(epk + recipient.raw, digest_size=NONCE_SIZE).digest()
    return bytes(epk) + bytes(nacl.bindings.crypto_box(content_key, nonce, recipient.raw, esk))


def seal_envelope(
    header: EnvelopeHeader,
    payload: bytes,
    sender: OfficerSigningKey,
    recipients: Sequence[EncryptionPublicKey],
    *,
    content_key: bytes | None = None,
    nonce: bytes | None = None,
    ephemeral_seeds: Sequence[bytes] | None = None,
) -> bytes:
    """Seal ``payload`` for every key in ``recipients`` and sign the result.

    ``header.recipients`` is filled in from ``recipients``. The keyword arguments fix the
    random inputs and exist for test vectors only; leave them out in real use.
    """
    if not recipients:
        raise MalformedError("an envelope needs at least one recipient")
    if len(recipients) > MAX_RECIPIENTS:
        raise MalformedError(f"an envelope has at most {MAX_RECIPIENTS} recipients")
    header = replace(header, recipients=tuple(key.key_id for key in recipients))
    header_bytes = header.encode()
    if len(header_bytes) > MAX_HEADER_SIZE:
        raise MalformedError(f"header larger than {MAX_HEADER_SIZE} bytes")
    content_key = content_key if content_key is not None else os.urandom(CONTENT_KEY_SIZE)
    nonce = nonce if nonce is not None else os.urandom(NONCE_SIZE)
    if ephemeral_seeds is None:
        ephemeral_seeds = [os.urandom(32) for _ in recipients]
    if len(content_key) != CONTENT_KEY_SIZE or len(nonce) != NONCE_SIZE:
        raise MalformedError("content key is 32 bytes and nonce 24 bytes")
    if len(ephemeral_seeds) != len(recipients):
        raise MalformedError("one ephemeral seed per recipient")
    ciphertext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        payload, header_bytes, nonce, content_key
    )
    parts = [
        _PREFIX.pack(MAGIC, VERSION, sender.public.key_id_bytes, len(header_bytes)),
        header_bytes,
        _U16.pack(len(recipients)),
        *(
            _wrap(content_key, key, seed)
            for key, seed in zip(recipients, ephemeral_seeds, strict=True)
        ),
        nonce,
        _U32.pack(len(ciphertext)),
        ciphertext,
    ]
    body = b"".join(parts)
    if len(body) + SIGNATURE_SIZE > MAX_ENVELOPE_SIZE:
        raise MalformedError("envelope larger than the protocol maximum")
    return body + sender.sign(body)


def _check_prefix(data: bytes, max_size: int) -> tuple[bytes, int]:
    """Size, magic and version; return the raw signer key id and the header length."""
    if len(data) > max_size:
        raise MalformedError(f"envelope larger than {max_size} bytes")
    if len(data) < _MIN_SIZE:
        raise MalformedError("too short to be an envelope")
    magic, version, kid, header_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise MalformedError("not an envelope (bad magic)")
    if version != VERSION:
        raise MalformedError(f"unsupported envelope version {version}")
    return kid, header_len


def read_signer(data: bytes, *, max_size: int = DEFAULT_MAX_ENVELOPE_SIZE) -> str:
    """The signer's key id (hex), after checking size, magic and version only."""
    return _check_prefix(data, max_size)[0].hex()


def peek_header(data: bytes, *, max_size: int = DEFAULT_MAX_ENVELOPE_SIZE) -> EnvelopeHeader:
    """The header, NOT verified: only to decide whose key to verify the envelope with."""
    _, header_len = _check_prefix(data, max_size)
    if not 2 <= header_len <= MAX_HEADER_SIZE or _PREFIX.size + header_len > len(data):
        raise MalformedError("bad header length")
    return EnvelopeHeader.decode(data[_PREFIX.size : _PREFIX.size + header_len])


def verify_envelope(
    data: bytes, key: VerifyKey, *, max_size: int = DEFAULT_MAX_ENVELOPE_SIZE
) -> Envelope:
    """Verify the signature with ``key``, then parse; return the verified :class:`Envelope`."""
    header_len, signed, signature = _signed_parts(data, key, max_size)
    key.verify(signed, signature)
    return _parse_verified(data, key, header_len, signed, signature)


async def verify_envelope_on(
    worker: CryptoWorker, data: bytes, key: VerifyKey, *,
    max_size: int = DEFAULT_MAX_ENVELOPE_SIZE,
) -> Envelope:
    """:func:`verify_envelope` with the signature checked on ``worker``'s thread; the
    parsing, after it, stays on the caller's."""
    (outcome,) = await verify_envelopes_on(worker, [(data, key)], max_size=max_size)
    if isinstance(outcome, CryptoError):
        raise outcome
    return outcome


def verify_envelopes_on(
    worker: CryptoWorker, items: Sequence[tuple[bytes, VerifyKey]], *,
    max_size: int = DEFAULT_MAX_ENVELOPE_SIZE,
) -> Coroutine[Any, Any, list[Envelope | CryptoError]]:
    """:func:`verify_envelope_on` for many envelopes at once (one job for the worker):
    each one's :class:`Envelope`, or the error that refused it, in order. The checks are
    handed to the worker at once (they reach its threads at the loop's next turn), so the
    caller may go on, for example to prepare the next chunk, before awaiting them (a
    caller that gives up instead closes the coroutine)."""
    results: list[Envelope | CryptoError] = []
    parts: list[tuple[int, tuple[int, bytes, bytes]]] = []
    for data, key in items:
        try:
            parts.append((len(results), _signed_parts(data, key, max_size)))
            results.append(BadSignatureError("signature does not verify"))  # until checked
        except CryptoError as exc:
            results.append(exc)
    verified = worker.check_all([
        (items[i][1], signed, signature) for i, (_, signed, signature) in parts])
    return _parsed(items, results, parts, verified)


async def _parsed(items: Sequence[tuple[bytes, VerifyKey]],
                  results: list[Envelope | CryptoError],
                  parts: list[tuple[int, tuple[int, bytes, bytes]]],
                  verified: Awaitable[list[bool]]) -> list[Envelope | CryptoError]:
    """``results`` once the worker has checked ``parts``: each envelope whose signature
    verified, parsed."""
    for (i, (header_len, signed, signature)), ok in zip(parts, await verified, strict=True):
        if not ok:
            continue
        data, key = items[i]
        try:
            results[i] = _parse_verified(data, key, header_len, signed, signature)
        except CryptoError as exc:
            results[i] = exc
    return results


def _signed_parts(data: bytes, key: VerifyKey, max_size: int) -> tuple[int, bytes, bytes]:
    """The header length, the signed bytes and the signature, before any verification."""
    kid, header_len = _check_prefix(data, max_size)
    if kid != key.key_id_bytes:
        raise SignerMismatchError("envelope is signed by a different key")
    signed_len = len(data) - SIGNATURE_SIZE
    return header_len, data[:signed_len], data[signed_len:]


def _parse_verified(data: bytes, key: VerifyKey, header_len: int, body: bytes,
                    signature: bytes) -> Envelope:
    """The envelope, from ``body``: bytes that the signature has just covered."""
    signed_len = len(body)
    offset = _PREFIX.size
    if not 2 <= header_len <= MAX_HEADER_SIZE:
        raise MalformedError("bad header length")
    header_bytes = body[offset : offset + header_len]
    offset += header_len
    if offset + 2 > signed_len:
        raise MalformedError("truncated envelope")
    (count,) = _U16.unpack_from(body, offset)
    offset += 2
    if not 1 <= count <= MAX_RECIPIENTS:
        raise MalformedError("bad recipient count")
    wraps_end = offset + count * WRAP_SIZE
    if wraps_end + NONCE_SIZE + 4 > signed_len:
        raise MalformedError("truncated envelope")
    wraps = tuple(body[i : i + WRAP_SIZE] for i in range(offset, wraps_end, WRAP_SIZE))
    nonce = body[wraps_end : wraps_end + NONCE_SIZE]
    (ct_len,) = _U32.unpack_from(body, wraps_end + NONCE_SIZE)
    ct_start = wraps_end + NONCE_SIZE + 4
    if ct_len < TAG_SIZE or ct_start + ct_len != signed_len:
        raise MalformedError("ciphertext length does not match the envelope size")
    header = EnvelopeHeader.decode(header_bytes)
    if len(header.recipients) != count:
        raise MalformedError("header recipients and wrapped keys differ in number")
    return Envelope(
        raw=data,
        header=header,
        header_bytes=header_bytes,
        signer=key.key_id,
        wraps=wraps,
        nonce=nonce,
        ciphertext=body[ct_start:],
        signature=signature,
    )


def open_envelope(envelope: Envelope, key: OfficerEncryptionKey,
                  shared_wrap: bytes | None = None) -> bytes:
    """Unwrap the content key with ``key`` and decrypt; return the payload.

    ``shared_wrap``: the content key wrapped for ``key`` by a member who could open the
    envelope (a history share, for an officer who joined the desk after it was sealed).
    """
    content_key = _content_key(envelope, key, shared_wrap)
    try:
        return bytes(
            nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
                envelope.ciphertext, envelope.header_bytes, envelope.nonce, content_key
            )
        )
    except nacl.exceptions.CryptoError:
        raise DecryptionError("ciphertext does not authenticate") from None


def _content_key(envelope: Envelope, key: OfficerEncryptionKey,
                 shared_wrap: bytes | None = None) -> bytes:
    if shared_wrap is not None:
        wrap = shared_wrap
    else:
        try:
            wrap = envelope.wraps[envelope.header.recipients.index(key.key_id)]
        except ValueError:
            raise NotARecipientError("this key is not among the envelope's recipients") from None
    if len(wrap) != WRAP_SIZE:
        raise DecryptionError("a wrapped content key has the wrong size")
    content_key = key.unwrap(wrap)
    if len(content_key) != CONTENT_KEY_SIZE:
        raise DecryptionError("wrapped content key has the wrong size")
    return content_key


def content_key_of(envelope: Envelope, key: OfficerEncryptionKey,
                   shared_wrap: bytes | None = None) -> bytes:
    """The envelope's content key, opened with ``key`` (or its ``shared_wrap``), once the
    payload was checked to decrypt with it: what a forward passes on (section 3.9 of
    docs/PROTOCOL.md), so that its recipient reads the original without a wrap of its own."""
    open_envelope(envelope, key, shared_wrap)
    return _content_key(envelope, key, shared_wrap)


def open_with_content_key(envelope: Envelope, content_key: bytes) -> bytes:
    """Decrypt a verified envelope with a content key passed on by a forward."""
    if len(content_key) != CONTENT_KEY_SIZE:
        raise DecryptionError("a content key has the wrong size")
    try:
        return bytes(
            nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
                envelope.ciphertext, envelope.header_bytes, envelope.nonce, content_key
            )
        )
    except nacl.exceptions.CryptoError:
        raise DecryptionError("ciphertext does not authenticate") from None


def rewrap_content_key(envelope: Envelope, key: OfficerEncryptionKey,
                       recipient: EncryptionPublicKey, shared_wrap: bytes | None = None) -> bytes:
    """The envelope's content key, opened with ``key`` (or its ``shared_wrap``) and wrapped
    for ``recipient`` (a sealed box, as in the envelope): a history share. The payload is
    checked to decrypt first, so that only a key that opens the envelope is passed on."""
    open_envelope(envelope, key, shared_wrap)
    return _wrap(_content_key(envelope, key, shared_wrap), recipient, os.urandom(32))


__all__ = [
    "KEY_ID_SIZE",
    "Envelope",
    "EnvelopeHeader",
    "is_address",
    "new_message_id",
    "open_envelope",
    "read_signer",
    "rewrap_content_key",
    "seal_envelope",
    "verify_envelope",
]
