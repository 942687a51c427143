"""An officer's profile: where one officer's enrollment and private keys live on disk.

A profile is a directory (default ``~/.fpg-client``, or ``$FPG_CLIENT_PROFILE``) holding

* ``profile.json``: what enrollment established and nothing secret: the gateway's URL
  and id, its pinned signing key (base64) and fingerprint, this officer's id, desks and
  binding expiry, and whether the key file is an insecure development one;
* ``officer.key``: the officer's signing and encryption private keys, a key file
  (gateway.crypto.keyfile) encrypted with the officer's passphrase, or in clear when
  enrolled with ``--insecure-dev-keys`` (demo and tests only; the profile records it so
  later commands ask for no passphrase and a swapped key file is noticed).

Both files are written atomically with mode 0600 and never overwritten.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.client.api import Credentials
from gateway.crypto import files
from gateway.crypto.envelope import is_address
from gateway.crypto.keyfile import INSECURE, KeyBundle, load_bundle, read_public
from gateway.crypto.keys import (
    ROLE_GATEWAY_SIGNING,
    ROLE_OFFICER_ENCRYPTION,
    ROLE_OFFICER_SIGNING,
    OfficerEncryptionKey,
    OfficerSigningKey,
    VerifyKey,
    fingerprints_equal,
)
from gateway.errors import BadKeyError, GatewayError, KeyFileError

FORMAT = "fpg-client-profile"
VERSION = 1
PROFILE_FILE = "profile.json"
KEY_FILE = "officer.key"
PROFILE_ENV = "FPG_CLIENT_PROFILE"
DEFAULT_PROFILE = "~/.fpg-client"
MAX_PROFILE_BYTES = 64 * 1024


class ProfileError(GatewayError):
    """A profile that is missing, unreadable, damaged or already there."""

    code = "profile"


def profile_dir(given: Path | None) -> Path:
    """The profile directory: ``given``, else ``$FPG_CLIENT_PROFILE``, else the default."""
    if given is not None:
        return given.expanduser()
    return Path(os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE).expanduser()


@dataclass(frozen=True)
class Profile:
    directory: Path
    gateway_url: str
    gateway_id: str
    gateway_key: VerifyKey
    officer_id: str
    sign_key_id: str  # this officer's own keys, to check the key file belongs here
    enc_key_id: str
    desks: tuple[str, ...]  # desk addresses
    not_after: int  # binding expiry, Unix ms
    enrolled: int  # Unix ms
    insecure_dev_keys: bool

    @property
    def key_file(self) -> Path:
        return self.directory / KEY_FILE

    @property
    def path(self) -> Path:
        return self.directory / PROFILE_FILE

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "v": VERSION,
            "gateway_url": self.gateway_url, "gateway_id": self.gateway_id,
            "gateway_key": self.gateway_key.b64(),
            "gateway_fingerprint": self.gateway_key.fingerprint,
            "officer_id": self.officer_id, "sign_key_id": self.sign_key_id,
            "enc_key_id": self.enc_key_id, "desks": list(self.desks),
            "not_after": self.not_after, "enrolled": self.enrolled,
            "key_file": KEY_FILE, "insecure_dev_keys": self.insecure_dev_keys,
        }

    def credentials(self, bundle: KeyBundle) -> Credentials:
        signing, encryption = officer_keys(bundle, self.key_file)
        if (signing.key_id, encryption.key_id) != (self.sign_key_id, self.enc_key_id):
            raise KeyFileError(f"{self.key_file}: holds other keys than the ones enrolled "
                               f"for officer {self.officer_id}")
        return Credentials(self.gateway_url, self.gateway_id, self.gateway_key, self.officer_id,
                           self.desks, signing, encryption)


def officer_keys(bundle: KeyBundle, where: Path) -> tuple[OfficerSigningKey,
                                                          OfficerEncryptionKey]:
    """The officer's signing and encryption keys from a key bundle, or a clear error."""
    signing, encryption = bundle.get(ROLE_OFFICER_SIGNING), bundle.get(ROLE_OFFICER_ENCRYPTION)
    if not isinstance(signing, OfficerSigningKey) or not isinstance(
        encryption, OfficerEncryptionKey
    ):
        raise KeyFileError(f"{where}: not an officer's key file")
    return signing, encryption


