"""The ``gateway-client`` command: one officer's thin client, run on the officer's machine.

It turns command lines into calls of the client library (gateway.client.api) and prints
the results for a person, or as JSON with ``--json``. Keys are made, kept and used here
only: the officer's profile (gateway.client.profile) holds the enrollment and the key
file, messages are sealed and opened locally, and the gateway sees envelopes only.

Commands: ``enroll``, ``desks`` (``--gateway`` for a partner's), ``send hotline|case``,
``inbox`` (unread notices first: breaches, escalations, non-delivery, membership; rows
numbered), ``sent``, ``notice``, ``notices``, ``read``, ``reply``, ``status``, ``watch``
(``--since`` replays stored notices), ``agent`` and ``lock`` (the unlock agent,
gateway.client.agent) and ``keys new|show``. Messages are named by id, unique prefix or
inbox row, and the only desk is the default (gateway.client.listing). Errors are one line
on standard error (with the gateway's stable error code when it refused; a JSON object
``{"error", "message"}`` under ``--json``) and exit status 1, or 2 for a wrong command
line; never a traceback. Times are local with their offset; JSON keeps Unix ms. Text is
UTF-8 everywhere, whatever the locale.

Enrollment is where a secret crosses the network, so it is guarded before any connection:
plain ``http://`` is refused (``insecure_url``) unless the gateway is on this machine, and
the one-time code is never a command-line argument (``ps`` and shell history would keep
it): it is typed at the terminal without echo, or read from standard input or
``--code-file``. Every later command refuses a profile whose URL breaks the same rule.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime
import getpass
import hashlib
import ipaddress
import json
import mimetypes
import os
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from io import TextIOWrapper
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import aiohttp

from gateway import __version__, cliutil
from gateway.client import payload, typed
from gateway.client.agent import (
    DEFAULT_LIFETIME,
    AgentServer,
    agent_keys,
    agent_running,
    lock,
    parse_duration,
    public_keys,
)
from gateway.client.api import (
    ApiError,
    Credentials,
    GatewayClient,
    OpenedMessage,
    enroll,
)
from gateway.client.listing import (
    MessageRef,
    by_prefix,
    did_you_mean,
    load_listing,
    only_desk,
    parse_ref,
    row_id,
    save_listing,
)
from gateway.client.profile import (
    KEY_FILE,
    PROFILE_ENV,
    Profile,
    ProfileError,
    check_free,
    load_profile,
    make_dir,
    officer_keys,
    profile_dir,
    save_profile,
    unlock,
    write_new,
)
from gateway.client.trust import TRUST_FILE, TrustMemory
from gateway.cliutil import EXIT_FAILURE, EXIT_OK, error_line, get_passphrase, run_command
from gateway.crypto.envelope import CASE_STATES, HANDLING_CODES, PRIORITIES
from gateway.crypto.keyfile import INSECURE, KeyBundle, load_bundle, read_public, save_bundle
from gateway.crypto.keys import (
    ROLE_OFFICER_ENCRYPTION,
    ROLE_OFFICER_SIGNING,
    EncryptionPublicKey,
    OfficerEncryptionKey,
    OfficerSigningKey,
    VerifyKey,
    normalize_fingerprint,
)
from gateway.errors import ERRORS, ClientError, ConfigError, CryptoError, GatewayError, KeyFileError
from gateway.logs import configure_logging
from gateway.protocol.admission import safety_code
from gateway.protocol.cases import STATES
from gateway.protocol.history import DEFAULT_HISTORY_DAYS
from gateway.protocol.names import NAME, is_name
from gateway.protocol.notices import RETURNED, open_notice
from gateway.protocol.officers import code_hash, open_binding

PROG = "gateway-client"
EXIT_USAGE = 2
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=300, sock_connect=15)
BACKOFF_FIRST = 0.5  # seconds before the first reconnection of `watch`
BACKOFF_MAX = 5.0  # and never more than this between attempts
MAX_TEXT_BYTES = 4 * payload.MAX_TEXT + 4  # UTF-8 takes at most 4 bytes a character
MAX_ATTACHMENT_NAME = 200
MAX_CODE_BYTES = 1024  # a code is 29 characters: a bigger file or line is the wrong one
_ID = re.compile(r"[0-9a-f]{32}")
_DESK = re.compile(rf"{NAME}(?:@{NAME})?")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# What never reaches a terminal from a message or a gateway: control characters (which
# could move the cursor or recolour the screen) and lone surrogates (not text at all).
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
# In a file name also newlines and tabs, and the invisible bidi and format marks that
# make "invoice\u202efdp.exe" show as "invoiceexe.pdf".
_UNSAFE_NAME = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u061c\u200b-\u200f"
                          "\u202a-\u202e\u2060-\u2069\ufeff\ufff9-\ufffb]")
MAX_ATTACHMENT_NAME_BYTES = 200  # in UTF-8: under the 255 bytes most file systems allow

T = TypeVar("T")


# --- output ----------------------------------------------------------------------------


def utf8_streams() -> None:
    """Make standard output strict UTF-8 and standard error UTF-8, whatever the locale."""
    if isinstance(sys.stdout, TextIOWrapper):
        sys.stdout.reconfigure(encoding="utf-8", errors="strict")
    if isinstance(sys.stderr, TextIOWrapper):
        sys.stderr.reconfigure(encoding="utf-8", errors="backslashreplace")


def clean(text: str) -> str:
    """``text`` safe for a terminal: newlines and tabs kept, other control characters and
    lone surrogates shown as escapes; every letter of every script is left alone."""
    text = text.replace("\r\n", "\n")
    if not _UNSAFE.search(text):
        return text
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def say(line: str = "") -> None:
    print(clean(line), flush=True)


def note(line: str) -> None:
    """A remark for the person at the terminal, on standard error (never data)."""
    print(f"{PROG}: {clean(line)}", file=sys.stderr, flush=True)


def emit_json(obj: Any) -> None:
    """One JSON document on one line; non-ASCII as itself unless it is not valid text."""
    text = json.dumps(obj, ensure_ascii=False, sort_keys=True)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(obj, ensure_ascii=True, sort_keys=True)
    print(text, flush=True)


def fmt_time(ms: int | None) -> str:
    """A time for a person: ISO 8601 in the local time zone (``TZ`` is respected), with
    its offset, to the second. JSON output never goes through here: it keeps the API's
    Unix milliseconds, the same in every time zone."""
    if ms is None:
        return "-"
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return moment.astimezone().isoformat(timespec="seconds")


# --- the command line ------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit status 2) like every other error;
    a JSON object (code ``usage``) when ``--json`` is on the command line."""

    json_errors = False  # set by main() before parsing

    def error(self, message: str) -> NoReturn:
        print(error_line(self.prog, "usage", f"{message} (see --help)",
                         as_json=Parser.json_errors), file=sys.stderr)
        sys.exit(EXIT_USAGE)


def _message_id(text: str) -> str:
    value = text.strip().lower()
    if not _ID.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a message id (32 hex digits)")
    return value


