"""The ``gateway`` command: operators set up, run and inspect one gateway.

Subcommands that act on one gateway take ``--config FILE``. Errors print one line and
exit with status 2 (configuration) or 1 (anything else); see gateway.cliutil.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import functools
import json
import os
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from gateway import __version__, interpreter
from gateway.app import create_app, ssl_context
from gateway.appkeys import METRICS
from gateway.channels import admin
from gateway.channels import metrics as metrics_channel
from gateway.channels.listener import (
    DESCRIPTOR_RESERVE,
    REFUSED_REASONS,
    AcceptErrorLog,
    CappedSite,
    ConnectionCaps,
    raise_descriptor_limit,
)
from gateway.cli.admin import partners_command, reload_command, status_command
from gateway.cli.casework import reconcile_command, report_command
from gateway.cli.ledger import gateway_history, open_ledger
from gateway.cli.queue import queue_command
from gateway.cliutil import (
    EXIT_OK,
    get_passphrase,
    parse_args,
    run_command,
    until_stopped,
)
from gateway.clock import SystemClock
from gateway.config import Config, PartnerSection, build_section, load_config, parse_config
from gateway.config_edit import add_partner, remove_partner
from gateway.crypto.keyfile import (
    KeyBundle,
    load_bundle,
    read_public,
    replace_bundle,
    save_bundle,
)
from gateway.crypto.keys import (
    ROLE_ANCHOR_SIGNING,
    ROLE_GATEWAY_SIGNING,
    AnchorSigningKey,
    GatewaySigningKey,
    VerifyKey,
    normalize_fingerprint,
)
from gateway.errors import ConfigError, GatewayError, KeyFileError
from gateway.federation.roster import RosterEntry, load_rosters, make_roster, peek_roster
from gateway.files import staged_directory, write_port_file
from gateway.httpbody import server_settings
from gateway.logs import configure_logging, get_logger
from gateway.officers import audit
from gateway.officers.admission import admit_by_operator
from gateway.officers.directory import build_directory
from gateway.officers.enrollment import new_code
from gateway.protocol.names import is_name
from gateway.protocol.notices import MAX_NOTE
from gateway.protocol.officers import code_hash
from gateway.protocol.rotation import rotate_bundle
from gateway.reload import RELOADER, Reloader
from gateway.store.sqlite import SqliteStore
from gateway.tls import TlsFileError, check_server_pair, read_bounded, server_tls

PROG = "gateway"


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", "-c", type=Path, default=Path("gateway.toml"), metavar="FILE",
        help="the gateway's TOML configuration (default: ./gateway.toml)",
    )


def _add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the listing as JSON")


def _print_json(doc: object) -> None:
    print(json.dumps(doc, indent=2, ensure_ascii=False))


def _add_passphrase_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--passphrase-env", metavar="NAME",
                       help="read the passphrase from environment variable NAME")
    group.add_argument("--passphrase-file", type=Path, metavar="FILE",
                       help="read the passphrase from the first line of FILE")
    group.add_argument("--insecure-dev-keys", action="store_true",
                       help="the key file is UNENCRYPTED (demo and tests only)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Focal-point gateway: operate one gateway."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("init", help="make keys and a configuration for a new gateway")
    p.add_argument("directory", type=Path, metavar="DIR", help="directory to create them in")
    p.add_argument("--id", dest="gateway_id", help="gateway id, e.g. vn-mps (default: DIR name)")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8443, help="listen port (default 8443)")
    p.add_argument("--metrics-port", type=int, default=None,
                   help="port of the /metrics listener on 127.0.0.1 (default 9464; 0 picks a "
                   "free one, and is the default with --port 0)")
    p.add_argument("--public-url", help="URL partners use (default http://HOST:PORT, "
                   "https:// with --tls-cert)")
    p.add_argument("--tls-cert", type=Path, metavar="FILE",
                   help="PEM certificate chain to serve TLS with (copied into DIR/tls/); "
                   "needed to listen off loopback")
    p.add_argument("--tls-key", type=Path, metavar="FILE",
                   help="the certificate's PEM private key, unencrypted (copied into "
                   "DIR/tls/, mode 0600)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--passphrase-env", metavar="NAME",
                       help="read the passphrase from environment variable NAME")
    group.add_argument("--passphrase-file", type=Path, metavar="FILE",
                       help="read the passphrase from the first line of FILE")
    group.add_argument("--insecure-dev-keys", action="store_true",
                       help="store the key UNENCRYPTED (demo and tests only)")

    p = sub.add_parser("keys", help="inspect the gateway's keys")
    keys_sub = p.add_subparsers(dest="keys_command", metavar="KEYS_COMMAND", required=True)
    show = keys_sub.add_parser("show", help="print key ids and fingerprints (no passphrase)")
    _add_config(show)
    rotate = keys_sub.add_parser(
        "rotate", help="replace the gateway signing key by a new one, announced in a "
        "statement signed by the old key (partners follow it); restart the gateway after")
    _add_config(rotate)

    p = sub.add_parser("roster", help="trust anchors: make an anchor key, sign and show rosters")
    roster_sub = p.add_subparsers(dest="roster_command", metavar="ROSTER_COMMAND",
                                  required=True)
    anchor = roster_sub.add_parser("anchor-init", help="make a trust anchor's key file")
    anchor.add_argument("key_file", type=Path, metavar="KEY_FILE")
    anchor.add_argument("--id", dest="anchor_id", required=True,
                        help="the anchor's name, e.g. asean-ta")
    _add_passphrase_options(anchor)
    sign = roster_sub.add_parser("sign", help="sign a roster of gateways with an anchor key")
    sign.add_argument("gateways", type=Path, metavar="GATEWAYS_TOML",
                      help="TOML file of [[gateways]] tables: id, url, fingerprint")
    sign.add_argument("--anchor-key", type=Path, required=True, metavar="KEY_FILE")
    sign.add_argument("--days", type=float, default=30.0,
                      help="how long the roster is valid (default 30)")
    sign.add_argument("--out", type=Path, required=True, metavar="FILE",
                      help="where to write the signed roster")
    _add_passphrase_options(sign)
    show_roster = roster_sub.add_parser(
        "show", help="print a roster's anchor fingerprint and gateways (NOT verified)")
    show_roster.add_argument("roster", type=Path, metavar="FILE")
    _add_json(show_roster)

    p = sub.add_parser("config", help="check a configuration file")
    config_sub = p.add_subparsers(dest="config_command", metavar="CONFIG_COMMAND", required=True)
    check = config_sub.add_parser("check", help="validate the configuration and unlock its keys")
    _add_config(check)

    p = sub.add_parser("ledger", help="audit the delivery ledger")
    ledger_sub = p.add_subparsers(dest="ledger_command", metavar="LEDGER_COMMAND", required=True)
    verify = ledger_sub.add_parser(
        "verify", help="recompute the whole tree and check every signed checkpoint"
    )
    _add_config(verify)
    prove = ledger_sub.add_parser(
        "prove", help="print a message's events with inclusion proofs, as JSON"
    )
    prove.add_argument("message_id", metavar="MESSAGE_ID")
    _add_config(prove)
    checkpoint = ledger_sub.add_parser("checkpoint", help="sign a checkpoint of the ledger now")
    _add_config(checkpoint)

    p = sub.add_parser("desks", help="create and list desks")
    desks_sub = p.add_subparsers(dest="desks_command", metavar="DESKS_COMMAND", required=True)
    add = desks_sub.add_parser("add", help="create a desk")
    add.add_argument("name", metavar="NAME", help="desk name, e.g. border-liaison")
    add.add_argument("--supervisor", metavar="DESK", help="desk notified when service levels break")
    _add_config(add)
    desks_list = desks_sub.add_parser("list", help="list desks and their officers")
    _add_config(desks_list)
    _add_json(desks_list)

    p = sub.add_parser("officers", help="invite, list and revoke officers")
    off_sub = p.add_subparsers(dest="officers_command", metavar="OFFICERS_COMMAND", required=True)
    invite = off_sub.add_parser("invite", help="make a one-time enrollment code")
    invite.add_argument("--desk", action="append", required=True, metavar="DESK",
                        help="desk the officer joins (repeat for several)")
    invite.add_argument("--hours", type=float, metavar="H",
                        help="code validity in hours (default from the config)")
    _add_config(invite)
    officers_list = off_sub.add_parser("list", help="list officers and their bindings")
    _add_config(officers_list)
    _add_json(officers_list)
    revoke = off_sub.add_parser("revoke", help="end an officer's binding at once")
    revoke.add_argument("officer", metavar="OFFICER_ID")
    _add_config(revoke)
    admit = off_sub.add_parser(
        "admit", help="admit a waiting officer to a desk that has no member (signed with the "
        "gateway's key and shown to every client as admitted by the operator)")
    admit.add_argument("officer", metavar="OFFICER_ID")
    admit.add_argument("--desk", required=True, metavar="DESK")
    _add_config(admit)

    p = sub.add_parser("partners", help="partner gateways: state, queues, checkpoints "
                       "(from the running gateway)")
    _add_config(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    partners_sub = p.add_subparsers(dest="partners_command")
    retry = partners_sub.add_parser("retry", help="wake a partner's sender now (ends backoff)")
    retry.add_argument("partner", metavar="ID")
    _add_config(retry)
    padd = partners_sub.add_parser(
        "add", help="add a [[partners]] table to the configuration file (then `gateway "
        "reload` or SIGHUP applies it)")
    padd.add_argument("partner", metavar="ID", help="the partner gateway's id, e.g. kh-cnp")
    padd.add_argument("url", metavar="URL", help="its base URL, e.g. https://gw.kh.example:8443")
    padd.add_argument("--fingerprint", required=True, metavar="FP",
                      help="its key fingerprint, read to you by its operator (quote it)")
    padd.add_argument("--ca-file", type=Path, metavar="FILE",
                      help="the PEM CA certificate(s) its https:// certificate comes from, "
                      "if not a public CA (written as this partner's ca_file)")
    _add_config(padd)
    premove = partners_sub.add_parser(
        "remove", help="remove a partner's [[partners]] table from the configuration file "
        "(then `gateway reload`; its queued messages stay in the database)")
    premove.add_argument("partner", metavar="ID")
    _add_config(premove)

    p = sub.add_parser("reload", help="make the running gateway read its configuration "
                       "again (as SIGHUP does) and print what changed")
    _add_config(p)

    p = sub.add_parser("report", help="requests by requesting and executing gateway and "
                       "state, and how many are overdue (from the running gateway)")
    _add_config(p)
    p.add_argument("--json", action="store_true", help="the report as JSON")
    p = sub.add_parser("reconcile", help="compare what this gateway and a partner "
                       "exchanged; flag messages one side has and the other does not")
    _add_config(p)
    p.add_argument("partner", metavar="PARTNER")
    p.add_argument("--days", type=int, default=30, metavar="N",
                   help="the last N days, up to 10 minutes ago (default 30)")
    p.add_argument("--json", action="store_true", help="the comparison as JSON")
    p = sub.add_parser("queue", help="messages waiting for partners: list, show, return "
                       "(through the running gateway)")
    queue_sub = p.add_subparsers(dest="queue_command", metavar="ACTION", required=True)
    q = queue_sub.add_parser("list", help="queued messages (metadata only), in sending order")
    q.add_argument("partner", nargs="?", metavar="PARTNER", help="only those for PARTNER")
    _add_json(q)
    _add_config(q)
    q = queue_sub.add_parser("show", help="one queued message's metadata")
    q.add_argument("message_id", metavar="ID")
    q.add_argument("--json", action="store_true", help="print it as JSON")
    _add_config(q)
    q = queue_sub.add_parser(
        "return", help="take a message out of its partner's queue and send its sender a "
        "signed non-delivery notice with REASON (which the sending desk reads)")
    q.add_argument("message_id", metavar="ID")
    q.add_argument("--reason", required=True, metavar="TEXT",
                   help=f"why, one line of at most {MAX_NOTE} characters; the sending desk's "
                   "officers see it, the ledger does not")
    q.add_argument("--json", action="store_true", help="print the answer as JSON")
    _add_config(q)

    p = sub.add_parser("status", help="one-screen summary: ledger, partners, service-level "
                       "breaches, response times (from the running gateway)")
    _add_config(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON")

    p = sub.add_parser("run", help="serve the gateway until interrupted")
    _add_config(p)
    p.add_argument("--port-file", type=Path, metavar="FILE",
                   help="write the bound port to FILE once listening")
    p = sub.add_parser(
        "demo", help="start three gateways on 127.0.0.1 (vn-mps, kh-cnp, la-mps) and play "
        "a scenario: a flash hotline, an MLA request, a partner outage")
    p.add_argument("--dir", type=Path, metavar="DIR",
                   help="keep configs, development keys, databases and logs in DIR "
                   "(default: a temporary directory, removed at exit); running again on "
                   "the same DIR reuses its keys and databases")
    p.add_argument("--once", action="store_true",
                   help="exit after the scenario (status 0 if every step succeeded) "
                   "instead of serving until Ctrl-C")
    p.add_argument("--free-ports", action="store_true",
                   help="pick free ports instead of 8441-8443 (gateways) and 9464-9466 "
                   "(metrics)")
    p.add_argument("--setup-only", action="store_true",
                   help="only write the three configurations, keys and desks into DIR "
                   "and exit (what docker-compose.yml runs first)")
    p.add_argument("--prometheus-targets", type=Path, metavar="FILE",
                   help="write the gateways' metrics targets for Prometheus's file-based "
                   "service discovery to FILE (default: DIR/prometheus-targets.json; "
                   "config/prometheus.yml reads config/targets/*.json)")
    return parser


# --- init ------------------------------------------------------------------------------

_CONFIG_TEMPLATE = """\
# Focal-point gateway configuration for {gateway_id}, made by `gateway init`.
# Every key is explained in config/gateway.example.toml (in the Docker image:
# /usr/local/share/fpg/gateway.example.toml).

