"""Edit the ``[[partners]]`` tables of a gateway's configuration file, safely.

``gateway partners add`` and ``gateway partners remove`` change one table and nothing
else: the file is edited as text (comments, order and spacing stay as the operator left
them), the edited text must parse into the same configuration with exactly that partner
added or removed (else the edit is refused: the operator edits by hand), and it replaces
the file with one rename, after an fsync, with the file's mode. A refused edit leaves the
file byte for byte as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import tempfile
import tomllib
from pathlib import Path

from gateway.config import Config, PartnerSection, parse_config
from gateway.crypto.keys import normalize_fingerprint
from gateway.errors import BadKeyError, ConfigError
from gateway.protocol.names import is_name

MAX_CONFIG_BYTES = 1024 * 1024
_HEADER = re.compile(r"^\s*\[")  # a table or array-of-tables header
_PARTNERS = re.compile(r"^\s*\[\[\s*partners\s*\]\]\s*(#.*)?$")
_URL = re.compile(r"https?://[^\s/\"'\\]+(/[^\s\"'\\]*)?")


def _read(path: Path) -> tuple[bytes, Config]:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes; not a config file")
    return data, _parse(data, path)


def _parse(data: bytes, path: Path) -> Config:
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return parse_config(doc, path.resolve())


def _same_url(a: str, b: str) -> bool:
    return a.rstrip("/").lower() == b.rstrip("/").lower()


def new_partner(config: Config, partner_id: str, url: str, fingerprint: str,
                ca_file: Path | None = None) -> PartnerSection:
    """The partner to add, checked against ``config``: ConfigError naming the problem."""
    path = config.path
    if not is_name(partner_id):
        raise ConfigError(f"partner id {partner_id[:80]!r}: must be 1-63 lowercase letters, "
                          "digits or inner hyphens, e.g. kh-cnp")
    if partner_id == config.gateway.id:
        raise ConfigError(f"partner id {partner_id}: that is this gateway's own id")
    if not _URL.fullmatch(url):
        raise ConfigError(f"partner URL {url[:200]!r}: must be an http:// or https:// URL "
                          "such as https://gw.kh-cnp.example:8443")
    try:
        fingerprint = normalize_fingerprint(fingerprint)
    except BadKeyError:
        raise ConfigError("--fingerprint: must be a key fingerprint, 32 base32 characters "
                          "as the partner's `gateway keys show` prints them") from None
    for known in config.partners:
        if known.id == partner_id:
            raise ConfigError(f"{path}: partner {partner_id} is listed already (url "
                              f"{known.url}); remove it first to change it")
        if _same_url(known.url, url):
            raise ConfigError(f"{path}: partner {known.id} has that URL already ({known.url})")
    if ca_file is not None and not url.startswith("https://"):
        raise ConfigError(f"--ca-file: partner URL {url[:200]!r} is not https://")
    return PartnerSection(id=partner_id, url=url, fingerprint=fingerprint,
                          ca_file=ca_file.absolute() if ca_file is not None else None)


def _partner_block(partner: PartnerSection) -> str:
    block = (f'[[partners]]\nid = "{partner.id}"\nurl = "{partner.url}"\n'
             f'fingerprint = "{partner.fingerprint}"\n')
    if partner.ca_file is not None:  # (a JSON string is a TOML basic string)
        block += f"ca_file = {json.dumps(str(partner.ca_file), ensure_ascii=False)}\n"
    return block


def added_text(text: str, partner: PartnerSection) -> str:
    """``text`` with a ``[[partners]]`` table for ``partner`` appended."""
    if text and not text.endswith("\n"):
        text += "\n"
    return f"{text}\n{_partner_block(partner)}" if text.strip() else _partner_block(partner)


def removed_text(text: str, partner_id: str) -> str | None:
    """``text`` without the ``[[partners]]`` table whose id is ``partner_id``: from its
    header to its last key (the comments and blank lines after that belong to what
    follows), with the blank lines above it; None if no such table is found by reading
    the text."""
    lines = text.splitlines(keepends=True)
    id_line = re.compile(r'^\s*id\s*=\s*["\']' + re.escape(partner_id) + r'["\']\s*(#.*)?$')
    for start, line in enumerate(lines):
        if not _PARTNERS.match(line):
            continue
        end = start + 1
        while end < len(lines) and not _HEADER.match(lines[end]):
            end += 1
        if not any(id_line.match(lines[i]) for i in range(start + 1, end)):
            continue
        keep_from = end  # comments and blank lines after its last key are what follows'
        while keep_from > start + 1 and (not lines[keep_from - 1].strip()
                                         or lines[keep_from - 1].lstrip().startswith("#")):
            keep_from -= 1
        first = start  # the blank lines above the table go with it
        while first > 0 and not lines[first - 1].strip():
            first -= 1
        head, tail = lines[:first], lines[keep_from:]
        if head and tail and tail[0].strip():
            head.append("\n")
        return "".join(head + tail)
    return None


def _replace(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` in one rename, after an fsync, with its mode."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(text.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash
    finally:
        os.close(dir_fd)


def _check_edit(before: Config, after_text: str, path: Path,
                expected: tuple[PartnerSection, ...]) -> None:
    """The edited text must parse and differ from ``before`` only in its partners."""
    after = _parse(after_text.encode("utf-8"), path)
    normal = tuple((p.id, p.url, normalize_fingerprint(p.fingerprint)) for p in after.partners)
    wanted = tuple((p.id, p.url, normalize_fingerprint(p.fingerprint)) for p in expected)
    if normal != wanted or after.gateway != before.gateway or after.server != before.server:
        raise ConfigError(f"{path}: the partners are not all in [[partners]] tables this "
                          "command can edit; edit the file by hand (see "
                          "config/gateway.example.toml)")


def add_partner(path: Path, partner_id: str, url: str, fingerprint: str,
                ca_file: Path | None = None) -> PartnerSection:
    """Add a ``[[partners]]`` table to the config file at ``path`` (with the partner's
    own CA file, checked to load as the configuration loads)."""
    data, config = _read(path)
    partner = new_partner(config, partner_id, url, fingerprint, ca_file)
    text = added_text(data.decode("utf-8"), partner)
    _check_edit(config, text, path, (*config.partners, partner))
    _replace(path, text)
    return partner


def remove_partner(path: Path, partner_id: str) -> PartnerSection:
    """Remove the ``[[partners]]`` table of ``partner_id`` from the config file."""
    data, config = _read(path)
    listed = [p for p in config.partners if p.id == partner_id]
    if not listed:
        known = ", ".join(p.id for p in config.partners) or "none"
        raise ConfigError(f"{path}: no partner {partner_id[:80]!r} in [[partners]] "
                          f"(listed: {known})")
    text = removed_text(data.decode("utf-8"), partner_id)
    if text is None:
        raise ConfigError(f"{path}: the table of partner {partner_id} is not written in a "
                          "way this command can edit; edit the file by hand")
    _check_edit(config, text, path, tuple(p for p in config.partners if p.id != partner_id))
    _replace(path, text)
    return listed[0]
