"""Ed25519 verification on threads of its own, so that the event loop keeps serving.

A verification (:meth:`VerifyKey.verify`) costs 60 to 100 µs of libsodium, the largest
single cost of accepting a message. PyNaCl calls libsodium through cffi, which releases
the GIL for the length of each call, so a check made on a worker thread runs on another
core while the event loop parses and answers other requests. The checks asked for during
one turn of the loop go to the worker as one job and come back with one wake-up of the
loop: a relay batch of 256 envelopes costs the loop a few hand-offs, not 512.

A job goes to one thread, unless it holds at least :data:`SPLIT_AT` checks: then its two
halves run at once on two threads, and the loop is woken once, when both are done, with
the results in order. Officers' single messages never reach that size; relay batches at
the receiving gateway (in chunks of 64, gateway.federation.receiver) and receipt batches at the
sending one (up to 256 checks, 20 to 30 ms) do. A profile of a backlog drain between two
gateways on a two-core machine showed the loop idle for 27 to 32 ms at a time, waiting for
one such job while the second core was partly free. Split in two, 256 checks took 15 ms
instead of 26 (medians, idle two-core machine); with the other core busy elsewhere, both
took about the same time.

Only public keys, signed bytes and signatures are handed over. Signing (receipts,
notices, checkpoints) stays on the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
from collections.abc import Callable, Sequence

from gateway.crypto.errors import BadSignatureError
from gateway.crypto.keys import VerifyKey

Check = tuple[VerifyKey, bytes, bytes]  # key, signed bytes, signature
_Queued = tuple[list[Check], "asyncio.Future[list[bool]]"]
_Job = concurrent.futures.Future[list[bool]]

# Jobs of this many checks or more are split over two threads. Splitting costs a second
# hand-off (a queue put and a thread wake-up, tens of µs) and, when the other core is busy,
# gains nothing (measured: 2% slower); when it is free it saves close to half the job. At
# 64 checks (5 to 7 ms) that is 2 to 3 ms saved, a hundred times the cost, and a wait long
# enough to leave the loop idle; the jobs an officer's message makes (one to a few checks)
# keep to one thread and one hand-off. Relay and receipt batches hold hundreds.
SPLIT_AT = 64


def verify_all(checks: list[Check]) -> list[bool]:
    """On a worker thread: whether each signature verifies."""
    results = []
    for key, message, signature in checks:
        try:
            key.verify(message, signature)
            results.append(True)
        except BadSignatureError:
            results.append(False)
    return results


class CryptoWorker:
    """Threads that check Ed25519 signatures, fed per turn of the loop.

    Every job goes to ``_pool``; the second half of a job of :data:`SPLIT_AT` checks or
    more goes to ``_helper``. Two single-thread pools rather than one pool of two: a
    ThreadPoolExecutor counts each finished work item as an idle thread, so once its first
    thread had done a few jobs, one pool of two would queue both halves on that thread.
    """

    def __init__(self) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="crypto")
        self._helper = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="crypto-2")
        self._queued: list[_Queued] = []
        self._closed = False

    def check_all(self, checks: Sequence[Check]) -> asyncio.Future[list[bool]]:
        """Whether each ``signature`` by ``key`` over ``message`` verifies, in order."""
        if self._closed:
            raise RuntimeError("the signature worker is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[bool]] = loop.create_future()
        if not checks:
            future.set_result([])
            return future
        self._queued.append((list(checks), future))
        if len(self._queued) == 1:
            loop.call_soon(self._submit, loop)
        return future

    def _submit(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._queued = self._queued, []
        checks = [check for queued, _ in batch for check in queued]
        if len(checks) < SPLIT_AT:
            parts = [(self._pool, checks)]
        else:
            half = len(checks) // 2
            parts = [(self._pool, checks[:half]), (self._helper, checks[half:])]
        try:
            jobs = [pool.submit(verify_all, part) for pool, part in parts]
        except RuntimeError as exc:  # closed after these were queued
            _settle(batch, exc)  # a half already submitted runs, and nobody is told
            return
        _when_done(jobs, functools.partial(_wake, loop, batch, jobs))

    def close(self) -> None:
        """Let the jobs in flight finish, then end the threads."""
        self._closed = True
        self._pool.shutdown(wait=True)
        self._helper.shutdown(wait=True)


def _when_done(jobs: list[_Job], then: Callable[[], None]) -> None:
    """Call ``then`` once, when every job is done, on the thread that finishes last."""
    if not jobs:
        then()
        return
    jobs[0].add_done_callback(lambda _: _when_done(jobs[1:], then))


def _wake(loop: asyncio.AbstractEventLoop, batch: list[_Queued], jobs: list[_Job]) -> None:
    """On a worker thread: hand the outcome to the loop, unless the loop has closed."""
    outcome: list[bool] | BaseException
    try:
        outcome = [answer for job in jobs for answer in job.result()]
    except BaseException as exc:  # handed to the loop, raised to the callers
        outcome = exc
    with contextlib.suppress(RuntimeError):  # a closed loop has nobody left to tell
        loop.call_soon_threadsafe(_settle, batch, outcome)


def _settle(batch: list[_Queued], outcome: list[bool] | BaseException) -> None:
    start = 0
    for queued, future in batch:
        end = start + len(queued)
        if future.done():  # the caller gave up
            pass
        elif isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome[start:end])
        start = end
