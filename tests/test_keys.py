"""Key types, ids, fingerprints and key files."""

from __future__ import annotations

import json

import pytest

from gateway.crypto.keyfile import (
    TEST_KDF,
    KeyBundle,
    load_bundle,
    read_public,
    save_bundle,
)
from gateway.crypto.keys import (
    ROLE_GATEWAY_SIGNING,
    ROLE_OFFICER_ENCRYPTION,
    ROLE_OFFICER_SIGNING,
    EncryptionPublicKey,
    GatewaySigningKey,
    OfficerEncryptionKey,
    OfficerSigningKey,
    VerifyKey,
    fingerprints_equal,
    normalize_fingerprint,
)
from gateway.errors import (
    BadKeyError,
    BadSignatureError,
    KeyFileError,
    WrongPassphraseError,
)


def test_role_is_part_of_the_key_id() -> None:
    key = OfficerSigningKey.generate()
    same_bytes_as_gateway = VerifyKey(key.public.raw, ROLE_GATEWAY_SIGNING)
    assert same_bytes_as_gateway.key_id != key.key_id
    assert same_bytes_as_gateway != key.public
    assert len(key.key_id) == 16


def test_fingerprint_form_and_comparison() -> None:
    fp = GatewaySigningKey.generate().public.fingerprint
    groups = fp.split(" ")
    assert len(groups) == 8 and all(len(g) == 4 for g in groups)
    assert fingerprints_equal(fp, fp.lower().replace(" ", "-"))
    assert not fingerprints_equal(fp, GatewaySigningKey.generate().public.fingerprint)
    with pytest.raises(BadKeyError):
        normalize_fingerprint("not a fingerprint")


def test_keys_are_validated_on_construction() -> None:
    with pytest.raises(BadKeyError):
        OfficerSigningKey(b"short")
    with pytest.raises(BadKeyError):
        VerifyKey(b"\x00" * 31, ROLE_OFFICER_SIGNING)
    with pytest.raises(BadKeyError):
        VerifyKey(b"\x02" + b"\xff" * 31, ROLE_OFFICER_SIGNING)  # not a curve point
    with pytest.raises(BadKeyError):
        VerifyKey(OfficerSigningKey.generate().public.raw, ROLE_OFFICER_ENCRYPTION)
    with pytest.raises(BadKeyError):
        EncryptionPublicKey(b"\x00" * 32)  # small order: all-zero shared secret


def test_sign_and_verify_returns_the_message() -> None:
    key = OfficerSigningKey.generate()
    sig = key.sign(b"abc")
    assert key.public.verify(b"abc", sig) == b"abc"
    with pytest.raises(BadSignatureError):
        key.public.verify(b"abd", sig)
    with pytest.raises(BadSignatureError):
        key.public.verify(b"abc", sig[:63])


def test_repr_shows_no_secret() -> None:
    key = OfficerSigningKey.generate()
    enc = OfficerEncryptionKey.generate()
    assert key.seed.hex() not in repr(key) and enc.seed.hex() not in repr(enc)


@pytest.fixture
def bundle() -> KeyBundle:
    return KeyBundle(
        owner="officer-1",
        keys={ROLE_OFFICER_SIGNING: OfficerSigningKey.generate(),
              ROLE_OFFICER_ENCRYPTION: OfficerEncryptionKey.generate()},
    )


def test_key_file_does_not_contain_private_key_bytes(tmp_path, bundle) -> None:
    path = tmp_path / "officer.key"
    save_bundle(path, bundle, b"correct horse", TEST_KDF)
    data = path.read_bytes()
    for key in bundle.keys.values():
        for encoding in (key.seed, key.seed.hex().encode(),
                         __import__("base64").b64encode(key.seed)):
            assert encoding not in data
    assert path.stat().st_mode & 0o777 == 0o600
    loaded = load_bundle(path, b"correct horse")
    seeds = {r: k.seed for r, k in bundle.keys.items()}
    assert {r: k.seed for r, k in loaded.keys.items()} == seeds
    assert not loaded.insecure


def test_wrong_passphrase_is_a_typed_error(tmp_path, bundle) -> None:
    path = tmp_path / "officer.key"
    save_bundle(path, bundle, b"correct horse", TEST_KDF)
    with pytest.raises(WrongPassphraseError, match="wrong passphrase"):
        load_bundle(path, b"battery staple")
    with pytest.raises(KeyFileError):
        load_bundle(path, None)


def test_refuses_to_overwrite(tmp_path, bundle) -> None:
    path = tmp_path / "k"
    save_bundle(path, bundle, b"pw", TEST_KDF)
    with pytest.raises(KeyFileError, match="already exists"):
        save_bundle(path, bundle, b"pw", TEST_KDF)


def test_insecure_mode_must_be_asked_for(tmp_path, bundle) -> None:
    path = tmp_path / "dev.key"
    save_bundle(path, bundle, None)
    assert read_public(path)[2] == "INSECURE-DEVELOPMENT-PLAINTEXT"
    with pytest.raises(KeyFileError, match="insecure_dev_mode"):
        load_bundle(path, None)
    assert load_bundle(path, None, allow_insecure=True).insecure


def test_tampered_public_half_is_caught(tmp_path, bundle) -> None:
    path = tmp_path / "k"
    save_bundle(path, bundle, b"pw", TEST_KDF)
    doc = json.loads(path.read_text())
    doc["public"][ROLE_OFFICER_SIGNING] = OfficerSigningKey.generate().public.b64()
    path.write_text(json.dumps(doc))
    with pytest.raises(KeyFileError, match="do not match"):
        load_bundle(path, b"pw")


@pytest.mark.parametrize(
    "content",
    [b"", b"not json", b"[]", b'{"format":"other"}', b'{"format":"fpg-keyfile","v":9}',
     b"\xff" * 10],
)
def test_garbage_key_files(tmp_path, content: bytes) -> None:
    path = tmp_path / "k"
    path.write_bytes(content)
    with pytest.raises(KeyFileError):
        load_bundle(path, b"pw")


def test_missing_key_file(tmp_path) -> None:
    with pytest.raises(KeyFileError, match="cannot read"):
        load_bundle(tmp_path / "absent", b"pw")
