"""Key files: a bundle of private keys, encrypted at rest with a passphrase.

A key file is one JSON object (see docs/PROTOCOL.md, "Key files"):

* ``public``: the bundle's public keys by role, readable without the passphrase (so
  ``gateway keys show`` needs no secret);
* ``protection: "argon2id+xsalsa20poly1305"``: the secret seeds, as a JSON object, sealed
  with libsodium ``SecretBox`` under a key derived from the passphrase with Argon2id
  (``crypto_pwhash``), salt and cost parameters stored beside it;
* or ``protection: "INSECURE-DEVELOPMENT-PLAINTEXT"``: the seeds in base64, for the demo and
  tests only. Loading such a file needs ``allow_insecure=True``, which only configuration
  that says ``insecure_dev_mode = true`` passes; callers log a warning every time.
* ``key_history`` (gateway key files, after ``gateway keys rotate``): the gateway's key
  rotation statements, base64 of signed notes, oldest first. They are public and signed,
  so they live beside ``public``; gateway.protocol.rotation checks them when the file is used.

On load the public keys are recomputed from the secrets and must equal the ``public``
section, so a tampered public half is caught even though SecretBox does not cover it.
Files are written atomically with mode 0600.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.utils

from gateway.crypto.errors import BadKeyError, KeyFileError, WrongPassphraseError
from gateway.crypto.files import replace_private, write_new
from gateway.crypto.keys import SECRET_KEY_CLASSES, SecretKey

FORMAT = "fpg-keyfile"
VERSION = 1
PROTECTED = "argon2id+xsalsa20poly1305"
INSECURE = "INSECURE-DEVELOPMENT-PLAINTEXT"
MAX_KEY_FILE_BYTES = 64 * 1024


@dataclass(frozen=True)
class KdfParams:
    """Argon2id cost. The default is libsodium's MODERATE profile (256 MiB, 3 passes)."""

    opslimit: int = nacl.pwhash.argon2id.OPSLIMIT_MODERATE
    memlimit: int = nacl.pwhash.argon2id.MEMLIMIT_MODERATE

    def __post_init__(self) -> None:
        if not (
            nacl.pwhash.argon2id.OPSLIMIT_MIN <= self.opslimit <= nacl.pwhash.argon2id.OPSLIMIT_MAX
        ):
            raise KeyFileError("Argon2id opslimit out of range")
        if not (
            nacl.pwhash.argon2id.MEMLIMIT_MIN <= self.memlimit <= nacl.pwhash.argon2id.MEMLIMIT_MAX
        ):
            raise KeyFileError("Argon2id memlimit out of range")


# Fast parameters for tests only: never the default of any command.
TEST_KDF = KdfParams(
    opslimit=nacl.pwhash.argon2id.OPSLIMIT_MIN, memlimit=nacl.pwhash.argon2id.MEMLIMIT_MIN
)


@dataclass(frozen=True)
class KeyBundle:
    """The private keys of one gateway or one officer, by role."""

    owner: str
    keys: Mapping[str, SecretKey]
    insecure: bool = False
    history: tuple[bytes, ...] = ()  # key rotation statements (signed notes), oldest first

    def get(self, role: str) -> SecretKey:
        try:
            return self.keys[role]
        except KeyError:
            raise KeyFileError(f"key file of {self.owner!r} holds no {role} key") from None

    def public_map(self) -> dict[str, str]:
        return {role: key.public.b64() for role, key in sorted(self.keys.items())}


def _derive(passphrase: bytes, salt: bytes, kdf: KdfParams) -> bytes:
    return bytes(
        nacl.pwhash.argon2id.kdf(
            nacl.secret.SecretBox.KEY_SIZE, passphrase, salt, opslimit=kdf.opslimit,
            memlimit=kdf.memlimit,
        )
    )


def encode_bundle(
    bundle: KeyBundle, passphrase: bytes | None, kdf: KdfParams | None = None
) -> bytes:
    """Serialise ``bundle``; ``passphrase=None`` writes the insecure development form."""
    secrets = {
        role: base64.b64encode(key.seed).decode("ascii")
        for role, key in sorted(bundle.keys.items())
    }
    doc: dict[str, Any] = {
        "format": FORMAT,
        "v": VERSION,
        "owner": bundle.owner,
        "public": bundle.public_map(),
    }
    if bundle.history:
        doc["key_history"] = [base64.b64encode(s).decode("ascii") for s in bundle.history]
    if passphrase is None:
        doc["protection"] = INSECURE
        doc["secret"] = secrets
    else:
        if not passphrase:
            raise KeyFileError("an empty passphrase is not allowed")
        kdf = kdf or KdfParams()
        salt = nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES)
        box = nacl.secret.SecretBox(_derive(passphrase, salt, kdf))
        sealed = box.encrypt(json.dumps(secrets, sort_keys=True).encode("utf-8"))
        doc["protection"] = PROTECTED
        doc["kdf"] = {
            "alg": "argon2id13",
            "opslimit": kdf.opslimit,
            "memlimit": kdf.memlimit,
            "salt": base64.b64encode(salt).decode("ascii"),
        }
        doc["box"] = base64.b64encode(bytes(sealed)).decode("ascii")
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")


def save_bundle(
    path: Path, bundle: KeyBundle, passphrase: bytes | None, kdf: KdfParams | None = None
) -> None:
    """Write a key file atomically with mode 0600; refuses to overwrite an existing file."""
    data = encode_bundle(bundle, passphrase, kdf)
    path = Path(path)
    if path.exists():
        raise KeyFileError(f"{path}: already exists; refusing to overwrite a key file")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_new(path, data)
    except FileExistsError:  # someone created it meanwhile
        raise KeyFileError(f"{path}: already exists; refusing to overwrite a key file") \
            from None


