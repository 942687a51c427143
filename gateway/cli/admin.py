"""``gateway partners``, ``gateway status`` and ``gateway reload``: the operator's view
of the running gateway, and its reload, over its admin socket (gateway.channels.admin).

``gateway partners`` also shows the key each partner is trusted with now: the pinned one
(``[[partners]]`` or a roster), or the newest key the gateway followed from there after
the partner rotated. The gateway stores the rotations it follows before it trusts the new
key, and restarts from that record (Partners.load_keys); the command reads the same
record from the database, checked the same way.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp

from gateway.clock import SystemClock
from gateway.config import Config
from gateway.crypto.keys import normalize_fingerprint
from gateway.errors import ConfigError, CryptoError, GatewayError, PeerError
from gateway.federation.roster import load_rosters
from gateway.protocol.rotation import peek_rotation, verify_history
from gateway.store.sqlite import SqliteStore

TIMEOUT = aiohttp.ClientTimeout(total=10)


async def admin_request(socket_path: Path, method: str, path: str,
                        body: dict[str, Any] | None = None) -> Any:
    """One request to the running gateway's admin socket (with ``body`` as JSON, if
    given); its JSON answer."""
    connector = aiohttp.UnixConnector(path=str(socket_path))
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=TIMEOUT) as http, \
                http.request(method, "http://gateway" + path, json=body) as response:
            body = await response.json()
            if response.status != 200:
                raise GatewayError(str(body.get("message", f"HTTP {response.status}")),
                                   code=str(body.get("error", "gateway_error")))
            return body
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise PeerError(f"{socket_path}: the gateway does not answer ({exc})") from None


def age(now_ms: int, then_ms: int | None) -> str:
    if then_ms is None:
        return "-"
    seconds = max(0, (now_ms - then_ms) // 1000)
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def format_partners(report: dict[str, Any]) -> str:
    now = report["now"]
    header = ("PARTNER", "STATE", "QUEUED", "OLDEST", "READS", "LAST CONTACT", "CHECKPOINT")
    rows = [header]
    notes = []
    for p in report["partners"]:
        state = p["state"]
        if p["failures"]:
            state += f" ({p['failures']} failures)"
        checkpoint = p["checkpoint"]
        rows.append((
            p["id"], state, str(p["queued"]), age(now, p["oldest_queued"]),
            str(p["reads_queued"]), age(now, p["last_contact"]),
            "-" if checkpoint is None else
            f"size {checkpoint['size']}, {age(now, checkpoint['seen'])}",
        ))
        if p.get("fingerprint"):
            followed = ("" if p["fingerprint"] == p["pinned_fingerprint"] else
                        f" (rotated; pinned was {p['pinned_fingerprint']})")
            notes.append(f"{p['id']}: key {p['fingerprint']}{followed}")
        if p["next_attempt"] is not None:
            notes.append(f"{p['id']}: next attempt in "
                         f"{max(0, p['next_attempt'] - now) / 1000:.1f}s")
        if p["last_error"]:
            notes.append(f"{p['id']}: last error: {p['last_error']}")
        if p["alarm"] is not None:
            a = p["alarm"]
            notes.append(f"{p['id']}: LEDGER ALARM {a['reason']} {age(now, a['time'])}: "
                         f"refused a checkpoint of size {a['seen_size']}, kept size "
                         f"{a['kept_size']}")
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    if len(rows) == 1:
        lines.append("(no partners configured)")
    return "\n".join(lines + notes)


def admin_socket(config: Config) -> Path:
    socket_path = config.admin_socket
    if not socket_path.exists():
        raise PeerError(f"{socket_path}: no admin socket; is the gateway running on this "
                        "data directory?")
    return socket_path


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g}{unit}"
    return f"{seconds:.3g}s"


def format_status(report: dict[str, Any]) -> str:
    now = report["now"]
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now / 1000))
    ledger = report["ledger"]
    checkpoint = ledger["checkpoint"]
    covered = ("no checkpoint yet" if checkpoint is None else
               f"last checkpoint at size {checkpoint['size']}, {age(now, checkpoint['made'])}")
    lines = [f"{report['gateway']} (version {report['version']}) at {stamp} UTC",
             f"ledger: {ledger['size']} entries; {covered}", "", "partners:"]
    lines += ["  " + line for line in format_partners(report).split("\n")]
    lines += ["", "service levels (breaches recorded):"]
    if not report["service_levels"]:
        lines.append("  (none configured)")
    for level in report["service_levels"]:
        escalate = ", escalated" if level["escalate"] else ""
        mark = "  BREACHED" if level["breaches"] else ""
        lines.append(f"  {level['priority']:<9} {level['stage']:<9} within "
                     f"{_duration(level['within_seconds']):<6}{escalate:<11} "
                     f"{level['breaches']:>6}{mark}")
    lines += ["", "response times since start (count, mean):"]
    if not report["responses"]:
        lines.append("  (nothing observed yet)")
    for r in report["responses"]:
        mean = "-" if r["mean_seconds"] is None else _duration(r["mean_seconds"])
        lines.append(f"  {r['stage']:<9} {r['priority']:<9} {r['count']:>6}  {mean}")
    return "\n".join(lines)


def status_command(config: Config, as_json: bool) -> str:
    report = asyncio.run(admin_request(admin_socket(config), "GET", "/status"))
    return json.dumps(report, indent=2) if as_json else format_status(report)


async def partner_keys(config: Config) -> dict[str, tuple[str, str]]:
    """Each partner's pinned key fingerprint and the one trusted now (the same unless it
    rotated). A stored key history that does not verify or does not descend from the
    pinned key is ignored, as the gateway ignores it."""
    pinned = {p.id: normalize_fingerprint(p.fingerprint) for p in config.partners}
    try:
        rosters = load_rosters(config, SystemClock().now_ms())
    except ConfigError:  # e.g. expired since the gateway started: those keys go unshown
        rosters = []
    for _, roster in rosters:
        for entry in roster.gateways:
            if entry.gateway != config.gateway.id:
                pinned.setdefault(entry.gateway, entry.fingerprint)
    keys = {partner: (fingerprint, fingerprint) for partner, fingerprint in pinned.items()}
    if not pinned or not config.database.exists():
        return keys
    store = await SqliteStore.open(config.database)
    try:
        for partner, fingerprint in pinned.items():
            statements = await store.partner_key_history(partner)
            if not statements:
                continue
            try:
                current = peek_rotation(statements[-1]).new_key
                verify_history(statements, partner, current).since_trusted({fingerprint})
            except CryptoError:
                continue
            keys[partner] = (fingerprint, current.fingerprint)
    finally:
        await store.close()
    return keys


def partners_command(config: Config, retry: str | None, as_json: bool) -> str:
    socket_path = admin_socket(config)
    if retry is not None:
        answer = asyncio.run(admin_request(socket_path, "POST", f"/partners/{retry}/retry"))
        return f"{answer['partner']}: sender woken; it retries now"

    async def report_with_keys() -> dict[str, Any]:
        report: dict[str, Any] = await admin_request(socket_path, "GET", "/partners")
        keys = await partner_keys(config)
        for p in report["partners"]:
            p["pinned_fingerprint"], p["fingerprint"] = keys.get(p["id"], (None, None))
        return report

    report = asyncio.run(report_with_keys())
    if as_json:
        return json.dumps(report, indent=2)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(report["now"] / 1000))
    return f"{config.gateway.id} partners at {stamp} UTC\n" + format_partners(report)


def reload_command(config: Config) -> str:
    """``gateway reload``: the running gateway reads its configuration file again."""
    answer = asyncio.run(admin_request(admin_socket(config), "POST", "/reload"))
    if answer["refused"]:
        raise ConfigError(f"reload refused, the configuration in force is unchanged: "
                          f"{answer['refused']}")
    lines = [f"{config.gateway.id}: configuration reloaded"]
    lines += [f"  {change}" for change in answer["changes"]] or ["  (nothing changed)"]
    if answer["needs_restart"]:
        lines.append("  not applied, needs a restart: " + ", ".join(answer["needs_restart"]))
    return "\n".join(lines)
