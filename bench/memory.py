"""Peak resident memory of a gateway holding a 100,000-message backlog, next to the same
gateway with nothing queued, measured in one run.

The backlog is queued for a partner that is down (its pinned URL is a closed port on
127.0.0.1), so the gateway keeps it: at start it verifies the whole ledger, its sender
probes the dead partner with backoff, and /metrics is scraped every half second (each
scrape counts the queue). The figure is the process's VmHWM (peak resident set) from
/proc after that, for the empty gateway first and the loaded one second; target: under
200 MiB with the backlog (issue 7).

    python bench/memory.py [--messages 100000] [--seconds 10] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.accept import gateway_command
from gateway.cli.process import ServerProcess
from gateway.crypto.envelope import (
    EnvelopeHeader,
    new_message_id,
    seal_envelope,
    verify_envelope,
)
from gateway.crypto.keys import (
    ROLE_OFFICER_SIGNING,
    GatewaySigningKey,
    OfficerEncryptionKey,
    OfficerSigningKey,
    VerifyKey,
)
from gateway.store import IncomingMessage
from gateway.store.sqlite import SqliteStore

TARGET_MIB = 200.0
PARTNER = "kh-cnp"
START_TIMEOUT = 300.0  # verifying a large ledger at start takes a while
CHUNK = 2000


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_gateway(directory: Path) -> Path:
    gateway_command("init", str(directory), "--id", "vn-mps", "--port", "0",
                    "--insecure-dev-keys")
    config = directory / "gateway.toml"
    text = config.read_text().replace('[log]\nlevel = "info"', '[log]\nlevel = "warning"')
    text = text.replace("\n[metrics]", f'\n[metrics]\nport_file = "{directory / "mport"}"', 1)
    text += (f'\n[federation]\nhealth_seconds = 0.5\nretry_first_seconds = 0.2\n'
             f'retry_max_seconds = 2\n\n[[partners]]\nid = "{PARTNER}"\n'
             f'url = "http://127.0.0.1:{closed_port()}"\n'
             f'fingerprint = "{GatewaySigningKey.generate().public.fingerprint}"\n')
    config.write_text(text)
    gateway_command("desks", "add", "border-liaison", "--config", str(config))
    return config


def seal_chunk(count: int) -> list[bytes]:
    """``count`` sealed flash/routine hotlines from a VN desk to a KH desk (1 KiB body)."""
    sender = OfficerSigningKey.generate()
    readers = [OfficerEncryptionKey.generate().public for _ in range(2)]
    now = int(time.time() * 1000)
    out = []
    for i in range(count):
        mid = new_message_id()
        header = EnvelopeHeader(id=mid, kind="hotline", priority=("flash", "routine")[i % 2],
                                sender="border-liaison@vn-mps",
                                recipient=f"anti-trafficking@{PARTNER}", created=now,
                                expires=now + 30 * 86_400_000, thread=mid)
        out.append(sender.public.raw + seal_envelope(header, os.urandom(1024), sender,
                                                     readers))
    return out


async def fill(database: Path, messages: int) -> float:
    """Queue ``messages`` for the partner, as accepted officers' messages; seconds taken."""
    started = time.perf_counter()
    store = await SqliteStore.open(database)
    try:
        chunks = [CHUNK] * (messages // CHUNK) + ([messages % CHUNK] if messages % CHUNK else [])
        loop = asyncio.get_running_loop()
        with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            futures = [loop.run_in_executor(pool, seal_chunk, n) for n in chunks]
            for future in futures:
                sealed = await future
                accepts = []
                for raw in sealed:
                    key = VerifyKey(raw[:32], ROLE_OFFICER_SIGNING)  # sent with the chunk
                    envelope = verify_envelope(raw[32:], key)
                    accepts.append(store.accept(IncomingMessage(
                        envelope, int(time.time() * 1000), "local", envelope.signer,
                        relay_to=PARTNER)))
                await asyncio.gather(*accepts)
    finally:
        await store.close()
    return time.perf_counter() - started


def peak_rss(pid: int) -> tuple[float, float]:
    """(VmHWM, VmRSS) of ``pid`` in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmHWM"], values["VmRSS"]


async def hold(config: Path, seconds: float) -> dict[str, Any]:
    """Run the gateway, scrape /metrics for ``seconds``, then read its peak memory."""
    metrics_port_file = config.parent / "mport"
    metrics_port_file.unlink(missing_ok=True)
    server = ServerProcess.gateway(config, name="the gateway", start_seconds=START_TIMEOUT,
                                   stop_seconds=60.0)
    await server.start_async()  # its metrics listen before its port file is written
    try:
        start_seconds = server.ready_at - server.spawned_at
        url = f"http://127.0.0.1:{int(metrics_port_file.read_text())}/metrics"
        depth = None
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                async with http.get(url) as response:
                    for line in (await response.text()).splitlines():
                        if line.startswith(f'fpg_outbox_depth{{partner="{PARTNER}"}}'):
                            depth = int(float(line.split()[-1]))
                await asyncio.sleep(0.5)
        hwm, rss = peak_rss(server.pid)
    finally:
        await server.stop_async()
    return {"peak_rss_mib": round(hwm, 1), "rss_mib": round(rss, 1),
            "start_seconds": round(start_seconds, 2), "queued": depth}


async def run(messages: int, seconds: float) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="fpg-bench-memory-"))
    try:
        config = make_gateway(root / "gw")
        empty = await hold(config, seconds)
        fill_seconds = await fill(root / "gw" / "data" / "gateway.sqlite3", messages)
        loaded = await hold(config, seconds)
        database_mib = (root / "gw" / "data" / "gateway.sqlite3").stat().st_size / 2**20
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if loaded["queued"] != messages:
        raise RuntimeError(f"expected {messages} queued, the gateway reported "
                           f"{loaded['queued']}")
    return {"benchmark": "memory", "messages": messages, "empty": empty, "loaded": loaded,
            "fill_seconds": round(fill_seconds, 1), "database_mib": round(database_mib, 1),
            "ratio_to_empty": round(loaded["peak_rss_mib"] / empty["peak_rss_mib"], 2),
            "target_mib": TARGET_MIB, "met": loaded["peak_rss_mib"] < TARGET_MIB}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="how long each gateway is held and scraped")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = asyncio.run(run(args.messages, args.seconds))
    if args.json:
        print(json.dumps(result))
        return 0
    e, lo = result["empty"], result["loaded"]
    print(f"gateway with nothing queued:         peak RSS {e['peak_rss_mib']:7.1f} MiB "
          f"(started in {e['start_seconds']} s)")
    print(f"gateway with {args.messages:,} queued:     peak RSS {lo['peak_rss_mib']:7.1f} MiB "
          f"(started in {lo['start_seconds']} s; database {result['database_mib']} MiB)")
    print(f"ratio loaded/empty: {result['ratio_to_empty']}   target < {TARGET_MIB:.0f} MiB: "
          f"{'met' if result['met'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