[gateway]
id = "{gateway_id}"
public_url = "{public_url}"
data_dir = "data"

[keys]
file = "keys/gateway.key"
{keys_extra}
[server]
host = "{host}"
port = {port}
{server_extra}
[metrics]   # Prometheus scrapes http://127.0.0.1:{metrics_port}/metrics (loopback: no token)
host = "127.0.0.1"
port = {metrics_port}

[log]
level = "info"
format = "auto"
"""


#: Where `gateway init --tls-cert/--tls-key` copies the pair, relative to DIR.
TLS_CERT, TLS_KEY = "tls/gateway.crt", "tls/gateway.key"


def _init_tls(cert: Path | None, key: Path | None) -> tuple[bytes, bytes] | None:
    """The certificate chain and key to copy (None: no TLS), after checking that they
    serve TLS now: they load, the key is the certificate's, the chain is valid today.

    Copied, not referenced: the gateway's directory then holds all it needs (one
    volume for a container, whose user may not read the originals, one directory to
    back up), and the key gets mode 0600 whatever the original had. Renewing means
    replacing DIR/tls/ (the README says so)."""
    if (cert is None) != (key is None):
        raise ConfigError("--tls-cert and --tls-key go together")
    if cert is None or key is None:
        return None
    try:
        check_server_pair(cert, key)
        return read_bounded(cert), read_bounded(key)
    except TlsFileError as exc:
        raise ConfigError(f"--tls-cert/--tls-key: {exc.message}") from None


def _write_tls(directory: Path, cert: bytes, key: bytes) -> None:
    (directory / "tls").mkdir(mode=0o700)
    (directory / TLS_CERT).write_bytes(cert)
    fd = os.open(directory / TLS_KEY, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)


def cmd_init(args: argparse.Namespace) -> int:
    """The configuration is checked before anything is written; then everything is
    written into a directory beside DIR and renamed into place at the end
    (gateway.files.staged_directory). A failure at any step leaves nothing, so the
    operator fixes what was wrong and runs the same command again."""
    directory: Path = args.directory
    gateway_id = args.gateway_id or directory.resolve().name
    if not is_name(gateway_id):
        raise ConfigError(
            f"gateway id {gateway_id!r}: must be 1-63 lowercase letters, digits or inner hyphens"
        )
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}: must be from 0 to 65535")
    metrics_port = args.metrics_port
    if metrics_port is None:
        metrics_port = 9464 if args.port else 0
    if not 0 <= metrics_port <= 65535:
        raise ConfigError(f"--metrics-port {metrics_port}: must be from 0 to 65535")
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory}: exists and is not a directory")
    config_path = directory / "gateway.toml"
    key_path = directory / "keys" / "gateway.key"
    for existing in (config_path, key_path):
        if existing.exists():
            raise ConfigError(f"{existing}: already exists; refusing to overwrite")
    if args.insecure_dev_keys:
        keys_extra = "insecure_dev_mode = true   # plaintext key file: demo and tests ONLY\n"
    elif args.passphrase_env:
        keys_extra = f'passphrase_env = "{args.passphrase_env}"\n'
    elif args.passphrase_file:
        keys_extra = f'passphrase_file = "{args.passphrase_file.resolve()}"\n'
    else:
        keys_extra = "# no passphrase source: `gateway run` will prompt for it\n"
    tls = _init_tls(args.tls_cert, args.tls_key)
    server_extra = ""
    if tls is not None:
        server_extra = f'tls_cert_file = "{TLS_CERT}"\ntls_key_file = "{TLS_KEY}"\n'
    scheme = "http" if tls is None else "https"
    public_url = args.public_url or f"{scheme}://{args.host}:{args.port}"
    text = _CONFIG_TEMPLATE.format(
        gateway_id=gateway_id, public_url=public_url, host=args.host, port=args.port,
        metrics_port=metrics_port, keys_extra=keys_extra, server_extra=server_extra,
    )
    # What we write must be valid: checked before a passphrase is asked for.
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # a quote in --host or --public-url
        raise ConfigError(f"{config_path}: not valid TOML ({exc}); check --host and "
                          "--public-url") from None
    parse_config(doc, config_path.resolve())
    passphrase: bytes | None = None
    if args.passphrase_env or args.passphrase_file or not args.insecure_dev_keys:
        passphrase = get_passphrase(f"the new key of {gateway_id}", env=args.passphrase_env,
                                    file=args.passphrase_file, confirm=True)
    key = GatewaySigningKey.generate()
    bundle = KeyBundle(owner=gateway_id, keys={ROLE_GATEWAY_SIGNING: key})
    with staged_directory(directory) as staging:
        save_bundle(staging / "keys" / "gateway.key", bundle, passphrase)
        (staging / "data").mkdir()
        if tls is not None:
            _write_tls(staging, *tls)
        (staging / "gateway.toml").write_text(text, encoding="utf-8")
    print(f"gateway {gateway_id} initialised in {directory}")
    print(f"  config:      {config_path}")
    if tls is not None:
        print(f"  TLS:         {directory / TLS_CERT} (key {directory / TLS_KEY})")
    warning = "  (INSECURE development key)" if passphrase is None else ""
    print(f"  key file:    {key_path}{warning}")
    print(f"  key id:      {key.key_id}")
    print(f"  fingerprint: {key.public.fingerprint}")
    return EXIT_OK


# --- keys, config ----------------------------------------------------------------------


def cmd_keys(args: argparse.Namespace) -> int:
    if args.keys_command == "rotate":
        return cmd_keys_rotate(args)
    config = load_config(args.config)
    _, public, protection = read_public(config.keys.file)
    print(f"gateway:    {config.gateway.id}")
    print(f"key file:   {config.keys.file} ({protection})")
    for role, b64 in sorted(public.items()):
        key = VerifyKey.from_b64(b64, role)
        print(f"{role}:")
        print(f"  key id:      {key.key_id}")
        print(f"  fingerprint: {key.fingerprint}")
        if role == ROLE_GATEWAY_SIGNING:
            history = gateway_history(config, key)
            for old in history[:-1]:
                print(f"  replaced:    {old.key_id} ({old.fingerprint})")
    return EXIT_OK


def _unlock(config: Config) -> tuple[KeyBundle, bytes | None]:
    """The gateway's key bundle, opened with the passphrase source the config names, and
    that passphrase (None for a development key file)."""
    keys = config.keys
    passphrase: bytes | None = None
    if keys.insecure_dev_mode and read_public(keys.file)[2].startswith("INSECURE"):
        bundle = load_bundle(keys.file, None, allow_insecure=True)
    else:
        passphrase = get_passphrase(
            f"key file {keys.file}", env=keys.passphrase_env, file=keys.passphrase_file
        )
        bundle = load_bundle(keys.file, passphrase, allow_insecure=keys.insecure_dev_mode)
    if bundle.owner != config.gateway.id:
        raise KeyFileError(
            f"{keys.file}: belongs to {bundle.owner!r}, not to gateway {config.gateway.id!r}"
        )
    return bundle, passphrase


def unlock_keys(config: Config) -> KeyBundle:
    """Open the gateway's key file with the passphrase source the config names."""
    return _unlock(config)[0]


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    bundle, passphrase = _unlock(config)
    old = bundle.get(ROLE_GATEWAY_SIGNING)
    rotated = rotate_bundle(bundle, config.gateway.id, SystemClock().now_ms())
    new = rotated.get(ROLE_GATEWAY_SIGNING)
    retired = config.keys.file.with_name(f"{config.keys.file.name}.{old.key_id}.retired")
    replace_bundle(config.keys.file, rotated, passphrase, keep_old_as=retired)
    print(f"gateway {config.gateway.id}: signing key rotated")
    print(f"  old key id:      {old.key_id} ({old.public.fingerprint})")
    print(f"  new key id:      {new.key_id}")
    print(f"  new fingerprint: {new.public.fingerprint}")
    print(f"  rotations:       {len(rotated.history)}")
    print(f"  old key file:    {retired} (destroy it once partners follow the new key)")
    print("Restart the gateway to sign with the new key; partners follow it on their own.")
    return EXIT_OK


