"""`gateway-client` as officers run it: real client processes against a real gateway process.

One gateway per module (127.0.0.1, port 0), desks and enrollment codes made with the
`gateway` command, then every client command as a subprocess: enroll (fingerprint
pinned or refused), desks, send / inbox / read / reply / status with text in five
scripts, case notifications with attachments, live events with `watch`, JSON output,
passphrase-protected keys, and one-line errors.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gateway.cli.process import ServerProcess
from gateway.client.cli import backoff, build_parser, clean, safe_name
from gateway.client.profile import ProfileError, load_profile, unlock
from gateway.crypto.keyfile import TEST_KDF, KeyBundle, load_bundle, save_bundle
from gateway.crypto.keys import (
    ROLE_OFFICER_ENCRYPTION,
    ROLE_OFFICER_SIGNING,
    OfficerEncryptionKey,
    OfficerSigningKey,
)
from gateway.errors import KeyFileError

TEXT = ("Nạn nhân được tìm thấy tại cửa khẩu — រកឃើញជនរងគ្រោះ — 已找到受害者 — "
        "ພົບຜູ້ເຄາະຮ້າຍ — พบผู้เสียหาย")
DESKS = ("trafficking", "border-liaison", "victim-support", "intake", "case-team")
TIMEOUT = 60
T = TypeVar("T")


def parallel(*calls: Callable[[], T]) -> list[T]:
    """Run independent client processes side by side (each spends ~0.4 s importing)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda call: call(), calls))


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONIOENCODING",
                                                              "FPG_CLIENT_PROFILE")}
    return {**env, **(extra or {})}


def run(*args: str, stdin: bytes | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", *args], capture_output=True,
                            timeout=TIMEOUT, env=_env(env), input=stdin)
    return subprocess.CompletedProcess(result.args, result.returncode,
                                       result.stdout.decode("utf-8"),
                                       result.stderr.decode("utf-8"))


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str], status: int = 1) -> str:
    assert result.returncode == status, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gateway-client")
    return lines[0]


@dataclass
class Gateway:
    directory: Path
    url: str
    fingerprint: str
    profiles: dict[str, Path] = field(default_factory=dict)
    members: dict[str, Path] = field(default_factory=dict)  # a member profile by desk

    @property
    def config(self) -> str:
        return str(self.directory / "gateway.toml")

    def invite(self, *desks: str) -> str:
        args = [a for d in desks for a in ("--desk", d)]
        return ok(run("gateway", "officers", "invite", *args, "--config", self.config)).strip()

    def enroll(self, name: str, *desks: str, extra: tuple[str, ...] = ()) -> Path:
        """An officer of ``desks``: the first of a desk is its member at once (admitted by
        the operator); a later one is admitted by the first, after the safety code its
        own client shows (as the officer would read it out)."""
        profile = self.directory.parent / "officers" / name
        enrolled = json.loads(ok(client(profile, "enroll", self.url, "--insecure-dev-keys",
                                        "--json", *extra, stdin=code_line(self.invite(*desks)))))
        for desk in enrolled["pending"]:
            code = json.loads(ok(client(profile, "safety-code", desk, "--json")))
            ok(client(self.members[desk], "admit", desk, enrolled["officer"], "--safety-code",
                      code["safety_codes"][desk], "--no-history"))
        for desk in enrolled["desks"]:
            self.members.setdefault(desk, profile)
        self.profiles[name] = profile
        return profile


def code_line(code: str) -> bytes:
    """An enrollment code as standard input gives it (never a command-line argument)."""
    return code.encode("ascii") + b"\n"


