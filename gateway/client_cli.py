"""The ``gateway-client`` command: the officers' thin client.

An officer's keys are made here, on the officer's own machine, and never leave it: the
private keys are written to a passphrase-protected key file. Sending, reading and
answering messages through a gateway build on this (enrollment comes with the client
channel).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway import __version__
from gateway.cliutil import EXIT_OK, get_passphrase, run_command
from gateway.crypto.keyfile import KeyBundle, read_public, save_bundle
from gateway.crypto.keys import (
    ROLE_OFFICER_ENCRYPTION,
    ROLE_OFFICER_SIGNING,
    EncryptionPublicKey,
    OfficerEncryptionKey,
    OfficerSigningKey,
    VerifyKey,
)
from gateway.logs import configure_logging

PROG = "gateway-client"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Focal-point officer's client.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = sub.add_parser("keys", help="make or inspect this officer's keys")
    keys_sub = p.add_subparsers(dest="keys_command", metavar="KEYS_COMMAND", required=True)

    new = keys_sub.add_parser("new", help="generate signing and encryption keys")
    new.add_argument("--out", type=Path, required=True, metavar="FILE", help="key file to write")
    new.add_argument("--owner", required=True, help="a label for the key file (no names)")
    group = new.add_mutually_exclusive_group()
    group.add_argument("--passphrase-env", metavar="NAME")
    group.add_argument("--passphrase-file", type=Path, metavar="FILE")
    group.add_argument("--insecure-dev-keys", action="store_true",
                       help="store the keys UNENCRYPTED (demo and tests only)")

    show = keys_sub.add_parser("show", help="print key ids and fingerprints")
    show.add_argument("file", type=Path, metavar="FILE")
    return parser


def cmd_keys(args: argparse.Namespace) -> int:
    if args.keys_command == "new":
        passphrase = None if args.insecure_dev_keys else get_passphrase(
            f"the new key file {args.out}", env=args.passphrase_env,
            file=args.passphrase_file, confirm=True,
        )
        signing, encryption = OfficerSigningKey.generate(), OfficerEncryptionKey.generate()
        bundle = KeyBundle(
            owner=args.owner,
            keys={ROLE_OFFICER_SIGNING: signing, ROLE_OFFICER_ENCRYPTION: encryption},
        )
        save_bundle(args.out, bundle, passphrase)
        print(f"keys written to {args.out}")
    owner, public, protection = read_public(args.out if args.keys_command == "new" else args.file)
    print(f"owner: {owner} ({protection})")
    for role, b64 in sorted(public.items()):
        key = (
            EncryptionPublicKey.from_b64(b64, role)
            if role == ROLE_OFFICER_ENCRYPTION
            else VerifyKey.from_b64(b64, role)
        )
        print(f"{role}: id {key.key_id}  fingerprint {key.fingerprint}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging("warning", "auto")
    return run_command(PROG, lambda: cmd_keys(args))


if __name__ == "__main__":
    sys.exit(main())
