"""Supervised background tasks: started and stopped by the application's lifecycle.

:func:`supervise` runs a coroutine for as long as the application lives; if it fails it
is logged and restarted after a short, capped backoff, and cancellation (shutdown) goes
straight through. :func:`background` is the ``cleanup_ctx`` shape of that: the task
exists exactly while the application runs, and nobody leaves a task unawaited.

Ids given to :func:`background` as ``log_context`` (``partner=`` for a partner's loops)
are bound once, with structlog's context variables, to every line the task logs: a task
runs in its own copy of the context, so they reach neither its caller nor other tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog

log = structlog.get_logger("gateway.tasks")


async def supervise(name: str, run: Callable[[], Awaitable[None]], *,
                    first_delay: float = 0.5, max_delay: float = 30.0) -> None:
    delay = first_delay
    while True:
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception:  # the supervisor is the loop boundary
            log.exception("task_failed", task=name, restart_in=delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay)


async def _supervise_bound(name: str, run: Callable[[], Awaitable[None]],
                           log_context: dict[str, object]) -> None:
    structlog.contextvars.bind_contextvars(**log_context)  # in this task's context only
    await supervise(name, run)


def spawn(name: str, run: Callable[[], Awaitable[None]],
          **log_context: object) -> asyncio.Task[None]:
    """Start ``run`` supervised, as task ``name``; stop it with :func:`stop`."""
    return asyncio.get_running_loop().create_task(
        _supervise_bound(name, run, log_context), name=name)


async def stop(task: asyncio.Task[None]) -> None:
    """Cancel a task :func:`spawn` started and wait until it has ended."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@contextlib.asynccontextmanager
async def background(name: str, run: Callable[[], Awaitable[None]],
                     **log_context: object) -> AsyncIterator[None]:
    task = spawn(name, run, **log_context)
    try:
        yield
    finally:
        await stop(task)