def client(profile: Path, *args: str, stdin: bytes | None = None,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run("gateway.client.cli", "--profile", str(profile), *args, stdin=stdin, env=env)


def client_json(profile: Path, *args: str, stdin: bytes | None = None,
                env: dict[str, str] | None = None) -> Any:
    return json.loads(ok(client(profile, *args, "--json", stdin=stdin, env=env)))


def init_gateway(directory: Path, port: int = 0) -> None:
    ok(run("gateway", "init", str(directory), "--id", "vn-mps", "--port", str(port),
           "--metrics-port", "0", "--insecure-dev-keys"))


def gateway_fingerprint(directory: Path) -> str:
    shown = ok(run("gateway", "keys", "show", "--config", str(directory / "gateway.toml")))
    return shown.split("fingerprint: ")[1].splitlines()[0].strip()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    directory = tmp_path_factory.mktemp("client-cli") / "gw"
    init_gateway(directory)
    for desk in DESKS:
        ok(run("gateway", "desks", "add", desk, "--config", str(directory / "gateway.toml")))
    with ServerProcess.gateway(directory / "gateway.toml") as server:
        yield Gateway(directory, server.url, gateway_fingerprint(directory))


@pytest.fixture(scope="module")
def officers(gw: Gateway) -> dict[str, Path]:
    """a: trafficking, b: border-liaison, c: victim-support (insecure dev keys)."""
    parallel(*(lambda n=name, d=desk: gw.enroll(n, d) for name, desk in
               (("a", "trafficking"), ("b", "border-liaison"), ("c", "victim-support"))))
    return gw.profiles


def sent_id(profile: Path, *args: str, stdin: bytes | None = None,
            env: dict[str, str] | None = None) -> str:
    result = client_json(profile, "send", *args, stdin=stdin, env=env)
    assert result["status"] == "accepted" and len(result["id"]) == 32
    return str(result["id"])


# --- in-process: parser, helpers -------------------------------------------------------


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for args in ([], ["enroll"], ["desks"], ["send"], ["send", "hotline"], ["send", "case"],
                 ["inbox"], ["read"], ["reply"], ["status"], ["watch"], ["keys", "new"],
                 ["keys", "show"], ["agent"], ["lock"], ["sent"]):
        with pytest.raises(SystemExit) as info:
            build_parser().parse_args([*args, "--help"])
        assert info.value.code == 0
        assert "usage:" in capsys.readouterr().out


def test_output_and_file_name_hygiene() -> None:
    assert clean(TEXT) == TEXT  # every script untouched
    assert clean("a\tb\nc\r\nd") == "a\tb\nc\nd"
    assert clean("x\x1b[2Jy\x07") == "x\\u001b[2Jy\\u0007"
    assert safe_name("../../etc/passwd", 0) == "passwd"
    assert safe_name("..\\evil\x00.exe", 1) == "evil_.exe"
    assert safe_name("...", 2) == "attachment-3"
    assert safe_name("ảnh ឯកសារ.jpg", 0) == "ảnh ឯកសារ.jpg"
    assert safe_name("invoice\u202efdp.exe", 0) == "invoice_fdp.exe"  # no bidi override
    assert safe_name("two\nlines\t.pdf", 0) == "two_lines_.pdf"
    assert safe_name("\u2066\u200f", 3) == "__"
    long = safe_name("ឯ" * 150 + ".pdf", 0)  # 450 bytes of UTF-8 asked for
    assert long.endswith(".pdf") and len(long.encode()) <= 200
    assert [backoff(i) for i in range(6)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


# --- enrollment ------------------------------------------------------------------------


def test_enroll_pins_the_gateway_fingerprint(gw: Gateway, tmp_path: Path) -> None:
    profile = tmp_path / "officer"
    code = gw.invite("intake")
    wrong = "AAAA BBBB CCCC DDDD EEEE FFFF GGGG HHHH"
    refused = client(profile, "enroll", gw.url, "--fingerprint", wrong,
                     "--insecure-dev-keys", stdin=code_line(code))
    line = one_line_error(refused)
    assert "fingerprint" in line and gw.fingerprint in line
    assert not (profile / "profile.json").exists() and not (profile / "officer.key").exists()

    # The refusal came before the code was sent, so it still works; any spelling matches.
    spelled = gw.fingerprint.lower().replace(" ", "-")
    doc = client_json(profile, "enroll", gw.url, "--fingerprint", spelled,
                      "--insecure-dev-keys", stdin=code_line(code))
    assert doc["officer"].startswith("off-") and doc["desks"] == ["intake@vn-mps"]
    assert doc["gateway"] == "vn-mps" and doc["gateway_fingerprint"] == gw.fingerprint
    assert doc["fingerprint_checked"] is True
    saved = json.loads((profile / "profile.json").read_text())
    assert saved["officer_id"] == doc["officer"] and saved["insecure_dev_keys"] is True
    assert saved["gateway_fingerprint"] == gw.fingerprint
    assert (profile / "officer.key").stat().st_mode & 0o077 == 0

    shown = ok(client(profile, "keys", "show"))
    assert doc["officer"] in shown and gw.fingerprint in shown
    assert doc["sign_key_id"] in shown and doc["enc_key_id"] in shown

    again = client(profile, "enroll", gw.url, "--insecure-dev-keys",
                   stdin=code_line(gw.invite("intake")))
    assert "refusing to overwrite" in one_line_error(again)

    human = ok(client(tmp_path / "other", "enroll", gw.url, "--insecure-dev-keys",
                      stdin=code_line(gw.invite("intake"))))
    assert "enrolled as officer off-" in human and gw.fingerprint in human
    assert "intake@vn-mps" in human and "not checked" in human


def test_enroll_with_a_bad_code_is_one_line(gw: Gateway, tmp_path: Path) -> None:
    unknown = client(tmp_path / "p", "enroll", gw.url, "--insecure-dev-keys",
                     stdin=code_line("FPG-AAAA-BBBB-CCCC-DDDD-EEEE"))
    assert "enrollment_code_invalid" in one_line_error(unknown)
    assert not (tmp_path / "p" / "officer.key").exists()
    malformed = client(tmp_path / "p", "enroll", gw.url, "--insecure-dev-keys",
                       stdin=code_line("not-a-code"))
    assert "FPG-XXXX" in one_line_error(malformed)
    used = gw.invite("intake")
    ok(client(tmp_path / "q", "enroll", gw.url, "--insecure-dev-keys", stdin=code_line(used)))
    twice = client(tmp_path / "r", "enroll", gw.url, "--insecure-dev-keys", stdin=code_line(used))
    assert "enrollment_code_invalid" in one_line_error(twice)


def test_keys_new_then_enroll_with_them(gw: Gateway, tmp_path: Path) -> None:
    key_file = tmp_path / "mine.key"
    made = ok(run("gateway.client.cli", "keys", "new", "--out", str(key_file), "--owner",
                  "desk-officer-1", "--insecure-dev-keys"))
    assert "officer-signing: id" in made
    shown = client_json(tmp_path, "keys", "show", str(key_file))
    ids = sorted(k["key_id"] for k in shown["keys"])
    profile = tmp_path / "profile"
    doc = client_json(profile, "enroll", gw.url, "--keys", str(key_file),
                      "--insecure-dev-keys", stdin=code_line(gw.invite("intake")))
    assert sorted([doc["sign_key_id"], doc["enc_key_id"]]) == ids
    assert sorted(k["key_id"] for k in client_json(profile, "keys", "show")["keys"]) == ids


def test_passphrase_protected_profile(gw: Gateway, tmp_path: Path) -> None:
    """The one test that pays for Argon2id: keys encrypted, unlocked from env or file."""
    secret = "mật khẩu — ពាក្យសម្ងាត់ 🔑"
    env = {"FPG_TEST_PASS": secret}
    profile = tmp_path / "protected"
    enrolled = client(profile, "--passphrase-env", "FPG_TEST_PASS", "enroll", gw.url,
                      stdin=code_line(gw.invite("intake")), env=env)
    ok(enrolled)
    key_text = (profile / "officer.key").read_text()
    assert "argon2id" in key_text and secret not in key_text
    assert json.loads((profile / "profile.json").read_text())["insecure_dev_keys"] is False

    pw_file = tmp_path / "pw"
    pw_file.write_text(secret + "\n", encoding="utf-8")
    pw_file.chmod(0o600)
    listed = client(profile, "desks", "--passphrase-file", str(pw_file))
    assert "victim-support@vn-mps" in ok(listed)
    wrong = client(profile, "desks", "--passphrase-env", "FPG_TEST_PASS",
                   env={"FPG_TEST_PASS": "not it"})
    assert "wrong passphrase" in one_line_error(wrong)
    none = client(profile, "desks", stdin=b"")
    assert "no passphrase" in one_line_error(none)
    assert "argon2id" in ok(client(profile, "keys", "show"))  # public part: no passphrase
    for result in (enrolled, listed, wrong, none):
        assert secret not in result.stdout + result.stderr


def test_a_tampered_profile_is_refused(officers: dict[str, Path], tmp_path: Path) -> None:
    source = officers["a"]
    doc = json.loads((source / "profile.json").read_text())

    def profile_with(**changes: Any) -> Path:
        directory = tmp_path / str(len(list(tmp_path.iterdir())))
        directory.mkdir()
        (directory / "profile.json").write_text(json.dumps({**doc, **changes}))
        (directory / "officer.key").write_bytes((source / "officer.key").read_bytes())
        return directory

    bundle = unlock(load_profile(profile_with()), lambda: b"unused")
    assert load_profile(profile_with()).credentials(bundle).officer_id == doc["officer_id"]
    with pytest.raises(ProfileError, match="fingerprint"):
        load_profile(profile_with(gateway_fingerprint="AAAA " * 7 + "AAAA"))
    with pytest.raises(ProfileError, match="version"):
        load_profile(profile_with(v=2))
    # A profile enrolled with a passphrase never accepts a plaintext key file...
    with pytest.raises(KeyFileError, match="plaintext"):
        unlock(load_profile(profile_with(insecure_dev_keys=False)), lambda: b"unused")
    # ...nor an insecure profile a protected one, nor any profile someone else's keys.
    swapped = profile_with()
    (swapped / "officer.key").unlink()
    other = KeyBundle("x", {ROLE_OFFICER_SIGNING: OfficerSigningKey.generate(),
                            ROLE_OFFICER_ENCRYPTION: OfficerEncryptionKey.generate()})
    save_bundle(swapped / "officer.key", other, b"pw", TEST_KDF)
    with pytest.raises(KeyFileError, match="protected"):
        unlock(load_profile(swapped), lambda: b"pw")
    (swapped / "officer.key").unlink()
    save_bundle(swapped / "officer.key", other, None)
    opened = unlock(load_profile(swapped), lambda: b"unused")
    with pytest.raises(KeyFileError, match="other keys"):
        load_profile(swapped).credentials(opened)
    assert load_bundle(source / "officer.key", None, allow_insecure=True).insecure


# --- messages --------------------------------------------------------------------------


def test_desks_lists_the_verified_directory(officers: dict[str, Path]) -> None:
    doc = client_json(officers["a"], "desks")
    by_desk = {d["desk"]: d for d in doc["desks"]}
    assert {f"{d}@vn-mps" for d in DESKS} <= set(by_desk)
    mine = by_desk["trafficking@vn-mps"]
    assert mine["yours"] and any(o["you"] for o in mine["officers"])
    for desk in by_desk.values():
        for o in desk["officers"]:
            assert len(o["sign_key_id"]) == 16 and len(o["enc_key_id"]) == 16
    human = ok(client(officers["a"], "desks"))
    assert "border-liaison@vn-mps:" in human and "(you)" in human


def test_hotline_text_round_trips_from_argument_file_and_stdin(
        officers: dict[str, Path], tmp_path: Path) -> None:
    a, b = officers["a"], officers["b"]
    text_file = tmp_path / "alert.txt"
    text_file.write_bytes(("Tệp: " + TEXT + "\nthứ hai dòng").encode("utf-8"))
    c_locale = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0"}
    plans: list[tuple[str, tuple[str, ...], bytes | None, dict[str, str] | None]] = [
        (TEXT, ("border-liaison", "--priority", "flash", "--text", TEXT), None, None),
        ("Tệp: " + TEXT + "\nthứ hai dòng",
         ("border-liaison@vn-mps", "--file", str(text_file)), None, None),
        ("stdin: " + TEXT, ("border-liaison",), ("stdin: " + TEXT).encode("utf-8"), None),
        ("C locale: " + TEXT, ("border-liaison", "--text", "C locale: " + TEXT), None,
         c_locale),
    ]
    ids = parallel(*(lambda p=plan: sent_id(a, "hotline", *p[1], stdin=p[2], env=p[3])
                     for plan in plans))
    texts = {mid: plan[0] for mid, plan in zip(ids, plans, strict=True)}

    inbox, page, human_inbox = parallel(
        lambda: client_json(b, "inbox", "border-liaison"),
        lambda: client_json(b, "inbox", "border-liaison", "--limit", "1"),
        lambda: ok(client(b, "inbox", "border-liaison")),
    )
    listed = [m["id"] for m in inbox["messages"]]
    assert set(texts) <= set(listed)
    flash = next(m for m in inbox["messages"] if texts.get(m["id"]) == TEXT)
    assert flash["priority"] == "flash" and flash["kind"] == "hotline"
    assert flash["from"] == "trafficking@vn-mps" and flash["first_read"] is None
    assert len(page["messages"]) == 1 and page["next"] == page["messages"][0]["cursor"]
    after = client_json(b, "inbox", "border-liaison", "--after", str(page["next"]))
    assert page["messages"][0]["id"] not in [m["id"] for m in after["messages"]]
    assert all(mid in human_inbox for mid in texts) and "next cursor:" in human_inbox

    read = parallel(*(lambda m=mid: client_json(b, "read", m) for mid in texts))
    for (mid, text), doc in zip(texts.items(), read, strict=True):
        assert doc["id"] == mid and doc["payload"]["text"] == text
        assert doc["acknowledged"] is True
        assert doc["from"] == "trafficking@vn-mps" and doc["to"] == "border-liaison@vn-mps"
    # Read as a person would, even in the C locale: every character intact on stdout.
    mid = next(iter(texts))
    shown = ok(client(b, "read", mid, env=c_locale))
    assert shown.rstrip("\n").endswith(TEXT) and "signature verified" in shown

    status, human_status, after_read = parallel(
        lambda: client_json(a, "status", mid),
        lambda: ok(client(a, "status", mid)),
        lambda: client_json(b, "inbox", "border-liaison"),
    )
    b_officer = json.loads((b / "profile.json").read_text())["officer_id"]
    assert status["first_read"] is not None
    assert [r["officer"] for r in status["reads"]] == [b_officer]  # once, though read twice
    assert [e["type"] for e in status["events"]] == ["accepted", "delivered", "read"]
    assert "first read:" in human_status and b_officer in human_status
    assert "delivered" in human_status
    assert next(m for m in after_read["messages"] if m["id"] == mid)["first_read"]


def test_reply_stays_in_the_thread(officers: dict[str, Path]) -> None:
    a, b = officers["a"], officers["b"]
    original = sent_id(a, "hotline", "border-liaison", "--priority", "immediate", "--text", TEXT)
    answer = "Đã nhận — បានទទួល — 已收到 — ໄດ້ຮັບແລ້ວ — ได้รับแล้ว"
    replied = client_json(b, "reply", original, stdin=answer.encode("utf-8"))
    assert replied["status"] == "accepted"
    doc = client_json(a, "read", replied["id"])
    assert doc["kind"] == "reply" and doc["payload"]["text"] == answer
    assert doc["in_reply_to"] == original and doc["thread"] == original
    assert doc["priority"] == "immediate" and doc["to"] == "trafficking@vn-mps"
    status = client_json(a, "status", original)
    assert status["first_reply"] is not None
    assert any(e["type"] == "replied" and e.get("ref") == replied["id"]
               for e in status["events"])
    human = ok(client(b, "reply", original, "--text", "lần hai", "--priority", "flash"))
    assert "accepted" in human and original in human


def test_a_newcomer_is_admitted_with_its_safety_code_and_reads_the_history(
        gw: Gateway, officers: dict[str, Path]) -> None:
    a = officers["a"]
    first = gw.enroll("case-team first", "case-team")  # its first member: the operator's
    sending = client(a, "send", "hotline", "case-team", "--text", "before the newcomer")
    assert "sealing for the 1 member(s) of case-team@vn-mps" in sending.stderr
    assert "(admitted by the operator)" in sending.stderr
    earlier = json.loads(ok(client(a, "send", "hotline", "case-team", "--json",
                                   "--text", "also before")))["id"]

    newcomer = gw.directory.parent / "officers" / "case-team newcomer"
    enrolled = ok(client(newcomer, "enroll", gw.url, "--insecure-dev-keys",
                         stdin=code_line(gw.invite("case-team"))))
    assert "waiting to join case-team@vn-mps" in enrolled
    officer = json.loads((newcomer / "profile.json").read_text())["officer_id"]
    code = json.loads(ok(client(newcomer, "safety-code", "case-team", "--json")))[
        "safety_codes"]["case-team@vn-mps"]
    assert code in enrolled  # the code the newcomer reads out

    listed = client_json(first, "members", "case-team")
    assert [(p["officer"], p["safety_code"]) for p in listed["pending"]] == [(officer, code)]
    shown = ok(client(first, "inbox", "case-team"))
    assert f"{officer} WAITS TO JOIN" in shown
    assert "UNREAD NOTICE(S) FOR case-team@vn-mps" in shown
    assert "WAITS TO JOIN" not in ok(client(first, "inbox", "case-team"))  # told once
    assert "WAITS TO JOIN" in ok(client(first, "notices", "case-team"))  # kept, read

    wrong = client(first, "admit", "case-team", officer, stdin=b"1111 2222 3333 4444 5555\n")
    assert "safety_code_mismatch" in one_line_error(wrong)
    typed = client(first, "admit", "case-team", officer, stdin=code.encode("ascii") + b"\n")
    assert code in typed.stdout  # the admitting officer's screen shows it too
    assert "shared the keys of 2 earlier message(s)" in ok(typed)

    opened = ok(client(newcomer, "read", earlier))
    assert "also before" in opened
    assert "its key shared with you by" in opened
    after = client(a, "send", "hotline", "case-team", "--text", "after")
    assert "sealing for the 2 member(s)" in after.stderr
    admitter = json.loads((first / "profile.json").read_text())["officer_id"]
    assert f"{officer} (admitted by {admitter})" in after.stderr


def test_case_notification_with_every_field_and_attachments(
        officers: dict[str, Path], tmp_path: Path) -> None:
    a, b = officers["a"], officers["b"]
    photo = tmp_path / "ảnh hiện trường.jpg"
    photo.write_bytes(bytes(range(256)) * 4)
    notes = tmp_path / "notes.txt"
    notes.write_text("ព័ត៌មានបន្ថែម 详情", encoding="utf-8")
    mid = sent_id(
        a, "case", "border-liaison", "--priority", "priority",
        "--case-ref", "VN-2026-0042/ລາວ", "--legal-basis", "treaty",
        "--offence", "trafficking in persons (ລັກລອບຄ້າມະນຸດ, การค้ามนุษย์)",
        "--action", "locate person — ស្វែងរកជនរងគ្រោះ", "--action", "collect evidence 收集证据",
        "--deadline", "2026-12-31", "--file", str(notes),
        "--attach", str(photo), "--attach", str(notes),
    )
    # A read that cannot save what it was asked to save is not acknowledged.
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("in the way")
    assert client(b, "read", mid, "--save-attachments", str(blocked)).returncode != 0
    assert client_json(a, "status", mid)["reads"] == []
    saved_to = tmp_path / "saved"
    doc = client_json(b, "read", mid, "--save-attachments", str(saved_to))
    assert [r["officer"] for r in client_json(a, "status", mid)["reads"]] != []
    assert doc["kind"] == "case" and doc["priority"] == "priority"
    assert doc["payload"] == {
        "type": "case", "case_ref": "VN-2026-0042/ລາວ", "legal_basis": "treaty",
        "offence": "trafficking in persons (ລັກລອບຄ້າມະນຸດ, การค้ามนุษย์)",
        "requested_actions": ["locate person — ស្វែងរកជនរងគ្រោះ", "collect evidence 收集证据"],
        "deadline": "2026-12-31", "text": "ព័ត៌មានបន្ថែម 详情",
    }
    assert [x["name"] for x in doc["attachments"]] == [photo.name, "notes.txt"]
    assert (saved_to / photo.name).read_bytes() == photo.read_bytes()
    assert (saved_to / "notes.txt").read_bytes() == notes.read_bytes()

    again = ok(client(b, "read", mid, "--save-attachments", str(saved_to)))  # no overwrite
    assert (saved_to / "ảnh hiện trường (2).jpg").read_bytes() == photo.read_bytes()
    for expected in ("VN-2026-0042/ລາວ", "treaty", "ລັກລອບຄ້າມະນຸດ", "2026-12-31",
                     "  - locate person — ស្វែងរកជនរងគ្រោះ", "  - collect evidence 收集证据",
                     "ព័ត៌មានបន្ថែម 详情", photo.name):
        assert expected in again

    bad = client(a, "send", "case", "border-liaison", "--case-ref", "X", "--legal-basis",
                 "treaty", "--offence", "o", "--action", "a", "--deadline", "2026-02-30",
                 "--text", "t")
    assert "not a date" in one_line_error(bad, status=2)


def test_a_request_moves_with_handling_shown_first_and_cases_list_it(
        officers: dict[str, Path]) -> None:
    a, b = officers["a"], officers["b"]
    mid = sent_id(a, "case", "border-liaison", "--handling", "H2", "--case-ref", "VN-9",
                  "--legal-basis", "reciprocity", "--offence", "o", "--action", "hear",
                  "--deadline", "2099-12-31", "--text", "t")
    page = client_json(b, "inbox", "border-liaison")["messages"]
    assert [(m["handling"], m["due"]) for m in page if m["id"] == mid] == [("H2",
                                                                          "2099-12-31")]
    shown = ok(client(b, "read", mid)).splitlines()
    assert shown[0].startswith("HANDLING:  H2: no onward dissemination without")
    listed = ok(client(a, "cases"))
    assert mid in listed and "submitted" in listed and "day(s) left (due 2099-12-31)" in listed
    # The requester cannot make the executing desk's move: refused before sealing.
    wrong = client(a, "move", mid, "received")
    assert "only the executing desk border-liaison@" in one_line_error(wrong)
    moved = client_json(b, "move", mid, "returned_incomplete", "--missing", "a translation")
    assert moved["status"] == "accepted"
    assert "cannot become executed (allowed: resubmitted, withdrawn)" in one_line_error(
        client(b, "move", mid, "executed"))
    state = client_json(a, "cases", "--state", "returned_incomplete")["cases"]
    assert [c["id"] for c in state] == [mid]
    opened = client_json(a, "read", moved["id"])
    assert (opened["state"], opened["handling"]) == ("returned_incomplete", "H2")
    assert opened["payload"]["missing"] == ["a translation"]
    assert "says what is missing" in one_line_error(
        client(b, "move", mid, "returned_incomplete"), status=1)
    assert client_json(a, "cases", "--overdue") == {"cases": []}


def test_typed_alerts_and_requests_from_the_command_line(
        officers: dict[str, Path], tmp_path: Path) -> None:
    a, b = officers["a"], officers["b"]
    mid = sent_id(a, "hotline", "border-liaison", "--priority", "flash",
                  "--alert-type", "located_victim", "--border-gate", "Mộc Bài",
                  "--time", "2026-12-06T14:30+07:00",
                  "--person", "role=victim,age=12-15,nationality=KH",
                  "--person", "role=suspect,age=25-39,name=Unknown driver",
                  "--document", "type=passport,number=N0123,issuer=KH", "--text", "at gate")
    doc = client_json(b, "read", mid)["payload"]
    assert doc["persons"][0] == {"role": "victim", "age_band": "12-15", "child": True,
                                 "nationality": "KH"}
    shown = ok(client(b, "read", mid))
    for line in ("alert:     located_victim", "border gate:Mộc Bài",
                 "person:    victim (CHILD, age 12-15, nationality KH)",
                 "document:  passport N0123 KH"):
        assert line in shown, line
    translation = tmp_path / "request-lo.txt"
    translation.write_text("ຄຳຮ້ອງ", encoding="utf-8")
    case = sent_id(a, "case", "border-liaison", "--case-ref", "VN-10",
                   "--legal-basis", "treaty", "--treaty", "ASEAN MLAT", "--offence", "o",
                   "--action", "serve", "--deadline", "2099-01-31",
                   "--request-type", "serve_documents", "--language", "vi",
                   "--language", "lo", "--translation", str(translation),
                   "--translation-language", "lo", "--text", "t")
    exported = tmp_path / "exported"
    shown = ok(client(b, "read", case, "--save-attachments", str(exported)))
    assert (exported / "request-lo.txt").read_text(encoding="utf-8") == "ຄຳຮ້ອງ"
    label = (exported / f"{case}.handling.txt").read_text(encoding="utf-8")
    assert label.startswith("Handling H0: no restriction") and "request-lo.txt" in label
    for line in ("request type:serve_documents", "treaty:    ASEAN MLAT", "languages: vi, lo",
                 "translation (lo): request-lo.txt"):
        assert line in shown, line
    bad = client(a, "send", "hotline", "border-liaison", "--person",
                 "role=victim,age=12-15,child=no", "--text", "t")
    assert "disagree" in one_line_error(bad)


# --- live events -----------------------------------------------------------------------


class Lines:
    """A subprocess's standard output, line by line, waited for with a bound."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.queue: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None
        stdout = proc.stdout

        def pump() -> None:
            for raw in stdout:
                self.queue.put(raw.decode("utf-8"))

        threading.Thread(target=pump, daemon=True).start()

    def get(self, seconds: float) -> str | None:
        try:
            return self.queue.get(timeout=seconds)
        except queue.Empty:
            return None


def watcher(profile: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.client.cli", "--profile", str(profile), "watch", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(None),
    )


def send_until_seen(sender: Path, to: str, lines: Lines,
                    attempts: int = 20) -> tuple[str, set[str]]:
    """Send to ``to`` until the watcher prints a line about one of the messages sent (the
    watcher may not be connected yet); other lines are passed over."""
    sent: set[str] = set()
    for _ in range(attempts):
        sent.add(sent_id(sender, "hotline", to, "--text", TEXT))
        deadline = time.monotonic() + 1.0
        while (left := deadline - time.monotonic()) > 0:
            line = lines.get(left)
            if line is not None and any(mid in line for mid in sent):
                return line, sent
    raise AssertionError("the watcher printed nothing about the messages sent")


def test_watch_count_prints_a_message_event(officers: dict[str, Path]) -> None:
    proc = watcher(officers["b"], "--json", "--count", "1", "--desk", "border-liaison")
    try:
        line, sent = send_until_seen(officers["a"], "border-liaison", Lines(proc))
        event = json.loads(line)
        assert event["event"] == "message" and event["id"] in sent
        assert event["desk"] == "border-liaison@vn-mps" and event["kind"] == "hotline"
        assert event["sender"] == "trafficking@vn-mps"
        assert proc.wait(timeout=TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_watch_stops_cleanly_on_ctrl_c(officers: dict[str, Path]) -> None:
    proc = watcher(officers["c"])
    try:
        line, sent = send_until_seen(officers["a"], "victim-support", Lines(proc))
        assert " message " in line and any(mid in line for mid in sent)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=TIMEOUT) == 0
        assert proc.stderr is not None
        err = proc.stderr.read().decode("utf-8")
        assert "stopped" in err and "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_watch_reconnects_when_the_gateway_restarts(tmp_path: Path) -> None:
    directory = tmp_path / "gw"
    init_gateway(directory, free_port())  # a fixed port, so the restarted one is the same
    for desk in ("trafficking", "border-liaison"):
        ok(run("gateway", "desks", "add", desk, "--config", str(directory / "gateway.toml")))
    server = ServerProcess.gateway(directory / "gateway.toml")
    server.start()
    url = server.url
    watch: subprocess.Popen[bytes] | None = None
    try:
        gw = Gateway(directory, url, "")
        a, b = gw.enroll("a", "trafficking"), gw.enroll("b", "border-liaison")
        watch = watcher(b, "--json")
        lines = Lines(watch)
        send_until_seen(a, "border-liaison", lines)
        server.stop()
        server.start()
        assert server.url == url
        line, sent = send_until_seen(a, "border-liaison", lines)
        assert json.loads(line)["id"] in sent
        watch.send_signal(signal.SIGINT)
        assert watch.wait(timeout=TIMEOUT) == 0
        assert watch.stderr is not None
        err = watch.stderr.read().decode("utf-8")
        assert "the gateway is stopping; reconnecting" in err and "Traceback" not in err
    finally:
        if watch is not None and watch.poll() is None:
            watch.kill()
            watch.wait(timeout=10)
        server.stop()


# --- errors ----------------------------------------------------------------------------


def test_errors_are_one_line_with_the_stable_code(officers: dict[str, Path],
                                                  tmp_path: Path) -> None:
    a, b, c = officers["a"], officers["b"], officers["c"]
    mid = sent_id(a, "hotline", "border-liaison", "--text", TEXT)
    (unknown, other, foreign, watch_other, empty, not_utf8, no_profile, bad_id, bad_command,
     down) = parallel(
        lambda: client(a, "send", "hotline", "no-such-desk", "--text", "x"),
        lambda: client(c, "read", mid),  # victim-support neither sent nor received it
        lambda: client(c, "inbox", "border-liaison"),
        lambda: client(c, "watch", "--desk", "border-liaison", "--count", "1"),
        lambda: client(b, "send", "hotline", "trafficking", "--text", ""),
        lambda: client(b, "send", "hotline", "trafficking", stdin=b"caf\xe9"),
        lambda: client(tmp_path / "none", "desks"),
        lambda: client(a, "read", "xyz"),
        lambda: run("gateway.client.cli", "frobnicate"),
        lambda: client(tmp_path / "d", "enroll", "http://127.0.0.1:9", "--insecure-dev-keys",
                       stdin=code_line("FPG-AAAA-BBBB-CCCC-DDDD-EEEE")),
    )
    assert "unknown_desk" in one_line_error(unknown)
    assert "unknown_message" in one_line_error(other)
    assert TEXT not in other.stdout + other.stderr
    assert "not_a_member" in one_line_error(foreign)
    assert "not_a_member" in one_line_error(watch_other)
    assert "bad_payload" in one_line_error(empty)
    assert "not UTF-8" in one_line_error(not_utf8)
    assert "no profile" in one_line_error(no_profile)
    assert "message id" in one_line_error(bad_id, status=2)
    assert "invalid choice" in one_line_error(bad_command, status=2)
    assert "cannot talk to the gateway" in one_line_error(down)
