"""The signature worker: Ed25519 checks on their own thread, batched per turn of the loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from gateway.crypto.envelope import (
    EnvelopeHeader,
    new_message_id,
    seal_envelope,
    verify_envelope,
    verify_envelope_on,
    verify_envelopes_on,
)
from gateway.crypto.keys import GatewaySigningKey, OfficerEncryptionKey, OfficerSigningKey
from gateway.crypto.worker import CryptoWorker
from gateway.errors import BadSignatureError, MalformedError, SignerMismatchError
from gateway.receipts import Receipt, open_receipt, open_receipts_on


@pytest.fixture
async def worker() -> AsyncIterator[CryptoWorker]:
    w = CryptoWorker()
    yield w
    w.close()


def sealed(sender: OfficerSigningKey, text: bytes = b"alert") -> bytes:
    mid = new_message_id()
    header = EnvelopeHeader(
        id=mid, kind="hotline", priority="flash", sender="trafficking@vn-mps",
        recipient="border-liaison@kh-cnp", created=1_767_225_600_000,
        expires=1_767_225_600_000 + 3_600_000, thread=mid)
    return seal_envelope(header, text, sender, [OfficerEncryptionKey.generate().public])


async def test_signatures_are_checked_on_another_thread(worker: CryptoWorker) -> None:
    key = OfficerSigningKey.generate()
    other = OfficerSigningKey.generate()
    good = key.sign(b"message")
    answers = await worker.check_all([
        (key.public, b"message", good),
        (key.public, b"messagf", good),  # another message
        (other.public, b"message", good),  # another key
        (key.public, b"message", good[:63]),  # a short signature
    ])
    assert answers == [True, False, False, False]
    (thread,) = worker._pool._threads  # type: ignore[attr-defined]
    assert thread is not threading.current_thread() and thread.name.startswith("crypto")


async def test_checks_of_one_turn_go_as_one_job(worker: CryptoWorker,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    assert worker._pool is not None
    sizes: list[int] = []
    submit = worker._pool.submit

    def counting(fn: Callable[..., Any], checks: list[Any]) -> Any:
        sizes.append(len(checks))
        return submit(fn, checks)

    monkeypatch.setattr(worker._pool, "submit", counting)
    key = OfficerSigningKey.generate()
    sig = key.sign(b"m")
    singles = [worker.check_all([(key.public, b"m", sig)]) for _ in range(40)]
    many = worker.check_all([(key.public, b"m", sig)] * 10)
    assert await asyncio.gather(*singles) == [[True]] * 40
    assert await many == [True] * 10
    assert sizes == [50]


async def test_a_caller_that_gave_up_does_not_disturb_the_others(worker: CryptoWorker) -> None:
    key = OfficerSigningKey.generate()
    sig = key.sign(b"m")
    abandoned = worker.check_all([(key.public, b"m", sig)])
    kept = worker.check_all([(key.public, b"x", sig)])
    abandoned.cancel()
    assert await kept == [False]
    assert await worker.check_all([(key.public, b"m", sig)]) == [True]


async def test_the_loop_keeps_turning_while_signatures_are_checked(
        worker: CryptoWorker) -> None:
    sender = OfficerSigningKey.generate()
    data = sealed(sender, b"x" * 1024)
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.ensure_future(ticker())
    await asyncio.sleep(0)
    start = ticks
    outcomes = await verify_envelopes_on(worker, [(data, sender.public)] * 500)
    done = True
    await task
    assert all(o == verify_envelope(data, sender.public) for o in outcomes)
    # 500 verifications take tens of milliseconds; the loop ran meanwhile, not after.
    assert ticks - start >= 20, ticks - start


async def test_closed_worker_refuses_new_checks() -> None:
    w = CryptoWorker()
    key = OfficerSigningKey.generate()
    assert await w.check_all([(key.public, b"m", key.sign(b"m"))]) == [True]
    w.close()
    with pytest.raises(RuntimeError, match="closed"):
        w.check_all([(key.public, b"m", key.sign(b"m"))])


async def test_envelopes_checked_by_the_worker_match_the_plain_path(
        worker: CryptoWorker) -> None:
    alice, bob = OfficerSigningKey.generate(), OfficerSigningKey.generate()
    good = sealed(alice)
    tampered = bytearray(sealed(alice))
    tampered[-80] ^= 1  # inside the ciphertext, covered by the signature
    assert await verify_envelope_on(worker, good, alice.public) == verify_envelope(
        good, alice.public)
    with pytest.raises(BadSignatureError):
        await verify_envelope_on(worker, bytes(tampered), alice.public)
    with pytest.raises(SignerMismatchError):
        await verify_envelope_on(worker, good, bob.public)

    outcomes = await verify_envelopes_on(worker, [
        (good, alice.public), (bytes(tampered), alice.public), (good, bob.public),
        (b"FPGE", alice.public), (good, alice.public)])
    assert outcomes[0] == outcomes[4] == verify_envelope(good, alice.public)
    assert isinstance(outcomes[1], BadSignatureError)
    assert isinstance(outcomes[2], SignerMismatchError)
    assert isinstance(outcomes[3], MalformedError)
    assert await verify_envelopes_on(worker, []) == []


async def test_receipts_opened_through_the_worker_match_open_receipt(
        worker: CryptoWorker) -> None:
    kh, impostor = GatewaySigningKey.generate(), GatewaySigningKey.generate()
    receipts = [Receipt("kh-cnp", "vn-mps", f"{i:032x}", "ab" * 32, "accepted", None, 1000 + i)
                for i in range(5)]
    notes = [r.sign(kh) for r in receipts]
    assert await open_receipts_on(worker, notes, "kh-cnp", kh.public) == [
        open_receipt(n, "kh-cnp", [kh.public]) for n in notes] == receipts
    forged = [*notes[:4], receipts[4].sign(impostor)]
    with pytest.raises(BadSignatureError):  # no signature by kh's key at all
        await open_receipts_on(worker, forged, "kh-cnp", kh.public)
    altered = [*notes[:4], notes[4].replace(b"\"time\":1004", b"\"time\":1005")]
    with pytest.raises(BadSignatureError):
        await open_receipts_on(worker, altered, "kh-cnp", kh.public)