def cmd_config_check(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    unlock_keys(config)
    rosters = load_rosters(config, SystemClock().now_ms())
    listed = sum(len(r.gateways) for _, r in rosters)
    extra = f", {listed} gateway(s) in {len(rosters)} roster(s)" if rosters else ""
    print(f"{config.path}: ok (gateway {config.gateway.id}{extra})")
    return EXIT_OK


# --- rosters ---------------------------------------------------------------------------


def _key_passphrase(args: argparse.Namespace, what: str, *, confirm: bool) -> bytes | None:
    if args.insecure_dev_keys:
        return None
    return get_passphrase(what, env=args.passphrase_env, file=args.passphrase_file,
                          confirm=confirm)


def cmd_roster(args: argparse.Namespace) -> int:
    now = SystemClock().now_ms()
    if args.roster_command == "anchor-init":
        if not is_name(args.anchor_id):
            raise ConfigError(f"anchor id {args.anchor_id!r}: must be 1-63 lowercase "
                              "letters, digits or inner hyphens")
        passphrase = _key_passphrase(args, f"the new key of anchor {args.anchor_id}",
                                     confirm=True)
        key = AnchorSigningKey.generate()
        save_bundle(args.key_file, KeyBundle(args.anchor_id, {ROLE_ANCHOR_SIGNING: key}),
                    passphrase)
        warning = "  (INSECURE development key)" if passphrase is None else ""
        print(f"trust anchor {args.anchor_id}: key file {args.key_file}{warning}")
        print(f"  fingerprint: {key.public.fingerprint}")
        return EXIT_OK
    if args.roster_command == "show":
        roster = peek_roster(args.roster)
        if args.json:
            _print_json({"anchor": roster.anchor, "verified": False,
                         "anchor_fingerprint": roster.anchor_key.fingerprint,
                         "issued": roster.issued, "valid_until": roster.valid_until,
                         "gateways": [g.to_json() for g in roster.gateways]})
            return EXIT_OK
        print(f"roster of anchor {roster.anchor} (NOT verified: check the fingerprint)")
        print(f"  anchor fingerprint: {roster.anchor_key.fingerprint}")
        print(f"  issued {_fmt_time(roster.issued)}, valid until "
              f"{_fmt_time(roster.valid_until)}")
        for g in roster.gateways:
            print(f"  {g.gateway}  {g.url}  {g.fingerprint}  until {_fmt_time(g.not_after)}")
        if not roster.gateways:
            print("  (no gateways)")
        return EXIT_OK
    passphrase = _key_passphrase(args, f"anchor key file {args.anchor_key}", confirm=False)
    bundle = load_bundle(args.anchor_key, passphrase, allow_insecure=args.insecure_dev_keys)
    signer = bundle.get(ROLE_ANCHOR_SIGNING)
    if not isinstance(signer, AnchorSigningKey):
        raise KeyFileError(f"{args.anchor_key}: holds no trust anchor key")
    if not 0 < args.days <= 3650:
        raise ConfigError(f"--days {args.days}: must be more than 0 and at most 3650")
    until = now + int(args.days * 86_400_000)
    entries = [RosterEntry(p.id, p.url, p.fingerprint, now, until)
               for p in _roster_gateways(args.gateways)]
    note = make_roster(bundle.owner, signer, entries, now, until)
    if args.out.exists():
        raise ConfigError(f"{args.out}: already exists; refusing to overwrite")
    args.out.write_bytes(note)
    print(f"roster of {bundle.owner} with {len(entries)} gateway(s) written to {args.out}; "
          f"valid until {_fmt_time(until)}")
    return EXIT_OK


def _roster_gateways(path: Path) -> list[PartnerSection]:
    """The ``[[gateways]]`` tables (id, url, fingerprint) of a roster source file."""
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    tables = doc.get("gateways")
    if set(doc) != {"gateways"} or not isinstance(tables, list):
        raise ConfigError(f"{path}: expected only [[gateways]] tables")
    gateways = [build_section(PartnerSection, t, f"[[gateways]] #{i + 1}", path)
                for i, t in enumerate(tables)]
    return [PartnerSection(g.id, g.url, normalize_fingerprint(g.fingerprint))
            for g in gateways]


# --- ledger ----------------------------------------------------------------------------


def _progress_printer() -> Callable[[int, int], None]:
    tty = sys.stderr.isatty()

    def show(done: int, total: int) -> None:
        percent = 100 * done // total if total else 100
        end = "\r" if tty and done < total else "\n"
        print(f"verifying ledger: {done:,} / {total:,} entries ({percent}%)",
              end=end, file=sys.stderr, flush=True)

    return show


def cmd_ledger(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    bundle = unlock_keys(config) if args.ledger_command == "checkpoint" else None

    async def go() -> int:
        ledger = await open_ledger(config, bundle)
        try:
            if args.ledger_command == "verify":
                count = await ledger.verify(_progress_printer())
                checkpoints = len(await ledger.store.checkpoints())
                print(f"ledger ok: {count} entries, {checkpoints} signed checkpoints verified")
            elif args.ledger_command == "prove":
                print(json.dumps(await ledger.prove_message(args.message_id), indent=2,
                                 ensure_ascii=False))
            else:
                checkpoint = await ledger.make_checkpoint()
                sys.stdout.write(checkpoint.note.decode("utf-8"))
        finally:
            await ledger.store.close()
        return EXIT_OK

    return asyncio.run(go())


# --- desks and officers ----------------------------------------------------------------


def _fmt_time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ms / 1000))


