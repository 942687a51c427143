"""Interpreter settings for a gateway process: GIL hand-offs and garbage collection.

A gateway runs Python on three kinds of thread: the event loop, the SQLite connections'
threads (aiosqlite) and the signature worker (gateway.crypto.worker). The two helpers
spend most of their time in C with the GIL released (libsodium, SQLite and fsync), and
need it back for a few microseconds of Python at each end of a call: to pick up the next
job, and to hand the result to the loop. While the loop thread runs Python, a helper that
wants the GIL waits until the loop blocks or until the *switch interval* has passed, and
CPython's default is 5 ms. Under load the loop seldom blocks, so each hand-off could cost
up to 5 ms: in the accept benchmark (64 officers, 2 cores) a signature check that costs
about 0.1 ms of libsodium took 7.8 ms from request to answer on average, 40% of an
accept's time.

At 0.5 ms the loop is interrupted at most 2,000 times a second, each for one GIL hand-off
(microseconds), and a helper waits at most 0.5 ms for its turn. Measured with
``bench/accept.py`` on the two-core machine, default and 0.5 ms alternated: closed-loop
accepts 2,976, 3,113 and 3,047 msg/s at 5 ms, 3,504, 3,455, 3,415 and 3,408 at 0.5 ms;
1 ms and 0.2 ms measured between the two or alike (3,177 and 3,373; 3,412 and 3,318).

CPython's cyclic garbage collector stops every thread while it runs, and a full
(generation 2) collection walks every object the process holds. Under relay load a
gateway made one every 5 to 8 s, and each took 14 to 32 ms, growing with the heap (about
50,000 to 70,000 old objects, most of them made at start-up: modules, the application,
configuration); the loop could run nothing meanwhile, and in ``bench/relay.py`` those
stalls were what set the flash p99. :func:`settle`, once the gateway is serving,
collects once and then *freezes* what is left (``gc.freeze``): those start-up objects
are never walked again, and later collections walk only what was made since (with the
store's id cache untracked too, gateway.store.sqlite: 1.5 to 2.8 ms per full collection).
"""

from __future__ import annotations

import gc
import sys

SWITCH_INTERVAL = 0.0005  # seconds; CPython's default is 0.005


def tune() -> None:
    """Set the switch interval for a gateway process (a process-wide setting)."""
    sys.setswitchinterval(SWITCH_INTERVAL)


def settle() -> None:
    """Once start-up is over: collect, then leave everything alive now out of later
    collections (it lives as long as the process)."""
    gc.collect()
    gc.freeze()
