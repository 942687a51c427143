"""Reload a running gateway's configuration (SIGHUP, or ``gateway reload``).

The file is read and checked whole first, with what it names (rosters, certificates):
if anything is wrong the reload is refused with one log line naming the problem, and the
configuration in force stays as it was. Otherwise what can change while serving is
applied, one log line per change:

- partners (``[[partners]]``, and gateways of ``[[trust_anchors]]`` rosters): one added
  starts its refresh, relay and witness loops; one removed has them stopped, and its
  queued messages stay in the store (the line says how many; they go out if it is added
  again); one whose URL or fingerprint changed is removed and added again;
- service levels (``[[service_levels]]``): checked from the next pass on;
- desks: the desk directory is read again from the database (where ``gateway desks
  add`` puts them, picked up within a second anyway), and what changed since the last
  reload is logged;
- TLS certificates of the officers' and metrics listeners: the files are loaded into the
  listeners' existing TLS contexts, so new connections get the new certificate and open
  ones carry on with theirs.

Any other setting that differs (listen address and port, database, gateway id, keys,
limits, ...) needs a restart: it is named in a ``reload_needs_restart`` line and not
applied. A summary line ends every reload.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from gateway.appkeys import (
    CLOCK,
    CONFIG,
    DIRECTORY,
    IDENTITY,
    PARTNER_LOOPS,
    PARTNERS,
    SERVICE_LEVELS,
    STORE,
)
from gateway.config import Config, load_config
from gateway.crypto.keys import normalize_fingerprint
from gateway.errors import GatewayError
from gateway.federation.partners import Partner, Partners
from gateway.store import StatusStore

log = structlog.get_logger("gateway.reload")

# Settings applied by a reload; every other one that differs needs a restart.
_LISTS = ("partners", "trust_anchors", "service_levels")
_CERTS = {"server": ("tls_cert_file", "tls_key_file"),
          "metrics": ("tls_cert_file", "tls_key_file")}


def _trust(partner: Partner) -> tuple[Any, ...]:
    c = partner.config
    return (c.url, normalize_fingerprint(c.fingerprint), partner.source, partner.valid_from,
            partner.valid_until)


def needs_restart(old: Config, new: Config) -> list[str]:
    """The settings that differ between ``old`` and ``new`` and a reload cannot apply,
    as ``[section] key``; a listener that gains or loses TLS is one of them."""
    changed: list[str] = []
    for f in dataclasses.fields(old):
        if f.name in _LISTS or f.name == "path":
            continue
        before, after = getattr(old, f.name), getattr(new, f.name)
        if not dataclasses.is_dataclass(before):  # another list of tables ([[...]])
            if before != after:
                changed.append(f"[[{f.name}]]")
            continue
        for key in dataclasses.fields(before):
            a, b = getattr(before, key.name), getattr(after, key.name)
            if a == b:
                continue
            if key.name in _CERTS.get(f.name, ()) and None not in (a, b):
                continue  # another certificate file: loaded, see _certificates
            changed.append(f"[{f.name}] {key.name}")
    return changed


class Reloader:
    """Applies the configuration file to the running application ``app``, whose
    listeners serve TLS with ``server_tls`` and ``metrics_tls`` (None: plain HTTP)."""

    def __init__(self, app: web.Application, path: Path,
                 server_tls: ssl.SSLContext | None,
                 metrics_tls: ssl.SSLContext | None) -> None:
        self.app = app
        self.path = path
        self.tls = {"server": server_tls, "metrics": metrics_tls}
        self.config: Config = app[CONFIG]  # in force: the start's, with what was reloaded
        self._lock = asyncio.Lock()
        self._desk_names: set[str] | None = None  # as the last reload saw them

    async def reload(self) -> dict[str, Any]:
        """Read the file and apply it; the summary (also logged)."""
        async with self._lock:
            try:
                return await self._reload()
            except GatewayError as exc:
                log.error("reload_refused", error=exc.message,
                          detail="the configuration in force is unchanged")
                return {"refused": exc.message, "changes": [], "needs_restart": []}

    async def _reload(self) -> dict[str, Any]:
        app, old = self.app, self.config
        new = load_config(self.path)
        # Everything is checked before anything is applied.
        fresh = Partners(new, app[IDENTITY], app[CLOCK], app[STORE])  # rosters verified
        certificates = self._certificates(new)
        restart = needs_restart(old, new)
        # In force from now on: the old configuration with what a reload applies.
        effective = dataclasses.replace(
            old, partners=new.partners, trust_anchors=new.trust_anchors,
            service_levels=new.service_levels,
            server=dataclasses.replace(old.server, tls_cert_file=new.server.tls_cert_file,
                                       tls_key_file=new.server.tls_key_file)
            if certificates.get("server") else old.server,
            metrics=dataclasses.replace(old.metrics, tls_cert_file=new.metrics.tls_cert_file,
                                        tls_key_file=new.metrics.tls_key_file)
            if certificates.get("metrics") else old.metrics)
        changes: list[str] = []
        changes += await self._partners(fresh, effective)
        if new.service_levels != old.service_levels:
            app[SERVICE_LEVELS].replace(new.service_levels)
            log.info("service_levels_changed", levels=len(new.service_levels),
                     before=len(old.service_levels))
            changes.append("service levels")
        changes += await self._desks()
        for name, (ctx, cert, key) in certificates.items():
            ctx.load_cert_chain(cert, key)  # checked above: new handshakes use it
            log.info("certificate_reloaded", listener=name, cert_file=str(cert))
            changes.append(f"{name} certificate")
        if restart:
            log.warning("reload_needs_restart", settings=restart,
                        detail="not applied; restart the gateway to apply them")
        self.config = effective
        log.info("reloaded", changes=len(changes), needs_restart=len(restart),
                 partners=len(app[PARTNERS].by_id))
        return {"refused": None, "changes": changes, "needs_restart": restart}

    def _certificates(self, new: Config) -> dict[str, tuple[ssl.SSLContext, Path, Path]]:
        """Each listener's certificate files, checked by loading them into a context of
        their own (so that a bad file refuses the reload before anything changed)."""
        out: dict[str, tuple[ssl.SSLContext, Path, Path]] = {}
        for name, section in (("server", new.server), ("metrics", new.metrics)):
            ctx = self.tls[name]
            cert, key = section.tls_cert_file, section.tls_key_file
            if ctx is None or cert is None or key is None:
                continue  # a listener that gains or loses TLS needs a restart
            try:
                ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
            except (OSError, ssl.SSLError) as exc:
                where = "[server]" if name == "server" else "[metrics]"
                raise GatewayError(f"{new.path}: {where} tls_cert_file: cannot load "
                                   f"{cert} with {key} ({_reason(exc)})") from None
            out[name] = (ctx, cert, key)
        return out

    async def _partners(self, fresh: Partners, new: Config) -> list[str]:
        """Partners added, removed or changed; ``new`` is the configuration in force
        after the reload (partners and rosters new, federation settings as they were)."""
        app = self.app
        partners, loops = app[PARTNERS], app[PARTNER_LOOPS]
        current = dict(partners.by_id)
        changes: list[str] = []
        gone = [p for p in current if p not in fresh.by_id]
        changed = [p for p in current if p in fresh.by_id
                   and _trust(current[p]) != _trust(fresh.by_id[p])]
        added = [p for p in fresh.by_id if p not in current]
        held = await _queued(app[STORE]) if gone or changed else {}
        for pid in gone + changed:
            await loops.remove(pid)
            await partners.drop(pid, new)
        for pid in gone:
            log.info("partner_removed", partner=pid, held=held.get(pid, 0),
                     detail="its queued messages stay in the store")
            changes.append(f"partner {pid} removed")
        for pid in changed + added:
            partner = fresh.by_id[pid]
            await partners.adopt(partner, new)
            loops.add(partner)
            if pid in changed:
                log.info("partner_changed", partner=pid, url=partner.config.url,
                         fingerprint=normalize_fingerprint(partner.config.fingerprint),
                         held=held.get(pid, 0))
                changes.append(f"partner {pid} changed")
            else:
                log.info("partner_added", partner=pid, url=partner.config.url,
                         fingerprint=normalize_fingerprint(partner.config.fingerprint),
                         source=partner.source)
                changes.append(f"partner {pid} added")
        partners.config = new
        # Partners whose connections use TLS files of ours (a CA, a client certificate)
        # get a new session at their next request: files replaced on disk are read then.
        for pid, partner in partners.by_id.items():
            files = new.partner_tls(partner.config)
            if pid not in added and (files.ca_file or files.client_cert_file) is not None:
                await partners.close_session(pid)
        return changes

    async def _desks(self) -> list[str]:
        """Desks live in the database (``gateway desks add``) and are picked up as they
        change; a reload reads them again and says what changed since the last one."""
        directory = self.app[DIRECTORY]
        before = self._desk_names
        if before is None:
            before = set((await directory.get()).desks)
        after = self._desk_names = set((await directory.reload()).desks)
        if before == after:
            return []
        log.info("desks_changed", added=sorted(after - before), removed=sorted(before - after))
        return ["desks"]


async def _queued(store: StatusStore) -> dict[str, int]:
    return {pid: stats.depth for pid, stats in (await store.queue_stats()).items()}


def _reason(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return exc.strerror or str(exc)


RELOADER = web.AppKey("reloader", Reloader)  # set by `gateway run` (gateway.cli.main)
