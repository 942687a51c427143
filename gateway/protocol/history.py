"""History shares: an earlier message's content key, passed on to a new desk member.

Cases last years and desks change staff. When a member admits a newcomer, its client
opens the desk's earlier messages (the last 180 days by default, or chosen threads) and
wraps each one's content key for the newcomer's encryption key, as the envelope wraps it
for its recipients (a sealed box). It signs, for each message::

    fpg history share v1\\n<message id>\\n<envelope SHA-256 hex>\\n<officer id>\\n
    <officer's enc key id>\\n<SHA-256 hex of the wrap>\\n<shared by: officer id>\\n
    <time, Unix ms>\\n

The gateway stores the wraps (it cannot open them) and gives each newcomer its own. The
newcomer's client checks the signature is a proven member's of the desk and opens the
envelope with the shared wrap; the envelope's own signature and authenticated encryption
still decide what the message says.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any

from gateway.errors import MalformedError

SHARE_LINE = "fpg history share v1"
MAX_SHARES = 100  # per request
DEFAULT_HISTORY_DAYS = 180


def share_text(message_id: str, digest: str, officer: str, enc_key_id: str, wrap: bytes,
               by: str, at_ms: int) -> bytes:
    return (f"{SHARE_LINE}\n{message_id}\n{digest}\n{officer}\n{enc_key_id}\n"
            f"{hashlib.sha256(wrap).hexdigest()}\n{by}\n{at_ms}\n").encode()


@dataclass(frozen=True)
class Share:
    message: str
    wrap: bytes
    by: str
    at: int
    signature: bytes

    def to_json(self) -> dict[str, Any]:
        return {"message": self.message, "wrap": _b64(self.wrap), "by": self.by,
                "at": self.at, "signature": _b64(self.signature)}

    @classmethod
    def from_json(cls, doc: Any, by: str | None = None) -> Share:
        """A share as a client sent it (``by``: who sent it) or as the gateway gives it."""
        try:
            message, at = doc["message"], doc["at"]
            wrap = base64.b64decode(doc["wrap"], validate=True)
            signature = base64.b64decode(doc["signature"], validate=True)
            sharer = by if by is not None else doc["by"]
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise MalformedError("a share needs message, wrap, at and signature (base64)"
                                 ) from None
        if not (isinstance(message, str) and type(at) is int and isinstance(sharer, str)
                and len(signature) == 64 and 0 < len(wrap) <= 128):
            raise MalformedError("a share has a field of the wrong type or size")
        return cls(message, wrap, sharer, at, signature)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
