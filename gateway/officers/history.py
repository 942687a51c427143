"""History shares on the gateway's side: keep what a member shares with a newcomer.

A member of a desk sends, for an officer admitted to the desk, the content keys of the
desk's earlier messages wrapped for that officer (gateway.protocol.history). The gateway
checks that both are members of the desk, that each message was sent to the desk, and
that each share is signed by the member over that message's digest and that wrap; it
stores them and hands each officer its own. It cannot open a wrap.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import (
    BadSignatureError,
    ClientError,
    ForbiddenError,
    MalformedError,
    NotFoundError,
)
from gateway.officers.directory import Directory, Officer
from gateway.protocol.history import MAX_SHARES, Share, share_text
from gateway.store import ShareStore


async def keep_shares(store: ShareStore, directory: Directory, sharer: Officer, desk: str,
                      officer_id: str, shares: Any, now_ms: int, skew_ms: int) -> int:
    """Check and store ``sharer``'s shares for ``officer_id``; how many were new."""
    if desk not in sharer.desks:
        raise ForbiddenError(f"only members of {desk} share its history", code="not_a_member")
    officer = directory.officers.get(officer_id)
    if officer is None or desk not in officer.desks or not officer.active(now_ms):
        raise NotFoundError(f"no member {officer_id[:64]!r} of {desk} to share with",
                            code="not_a_member_of_desk")
    if not isinstance(shares, list) or not 0 < len(shares) <= MAX_SHARES:
        raise ClientError(f"shares: a list of 1 to {MAX_SHARES}", code="bad_field")
    checked: list[Share] = []
    for doc in shares:
        try:
            share = Share.from_json(doc, by=sharer.id)
        except MalformedError:
            raise ClientError("a share needs message, wrap, at and signature (base64)",
                              code="bad_field") from None
        message = await store.get_message(share.message)
        if message is None or message.recipient != desk:
            raise NotFoundError(f"no message {share.message[:64]!r} to {desk}",
                                code="unknown_message")
        if not now_ms - skew_ms <= share.at <= now_ms + skew_ms:
            raise ClientError("a share's time is too far from the gateway's clock",
                              code="bad_time")
        try:
            sharer.sign_key.verify(share_text(share.message, message.digest, officer.id,
                                              officer.enc_key.key_id, share.wrap, sharer.id,
                                              share.at), share.signature)
        except BadSignatureError:
            raise ClientError("a share is not signed by you over this message and wrap",
                              code="bad_signature") from None
        checked.append(share)
    return await store.add_shares(officer.id, checked)