def replace_bundle(path: Path, bundle: KeyBundle, passphrase: bytes | None, *,
                   keep_old_as: Path, kdf: KdfParams | None = None) -> None:
    """Replace the key file at ``path`` by ``bundle`` (key rotation): the old file is kept
    under ``keep_old_as`` (a hard link, made first; refuses if that exists), then the new
    one is written beside it and renamed over ``path`` atomically, mode 0600. The new file
    uses the old one's Argon2id cost unless ``kdf`` is given."""
    path, keep_old_as = Path(path), Path(keep_old_as)
    if kdf is None and passphrase is not None:
        kdf_doc = _read_doc(path).get("kdf")
        if isinstance(kdf_doc, dict):
            try:
                kdf = KdfParams(int(kdf_doc["opslimit"]), int(kdf_doc["memlimit"]))
            except (KeyError, TypeError, ValueError):
                kdf = None
    data = encode_bundle(bundle, passphrase, kdf)
    try:
        os.link(path, keep_old_as)
    except FileExistsError:
        raise KeyFileError(f"{keep_old_as}: already exists; refusing to overwrite a key "
                           "file") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot keep the old key file ({exc.strerror})") from None
    replace_private(path, data)


def _read_doc(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read key file ({exc.strerror})") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"{path}: too large for a key file")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise KeyFileError(f"{path}: not a key file (invalid JSON)") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise KeyFileError(f"{path}: not a key file (format is not {FORMAT!r})")
    if doc.get("v") != VERSION:
        raise KeyFileError(f"{path}: unsupported key file version {doc.get('v')!r}")
    if not isinstance(doc.get("public"), dict) or not isinstance(doc.get("owner"), str):
        raise KeyFileError(f"{path}: key file lacks 'owner' or 'public'")
    return doc


def read_public(path: Path) -> tuple[str, dict[str, str], str]:
    """Owner, public keys (base64 by role) and protection of a key file, no passphrase."""
    doc = _read_doc(Path(path))
    return doc["owner"], dict(doc["public"]), str(doc.get("protection"))


def _history(doc: dict[str, Any], path: Path) -> tuple[bytes, ...]:
    items = doc.get("key_history", [])
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise KeyFileError(f"{path}: key_history is not a list of base64 strings")
    try:
        return tuple(base64.b64decode(i, validate=True) for i in items)
    except (binascii.Error, ValueError):
        raise KeyFileError(f"{path}: key_history is not valid base64") from None


def read_history(path: Path) -> tuple[bytes, ...]:
    """The key rotation statements of a key file, oldest first (no passphrase)."""
    path = Path(path)
    return _history(_read_doc(path), path)


def is_insecure(path: Path) -> bool:
    return read_public(path)[2] == INSECURE


def _b64(value: object, path: Path, what: str) -> bytes:
    if not isinstance(value, str):
        raise KeyFileError(f"{path}: {what} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise KeyFileError(f"{path}: {what} is not valid base64") from None


def load_bundle(
    path: Path, passphrase: bytes | None, *, allow_insecure: bool = False
) -> KeyBundle:
    """Read and unlock a key file.

    Raises :class:`WrongPassphraseError` when the passphrase does not open it and
    :class:`KeyFileError` for every other problem, each naming the file.
    """
    path = Path(path)
    doc = _read_doc(path)
    protection = doc.get("protection")
    if protection == INSECURE:
        if not allow_insecure:
            raise KeyFileError(
                f"{path}: holds plaintext development keys; set insecure_dev_mode = true "
                "to use it (never in production)"
            )
        secrets = doc.get("secret")
    elif protection == PROTECTED:
        if passphrase is None:
            raise KeyFileError(f"{path}: is passphrase-protected and no passphrase was given")
        kdf_doc = doc.get("kdf")
        if not isinstance(kdf_doc, dict) or kdf_doc.get("alg") != "argon2id13":
            raise KeyFileError(f"{path}: unsupported key derivation")
        try:
            kdf = KdfParams(int(kdf_doc["opslimit"]), int(kdf_doc["memlimit"]))
        except (KeyError, TypeError, ValueError):
            raise KeyFileError(f"{path}: bad key derivation parameters") from None
        salt = _b64(kdf_doc.get("salt"), path, "kdf.salt")
        if len(salt) != nacl.pwhash.argon2id.SALTBYTES:
            raise KeyFileError(f"{path}: bad salt length")
        box = nacl.secret.SecretBox(_derive(passphrase, salt, kdf))
        try:
            plain = box.decrypt(_b64(doc.get("box"), path, "box"))
        except nacl.exceptions.CryptoError:
            raise WrongPassphraseError(
                f"{path}: wrong passphrase (or the key file is damaged)"
            ) from None
        try:
            secrets = json.loads(plain)
        except ValueError:
            raise KeyFileError(f"{path}: damaged key file contents") from None
    else:
        raise KeyFileError(f"{path}: unknown protection {protection!r}")

    if not isinstance(secrets, dict) or not secrets:
        raise KeyFileError(f"{path}: key file holds no keys")
    keys: dict[str, SecretKey] = {}
    for role, value in secrets.items():
        cls = SECRET_KEY_CLASSES.get(role)
        if cls is None:
            raise KeyFileError(f"{path}: unknown key role {role!r}")
        try:
            keys[role] = cls(_b64(value, path, f"secret key {role}"))
        except BadKeyError:
            raise KeyFileError(f"{path}: damaged {role} key") from None
    bundle = KeyBundle(owner=doc["owner"], keys=keys, insecure=protection == INSECURE,
                       history=_history(doc, path))
    if bundle.public_map() != doc["public"]:
        raise KeyFileError(f"{path}: public keys do not match the secret keys")
    return bundle