def cmd_desks(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    clock = SystemClock()

    async def go() -> None:
        store = await SqliteStore.open(config.database)
        try:
            if args.desks_command == "add":
                if not is_name(args.name):
                    raise ConfigError(f"desk name {args.name!r}: must be 1-63 lowercase "
                                      "letters, digits or inner hyphens")
                await store.add_desk(args.name, args.supervisor, clock.now_ms())
                print(f"desk {args.name}@{config.gateway.id} created")
                return
            officers = await store.officers()
            now = clock.now_ms()
            desks = [(desk, [o.id for o in officers
                             if desk.name in {a.desk for a in o.admissions}
                             and o.revoked_ms is None and o.not_after_ms > now])
                     for desk in await store.desks()]
            if args.json:
                _print_json({"gateway": config.gateway.id, "desks": [
                    {"desk": f"{desk.name}@{config.gateway.id}",
                     "supervisor": desk.supervisor, "officers": members}
                    for desk, members in desks]})
                return
            for desk, members in desks:
                supervisor = f" (supervisor {desk.supervisor})" if desk.supervisor else ""
                print(f"{desk.name}@{config.gateway.id}{supervisor}: "
                      f"{len(members)} officer(s) {' '.join(members)}".rstrip())
            if not desks:
                print("(no desks)")
        finally:
            await store.close()

    asyncio.run(go())
    return EXIT_OK


def cmd_officers(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    configure_logging(config.log.level, config.log.format)  # for the audit lines
    clock = SystemClock()

    async def go() -> None:
        store = await SqliteStore.open(config.database)
        try:
            now = clock.now_ms()
            if args.officers_command == "invite":
                hours = args.hours if args.hours is not None else config.officers.invite_hours
                if not 0 < hours <= 24 * 30:
                    raise ConfigError(f"--hours {hours}: must be more than 0 and at most 720")
                code = new_code()
                expires = now + int(hours * 3_600_000)
                await store.add_enrollment_code(code_hash(code), args.desk, now, expires)
                audit.invited(code, args.desk, expires)
                print(code)
                print(f"one-time enrollment code for {', '.join(args.desk)}; valid until "
                      f"{_fmt_time(expires)}. Give it to the officer by a separate channel.",
                      file=sys.stderr)
            elif args.officers_command == "revoke":
                if not await store.revoke_officer(args.officer, now):
                    raise GatewayError(f"no active officer {args.officer}")
                audit.revoked(args.officer)
                print(f"officer {args.officer} revoked")
            elif args.officers_command == "admit":
                key = _unlock(config)[0].get(ROLE_GATEWAY_SIGNING)
                assert isinstance(key, GatewaySigningKey)
                desk = args.desk if "@" in args.desk else f"{args.desk}@{config.gateway.id}"
                directory = build_directory(config.gateway.id, await store.desks(),
                                            await store.officers(), now)
                if directory.desk(desk) is None:
                    raise GatewayError(f"no desk {desk}")
                await admit_by_operator(store, directory, key, args.officer, desk, now)
                audit.admitted(audit.OPERATOR_CLI, args.officer, desk, "operator")
                print(f"officer {args.officer} admitted to {desk} by the operator")
            else:
                listed = await store.officers()
                if args.json:
                    _print_json({"gateway": config.gateway.id, "officers": [{
                        "officer": o.id,
                        "state": "revoked" if o.revoked_ms else (
                            "expired" if o.not_after_ms <= now else "active"),
                        "revoked": o.revoked_ms,
                        "desks": [{"desk": d, "admitted": d in {a.desk for a in o.admissions}}
                                  for d in o.desks],
                        "signing_key": o.sign_key_id, "not_after": o.not_after_ms,
                    } for o in listed]})
                    return
                for o in listed:
                    state = ("revoked " + _fmt_time(o.revoked_ms)) if o.revoked_ms else (
                        "expired" if o.not_after_ms <= now else "active")
                    admitted = {a.desk for a in o.admissions}
                    desks = [d if d in admitted else f"{d}(pending)" for d in o.desks]
                    print(f"{o.id}  {state:9}  desks {','.join(desks) or '-'}  "
                          f"signing key {o.sign_key_id}  until {_fmt_time(o.not_after_ms)}")
                if not listed:
                    print("(no officers)")
        finally:
            await store.close()

    asyncio.run(go())
    return EXIT_OK


# --- run -------------------------------------------------------------------------------


_APPLY_HINT = ("apply it with `gateway reload --config {path}` (or `kill -HUP` the "
               "gateway's process); a gateway that is not running reads it at start")


def cmd_partners(args: argparse.Namespace) -> int:
    if args.partners_command == "add":
        partner = add_partner(args.config, args.partner, args.url, args.fingerprint,
                              args.ca_file)
        print(f"partner {partner.id} ({partner.url}, fingerprint {partner.fingerprint}) "
              f"added to {args.config}")
        print(_APPLY_HINT.format(path=args.config))
        return EXIT_OK
    if args.partners_command == "remove":
        partner = remove_partner(args.config, args.partner)
        print(f"partner {partner.id} removed from {args.config}; its queued messages stay "
              "in the database and go out if it is added again")
        print(_APPLY_HINT.format(path=args.config))
        return EXIT_OK
    config = load_config(args.config)
    retry = args.partner if args.partners_command == "retry" else None
    print(partners_command(config, retry, args.json))
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    print(report_command(load_config(args.config), args.json))
    return EXIT_OK


def cmd_reconcile(args: argparse.Namespace) -> int:
    if not 1 <= args.days <= 3650:
        raise ConfigError("--days: from 1 to 3650")
    print(reconcile_command(load_config(args.config), args.partner, args.days, args.json))
    return EXIT_OK


def cmd_queue(args: argparse.Namespace) -> int:
    print(queue_command(load_config(args.config), args.queue_command,
                        partner=getattr(args, "partner", None),
                        message_id=getattr(args, "message_id", None),
                        reason=getattr(args, "reason", None), as_json=args.json))
    return EXIT_OK


def cmd_reload(args: argparse.Namespace) -> int:
    print(reload_command(load_config(args.config)))
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    print(status_command(load_config(args.config), args.json))
    return EXIT_OK


async def serve(config: Config, bundle: KeyBundle, port_file: Path | None = None) -> None:
    """Run the gateway until SIGINT, SIGTERM or SIGQUIT; SIGHUP reloads the
    configuration (gateway.reload)."""
    log = get_logger("gateway.run")
    app = create_app(config, bundle)
    server_tls_context = ssl_context(config)
    metrics_tls = server_tls(config.metrics.tls_cert_file, config.metrics.tls_key_file) \
        if config.metrics.enabled else None
    reloader = app[RELOADER] = Reloader(app, config.path, server_tls_context, metrics_tls)
    runner = web.AppRunner(app, access_log=None, handle_signals=False,
                           **server_settings(config.server.header_timeout_seconds))
    AcceptErrorLog().install(asyncio.get_running_loop())
    try:
        await runner.setup()  # inside: a resource that fails to start stops those before it
        refused = app[METRICS].refused_connections
        for reason in REFUSED_REASONS:  # scraped as 0 before the first refusal
            refused.labels(reason)
        caps = ConnectionCaps(config.server.max_connections,
                              config.server.max_connections_per_address,
                              refused=lambda reason: refused.labels(reason).inc())
        site = CappedSite(runner, config.server.host, config.server.port, caps,
                          ssl_context=server_tls_context,
                          handshake_seconds=config.server.header_timeout_seconds)
        await site.start()
        port = runner.addresses[0][1]
        scheme = "https" if config.server.tls_cert_file else "http"
        log.info("listening", gateway=config.gateway.id,
                 url=f"{scheme}://{config.server.host}:{port}")
        async with admin.serving(app, config.admin_socket), \
                metrics_channel.serving(app, config.metrics, metrics_tls) as metrics_port:
            if metrics_port is not None:
                log.info("metrics_listening",
                         url=f"http://{config.metrics.host}:{metrics_port}/metrics")
            port_file = port_file or config.server.port_file
            interpreter.settle()
            stopped_by = await until_stopped(
                None if port_file is None else functools.partial(write_port_file, port_file, port),
                reloader.reload)
            log.info("stopping", gateway=config.gateway.id, signal=stopped_by)
    finally:
        await runner.cleanup()


def tighten(data_dir: Path) -> None:
    """Close the data directory and its files to other users, if a hand or an older
    version left them open (SQLite gives its WAL the database file's mode)."""
    paths = [data_dir, *(p for p in data_dir.iterdir() if p.is_file())]
    opened = [p for p in paths if p.stat().st_mode & 0o077]
    for path in opened:
        try:
            path.chmod(0o700 if path == data_dir else 0o600)
        except OSError as exc:
            get_logger("gateway.run").warning("data_open_to_others", path=str(path),
                                              error=exc.strerror)
    if opened:
        get_logger("gateway.run").warning("data_tightened", paths=[p.name for p in opened])


def cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    configure_logging(config.log.level, config.log.format)
    bundle = unlock_keys(config)
    if bundle.insecure:
        get_logger("gateway.run").warning(
            "insecure_development_keys",
            detail="the gateway key file is NOT encrypted; never use this in production",
        )
    faulthandler.enable()  # a fault (SIGSEGV, SIGABRT...) ends the process with a traceback
    config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    tighten(config.data_dir)
    interpreter.tune()
    _, descriptors = raise_descriptor_limit()
    if config.server.max_connections > descriptors - DESCRIPTOR_RESERVE:
        get_logger("gateway.run").warning(
            "connection_cap_above_descriptor_limit", max_connections=config.server.max_connections,
            descriptors=descriptors, detail="past the limit, accepts fail instead of the cap")
    asyncio.run(serve(config, bundle, args.port_file))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    # Imported here: the demo drives the officers' client, which `gateway run` never needs.
    from gateway.cli import demo

    return demo.cmd_demo(args)


COMMANDS = {
    "init": cmd_init,
    "keys": cmd_keys,
    "config": cmd_config_check,
    "roster": cmd_roster,
    "ledger": cmd_ledger,
    "desks": cmd_desks,
    "officers": cmd_officers,
    "partners": cmd_partners,
    "report": cmd_report,
    "reconcile": cmd_reconcile,
    "queue": cmd_queue,
    "status": cmd_status,
    "reload": cmd_reload,
    "run": cmd_run,
    "demo": cmd_demo,
}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    configure_logging("error", "auto")  # commands speak for themselves; `run` reconfigures
    # Whatever a command makes (the database, its WAL, sockets, configs) is the gateway
    # user's alone, whatever umask the operator's shell has.
    os.umask(0o077)
    return run_command(PROG, lambda: COMMANDS[args.command](args))


if __name__ == "__main__":
    sys.exit(main())
