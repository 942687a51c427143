"""Ed25519 verification on a thread of its own, so that the event loop keeps serving.

A verification (:meth:`VerifyKey.verify`) costs 60 to 100 µs of libsodium, the largest
single cost of accepting a message. PyNaCl calls libsodium through cffi, which releases
the GIL for the length of each call, so a check made on this thread runs on the second
core while the event loop parses and answers other requests. The checks asked for during
one turn of the loop go to the thread as one job and come back with one wake-up of the
loop: a relay batch of 256 envelopes costs the loop two hand-offs, not 512.

Only public keys, signed bytes and signatures are handed over. Signing (receipts,
notices, checkpoints) stays on the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
from collections.abc import Sequence

from gateway.crypto.keys import VerifyKey
from gateway.errors import BadSignatureError

Check = tuple[VerifyKey, bytes, bytes]  # key, signed bytes, signature
_Queued = tuple[list[Check], "asyncio.Future[list[bool]]"]


def verify_all(checks: list[Check]) -> list[bool]:
    """On the worker thread: whether each signature verifies."""
    results = []
    for key, message, signature in checks:
        try:
            key.verify(message, signature)
            results.append(True)
        except BadSignatureError:
            results.append(False)
    return results


class CryptoWorker:
    """One thread that checks Ed25519 signatures, fed per turn of the loop."""

    def __init__(self) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="crypto")
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
        try:
            job = self._pool.submit(verify_all, checks)
        except RuntimeError as exc:  # closed after these were queued
            _settle(batch, exc)
            return
        job.add_done_callback(functools.partial(_wake, loop, batch))

    def close(self) -> None:
        """Let the job in flight finish, then end the thread."""
        self._closed = True
        self._pool.shutdown(wait=True)


def _wake(loop: asyncio.AbstractEventLoop, batch: list[_Queued],
          job: concurrent.futures.Future[list[bool]]) -> None:
    """On the worker thread: hand the outcome to the loop, unless the loop has closed."""
    outcome: list[bool] | BaseException
    try:
        outcome = job.result()
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