def check_free(directory: Path) -> None:
    """Refuse to enroll into a directory that already holds a profile or a key file."""
    for name in (PROFILE_FILE, KEY_FILE):
        if (directory / name).exists():
            raise ProfileError(f"{directory / name}: already exists; refusing to overwrite "
                               "a profile (choose another --profile directory)")


def make_dir(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)


def write_new(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600; never overwrite."""
    try:
        files.write_new(path, data)
    except FileExistsError:
        raise ProfileError(f"{path}: already exists; refusing to overwrite") from None


def save_profile(profile: Profile) -> None:
    text = json.dumps(profile.to_json(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    write_new(profile.path, text.encode("utf-8"))


def _field(doc: dict[str, Any], name: str, kind: type, path: Path) -> Any:
    value = doc.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ProfileError(f"{path}: field {name!r} is missing or not a {kind.__name__}")
    return value


def load_profile(directory: Path) -> Profile:
    """Read and check ``directory/profile.json`` (no passphrase needed)."""
    path = directory / PROFILE_FILE
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_PROFILE_BYTES + 1)
    except FileNotFoundError:
        raise ProfileError(f"no profile in {directory}: run `gateway-client enroll` first, "
                           "or give --profile DIR") from None
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read the profile ({exc.strerror})") from None
    if len(data) > MAX_PROFILE_BYTES:
        raise ProfileError(f"{path}: too large for a profile")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise ProfileError(f"{path}: not a profile (invalid JSON)") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ProfileError(f"{path}: not a profile (format is not {FORMAT!r})")
    if doc.get("v") != VERSION:
        raise ProfileError(f"{path}: unsupported profile version {doc.get('v')!r}")
    try:
        key = VerifyKey.from_b64(_field(doc, "gateway_key", str, path), ROLE_GATEWAY_SIGNING)
        pinned = _field(doc, "gateway_fingerprint", str, path)
        if not fingerprints_equal(pinned, key.fingerprint):
            raise ProfileError(f"{path}: the pinned gateway key does not match its fingerprint")
    except BadKeyError:
        raise ProfileError(f"{path}: the pinned gateway key is damaged") from None
    desks = _field(doc, "desks", list, path)
    if not desks or not all(is_address(d) for d in desks):
        raise ProfileError(f"{path}: 'desks' must list desk addresses")
    if _field(doc, "key_file", str, path) != KEY_FILE:
        raise ProfileError(f"{path}: key_file must be {KEY_FILE!r}")
    return Profile(
        directory=directory,
        gateway_url=_field(doc, "gateway_url", str, path).rstrip("/"),
        gateway_id=_field(doc, "gateway_id", str, path),
        gateway_key=key,
        officer_id=_field(doc, "officer_id", str, path),
        sign_key_id=_field(doc, "sign_key_id", str, path),
        enc_key_id=_field(doc, "enc_key_id", str, path),
        desks=tuple(desks),
        not_after=_field(doc, "not_after", int, path),
        enrolled=_field(doc, "enrolled", int, path),
        insecure_dev_keys=_field(doc, "insecure_dev_keys", bool, path),
    )


def unlock(profile: Profile, passphrase: Callable[[], bytes]) -> KeyBundle:
    """Open the profile's key file; ``passphrase`` is asked only for a protected one.

    A key file whose protection differs from what the profile recorded at enrollment is
    refused either way, so a plaintext key file cannot be slipped in unnoticed.
    """
    protection = read_public(profile.key_file)[2]
    if profile.insecure_dev_keys:
        if protection != INSECURE:
            raise KeyFileError(f"{profile.key_file}: the profile expects an insecure "
                               "development key file, but this one is protected")
        return load_bundle(profile.key_file, None, allow_insecure=True)
    if protection == INSECURE:
        raise KeyFileError(f"{profile.key_file}: holds plaintext keys, but this profile was "
                           "enrolled with a passphrase; refusing to use it")
    return load_bundle(profile.key_file, passphrase())
