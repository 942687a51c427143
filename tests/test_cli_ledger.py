"""`gateway ledger verify|prove|checkpoint` and the refusal to start on a bad ledger."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from gateway.clock import SystemClock
from gateway.config import load_config
from gateway.crypto.keyfile import load_bundle
from gateway.federation.identity import Identity
from gateway.ledger.ledger import Ledger
from gateway.store.sqlite import SqliteStore
from tests.helpers import Officer, gateway, incoming, make_envelope, one_line_error


async def populate(config_path: Path, messages: int = 12) -> list[str]:
    """Accept messages into the configured gateway's database, with its own key."""
    config = load_config(config_path)
    bundle = load_bundle(config.keys.file, None, allow_insecure=True)
    identity = Identity.from_bundle(config.gateway.id, bundle)
    origin = config.gateway.ledger_origin
    store = await SqliteStore.open(config.database)
    ledger = Ledger(store, origin, identity.checkpoint_verifiers(origin),
                    identity.checkpoint_signer(origin), SystemClock())
    sender, readers = Officer(), [Officer()]
    ids = []
    for i in range(messages):
        env = make_envelope(sender, readers)
        await store.accept(incoming(env))
        ids.append(env.header.id)
        if i % 5 == 4:
            await ledger.make_checkpoint()
    await store.close()
    return ids


def make_gateway(tmp_path: Path) -> Path:
    assert gateway("init", str(tmp_path / "gw"), "--id", "vn-mps", "--port", "0",
                   "--insecure-dev-keys").returncode == 0
    return tmp_path / "gw" / "gateway.toml"


def test_verify_prove_checkpoint(tmp_path: Path) -> None:
    cfg = make_gateway(tmp_path)
    missing = gateway("ledger", "verify", "--config", str(cfg))
    assert missing.returncode == 1 and "no database yet" in one_line_error(missing)
    ids = asyncio.run(populate(cfg))
    ok = gateway("ledger", "verify", "--config", str(cfg))
    assert ok.returncode == 0, ok.stderr
    assert "ledger ok: 24 entries, 2 signed checkpoints verified" in ok.stdout
    assert "verifying ledger: 24 / 24" in ok.stderr

    not_yet = gateway("ledger", "prove", ids[-1], "--config", str(cfg))
    assert not_yet.returncode == 1 and "no checkpoint covers" in one_line_error(not_yet)
    made = gateway("ledger", "checkpoint", "--config", str(cfg))
    assert made.returncode == 0 and made.stdout.startswith("fpg/vn-mps\n24\n")
    proved = gateway("ledger", "prove", ids[-1], "--config", str(cfg))
    assert proved.returncode == 0, proved.stderr
    doc = json.loads(proved.stdout)
    assert doc["checkpoint"]["size"] == 24 and len(doc["events"]) == 2


def _swap_rows(db: sqlite3.Connection) -> None:
    a = db.execute("SELECT seq, msg, entry, leaf_hash, nodes FROM ledger WHERE seq = 7").fetchone()
    b = db.execute("SELECT seq, msg, entry, leaf_hash, nodes FROM ledger WHERE seq = 8").fetchone()
    db.execute("DELETE FROM ledger WHERE seq IN (7, 8)")
    db.execute("INSERT INTO ledger VALUES (7, ?, ?, ?, ?)", b[1:])
    db.execute("INSERT INTO ledger VALUES (8, ?, ?, ?, ?)", a[1:])


def _change_one_byte(db: sqlite3.Connection) -> None:
    entry = db.execute("SELECT entry FROM ledger WHERE seq = 7").fetchone()[0]
    db.execute("UPDATE ledger SET entry = ? WHERE seq = 7",
               (entry.replace(b'"delivered"', b'"delivereD"'),))


TAMPERING = {
    "one byte changed": (_change_one_byte, "ledger entry 7"),
    "one row deleted": (lambda db: db.execute("DELETE FROM ledger WHERE seq = 7"),
                        "ledger entry 7 is missing"),
    "two rows swapped": (_swap_rows, "ledger entry 7 holds the entry of position 8"),
    "tail cut": (lambda db: db.execute("DELETE FROM ledger WHERE seq >= 7"),
                 "ledger entry 7 is missing"),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_tampered_ledger_fails_verify_and_the_gateway_refuses_to_start(
    tmp_path: Path, case: str
) -> None:
    cfg = make_gateway(tmp_path)
    asyncio.run(populate(cfg))
    tamper, expected = TAMPERING[case]
    database = load_config(cfg).database
    with sqlite3.connect(database) as db:
        db.execute("DROP TRIGGER ledger_no_update")
        db.execute("DROP TRIGGER ledger_no_delete")
        tamper(db)
    bad = gateway("ledger", "verify", "--config", str(cfg))
    assert bad.returncode == 1
    assert expected in one_line_error(bad)
    run = gateway("run", "--config", str(cfg))
    assert run.returncode == 1
    assert expected in run.stderr.strip().splitlines()[-1]
    assert "Traceback" not in run.stderr