def _message_ref(text: str) -> MessageRef:
    try:
        return parse_ref(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _gateway_id(text: str) -> str:
    if not re.fullmatch(NAME, text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a gateway id (like kh-cnp)")
    return text


def _desk(text: str) -> str:
    if not _DESK.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a desk name (like border-liaison) or address (desk@gateway)")
    return text


def _date(text: str) -> str:
    try:
        if not _DATE.fullmatch(text):
            raise ValueError(text)
        datetime.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD") from None
    return text


def _gateway(text: str) -> str:
    if not is_name(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a gateway id (like la-mps)")
    return text


#: What each handling code lets the recipient do (SIENA-like; docs/PROTOCOL.md 3.2).
HANDLING_WORDS = {
    "H0": "no restriction among law enforcement",
    "H1": "not for use as evidence without the originator's permission",
    "H2": "no onward dissemination without the originator's permission",
    "H3": "other restrictions: read them in the message",
}
HANDLING_HELP = "; ".join(f"{code} {words}" for code, words in HANDLING_WORDS.items())


def _duration(text: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def _cursor(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise argparse.ArgumentTypeError(f"{text!r} is not a cursor (a whole number)")
    return int(text)


def _common() -> argparse.ArgumentParser:
    """Options every command accepts, before or after its name."""
    common = Parser(add_help=False)
    common.add_argument(
        "--profile", type=Path, metavar="DIR", default=argparse.SUPPRESS,
        help=f"this officer's profile directory (default ${PROFILE_ENV}, else ~/.fpg-client)")
    group = common.add_mutually_exclusive_group()
    group.add_argument("--passphrase-env", metavar="NAME", default=argparse.SUPPRESS,
                       help="read the key passphrase from environment variable NAME")
    group.add_argument("--passphrase-file", type=Path, metavar="FILE",
                       default=argparse.SUPPRESS,
                       help="read the key passphrase from the first line of FILE")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print JSON (one document, or one per line for watch)")
    return common


def _add_text(p: argparse.ArgumentParser, *, attachments: bool = True) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--text", metavar="TEXT", help="the message text")
    group.add_argument("--file", type=Path, metavar="FILE",
                       help="read the text from FILE (UTF-8)")
    if attachments:
        p.add_argument("--attach", type=Path, action="append", default=[], metavar="FILE",
                       help="attach FILE (repeat for several)")


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = Parser(
        prog=PROG, parents=[common],
        description="Focal-point officer's client: enroll with your gateway, then send, "
                    "read and answer hotline alerts and case notifications. Without --text "
                    "or --file, message text is read from standard input.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str, parent: Any = sub) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(
            name, help=help_text, description=help_text, parents=[common])
        return p

    p = command("enroll", "make keys, enroll with a gateway and write the profile")
    p.description = (
        "Make keys, enroll with a gateway and write the profile. The one-time enrollment "
        "code (FPG-XXXX-...) is never an argument: it is typed at the terminal (not "
        "shown), or read from the first line of standard input, or from --code-file.")
    p.add_argument("gateway_url", metavar="GATEWAY_URL",
                   help="e.g. https://gw.example (http:// only to this machine: "
                        "localhost, 127.0.0.0/8, ::1)")
    p.add_argument("--code-file", type=Path, metavar="FILE",
                   help="read the enrollment code from FILE (at most "
                        f"{MAX_CODE_BYTES} bytes; surrounding whitespace ignored)")
    p.add_argument("--fingerprint", metavar="FINGERPRINT",
                   help='the gateway key fingerprint the operator read out ("XXXX XXXX ...")')
    p.add_argument("--keys", type=Path, metavar="FILE",
                   help="use the keys of FILE (from `keys new`) instead of making new ones")
    p.add_argument("--insecure-dev-keys", action="store_true",
                   help="store the keys UNENCRYPTED (demo and tests only)")

    p = command("desks", "list the desks of the verified directory and their officers")
    p.add_argument("--gateway", type=_gateway_id, metavar="ID",
                   help="a partner gateway's desks (its directory, as your gateway relays "
                        "and countersigns it, checked against the partner's own signature)")

    your_desk = "default: your desk, if you are on only one"
    p = command("members", "a desk's members, who admitted each, and who waits to join")
    p.add_argument("desk", type=_desk, nargs="?", metavar="DESK", help=your_desk)

    p = command("admit", "admit an officer waiting to join a desk, after comparing the "
                "safety code its screen shows")
    p.add_argument("desk", type=_desk, nargs="?", metavar="DESK", help=your_desk)
    p.add_argument("officer", metavar="OFFICER_ID")
    p.add_argument("--safety-code", metavar="CODE",
                   help="the code the new officer read out (asked for when absent)")
    history = p.add_mutually_exclusive_group()
    history.add_argument("--history-days", type=_count, default=DEFAULT_HISTORY_DAYS,
                         metavar="DAYS", help="share the keys of the desk's messages of the "
                         f"last DAYS days with the new member (default {DEFAULT_HISTORY_DAYS})")
    history.add_argument("--thread", action="append", type=_message_id, metavar="THREAD_ID",
                         help="share only the messages of this case thread (repeat)")
    history.add_argument("--no-history", action="store_true",
                         help="share no earlier message: the new member reads from now on")

    p = command("safety-code", "the safety code to read out to whoever admits you to a desk")
    p.add_argument("desk", type=_desk, nargs="?", metavar="DESK",
                   help="default: every desk you wait to join")

    p = command("send", "seal and send a hotline alert or a case notification")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    for kind, what in (("hotline", "a short urgent alert"),
                       ("case", "a case notification with its case fields")):
        k = command(kind, f"send {what}", kinds)
        k.add_argument("to", type=_desk, metavar="TO", help="recipient desk (name or address)")
        k.add_argument("--priority", choices=PRIORITIES, default="routine",
                       help="default: routine")
        k.add_argument("--from", dest="frm", type=_desk, metavar="DESK",
                       help="the desk you send from (needed if you are on several)")
        k.add_argument("--handling", choices=HANDLING_CODES, default="H0",
                       help="what the recipient may do with it: " + HANDLING_HELP
                       + " (default H0)")
        _add_text(k)
        if kind == "hotline":
            k.add_argument("--alert-type", choices=typed.ALERT_TYPES, metavar="TYPE",
                           help="what the alert is about: " + ", ".join(typed.ALERT_TYPES))
            k.add_argument("--place", metavar="TEXT", help="where (town, address, place)")
            k.add_argument("--border-gate", metavar="TEXT", help="the border gate")
            k.add_argument("--time", dest="when", metavar="ISO8601",
                           help="when it happened or will, with its offset "
                           "(2026-12-06T14:30+07:00)")
            k.add_argument("--person", action="append", default=[], metavar="K=V,...",
                           help="a person concerned: role=victim|suspect|witness|missing|"
                           "offender|other, age=" + "|".join(typed.AGE_BANDS)
                           + ", child=yes|no (default: from the age), nationality=, "
                           "name=, sex= (repeat for several)")
            k.add_argument("--document", action="append", default=[], metavar="K=V,...",
                           help="a document seen: type=" + "|".join(typed.DOCUMENT_TYPES)
                           + ", number=, issuer= (repeat)")
        if kind == "case":
            k.add_argument("--request-type", choices=typed.REQUEST_TYPES, metavar="TYPE",
                           help="the request's legal type: " + ", ".join(typed.REQUEST_TYPES))
            k.add_argument("--requesting-authority", metavar="TEXT")
            k.add_argument("--executing-authority", metavar="TEXT")
            k.add_argument("--treaty", metavar="TEXT", help="the treaty the request rests on")
            k.add_argument("--language", action="append", default=[], metavar="TAG",
                           help="a language of the request (vi, lo, km, th, zh...; repeat)")
            k.add_argument("--translation", action="append", default=[], type=Path,
                           metavar="FILE", help="attach FILE as a translation; give its "
                           "language with --translation-language, in the same order")
            k.add_argument("--translation-language", action="append", default=[],
                           metavar="TAG")
            k.add_argument("--case-ref", required=True, metavar="REF")
            k.add_argument("--legal-basis", required=True, choices=payload.LEGAL_BASES)
            k.add_argument("--offence", required=True, metavar="TEXT")
            k.add_argument("--action", action="append", required=True, metavar="TEXT",
                           help="a requested action (repeat for several)")
            k.add_argument("--deadline", required=True, type=_date, metavar="YYYY-MM-DD")

    p = command("inbox", "list the messages a desk received, numbered by row (`read ROW`)")
    p.add_argument("desk", type=_desk, nargs="?", metavar="DESK", help=your_desk)
    p.add_argument("--after", type=_cursor, default=0, metavar="CURSOR",
                   help="only messages after this cursor (printed by the previous call)")
    p.add_argument("--limit", type=_count, metavar="N", help="at most N messages")

    p = command("sent", "list the messages you sent and how far each got (delivered, read, "
                "replied, non-delivered)")
    p.add_argument("--after", type=_cursor, default=0, metavar="CURSOR",
                   help="only messages after this cursor (printed by the previous call)")
    p.add_argument("--limit", type=_count, metavar="N", help="at most N messages")

    p = command("notice", "show one notice of a desk (verifying the gateway's signature) "
                "and mark it read")
    p.add_argument("desk", type=_desk, nargs="?", metavar="DESK", help=your_desk)
    p.add_argument("cursor", type=_cursor, metavar="CURSOR",
                   help="the notice's cursor, as `inbox` lists it")

    p = command("notices", "list a desk's notices, read or not")
    p.add_argument("desk", type=_desk, nargs="?", metavar="DESK", help=your_desk)
    p.add_argument("--after", type=_cursor, default=0, metavar="CURSOR",
                   help="only notices after this cursor")

    p = command("read", "open a message, verify its sender and acknowledge reading it")
    p.add_argument("message", type=_message_ref, metavar="MESSAGE",
                   help="a message id, a unique prefix of one (6+ hex digits), or a row "
                        "number of the last `inbox` listing")
    p.add_argument("--save-attachments", type=Path, metavar="DIR",
                   help="write the message's attachments into DIR")

    p = command("reply", "answer a message in its thread")
    p.add_argument("message", type=_message_ref, metavar="MESSAGE",
                   help="a message id, a unique prefix of one (6+ hex digits), or a row "
                        "number of the last `inbox` listing")
    p.add_argument("--priority", choices=PRIORITIES,
                   help="default: the priority of the message answered")
    p.add_argument("--handling", choices=HANDLING_CODES,
                   help="default: the handling code of the message answered")
    _add_text(p)

    p = command("forward", "pass a message on to another desk, as its sender signed it "
                "(its recipient verifies the first sender's signature)")
    p.add_argument("message", type=_message_ref, metavar="MESSAGE",
                   help="a message id, a unique prefix of one (6+ hex digits), or a row "
                        "number of the last `inbox` listing")
    p.add_argument("to", type=_desk, metavar="TO", help="the desk it goes on to")
    p.add_argument("--permit", metavar="TOKEN",
                   help="the sender's permission (from `gateway-client permit`): needed "
                   "for an H2 message")
    _add_text(p, attachments=False)

    p = command("handover", "acknowledge, signed, that the persons an alert announced were "
                "handed over to your desk (a receipt both gateways record)")
    p.add_argument("message", type=_message_ref, metavar="MESSAGE",
                   help="the alert announcing the handover: its id, a unique prefix (6+ hex "
                   "digits) or its row in the last `inbox` listing")
    p.add_argument("--received-at", metavar="ISO8601",
                   help="when they were received (default: now, local time)")
    p.add_argument("--place", metavar="TEXT", help="where they were received")
    p.add_argument("--person", action="append", default=[], metavar="K=V,...",
                   help="a person received (as for send hotline --person; repeat)")
    _add_text(p, attachments=False)

    p = command("permit", "give your permission for a message you sent to be forwarded "
                "to a desk (prints a token for the forwarder)")
    p.add_argument("message", type=_message_ref, metavar="MESSAGE",
                   help="a message id, a unique prefix of one (6+ hex digits), or a row "
                        "number of the last `inbox` listing")
    p.add_argument("to", type=_desk, metavar="TO", help="the desk it may go on to")

    p = command("cases", "requests your desks made or must execute: state, partner and "
                "days to the due day, soonest due first")
    p.add_argument("--overdue", action="store_true", help="only those past their due day")
    p.add_argument("--state", choices=STATES, help="only those in this state")
    p.add_argument("--partner", type=_gateway, metavar="GATEWAY",
                   help="only those with this partner gateway")
    p.add_argument("--closed", action="store_true",
                   help="also executed, partly executed, refused and withdrawn ones")

    p = command("move", "move a request to its next state with a signed status message "
                "to the other desk (" + ", ".join(CASE_STATES) + ")")
    p.add_argument("case", type=_message_ref, metavar="CASE",
                   help="the request's id (its case message), a unique prefix (6+ hex "
                   "digits) or its row in the last `inbox` listing")
    p.add_argument("state", choices=CASE_STATES, metavar="STATE")
    p.add_argument("--missing", action="append", metavar="ITEM",
                   help="what is missing (returned_incomplete; repeat for several)")
    p.add_argument("--grounds", metavar="TEXT", help="the grounds (refused)")
    p.add_argument("--due", type=_date, metavar="YYYY-MM-DD",
                   help="a new due day (resubmitted)")
    _add_text(p)

    p = command("status", "who read and answered a message, and its ledger events")
    p.add_argument("message", type=_message_ref, metavar="MESSAGE",
                   help="a message id, a unique prefix of one (6+ hex digits), or a row "
                        "number of the last `inbox` listing")

    p = command("watch", "print live events (messages, reads, replies) until Ctrl-C")
    p.add_argument("--desk", type=_desk, action="append", metavar="DESK",
                   help="watch this desk (repeat; default: all your desks)")
    p.add_argument("--count", type=_count, metavar="N", help="stop after N events")
    p.add_argument("--since", type=_cursor, metavar="CURSOR",
                   help="first replay the desks' notices stored after this notice cursor "
                        "(0: all)")

    p = command("agent", "unlock your keys once and keep them open for a while, like "
                "ssh-agent: other commands then ask no passphrase")
    p.description = (
        "Ask the key passphrase once and keep the keys open in a background process "
        "listening on agent.sock in the profile directory, until the time given or "
        "`gateway-client lock`. The agent signs and opens key wraps for your commands; "
        "it never hands out the keys. Any program running as your user can use it while "
        "it runs, as with ssh-agent.")
    p.add_argument("--for", dest="lifetime", type=_duration, default=DEFAULT_LIFETIME,
                   metavar="DURATION", help="how long: 90s, 30m, 8h, 1h30m (default 30m, "
                   "at most 24h)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--status", action="store_true",
                      help="say whether an agent runs, and until when")
    mode.add_argument("--stop", action="store_true", help="the same as `lock`")
    mode.add_argument("--foreground", action="store_true",
                      help="stay in the foreground (for a service manager) instead of "
                           "going to the background")

    command("lock", "end the unlock agent: the keys are forgotten, the passphrase asked "
            "again")

    p = command("keys", "make a key file, or show key ids and fingerprints")
    keys_sub = p.add_subparsers(dest="keys_command", metavar="KEYS_COMMAND", required=True)
    new = command("new", "generate signing and encryption keys into a key file", keys_sub)
    new.add_argument("--out", type=Path, required=True, metavar="FILE", help="key file to write")
    new.add_argument("--owner", required=True, help="a label for the key file (no names)")
    new.add_argument("--insecure-dev-keys", action="store_true",
                     help="store the keys UNENCRYPTED (demo and tests only)")
    show = command("show", "print this officer's key ids and fingerprints (no passphrase)",
                   keys_sub)
    show.add_argument("file", type=Path, nargs="?", metavar="FILE",
                      help="a key file (default: the profile's)")
    return parser


def opt(args: argparse.Namespace, name: str) -> Any:
    """A common option, wherever it was given (None or False when it was not)."""
    return getattr(args, name, False if name == "json" else None)


# --- profile, keys and the connection --------------------------------------------------


def check_no_passphrase(args: argparse.Namespace) -> None:
    """--insecure-dev-keys stores no passphrase: giving one too is a mistake, not a choice."""
    if args.insecure_dev_keys and (opt(args, "passphrase_env") or opt(args, "passphrase_file")):
        raise ConfigError("give --insecure-dev-keys or a passphrase source, not both")


def passphrase_for(args: argparse.Namespace, what: str, *, confirm: bool = False) -> bytes:
    return get_passphrase(what, env=opt(args, "passphrase_env"),
                          file=opt(args, "passphrase_file"), confirm=confirm)


def credentials(args: argparse.Namespace) -> tuple[Profile, Credentials]:
    """The officer's profile and keys: the running unlock agent's, else the key file's
    (asking the passphrase)."""
    profile = load_profile(profile_dir(opt(args, "profile")))
    check_transport(profile.gateway_url)  # a profile edited by hand, or from an older client
    _, public, _ = read_public(profile.key_file)
    sign_public, enc_public = public_keys(public)
    if (sign_public.key_id, enc_public.key_id) != (profile.sign_key_id, profile.enc_key_id):
        raise KeyFileError(f"{profile.key_file}: holds other keys than the ones enrolled "
                           f"for officer {profile.officer_id}")
    delegated = agent_keys(profile.directory, sign_public, enc_public)
    if delegated is not None:
        return profile, Credentials(profile.gateway_url, profile.gateway_id,
                                    profile.gateway_key, profile.officer_id, profile.desks,
                                    *delegated)
    bundle = unlock(profile, lambda: passphrase_for(args, f"your key {profile.key_file}"))
    return profile, profile.credentials(bundle)


def run_async(coro: Coroutine[Any, Any, T], url: str) -> T:
    """Run ``coro``; network failures become one readable error naming the gateway."""
    try:
        return asyncio.run(coro)
    except aiohttp.ClientError as exc:
        raise GatewayError(f"cannot talk to the gateway at {url}: {exc or type(exc).__name__}",
                           code="unreachable") from None
    except TimeoutError:
        raise GatewayError(f"the gateway at {url} did not answer in time",
                           code="timeout") from None


def online(args: argparse.Namespace,
           work: Callable[[GatewayClient, Profile], Awaitable[int]]) -> int:
    """Unlock the keys, then run ``work`` with a client of this officer's gateway."""
    profile, creds = credentials(args)

    async def go() -> int:
        async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
            trust = TrustMemory(profile.directory / TRUST_FILE)
            return await work(GatewayClient(http, creds, trust=trust), profile)

    return run_async(go(), profile.gateway_url)


def desk_address(desk: str, profile: Profile) -> str:
    return desk if "@" in desk else f"{desk}@{profile.gateway_id}"


def any_desk(desk: str | None, profile: Profile) -> str:
    """The desk named, or the officer's only desk when none is."""
    return desk_address(desk, profile) if desk else only_desk(profile.desks)


def own_desk(desk: str | None, profile: Profile) -> str:
    """One of the officer's own desks: the one named, else the only one."""
    address = any_desk(desk, profile)
    if address not in profile.desks:
        raise ClientError(f"{address} is not one of your desks ({', '.join(profile.desks)})"
                          f"{did_you_mean(address, profile.desks)}", code="not_a_member")
    return address


MAX_SCAN_PAGES = 40  # inbox pages per desk searched for an id prefix


async def message_id(client: GatewayClient, profile: Profile, ref: MessageRef) -> str:
    """The full id of the message the officer named by id, prefix or inbox row."""
    if ref.id is not None:
        return ref.id
    if ref.row is not None:
        return row_id(profile.directory, ref.row)
    assert ref.prefix is not None
    known: set[str] = set()
    with contextlib.suppress(ClientError):
        known.update(load_listing(profile.directory)[1])
    for desk in profile.desks:
        after = 0
        for _ in range(MAX_SCAN_PAGES):
            page = await client.inbox(desk, after)
            known.update(m["id"] for m in page["messages"])
            if page.get("next") is None:
                break
            after = page["next"]
    known.update(await client.sent_ids())
    return by_prefix(ref.prefix, known)


# --- enroll ----------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1): traffic that stays here."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_transport(url: str) -> None:
    """Refuse plain http:// to anything but this machine, before any connection: the
    enrollment code and every session token would cross the network readable, and the
    gateway's key would be pinned from whoever answered."""
    parts = urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and is_loopback(parts.hostname or "")):
        return
    raise ClientError(f"refusing {clean(url)}: plain http:// is allowed only to this machine "
                      "(localhost, 127.0.0.0/8, ::1); use https://", code="insecure_url")


def _gateway_url(text: str) -> str:
    url = text.strip().rstrip("/")
    # No user info ("@") nor backslash: the host checked must be the host connected to.
    try:
        parts = urlsplit(url)
        valid = bool(parts.hostname) and parts.port != 0  # .port raises for a bad port
    except ValueError:
        valid = False
    if not valid or not re.fullmatch(r"https?://[^\s/?#@\\]+(/[^\s?#]*)?", url):
        raise ClientError(f"{text!r} is not a gateway URL (https://host[:port][/path])",
                          code="bad_url")
    check_transport(url)
    return url


def read_code(code_file: Path | None) -> str:
    """The one-time enrollment code: from ``code_file``, else typed at the terminal without
    echo, else the first line of standard input; surrounding whitespace ignored."""
    if code_file is not None:
        where = str(code_file)
        try:
            with open(code_file, "rb") as fh:
                data = fh.read(MAX_CODE_BYTES + 1)
        except OSError as exc:
            raise ClientError(f"{where}: cannot read the code file ({exc.strerror})",
                              code="code_file_unreadable") from None
    elif sys.stdin is not None and sys.stdin.isatty():
        where = "the terminal"
        try:
            data = getpass.getpass("Enrollment code (not shown): ").encode("utf-8")
        except EOFError:
            data = b""
    else:
        where = "standard input"
        data = sys.stdin.buffer.readline(MAX_CODE_BYTES + 1) if sys.stdin is not None else b""
    if len(data) > MAX_CODE_BYTES:
        raise ClientError(f"{where}: more than {MAX_CODE_BYTES} bytes, not an enrollment code",
                          code="enrollment_code_too_large")
    code = data.decode("utf-8", "replace").strip()
    if not code:
        raise ClientError(f"no enrollment code in {where} (give it on standard input, at "
                          "the terminal, or with --code-file)", code="enrollment_code_missing")
    return code.upper()


def _enroll_keys(args: argparse.Namespace, directory: Path) -> KeyBundle:
    """Write this officer's key file into the new profile (before the code is used)."""
    target = directory / KEY_FILE
    if args.keys is not None:
        protection = read_public(args.keys)[2]
        insecure = protection == INSECURE
        if insecure != args.insecure_dev_keys:
            raise KeyFileError(
                f"{args.keys}: holds plaintext development keys; add --insecure-dev-keys"
                if insecure else
                f"{args.keys}: is passphrase-protected; leave out --insecure-dev-keys")
        passphrase = None if insecure else passphrase_for(args, f"the key file {args.keys}")
        bundle = load_bundle(args.keys, passphrase, allow_insecure=insecure)
        officer_keys(bundle, args.keys)
        with open(args.keys, "rb") as fh:
            write_new(target, fh.read())
        return bundle
    passphrase = None if args.insecure_dev_keys else passphrase_for(
        args, "your new officer key", confirm=True)
    bundle = KeyBundle(owner="officer", keys={
        ROLE_OFFICER_SIGNING: OfficerSigningKey.generate(),
        ROLE_OFFICER_ENCRYPTION: OfficerEncryptionKey.generate(),
    }, insecure=passphrase is None)
    save_bundle(target, bundle, passphrase)
    return bundle


def cmd_enroll(args: argparse.Namespace) -> int:
    directory = profile_dir(opt(args, "profile"))
    url = _gateway_url(args.gateway_url)
    fingerprint = normalize_fingerprint(args.fingerprint) if args.fingerprint else None
    code = read_code(args.code_file)
    code_hash(code)  # its form, before any connection
    check_no_passphrase(args)
    check_free(directory)
    make_dir(directory)
    bundle = _enroll_keys(args, directory)
    signing, encryption = officer_keys(bundle, directory / KEY_FILE)

    async def go() -> tuple[Credentials, dict[str, Any]]:
        async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
            return await enroll(http, url, code, signing, encryption, fingerprint)

    try:
        creds, doc = run_async(go(), url)
        binding = open_binding(str(doc["binding"]).encode("utf-8"), creds.gateway_id,
                               creds.gateway_key)
        if (binding.officer != creds.officer_id or binding.sign_key != signing.public
                or binding.enc_key != encryption.public):
            raise ClientError("the gateway's binding does not vouch for your keys",
                              code="bad_binding")
    except BaseException:
        (directory / KEY_FILE).unlink(missing_ok=True)  # no profile: keep no stray keys
        raise
    profile = Profile(
        directory=directory, gateway_url=creds.gateway_url, gateway_id=creds.gateway_id,
        gateway_key=creds.gateway_key, officer_id=creds.officer_id,
        sign_key_id=signing.key_id, enc_key_id=encryption.key_id, desks=creds.desks,
        not_after=binding.not_after, enrolled=binding.not_before,
        insecure_dev_keys=bundle.insecure,
    )
    save_profile(profile)
    if opt(args, "json"):
        emit_json({"officer": profile.officer_id, "gateway": profile.gateway_id,
                   "pending": list(doc.get("pending") or []),
                   "gateway_url": profile.gateway_url,
                   "gateway_fingerprint": profile.gateway_key.fingerprint,
                   "fingerprint_checked": fingerprint is not None, "desks": list(profile.desks),
                   "not_after": profile.not_after, "sign_key_id": signing.key_id,
                   "enc_key_id": encryption.key_id, "profile": str(directory),
                   "insecure_dev_keys": profile.insecure_dev_keys})
        return EXIT_OK
    say(f"enrolled as officer {profile.officer_id}")
    say(f"desks:               {', '.join(profile.desks)}")
    say(f"gateway:             {profile.gateway_id} at {profile.gateway_url}")
    say(f"gateway fingerprint: {profile.gateway_key.fingerprint}")
    say("  (matches the fingerprint you gave)" if fingerprint else
        "  (not checked: compare it with the fingerprint the gateway's operator read out)")
    say(f"your signing key:    {signing.key_id}  fingerprint {signing.public.fingerprint}")
    say(f"your encryption key: {encryption.key_id}")
    say(f"binding valid until: {fmt_time(profile.not_after)}")
    say(f"profile:             {directory}"
        + ("  (INSECURE: keys stored unencrypted)" if profile.insecure_dev_keys else ""))
    for desk in doc.get("pending") or []:
        code = safety_code(desk, creds.officer_id, signing.public.b64(), encryption.public.b64())
        say(f"waiting to join {desk}: a member of the desk admits you with")
        say(f"  gateway-client admit {desk} {creds.officer_id}")
        say(f"  after you read out your safety code: {code}")
    return EXIT_OK


# --- desk membership -----------------------------------------------------------------


def cmd_members(args: argparse.Namespace) -> int:
    async def work(client: GatewayClient, profile: Profile) -> int:
        desk = any_desk(args.desk, profile)
        doc = await client.members(desk)
        for waiting in doc["pending"]:
            waiting["safety_code"] = safety_code(desk, waiting["officer"], waiting["sign_key"],
                                                 waiting["enc_key"])
        if opt(args, "json"):
            emit_json(doc)
            return EXIT_OK
        say(f"members of {desk}")
        for m in doc["members"]:
            by = ("the operator (first member)" if m["admitted_by"] == "operator"
                  else m["admitted_by"])
            you = "  (you)" if m["officer"] == profile.officer_id else ""
            say(f"  {m['officer']}  admitted by {by} on {fmt_time(m['admitted_at'])}{you}")
        if doc["pending"]:
            say("waiting to join (compare the safety code with the officer, then "
                "`gateway-client admit`):")
        for w in doc["pending"]:
            say(f"  {w['officer']}  since {fmt_time(w['since'])}  safety code "
                f"{w['safety_code']}")
        return EXIT_OK

    return online(args, work)


def cmd_admit(args: argparse.Namespace) -> int:
    async def work(client: GatewayClient, profile: Profile) -> int:
        desk = any_desk(args.desk, profile)
        typed = args.safety_code
        if typed is None:
            _, expected = await client.pending_safety_code(desk, args.officer)
            say(f"{args.officer} asks to join {desk}. Your screen shows the safety code")
            say(f"  {expected}")
            typed = ask("type the code the new officer reads out from their screen: ")
        result = await client.admit(desk, args.officer, typed)
        shared = 0
        if not args.no_history:
            since = client.clock.now_ms() - args.history_days * 86_400_000
            threads = frozenset(args.thread) if args.thread else None
            shared = await client.share_history(desk, args.officer,
                                                since_ms=None if threads else since,
                                                threads=threads)
        if opt(args, "json"):
            emit_json({**result, "shared": shared})
        else:
            say(f"{args.officer} admitted to {desk}: from now on messages to the desk are "
                "sealed for it too")
            say(f"shared the keys of {shared} earlier message(s) with it, signed by you")
        return EXIT_OK

    return online(args, work)


def ask(prompt: str) -> str:
    """One line typed by the officer (standard input; the prompt on standard error when
    it is a terminal)."""
    if sys.stdin.isatty():
        print(prompt, end="", file=sys.stderr, flush=True)
    line = sys.stdin.readline(256)
    if not line.strip():
        raise ClientError("nothing typed", code="no_input")
    return line.strip()


def cmd_safety_code(args: argparse.Namespace) -> int:
    profile, creds = credentials(args)
    desks = [desk_address(args.desk, profile)] if args.desk else list(profile.desks)
    codes = {d: safety_code(d, profile.officer_id, creds.signing.public.b64(),
                            creds.encryption.public.b64()) for d in desks}
    if opt(args, "json"):
        emit_json({"officer": profile.officer_id, "safety_codes": codes})
    else:
        for desk, code in codes.items():
            say(f"{desk}: {code}")
    return EXIT_OK


# --- desks -----------------------------------------------------------------------------


def cmd_desks(args: argparse.Namespace) -> int:
    async def work(client: GatewayClient, profile: Profile) -> int:
        gateway = args.gateway or profile.gateway_id
        directory = await client.directory(gateway=gateway)
        desks: list[dict[str, Any]] = [
            {"desk": entry.address, "yours": entry.address in profile.desks,
             "officers": [{"officer": m["officer"], "sign_key_id": m["sign_key_id"],
                           "enc_key_id": m["enc_key_id"], "not_after": m.get("not_after"),
                           "you": m["officer"] == profile.officer_id}
                          for m in entry.members]}
            for entry in sorted(directory.values(), key=lambda e: e.address)
        ]
        if opt(args, "json"):
            emit_json({"gateway": gateway, "desks": desks})
            return EXIT_OK
        how = ("verified against the pinned key" if gateway == profile.gateway_id else
               f"countersigned by {profile.gateway_id} and signed by {gateway}'s pinned key")
        say(f"desks of {gateway} (directory {how})")
        for desk in desks:
            mark = "  (your desk)" if desk["yours"] else ""
            say(f"{desk['desk']}: {len(desk['officers'])} officer(s){mark}")
            for m in desk["officers"]:
                you = "  (you)" if m["you"] else ""
                say(f"  {m['officer']}  signing {m['sign_key_id']}  encryption "
                    f"{m['enc_key_id']}  until {fmt_time(m['not_after'])}{you}")
        return EXIT_OK

    return online(args, work)


# --- composing -------------------------------------------------------------------------


def decode_text(data: bytes, where: str) -> str:
    if len(data) > MAX_TEXT_BYTES:
        raise ClientError(f"{where}: the text is longer than {payload.MAX_TEXT} characters",
                          code="bad_payload")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ClientError(f"{where}: the text is not UTF-8 (bad byte at offset {exc.start})",
                          code="bad_payload") from None


def message_text(args: argparse.Namespace) -> str:
    """The text from --text, --file or standard input, exactly as written (UTF-8)."""
    if args.text is not None:
        # Recover the bytes that were typed, whatever the locale decoded them as.
        return decode_text(os.fsencode(args.text), "--text")
    if args.file is not None:
        with open(args.file, "rb") as fh:
            return decode_text(fh.read(MAX_TEXT_BYTES + 1), str(args.file))
    if sys.stdin.isatty():
        note("type the message, then Ctrl-D on a line of its own")
    return decode_text(sys.stdin.buffer.read(MAX_TEXT_BYTES + 1), "standard input")


def attachments(files: list[Path]) -> list[dict[str, str]]:
    items = []
    for path in files:
        with open(path, "rb") as fh:
            data = fh.read()
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        items.append(payload.attachment(path.name, media_type, data))
    return items


def compose(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    """The payload, checked before anything is unlocked or sent."""
    doc: dict[str, Any] = {"type": kind, "text": message_text(args)}
    if kind == "case":
        doc.update(case_ref=args.case_ref, legal_basis=args.legal_basis,
                   offence=args.offence, requested_actions=list(args.action),
                   deadline=args.deadline)
        doc.update({key: value for key, value in (
            ("request_type", args.request_type),
            ("requesting_authority", args.requesting_authority),
            ("executing_authority", args.executing_authority), ("treaty", args.treaty),
            ("languages", args.language or None)) if value is not None})
    if kind == "hotline":
        doc.update({key: value for key, value in (
            ("alert_type", args.alert_type), ("place", args.place),
            ("border_gate", args.border_gate), ("time", args.when),
            ("persons", [typed.person_from(p) for p in args.person] or None),
            ("documents", [typed.document_from(d) for d in args.document] or None))
            if value is not None})
    files = list(args.attach)
    if kind == "case" and args.translation:
        if len(args.translation) != len(args.translation_language):
            raise ClientError("give one --translation-language per --translation",
                              code="bad_usage")
        doc["translations"] = [{"attachment": len(files) + i, "language": language}
                               for i, language in enumerate(args.translation_language)]
        files.extend(args.translation)
    if files:
        doc["attachments"] = attachments(files)
    payload.validate(doc, kind)
    payload.encode(doc, kind)  # every string must be encodable text
    return doc


def print_sent(args: argparse.Namespace, result: dict[str, Any], what: str) -> None:
    if opt(args, "json"):
        emit_json(result)
    else:
        say(f"{result.get('id')}  {result.get('status')}  ({what})")


def cmd_send(args: argparse.Namespace) -> int:
    doc = compose(args, args.kind)

    async def work(client: GatewayClient, profile: Profile) -> int:
        to = desk_address(args.to, profile)
        frm = own_desk(args.frm, profile) if args.frm else None
        try:
            if not opt(args, "json"):  # who will be able to read it, before it is sealed
                show_recipients(to, await client.recipients(to))
            result = await client.send(args.kind, to, doc, priority=args.priority, frm=frm,
                                       handling=args.handling)
        except ClientError as exc:
            if exc.code != "unknown_desk":
                raise
            known = await client.directory(gateway=to.partition("@")[2])
            raise ClientError(f"{exc.message}{did_you_mean(to, known)}",
                              code=exc.code) from None
        print_sent(args, result, f"{args.priority} {args.kind} to {to}")
        return EXIT_OK

    return online(args, work)


def show_recipients(to: str, recipients: list[tuple[str, str]]) -> None:
    names = ", ".join(f"{officer} (admitted by {'the operator' if by == 'operator' else by})"
                      for officer, by in recipients)
    note(f"sealing for the {len(recipients)} member(s) of {to}: {names}")


def cmd_reply(args: argparse.Namespace) -> int:
    doc = compose(args, "reply")

    async def work(client: GatewayClient, profile: Profile) -> int:
        original = await client.open(await message_id(client, profile, args.message))
        result = await client.reply(original, doc, priority=args.priority,
                                    handling=args.handling)
        h = original.header
        to = h.sender if h.recipient in profile.desks else h.recipient
        print_sent(args, result, f"reply to {h.id} for {to}, thread {h.thread}")
        return EXIT_OK

    return online(args, work)


def cmd_forward(args: argparse.Namespace) -> int:
    text = message_text(args) if (args.text is not None or args.file is not None) else ""

    async def work(client: GatewayClient, profile: Profile) -> int:
        to = desk_address(args.to, profile)
        mid = await message_id(client, profile, args.message)
        result = await client.forward(mid, to, text, permit=args.permit)
        print_sent(args, result, f"{mid} forwarded to {to}")
        return EXIT_OK

    return online(args, work)


def cmd_handover(args: argparse.Namespace) -> int:
    received = args.received_at or datetime.datetime.now().astimezone().isoformat(
        timespec="minutes")
    doc: dict[str, Any] = {"type": "handover", "received_at": received}
    text = message_text(args) if (args.text is not None or args.file is not None) else ""
    if text:
        doc["text"] = text
    if args.place:
        doc["place"] = args.place
    if args.person:
        doc["persons"] = [typed.person_from(p) for p in args.person]
    payload.validate(doc, "handover")

    async def work(client: GatewayClient, profile: Profile) -> int:
        mid = await message_id(client, profile, args.message)
        original = await client.open(mid)
        result = await client.handover(original, doc)
        print_sent(args, result, f"handover of {mid} acknowledged to "
                   f"{original.header.sender}")
        return EXIT_OK

    return online(args, work)


def cmd_permit(args: argparse.Namespace) -> int:
    async def work(client: GatewayClient, profile: Profile) -> int:
        to = desk_address(args.to, profile)
        mid = await message_id(client, profile, args.message)
        token = await client.permit(mid, to)
        if opt(args, "json"):
            emit_json({"id": mid, "to": to, "permit": token})
        else:
            say(token)
            note(f"(give it to whoever forwards {mid} to {to}: "
                 f"gateway-client forward {mid} {to} --permit TOKEN)")
        return EXIT_OK

    return online(args, work)


def cmd_move(args: argparse.Namespace) -> int:
    doc: dict[str, Any] = {"type": "status", "state": args.state}
    text = message_text(args) if (args.text is not None or args.file is not None) else ""
    if text:
        doc["text"] = text
    if args.missing:
        doc["missing"] = list(args.missing)
    if args.grounds is not None:
        doc["grounds"] = args.grounds
    if args.attach:
        doc["attachments"] = attachments(args.attach)
    if args.due is not None and args.state != "resubmitted":
        raise ClientError("--due goes with resubmitted (a new due day)", code="bad_usage")
    payload.validate(doc, "status")  # before anything is unlocked or sent

    async def work(client: GatewayClient, profile: Profile) -> int:
        case_id = await message_id(client, profile, args.case)
        result = await client.move(case_id, args.state, doc, due=args.due)
        print_sent(args, result, f"request {case_id} moved to {args.state}")
        return EXIT_OK

    return online(args, work)


def cmd_cases(args: argparse.Namespace) -> int:
    async def work(client: GatewayClient, profile: Profile) -> int:
        cases = await client.cases(state=args.state, partner=args.partner,
                                   overdue=args.overdue, closed=args.closed)
        if opt(args, "json"):
            emit_json({"cases": cases})
            return EXIT_OK
        if not cases:
            say("no requests" + (" past their due day" if args.overdue else "")
                + (f" in state {args.state}" if args.state else "")
                + (f" with {args.partner}" if args.partner else ""))
            return EXIT_OK
        for c in cases:
            if c["due"] is None:
                due = "no due day"
            elif c["overdue"]:
                due = f"OVERDUE {-c['days_left']} day(s) (due {c['due']})"
            else:
                due = f"{c['days_left']} day(s) left (due {c['due']})"
            other = c["executor"] if c["role"] == "requester" else c["requester"]
            say(f"{c['id']}  {c['state']:<19}  {due:<36}  {c['role']:<9}  with {other}"
                f"  since {fmt_time(c['state_at'])}")
        return EXIT_OK

    return online(args, work)


# --- reading ---------------------------------------------------------------------------


def cmd_inbox(args: argparse.Namespace) -> int:
    async def work(client: GatewayClient, profile: Profile) -> int:
        desk = own_desk(args.desk, profile)
        page = await client.inbox(desk, args.after, args.limit)
        messages = page.get("messages", [])
        for row, m in enumerate(messages, 1):
            m["row"] = row
        save_listing(profile.directory, desk, [m["id"] for m in messages])
        again = "gateway-client inbox" + (f" {desk.partition('@')[0]}"
                                          if len(profile.desks) > 1 else "")
        last = messages[-1]["cursor"] if messages else args.after
        # Unread notices first, apart from the messages; shown here, they count as read.
        listed = await client.notices(desk, unread=True)
        notices = listed["notices"]
        lines = [await notice_text(client, n) for n in notices]
        if notices:
            await client.mark_notices_read(desk, [int(n["cursor"]) for n in notices])
        if opt(args, "json"):
            emit_json({**page, "last": last, "notices": notices,
                       "unread_notices": listed["unread"]})
            return EXIT_OK
        if notices:
            more = listed["unread"] - len(notices)
            say(f"*** {len(notices)} UNREAD NOTICE(S) FOR {desk} ***")
            for n, line in zip(notices, lines, strict=True):
                say(f"{n['cursor']:>6}  {line}")
            if more > 0:
                say(f"  ({more} more unread: run `{again}` again)")
            say(f"(marked read; `{again.replace('inbox', 'notices')}` lists them all again)")
            say("")
        if not messages:
            say(f"no messages for {desk} after cursor {args.after}")
        for m in messages:
            state = "new" if m.get("first_read") is None else "read"
            if m.get("first_reply") is not None:
                state += ", replied"
            extra = "".join(f"  {label}{m[key]}" for key, label in (
                ("handling", ""), ("state", "-> "), ("due", "due ")) if m.get(key))
            say(f"{m['row']:>3}  {m['id']}  {fmt_time(m.get('delivered'))}  "
                f"{m['priority']:<9}  {m['kind']:<7}  from {m['from']}  [{state}]{extra}")
        if messages:
            say("(`gateway-client read ROW` opens the message of that row)")
        more = "more waiting: " if page.get("next") is not None else ""
        say(f"next cursor: {last}  ({more}{again} --after {last})")
        return EXIT_OK

    return online(args, work)


def cmd_sent(args: argparse.Namespace) -> int:
    async def work(client: GatewayClient, profile: Profile) -> int:
        page = await client.sent(args.after, args.limit)
        messages = page.get("messages", [])
        last = messages[-1]["cursor"] if messages else args.after
        if opt(args, "json"):
            emit_json({**page, "last": last})
            return EXIT_OK
        if not messages:
            say(f"no messages sent after cursor {args.after}")
        for m in messages:
            status = m["status"] + (f" ({m['reason']})" if m.get("reason") else "")
            say(f"{m['id']}  {fmt_time(m.get('accepted'))}  {m['priority']:<9}  "
                f"{m['kind']:<7}  to {m['to']}  [{status}]")
        more = "more waiting: " if page.get("next") is not None else ""
        say(f"next cursor: {last}  ({more}gateway-client sent --after {last})")
        return EXIT_OK

    return online(args, work)


def case_deadline_words(what: str, desk: str, told: str) -> str:
    if what == "reminder":
        return f"DUE SOON ({desk})"
    return f"OVERDUE ({desk})" if desk == told else f"OVERDUE, ESCALATED ({desk} is late)"


async def notice_text(client: GatewayClient, n: dict[str, Any]) -> str:
    """One line for a stored notice, after checking the gateway's signature on it."""
    when = fmt_time(n.get("at"))
    event = n.get("event")
    if event == "membership":
        return notice_line(n)
    try:
        signed = await client.open_signed_notice(n)
    except (CryptoError, ValueError) as exc:
        return (f"{when}  A NOTICE THAT DOES NOT VERIFY ({event} about {n.get('id')}): "
                f"{getattr(exc, 'message', exc)}; tell your security officer")
    if event == "breach":
        return (f"{when}  LATE: {n.get('priority')} {n.get('kind')} {n.get('id')} not "
                f"{_STAGE_WORDS.get(str(n.get('stage')), '?')} by {fmt_time(n.get('due'))}")
    if event == "escalation" and signed is not None:
        return (f"{when}  ESCALATED: {signed.priority} {signed.kind} {signed.message_id} "
                f"not {_STAGE_WORDS.get(signed.stage, '?')} by {signed.desk} by "
                f"{fmt_time(signed.due_ms)} (signed by {signed.gateway})")
    if event in ("case_due", "case_overdue") and signed is not None:
        return (f"{when}  {case_deadline_words(signed.what, signed.desk, signed.told)}: "
                f"request {signed.case} ({signed.requester} -> {signed.executor}), "
                f"{signed.state}, due {signed.due} (signed by {signed.gateway})")
    if event in ("expired", "rejected") and signed is not None:
        if signed.reason == "expired":
            why = f"expired at {fmt_time(signed.expires_ms)} before {signed.partner} took it"
        elif signed.reason == RETURNED:
            why = (f"returned by the operator of {signed.gateway} before {signed.partner} "
                   f"took it: {signed.note}")
        else:
            why = f"{signed.partner} refused it ({signed.reason})"
        return (f"{when}  NOT DELIVERED: {signed.message_id} to {signed.recipient}: {why} "
                f"(signed by {signed.gateway})")
    return f"{when}  {event}  {json.dumps(n, ensure_ascii=False, sort_keys=True)}"


def cmd_notice(args: argparse.Namespace) -> int:
    async def work(client: GatewayClient, profile: Profile) -> int:
        desk = own_desk(args.desk, profile)
        n = await client.notice(desk, args.cursor)
        line = await notice_text(client, n)
        if opt(args, "json"):
            emit_json(n)
            return EXIT_OK
        say(f"notice {n['cursor']} for {n['desk']}  ({n['event']})")
        say(line)
        if n.get("notice"):
            say("signed notice (base64, verify with the gateway's key):")
            say(n["notice"])
        return EXIT_OK

    return online(args, work)


def cmd_notices(args: argparse.Namespace) -> int:
    async def work(client: GatewayClient, profile: Profile) -> int:
        desk = own_desk(args.desk, profile)
        listed = await client.notices(desk, args.after)
        if opt(args, "json"):
            emit_json(listed)
            return EXIT_OK
        notices = listed["notices"]
        if not notices:
            say(f"no notices for {desk} after cursor {args.after}")
        for n in notices:
            state = "new" if n.get("read") is None else "read"
            say(f"{n['cursor']:>6}  [{state}]  {await notice_text(client, n)}")
        say(f"unread: {listed['unread']}")
        return EXIT_OK

    return online(args, work)


def safe_name(name: str, index: int) -> str:
    """A file name from a sender-chosen one: no directories, no hidden names, no control
    or bidi characters, at most MAX_ATTACHMENT_NAME characters and 200 bytes (keeping
    the extension), so that saving it cannot fail on its name."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = _UNSAFE_NAME.sub("_", base).strip().lstrip(".")
    stem, dot, suffix = base.rpartition(".")
    if not stem or len(suffix) > 16:
        stem, dot, suffix = base, "", ""
    while stem and (len(stem) + len(dot + suffix) > MAX_ATTACHMENT_NAME or
                    len((stem + dot + suffix).encode("utf-8")) > MAX_ATTACHMENT_NAME_BYTES):
        stem = stem[:-1]
    base = (stem.rstrip() + dot + suffix) if stem.strip() else ""
    return base or f"attachment-{index + 1}"


def save_attachment(directory: Path, name: str, data: bytes) -> Path:
    """Write into ``directory`` without overwriting: ``name``, else ``name (2)``..."""
    stem, dot, suffix = name.rpartition(".")
    if not stem:
        stem, dot, suffix = name, "", ""
    for n in range(1, 1000):
        candidate = directory / (name if n == 1 else f"{stem} ({n}){dot}{suffix}")
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return candidate
    raise ClientError(f"{directory}: too many files named like {name}", code="exists")


def describe(message: OpenedMessage, saved: dict[int, Path]) -> dict[str, Any]:
    h = message.header
    doc = dict(message.payload)
    listed = []
    for i, item in enumerate(doc.pop("attachments", None) or []):
        data = base64.b64decode(item["data"])
        entry = {"name": item["name"], "media_type": item["media_type"], "size": len(data),
                 "sha256": hashlib.sha256(data).hexdigest()}
        if i in saved:
            entry["saved_to"] = str(saved[i])
        listed.append(entry)
    for item in doc.get("translations") or []:  # (checked: each names an attachment)
        listed[item["attachment"]]["translation"] = item["language"]
    return {
        "id": h.id, "kind": h.kind, "priority": h.priority, "from": h.sender, "to": h.recipient,
        "sender_officer": message.sender_officer, "created": h.created, "expires": h.expires,
        "thread": h.thread, "in_reply_to": h.in_reply_to, "digest": message.envelope.digest,
        "payload": doc, "attachments": listed, "signer_ended": signer_ended(message),
        "shared_by": message.shared_by, "handling": h.handling, "state": h.state,
        "due": h.due, "forwarded": [{
            "id": f.header.id, "kind": f.header.kind, "from": f.header.sender,
            "to": f.header.recipient, "created": f.header.created,
            "handling": f.header.handling, "sender_officer": f.sender_officer,
            "signature": "verified", "permit": f.permit,
            "payload": {k: v for k, v in f.payload.items() if k != "attachments"}}
            for f in message.forwarded],
    }


def typed_lines(body: dict[str, Any]) -> list[str]:
    """The typed fields of an alert or a request, one line each, as ``read`` shows them."""
    lines = []
    for key, label in (("alert_type", "alert"), ("request_type", "request type"),
                       ("received_at", "received"),
                       ("place", "place"), ("border_gate", "border gate"), ("time", "time"),
                       ("requesting_authority", "requesting"),
                       ("executing_authority", "executing"), ("treaty", "treaty")):
        if body.get(key):
            lines.append(f"{label + ':':<11}{body[key]}")
    if body.get("languages"):
        lines.append(f"languages: {', '.join(body['languages'])}")
    for person in body.get("persons") or []:
        extra = ", ".join(f"{k} {person[k]}" for k in ("name", "nationality", "sex")
                          if person.get(k))
        child = "CHILD, " if person.get("child") else ""
        lines.append(f"person:    {person['role']} ({child}age {person.get('age_band')}"
                     f"{', ' + extra if extra else ''})")
        for doc in person.get("documents") or []:
            lines.append(f"  document: {_document_words(doc)}")
    for doc in body.get("documents") or []:
        lines.append(f"document:  {_document_words(doc)}")
    return lines


def _document_words(doc: dict[str, Any]) -> str:
    return " ".join(str(doc[k]) for k in ("type", "number", "issuer") if doc.get(k))


def signer_ended(message: OpenedMessage) -> dict[str, Any] | None:
    """For a signer whose binding has ended since: how (revoked or expired) and when."""
    former = message.former
    if former is None:
        return None
    revoked = former.revoked is not None and former.revoked <= former.not_after
    return {"how": "revoked" if revoked else "expired", "at": former.ended()}


def cmd_read(args: argparse.Namespace) -> int:
    async def work(client: GatewayClient, profile: Profile) -> int:
        message = await client.open(await message_id(client, profile, args.message))
        saved: dict[int, Path] = {}
        items = message.payload.get("attachments") or []
        if args.save_attachments is not None and items:
            args.save_attachments.mkdir(mode=0o700, parents=True, exist_ok=True)
            for i, item in enumerate(items):
                saved[i] = save_attachment(args.save_attachments, safe_name(item["name"], i),
                                           base64.b64decode(item["data"]))
            # The handling code goes with what is exported: whoever takes the files from
            # this folder finds what they may do with them.
            code = message.header.handling
            words = f"{code}: {HANDLING_WORDS[code]}" if code else "not stated by the sender"
            save_attachment(args.save_attachments, f"{message.header.id}.handling.txt", (
                f"Handling {words}\nMessage {message.header.id} from {message.header.sender}"
                f", signed by officer {message.sender_officer}\nFiles: "
                + ", ".join(path.name for path in saved.values()) + "\n").encode("utf-8"))
        # Acknowledged only once it was opened and saved: a read that failed half-way
        # must not tell the sender it was read.
        acknowledged = message.header.recipient in profile.desks
        if acknowledged:
            await client.acknowledge(message)
        info = describe(message, saved)
        info["acknowledged"] = acknowledged
        if opt(args, "json"):
            emit_json(info)
            return EXIT_OK
        body = info["payload"]
        if info["kind"] == "handover":
            say(f"HANDOVER RECEIPT for {info['in_reply_to']}: signed by officer "
                f"{info['sender_officer']} of {info['from']} (signature verified)")
        # The handling code first: what the officer may do with what follows.
        code = info["handling"]
        say(f"HANDLING:  {code}: {HANDLING_WORDS[code]}" if code else
            "HANDLING:  not stated by the sender (ask before passing it on)")
        say(f"message:   {info['id']}  ({info['priority']} {info['kind']})")
        ended = info["signer_ended"]
        since = f"; {ended['how']} since {fmt_time(ended['at'])}" if ended else ""
        say(f"from:      {info['from']}  (officer {info['sender_officer']}, signature verified"
            f"{since})")
        if ended:
            say(f"           signed on {fmt_time(info['created'])}, while the binding was valid")
        if info["shared_by"]:
            say(f"           sent before you joined the desk; its key shared with you by "
                f"{info['shared_by']}")
        say(f"to:        {info['to']}")
        say(f"sent:      {fmt_time(info['created'])}  expires {fmt_time(info['expires'])}")
        if info["in_reply_to"]:
            say(f"replying:  {info['in_reply_to']}")
        say(f"thread:    {info['thread']}")
        if info["state"]:
            say(f"request:   moved to {info['state']}")
            for item in body.get("missing") or []:
                say(f"  missing: {item}")
            if body.get("grounds"):
                say(f"  grounds: {body['grounds']}")
        if info["due"]:
            say(f"due:       {info['due']}")
        for line in typed_lines(body):
            say(line)
        for depth, link in enumerate(info["forwarded"], start=1):
            permit = {True: "with its sender's permit", False: "WITH A PERMIT THAT DOES NOT "
                      "HOLD", None: "without a permit"}[link["permit"]]
            warn = ("  (H2: NO ONWARD DISSEMINATION WITHOUT PERMISSION)"
                    if link["handling"] == "H2" and link["permit"] is not True else "")
            say(f"{'  ' * (depth - 1)}forwards:  {link['id']} ({link['kind']}) from "
                f"{link['from']} (officer {link['sender_officer']}, signature verified), "
                f"{permit}{warn}")
        if info["forwarded"]:
            if body.get("text"):
                say(f"note:      {body['text']}")
            body = info["forwarded"][-1]["payload"]  # the original, as its sender wrote it
            for line in typed_lines(body):
                say(line)
        if body.get("type") == "case":
            say(f"case ref:  {body['case_ref']}")
            say(f"legal basis: {body['legal_basis']}")
            say(f"offence:   {body['offence']}")
            say(f"deadline:  {body['deadline']}")
            say("requested actions:")
            for action in body["requested_actions"]:
                say(f"  - {action}")
        for item in info["attachments"]:
            where = f"  saved to {item['saved_to']}" if "saved_to" in item else ""
            what = (f"translation ({item['translation']})" if "translation" in item
                    else "attachment")
            say(f"{what}: {item['name']}  ({item['media_type']}, {item['size']} bytes)"
                f"{where}")
        say("")
        say(body.get("text") or "")
        return EXIT_OK

    return online(args, work)


def cmd_status(args: argparse.Namespace) -> int:
    async def work(client: GatewayClient, profile: Profile) -> int:
        status = await client.status(await message_id(client, profile, args.message))
        if opt(args, "json"):
            emit_json(status)
            return EXIT_OK
        say(f"message:     {status['id']}")
        say(f"from:        {status['from']}")
        say(f"to:          {status['to']}")
        say(f"accepted:    {fmt_time(status.get('accepted'))}")
        say(f"first read:  {fmt_time(status.get('first_read'))}")
        say(f"first reply: {fmt_time(status.get('first_reply'))}")
        reads = status.get("reads") or []
        say(f"reads:       {len(reads)}")
        for r in reads:
            say(f"  {r['officer']}  at {fmt_time(r['read'])}")
        for note in status.get("notices") or []:
            try:
                notice = open_notice(note.encode("utf-8"), profile.gateway_id,
                                     profile.gateway_key)
                if notice.reason == "expired":
                    why = (f"{notice.partner} had not taken it when it expired at "
                           f"{fmt_time(notice.expires_ms)}")
                elif notice.reason == RETURNED:
                    why = (f"the operator returned it before {notice.partner} took it: "
                           f"{notice.note}")
                else:
                    why = f"{notice.partner} refused it"
                say(f"NOT DELIVERED: {notice.reason}: {why} (notice signed by "
                    f"{notice.gateway} at {fmt_time(notice.time_ms)})")
            except CryptoError as exc:
                say(f"a non-delivery notice that does not verify: {exc.message}")
        say("ledger events:")
        for e in status.get("events") or []:
            extra = "  ".join(f"{k} {e[k]}" for k in ("actor", "ref", "partner", "outcome",
                                                      "reason") if e.get(k))
            say(f"  #{e['seq']:<6} {fmt_time(e.get('t'))}  {e['type']:<9}  {extra}".rstrip())
        return EXIT_OK

    return online(args, work)


# --- watch -----------------------------------------------------------------------------


def backoff(attempt: int) -> float:
    """Seconds to wait before reconnection ``attempt`` (0-based): doubling, capped."""
    return float(min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** min(attempt, 16)))


_STAGE_WORDS = {"delivered": "delivered", "read": "read", "reply": "answered"}


def notice_line(n: dict[str, Any]) -> str:
    when = fmt_time(n.get("at"))
    if n.get("kind") == "pending":
        return (f"{when}  {n.get('officer')} WAITS TO JOIN: compare its safety code, then "
                f"`gateway-client admit {n.get('desk')} {n.get('officer')}`")
    if n.get("kind") == "joined":
        by = "the operator (first member)" if n.get("by") == "operator" else n.get("by")
        return f"{when}  {n.get('officer')} JOINED, admitted by {by}"
    return f"{when}  {n.get('officer')} LEFT (binding revoked)"


def event_line(kind: str, data: dict[str, Any]) -> str:
    now = fmt_time(int(time.time() * 1000))
    desk = data.get("desk", "")
    if kind == "membership":
        return f"{now}  MEMBERSHIP  {desk}  " + notice_line(data)
    if kind == "message":
        answer = f" (reply to {data['in_reply_to']})" if data.get("in_reply_to") else ""
        return (f"{now}  message  {desk}  {data.get('id')}  {data.get('priority')} "
                f"{data.get('kind')} from {data.get('sender')}{answer}")
    if kind == "read":
        return (f"{now}  read     {desk}  {data.get('id')}  by {data.get('officer')} at "
                f"{fmt_time(data.get('read'))}")
    if kind == "reply":
        return (f"{now}  reply    {desk}  {data.get('id')}  answered by {data.get('reply')} "
                f"from {data.get('sender')}")
    if kind == "receipt":
        why = f" ({data['reason']})" if data.get("reason") else ""
        return (f"{now}  receipt  {desk}  {data.get('id')}  {data.get('outcome')}{why} by "
                f"{data.get('partner')}")
    if kind == "expired":
        return (f"{now}  NOT DELIVERED  {desk}  {data.get('id')}  expired before "
                f"{data.get('partner')} took it")
    if kind == "rejected" and data.get("reason") == RETURNED:
        return (f"{now}  NOT DELIVERED  {desk}  {data.get('id')}  returned by the operator "
                f"before {data.get('partner')} took it: {data.get('note')}")
    if kind == "rejected":
        return (f"{now}  NOT DELIVERED  {desk}  {data.get('id')}  {data.get('partner')} "
                f"refused it ({data.get('reason')})")
    if kind == "truncated":
        return (f"{now}  (notices after cursor {data.get('since')} and before "
                f"{data.get('first')} were not replayed, only the newest "
                f"{data.get('limit')}: `gateway-client notices DESK --after "
                f"{data.get('since')}` lists them)")
    if kind == "breach":
        return (f"{now}  LATE     {desk}  {data.get('id')}  {data.get('priority')} "
                f"{data.get('kind')} not {_STAGE_WORDS.get(str(data.get('stage')), '?')} "
                f"by {fmt_time(data.get('due'))}")
    if kind in ("case_due", "case_overdue"):
        return (f"{now}  {case_deadline_words(str(data.get('what')), str(data.get('desk')), desk)}"
                f"  request {data.get('id')}  {data.get('state')}  due {data.get('due')}")
    if kind == "escalation":
        return (f"{now}  ESCALATED  {desk}  {data.get('id')}  {data.get('priority')} "
                f"{data.get('stage')} service level missed by {data.get('late_desk')}")
    return f"{now}  {kind}  {json.dumps(data, ensure_ascii=False, sort_keys=True)}"


async def watch(client: GatewayClient, desks: list[str] | None, count: int | None,
                as_json: bool, since: int | None = None) -> int:
    """Print events until ``count`` of them, reconnecting whenever the stream drops.

    A refused session (the gateway restarted, or the token expired) is renewed once; if
    the fresh one is refused too, that is final (revoked, say), like any other refusal
    but overload (429) and gateway trouble (5xx), which are retried.
    """
    seen, attempt = 0, 0
    sign_in, renewed = False, False
    reason: str | None
    while True:
        try:
            if sign_in:
                await client.sign_in()
                sign_in = False
            async for kind, data in client.stream(desks, since=since):
                if kind == "ended" and isinstance(data, dict) and data.get("reason") == "revoked":
                    raise ClientError("the gateway ended the stream: your binding is revoked "
                                      "or expired", code="revoked")
                if kind == "ended" and isinstance(data, dict) and \
                        data.get("reason") == "too_many_streams":  # a newer one goes on
                    raise ClientError("the gateway ended the stream: a newer stream of yours "
                                      "replaced it", code="too_many_streams")
                if kind == "ended":  # the session expired: sign in again, at once
                    sign_in, reason = True, None
                    break
                if kind in ("resync", "shutdown"):
                    reason = ("the gateway is stopping" if kind == "shutdown"
                              else "events came faster than they were read; "
                                   "check the inbox")
                    break
                attempt = 0
                fields = data if isinstance(data, dict) else {}
                if since is not None and isinstance(fields.get("cursor"), int):
                    since = max(since, fields["cursor"])  # a reconnection resumes here
                if as_json:
                    emit_json({"event": kind, **fields})
                else:
                    say(event_line(kind, fields))
                seen += 1
                if count is not None and seen >= count:
                    return EXIT_OK
            else:
                reason = "the gateway ended the stream"
        except ApiError as exc:
            if exc.status == 401 and not renewed:
                sign_in, renewed = True, True
                continue
            if exc.status < 500 and exc.status != 429:
                raise
            reason = exc.message
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            reason = f"connection lost ({exc or type(exc).__name__})"
        if reason is None:
            continue
        renewed = False  # the stream was up, or the gateway unreachable: not an auth loop
        delay = backoff(attempt)
        attempt += 1
        note(f"{reason}; reconnecting in {delay:g} s")
        await asyncio.sleep(delay)


def cmd_watch(args: argparse.Namespace) -> int:
    async def work(client: GatewayClient, profile: Profile) -> int:
        desks = [own_desk(d, profile) for d in args.desk] if args.desk else None
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        watcher = asyncio.ensure_future(watch(client, desks, args.count, opt(args, "json"),
                                              args.since))
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({watcher, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            stopper.cancel()
            if not watcher.done():
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
        if watcher.cancelled():  # interrupted: a clean stop, not an error
            note("stopped")
            return EXIT_OK
        return watcher.result()

    return online(args, work)


# --- the unlock agent -------------------------------------------------------------------


def agent_doc(hello: dict[str, Any] | None) -> dict[str, Any]:
    if hello is None:
        return {"running": False}
    return {"running": True, "officer": hello.get("officer"), "until": hello.get("expires"),
            "pid": hello.get("pid")}


def cmd_agent(args: argparse.Namespace) -> int:
    if args.stop:
        return cmd_lock(args)
    profile = load_profile(profile_dir(opt(args, "profile")))
    if args.status:
        doc = agent_doc(agent_running(profile.directory))
        if opt(args, "json"):
            emit_json(doc)
        elif doc["running"]:
            say(f"the agent holds the keys of officer {doc['officer']} until "
                f"{fmt_time(doc['until'])} (pid {doc['pid']})")
        else:
            say("no agent runs for this profile")
        return EXIT_OK
    if agent_running(profile.directory) is not None:
        raise ClientError("an agent already runs for this profile (`gateway-client lock` "
                          "ends it)", code="agent_running")
    bundle = unlock(profile, lambda: passphrase_for(args, f"your key {profile.key_file}"))
    creds = profile.credentials(bundle)  # the keys enrolled, or a clear error
    now = time.time()
    server = AgentServer(profile.directory, profile.officer_id, creds.signing, creds.encryption,
                         expires=time.monotonic() + args.lifetime,
                         expires_ms=int((now + args.lifetime) * 1000))
    server.bind()
    doc = {"running": True, "officer": profile.officer_id, "until": server.expires_ms,
           "socket": str(server.path)}
    if args.foreground:
        doc["pid"] = os.getpid()
    else:
        doc["pid"] = server.run_detached()
    if opt(args, "json"):
        emit_json(doc)
    else:
        say(f"keys of officer {profile.officer_id} open until {fmt_time(server.expires_ms)} "
            f"(agent pid {doc['pid']}); `gateway-client lock` ends it sooner")
    if args.foreground:
        sys.stdout.flush()
        server.run()
    return EXIT_OK


def cmd_lock(args: argparse.Namespace) -> int:
    profile = load_profile(profile_dir(opt(args, "profile")))
    hello = lock(profile.directory)
    if opt(args, "json"):
        emit_json({"locked": hello is not None})
    elif hello is None:
        say("no agent was running for this profile")
    else:
        say(f"agent {hello.get('pid')} ended: the keys are locked")
    return EXIT_OK


# --- keys ------------------------------------------------------------------------------


def key_lines(public: dict[str, str]) -> list[dict[str, str]]:
    keys = []
    for role, b64 in sorted(public.items()):
        key = (EncryptionPublicKey.from_b64(b64, role) if role == ROLE_OFFICER_ENCRYPTION
               else VerifyKey.from_b64(b64, role))
        keys.append({"role": role, "key_id": key.key_id, "fingerprint": key.fingerprint})
    return keys


def cmd_keys(args: argparse.Namespace) -> int:
    as_json = opt(args, "json")
    profile: Profile | None = None
    if args.keys_command == "new":
        check_no_passphrase(args)
        passphrase = None if args.insecure_dev_keys else passphrase_for(
            args, f"the new key file {args.out}", confirm=True)
        bundle = KeyBundle(owner=args.owner, keys={
            ROLE_OFFICER_SIGNING: OfficerSigningKey.generate(),
            ROLE_OFFICER_ENCRYPTION: OfficerEncryptionKey.generate(),
        })
        save_bundle(args.out, bundle, passphrase)
        path: Path = args.out
        if not as_json:
            say(f"keys written to {path}")
    elif args.file is not None:
        path = args.file
    else:
        profile = load_profile(profile_dir(opt(args, "profile")))
        path = profile.key_file
    owner, public, protection = read_public(path)
    doc: dict[str, Any] = {"file": str(path), "owner": owner, "protection": protection,
                           "keys": key_lines(public)}
    if profile is not None:
        doc.update(officer=profile.officer_id, desks=list(profile.desks),
                   gateway=profile.gateway_id, gateway_url=profile.gateway_url,
                   gateway_fingerprint=profile.gateway_key.fingerprint)
    if as_json:
        emit_json(doc)
        return EXIT_OK
    if profile is not None:
        say(f"officer: {profile.officer_id}  desks {', '.join(profile.desks)}")
        say(f"gateway: {profile.gateway_id} at {profile.gateway_url}  pinned fingerprint "
            f"{profile.gateway_key.fingerprint}")
    say(f"key file: {path}  owner {owner} ({protection})")
    for key in doc["keys"]:
        say(f"{key['role']}: id {key['key_id']}  fingerprint {key['fingerprint']}")
    return EXIT_OK


# --- main ------------------------------------------------------------------------------

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "enroll": cmd_enroll,
    "desks": cmd_desks,
    "members": cmd_members,
    "admit": cmd_admit,
    "safety-code": cmd_safety_code,
    "send": cmd_send,
    "inbox": cmd_inbox,
    "sent": cmd_sent,
    "notice": cmd_notice,
    "notices": cmd_notices,
    "read": cmd_read,
    "reply": cmd_reply,
    "cases": cmd_cases,
    "move": cmd_move,
    "forward": cmd_forward,
    "permit": cmd_permit,
    "handover": cmd_handover,
    "status": cmd_status,
    "watch": cmd_watch,
    "keys": cmd_keys,
    "agent": cmd_agent,
    "lock": cmd_lock,
}


def with_codes(func: Callable[[], int], *, as_json: bool = False) -> Callable[[], int]:
    """Add the stable error code to local errors (the gateway's already carry theirs), and
    turn anything unforeseen into one line too."""

    def run() -> int:
        try:
            return func()
        except (ApiError, ConfigError, ProfileError):
            raise
        except ERRORS as exc:
            if f"({exc.code}" not in exc.message:
                exc.args = (f"{exc.message} ({exc.code})", *exc.args[1:])
            raise
        except (KeyboardInterrupt, OSError):  # a closed pipe too: see run_command
            raise
        except Exception as exc:  # the one catch-all, at the process boundary
            print(error_line(PROG, "unexpected",
                             f"unexpected {type(exc).__name__}: {clean(str(exc))}",
                             as_json=as_json), file=sys.stderr)
            return EXIT_FAILURE

    return run


def main(argv: list[str] | None = None) -> int:
    utf8_streams()
    Parser.json_errors = "--json" in (sys.argv[1:] if argv is None else argv)
    args = cliutil.parse_args(build_parser(), argv)
    configure_logging("error", "auto")
    as_json = opt(args, "json")
    return run_command(PROG, with_codes(lambda: COMMANDS[args.command](args), as_json=as_json),
                       json_errors=as_json)


if __name__ == "__main__":
    sys.exit(main())
