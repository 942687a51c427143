"""The signature worker: Ed25519 checks on their own thread, batched per turn of the loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from gateway.crypto import worker as worker_module
from gateway.crypto.envelope import (
    EnvelopeHeader,
    new_message_id,
    seal_envelope,
    verify_envelope,
    verify_envelope_on,
    verify_envelopes_on,
)
from gateway.crypto.keys import GatewaySigningKey, OfficerEncryptionKey, OfficerSigningKey
from gateway.crypto.worker import SPLIT_AT, Check, CryptoWorker
from gateway.errors import BadSignatureError, MalformedError, SignerMismatchError
from gateway.federation.receipts import Receipt, open_receipt, open_receipts_on


@pytest.fixture
async def worker() -> AsyncIterator[CryptoWorker]:
    w = CryptoWorker()
    yield w
    w.close()


class Gate:
    """Stands in for ``verify_all``: notes the thread and size of each part of a job, and
    holds every part until opened, so that a test can act while a job is in flight."""

    def __init__(self, real: Callable[[list[Check]], list[bool]]) -> None:
        self.real = real
        self.parts: list[tuple[int, int]] = []  # (thread ident, checks)
        self.finished = 0
        self.arrived = threading.Semaphore(0)  # released by each part as it comes in
        self.opened = threading.Event()
        self.fail: Callable[[list[Check]], None] = lambda checks: None

    def __call__(self, checks: list[Check]) -> list[bool]:
        self.parts.append((threading.get_ident(), len(checks)))
        self.arrived.release()
        try:
            self.fail(checks)  # before the gate: a part can fail while the other is held
            if not self.opened.wait(10):
                raise TimeoutError("the gate was never opened")
            return self.real(checks)
        finally:
            self.finished += 1

    @property
    def threads(self) -> set[int]:
        return {ident for ident, _ in self.parts}

    async def entered(self, parts: int) -> None:
        """Wait until ``parts`` parts are held at once (2: the job was split)."""
        def wait() -> bool:
            return all(self.arrived.acquire(timeout=2) for _ in range(parts))

        assert await asyncio.to_thread(wait), f"{len(self.parts)} part(s), not {parts}"


@pytest.fixture
def gate(worker: CryptoWorker, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    g = Gate(worker_module.verify_all)
    monkeypatch.setattr(worker_module, "verify_all", g)
    yield g
    g.opened.set()  # before the worker closes, even when the test failed


def checks(n: int, bad: set[int]) -> list[Check]:
    """``n`` checks by one key, those at the positions in ``bad`` over the wrong bytes."""
    key = OfficerSigningKey.generate()
    return [(key.public, b"m%d" % i if i not in bad else b"tampered", key.sign(b"m%d" % i))
            for i in range(n)]


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


async def test_a_big_job_is_split_over_two_threads_and_answered_in_order(
        worker: CryptoWorker, gate: Gate) -> None:
    # Three callers in one turn, 160 checks: the halves meet inside the second caller,
    # failures sit in both halves and on both sides of the seam (79 | 80).
    assert SPLIT_AT <= 160
    bad = {3, 11, 79, 80, 120, 159}
    every = checks(160, bad)
    futures = [worker.check_all(every[:10]), worker.check_all(every[10:110]),
               worker.check_all(every[110:])]
    await gate.entered(2)  # both halves held at once: they run concurrently
    gate.opened.set()
    answers = await asyncio.gather(*futures)
    expected = [i not in bad for i in range(160)]
    assert answers == [expected[:10], expected[10:110], expected[110:]]
    assert sorted(size for _, size in gate.parts) == [80, 80]
    assert len(gate.threads) == 2 and threading.get_ident() not in gate.threads


async def test_a_job_just_below_the_split_goes_to_one_thread(
        worker: CryptoWorker, gate: Gate) -> None:
    assert 2 <= SPLIT_AT <= 256  # batches of 256 (relay, receipts) are what it is for
    gate.opened.set()
    below = checks(SPLIT_AT - 1, {0, SPLIT_AT - 2})
    answers = await asyncio.gather(worker.check_all(below[:1]), worker.check_all(below[1:]))
    assert [*answers[0], *answers[1]] == [0 < i < SPLIT_AT - 2 for i in range(SPLIT_AT - 1)]
    assert gate.parts == [(gate.parts[0][0], SPLIT_AT - 1)]
    assert not worker._helper._threads
    # One check more and the job is split.
    assert await worker.check_all(checks(SPLIT_AT, set())) == [True] * SPLIT_AT
    assert [size for _, size in gate.parts[1:]] == [SPLIT_AT // 2, SPLIT_AT - SPLIT_AT // 2]
    assert len(gate.threads) == 2


async def test_a_caller_that_gave_up_during_a_split_job_does_not_disturb_the_others(
        worker: CryptoWorker, gate: Gate) -> None:
    bad = {5, 70, 130}
    every = checks(140, bad)
    first = worker.check_all(every[:60])
    abandoned = worker.check_all(every[60:80])  # straddles the halves (70 | 70)
    last = worker.check_all(every[80:])
    await gate.entered(2)
    abandoned.cancel()
    gate.opened.set()
    assert await first == [i not in bad for i in range(60)]
    assert await last == [i not in bad for i in range(80, 140)]
    assert abandoned.cancelled()
    assert await worker.check_all(every[:2]) == [True, True]


async def test_close_lets_a_split_job_finish() -> None:
    w = CryptoWorker()
    g = Gate(worker_module.verify_all)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(worker_module, "verify_all", g)
        every = checks(200, {0, 199})
        future = w.check_all(every)
        try:
            await g.entered(2)
        finally:
            threading.Timer(0.05, g.opened.set).start()
        w.close()  # blocks until both halves are done
        assert g.finished == 2
        assert await future == [0 < i < 199 for i in range(200)]
        with pytest.raises(RuntimeError, match="closed"):
            w.check_all(every[:1])


async def test_a_failing_half_fails_every_caller_once_both_halves_are_done(
        worker: CryptoWorker, gate: Gate) -> None:
    class Boom(BaseException):
        pass

    every = checks(128, set())
    second_half = every[64]

    def boom(part: list[Check]) -> None:
        if part[0] is second_half:
            raise Boom

    gate.fail = boom
    futures = [worker.check_all(every[:32]), worker.check_all(every[32:])]
    await gate.entered(2)
    await asyncio.sleep(0.05)
    assert gate.finished == 1  # the second half has failed, the first is held...
    assert not any(future.done() for future in futures)  # ...and nobody is told yet
    gate.opened.set()
    for future in futures:
        with pytest.raises(Boom):
            await future
    assert gate.finished == 2 and len(gate.threads) == 2
