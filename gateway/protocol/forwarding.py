"""Forwarding that keeps the original signature: the permission to pass a message on.

A ``forward`` envelope (docs/PROTOCOL.md 3.9) embeds, sealed, the envelope it forwards and
that envelope's content key, so its recipient verifies the first sender's own signature
and reads the original as it was signed. Its header names the forwarded message
(``forwards``) and keeps its handling code. A message whose code is ``H2`` (no onward
dissemination without permission) may be forwarded only with the permission of whoever
sent it to the forwarder: a signature by that officer over

    fpg onward v1\\n<forwarded message id>\\n<desk address it may go to>\\n

carried, in base64, as the forward's ``permit``. The forwarder's gateway refuses a forward
of an H2 message without a permit that verifies (``403 handling_forbids_onward``); the
recipient's client checks it again.
"""

from __future__ import annotations

import base64
import binascii

from gateway.crypto.errors import BadSignatureError
from gateway.crypto.keys import OfficerSigningKey, VerifyKey

ONWARD_LINE = "fpg onward v1"
#: Forwards of forwards a client unwraps before it gives up (each embeds the previous one).
MAX_DEPTH = 4


def onward_text(message_id: str, to: str) -> bytes:
    return f"{ONWARD_LINE}\n{message_id}\n{to}\n".encode("ascii")


def sign_permit(key: OfficerSigningKey, message_id: str, to: str) -> str:
    """The permit an officer gives for its message ``message_id`` to go on to desk ``to``."""
    return base64.b64encode(key.sign(onward_text(message_id, to))).decode("ascii")


def check_permit(permit: str, key: VerifyKey, message_id: str, to: str) -> None:
    """Raise BadSignatureError unless ``permit`` is ``key``'s permission for
    ``message_id`` to go on to ``to``."""
    try:
        signature = base64.b64decode(permit, validate=True)
    except (binascii.Error, ValueError):
        raise BadSignatureError("the permit is not base64") from None
    key.verify(onward_text(message_id, to), signature)
