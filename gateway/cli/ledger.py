"""A gateway's ledger and key history as the operators' commands open them from its
configuration and files: ``gateway keys``, ``gateway ledger`` and the demo's final
verification all open them the same way."""

from __future__ import annotations

from gateway.clock import SystemClock
from gateway.config import Config
from gateway.crypto.keyfile import KeyBundle, read_history, read_public
from gateway.crypto.keys import ROLE_GATEWAY_SIGNING, VerifyKey
from gateway.crypto.note import NoteVerifier
from gateway.errors import CryptoError, KeyFileError, LedgerError
from gateway.federation.identity import Identity
from gateway.ledger.ledger import Ledger
from gateway.protocol.rotation import verify_history
from gateway.store.sqlite import SqliteStore


def gateway_history(config: Config, current: VerifyKey) -> list[VerifyKey]:
    """Every gateway signing key of the key file's history, the current one last."""
    try:
        history = verify_history(read_history(config.keys.file), config.gateway.id, current)
    except CryptoError as exc:
        raise KeyFileError(f"{config.keys.file}: key history does not verify "
                           f"({exc.message})") from None
    return [k.key for k in history.keys]


async def open_ledger(config: Config, bundle: KeyBundle | None) -> Ledger:
    """The gateway's ledger on its database, with the verifiers of every key it signed
    checkpoints with; it signs new checkpoints only when ``bundle`` is given. The caller
    closes ``ledger.store``."""
    if not config.database.exists():
        raise LedgerError(f"{config.database}: no database yet (has the gateway run?)")
    _, public, _ = read_public(config.keys.file)
    if ROLE_GATEWAY_SIGNING not in public:
        raise KeyFileError(f"{config.keys.file}: holds no gateway signing key")
    key = VerifyKey.from_b64(public[ROLE_GATEWAY_SIGNING], ROLE_GATEWAY_SIGNING)
    origin = config.gateway.ledger_origin
    # Checkpoints signed before a key rotation verify with the key of their time.
    verifiers = [NoteVerifier(origin, k) for k in reversed(gateway_history(config, key))]
    store = await SqliteStore.open(config.database)
    signer = None
    if bundle is not None:
        signer = Identity.from_bundle(config.gateway.id, bundle).checkpoint_signer(origin)
    return Ledger(store, origin, verifiers, signer, SystemClock())
