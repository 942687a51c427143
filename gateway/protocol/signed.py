"""Signed JSON notes: the shape of every signed statement but checkpoints and key rotations.

A receipt, a non-delivery notice, a breach notice, an officer binding, the desk
directory, the descriptor and a roster are each a signed note (gateway.crypto.note)
whose text is two lines: a first line naming the kind of statement and its version
(``fpg receipt v1``), so that a signature made for one kind is never taken for another,
then one line of canonical JSON (keys sorted, no spaces, non-ASCII escaped: what
:func:`json_line` writes).

A :class:`SignedJson` is one such kind. It writes the text and signs it; it opens a
note in the order that matters: the signature first (by a key the caller trusts), then
the two lines, then the JSON, parsed strictly (gateway.protocol.jsontext). Fields read
from the document inside :meth:`SignedJson.fields` turn a missing field or a wrong type
into one MalformedError naming the kind, and :meth:`SignedJson.check_canonical` refuses
a document whose text is not what its fields write back, for the kinds that keep to one
signed form per statement. Each kind's module keeps its fields and its checks.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from gateway.crypto.keys import SigningKey, VerifyKey
from gateway.crypto.note import NoteSigner, NoteVerifier, sign_note, split_note, verify_note
from gateway.errors import CryptoError, MalformedError
from gateway.protocol import jsontext


def json_line(body: Any) -> str:
    """``body`` as one line of canonical JSON."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


class SignedJson:
    """One kind of signed JSON note: its first line, what errors call it (``receipt``),
    and the largest note of it that is read."""

    __slots__ = ("_signer", "first_line", "max_size", "what")

    def __init__(self, first_line: str, what: str, max_size: int) -> None:
        self.first_line = first_line
        self.what = what
        self.max_size = max_size
        # A gateway signs every note of a kind with the same key: the last signer is kept,
        # so that its key id is not hashed again for each note (receipts come by the batch).
        self._signer: NoteSigner | None = None

    def text(self, body: Mapping[str, Any]) -> str:
        """The note text of ``body``: the first line, then ``body`` as canonical JSON."""
        return f"{self.first_line}\n{json_line(body)}\n"

    def sign(self, text: str, name: str, key: SigningKey) -> bytes:
        """``text`` (as :meth:`text` writes it) signed by ``key`` under ``name``."""
        signer = self._signer
        if signer is None or signer.key is not key or signer.name != name:
            signer = self._signer = NoteSigner(name, key)
        return sign_note(text, [signer])

    def verify(self, note: bytes, name: str, keys: Iterable[VerifyKey]) -> str:
        """The text of ``note`` if it is signed under ``name`` by one of ``keys``."""
        return verify_note(note, [NoteVerifier(name, k) for k in keys],
                           max_size=self.max_size)

    def open(self, note: bytes, name: str, keys: Iterable[VerifyKey]) -> tuple[str, Any]:
        """The verified text of ``note`` (see :meth:`verify`) and its JSON document."""
        text = self.verify(note, name, keys)
        return text, self.parse(text)

    def peek(self, note: bytes) -> tuple[str, Any]:
        """The text of ``note`` and its JSON document WITHOUT verifying the signature (to
        show an operator, or to learn the key that must have signed it)."""
        text, _ = split_note(note, max_size=self.max_size)
        return text, self.parse(text)

    def line(self, text: str) -> str:
        """The JSON line of a note text of this kind; MalformedError if it is not one."""
        lines = text.split("\n")
        if len(lines) != 3 or lines[0] != self.first_line or lines[2]:
            article = "an" if self.what[:1] in ("a", "e", "i", "o", "u") else "a"
            raise MalformedError(f"not {article} {self.what}")
        return lines[1]

    def parse(self, text: str) -> Any:
        """The JSON document of a note text of this kind, parsed strictly."""
        line = self.line(text)
        with self.fields():
            return jsontext.loads(line)

    @contextlib.contextmanager
    def fields(self) -> Iterator[None]:
        """Read a document's fields inside: a missing one or a wrong type (KeyError,
        TypeError, ValueError, AttributeError) is MalformedError naming this kind; a
        CryptoError (a bad key, a refusal of the caller's own) goes through as it is."""
        try:
            yield
        except CryptoError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError):
            raise MalformedError(f"{self.what} lacks a field or has a wrong type") from None

    def check_canonical(self, written: str, text: str) -> None:
        """Refuse ``text`` unless it is ``written``: the text the parsed fields write."""
        if written != text:
            raise MalformedError(f"{self.what} is not in canonical form")
