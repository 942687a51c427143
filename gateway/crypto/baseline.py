"""Raw PyNaCl operations, without any gateway code around them.

Benchmarks measure the gateway's crypto paths next to these in the same run, so that a
figure always comes with the limit the machine allows. (They live here because nothing
outside gateway/crypto/ may import PyNaCl.)
"""

from __future__ import annotations

from collections.abc import Callable

import nacl.bindings
import nacl.signing


def pynacl_verify(public_key: bytes, message: bytes, signature: bytes) -> Callable[[], object]:
    """One Ed25519 verification through PyNaCl's public API (``VerifyKey.verify``)."""
    key = nacl.signing.VerifyKey(public_key)
    return lambda: key.verify(message, signature)


def binding_verify(public_key: bytes, message: bytes, signature: bytes) -> Callable[[], object]:
    """One Ed25519 verification through PyNaCl's lowest layer (``crypto_sign_open``)."""
    signed = signature + message
    return lambda: nacl.bindings.crypto_sign_open(signed, public_key)
