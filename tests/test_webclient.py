"""The officers' web client (web/, served at /app/) in a real headless Chromium.

* the page and its assets are served with a strict Content-Security-Policy, no framing,
  ``nosniff``, no referrer, subresource integrity on every script and stylesheet, and
  caching headers; the Host allow-list still applies;
* the browser's cryptography (web/src/crypto.js) gives the bytes of the protocol's test
  vectors (docs/PROTOCOL.md 9 and 7.6), computed here in Python;
* an officer enrolls in the browser, signs in, reads the desk's inbox (unread first, with
  counts), opens a message (verified, opened, acknowledged), replies, sends a flash
  alert that a gateway-client officer opens, sees events live, locks and unlocks; a
  message whose stored envelope was altered shows as failed and its text is not shown;
* the page makes no request to another origin and reports no CSP violation;
* the message catalogs: every key the UI uses is in every complete catalog, and the UI in
  Vietnamese shows no English string.

Gateways run in this process (tests/helpers.py Gw); one browser per test.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.appkeys import CLOCK, DIRECTORY, STORE
from gateway.cli import vectors
from gateway.client.api import GatewayClient, enroll
from gateway.crypto.keys import OfficerEncryptionKey, OfficerSigningKey
from gateway.officers.enrollment import new_code
from gateway.protocol import merkle
from gateway.protocol.admission import safety_code
from gateway.protocol.officers import code_hash
from gateway.store import AdmissionRow
from tests.helpers import (
    Gw,
    chromium,
    desk_known,
    until,
    watched_page,
)

WEB = Path(__file__).resolve().parent.parent / "web"
PASSPHRASE = "correct horse battery staple"


def catalog(lang: str) -> dict[str, str]:
    return json.loads((WEB / "src" / "i18n" / f"{lang}.json").read_text("utf-8"))


async def invite(gw: Gw, desk: str) -> str:
    assert gw.app is not None
    code, now = new_code(), gw.app[CLOCK].now_ms()
    await gw.app[STORE].add_enrollment_code(code_hash(code), [desk], now, now + 3_600_000)
    return code


async def test_the_app_is_served_with_its_security_headers(vn_kh: tuple[Gw, Gw],
                                                           http: aiohttp.ClientSession) -> None:
    vn, _ = vn_kh
    async with http.get(vn.url + "/app/") as response:
        assert response.status == 200
        page = await response.text()
        headers = response.headers
    csp = dict(part.strip().split(" ", 1) for part in headers["Content-Security-Policy"].split(";"))
    assert csp["default-src"] == "'none'"
    assert csp["script-src"] == "'self' 'wasm-unsafe-eval'"  # no 'unsafe-inline', no eval
    assert csp["connect-src"] == "'self'" and csp["frame-ancestors"] == "'none'"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Cache-Control"].startswith("no-cache")
    assert headers["Content-Type"].startswith("text/html")
    assert "<script>" not in page  # no inline script
    assert not re.search(r"<[^>]*\son[a-z]+\s*=", page, re.I)  # no inline handler attribute
    tags = re.findall(r'<(?:script|link)[^>]*(?:src|href)="([^"]+)"[^>]*integrity="([^"]+)"',
                      page)
    assert len(tags) == 2  # the bundle and the stylesheet, each with its SRI digest
    for name, integrity in tags:
        async with http.get(f"{vn.url}/app/{name}") as response:
            body = await response.read()
            assert response.status == 200
            assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
            assert response.headers["Content-Security-Policy"] == headers[
                "Content-Security-Policy"]
        digest = base64.b64encode(hashlib.sha384(body).digest()).decode()
        assert integrity == f"sha384-{digest}"
    for missing in ("nothing.js", "manifest.json", "..%2fapp.py", "index.html"):
        async with http.get(f"{vn.url}/app/{missing}") as response:
            assert (response.status, (await response.json())["error"]) == (404, "not_found")
    async with http.get(vn.url + "/app/", headers={"Host": "evil.example"}) as response:
        assert (response.status, (await response.json())["error"]) == (421, "unknown_host")


async def test_the_browser_crypto_gives_the_protocol_vectors(vn_kh: tuple[Gw, Gw]) -> None:
    """web/src/crypto.js against docs/PROTOCOL.md's vectors, made here by gateway/crypto/:
    envelopes byte for byte, the opened payload, key ids, fingerprints, the enrollment,
    sign-in and read texts and their signatures, the binding note, the safety code."""
    vn, _ = vn_kh
    statements = vectors.officer_statements()
    cases = []
    for v in vectors.VECTORS:
        cases.append({
            "sender": vectors.fixed(v.sender_label).hex(),
            "recipients": [k.public.raw.hex() for k in v.recipients],
            "reader": vectors.fixed(v.recipient_labels[0]).hex(),
            "header": {"id": v.header.id, "kind": v.header.kind, "priority": v.header.priority,
                       "from": v.header.sender, "to": v.header.recipient,
                       "created": v.header.created, "expires": v.header.expires,
                       "thread": v.header.thread, "in_reply_to": v.header.in_reply_to},
            "payload": v.payload.decode(), "content_key": vectors.fixed(v.content_key_label).hex(),
            "nonce": vectors.fixed(v.nonce_label)[:24].hex(),
            "ephemeral": [vectors.fixed(label).hex() for label in v.ephemeral_labels],
            "expected": v.seal().hex(),
            "key_id": v.sender.public.key_id, "fingerprint": v.sender.public.fingerprint,
        })
    officer = {
        "sign": vectors.fixed(vectors.READER_SIGNING_LABEL).hex(),
        "enc": vectors.fixed(vectors.READER_ENCRYPTION_LABEL).hex(),
        "code": vectors.ENROLL_CODE, "challenge": vectors.fixed(vectors.CHALLENGE_LABEL).hex(),
        "digest": hashlib.sha256(vectors.VECTORS[0].seal()).hexdigest(),
        "binding": statements["binding"].decode(),
        "gateway_key": vectors.GatewaySigningKey(vectors.fixed(vectors.NOTE_KEY_LABEL))
        .public.raw.hex(),
    }
    signing = OfficerSigningKey(bytes([1]) * 32)
    encryption = OfficerEncryptionKey(bytes([2]) * 32)
    safety = {"desk": "border-liaison@vn-mps", "officer": "off-0123456789abcdef",
              "sign": signing.public.b64(), "enc": encryption.public.b64(),
              "expected": safety_code("border-liaison@vn-mps", "off-0123456789abcdef",
                                      signing.public.b64(), encryption.public.b64())}
    assert safety["expected"] == "8344 9942 6464 7789 7123"  # PROTOCOL.md 7.6
    entries, root, note = vectors.ledger_checkpoint()
    leaves = [merkle.leaf_hash(bytes([i]) * 3) for i in range(13)]
    trees = {
        "note": note.decode(), "root": base64.b64encode(root).decode(),
        "entry": entries[1].decode(), "leaf": merkle.leaf_hash(entries[1]).hex(),
        "inclusion": [[i, n, merkle.root_from_leaves(leaves[:n]).hex(), leaves[i].hex(),
                       [h.hex() for h in merkle.inclusion_proof(i, n, leaves)]]
                      for n in range(1, 14) for i in range(n)],
        "consistency": [[m, n, merkle.root_from_leaves(leaves[:m]).hex(),
                         merkle.root_from_leaves(leaves[:n]).hex(),
                         [h.hex() for h in merkle.consistency_proof(m, n, leaves)]]
                        for n in range(1, 14) for m in range(1, n + 1)],
    }
    async with chromium() as context:
        w = await watched_page(context)
        await w.page.goto(vn.url + "/app/")
        await w.page.wait_for_selector("body[data-ready='1']")
        got = await w.page.evaluate(JS_VECTORS, {"cases": cases, "officer": officer,
                                                 "safety": safety})
        ledger = await w.page.evaluate(JS_LEDGER, {**trees, "key": officer["gateway_key"]})
        assert await w.violations() == []
        assert w.foreign(vn.url) == []
    for case, result in zip(cases, got["envelopes"], strict=True):
        assert result["sealed"] == case["expected"]
        assert result["opened"] == case["payload"]
        assert (result["key_id"], result["fingerprint"]) == (case["key_id"],
                                                             case["fingerprint"])
        assert result["tampered"] == "bad_signature"
    assert got["enroll"] == statements["enroll_signature"].hex()
    assert got["session"] == statements["session_signature"].hex()
    assert got["read"] == statements["read_signature"].hex()
    assert got["binding_officer"] == vectors.OFFICER_ID
    assert got["binding_forged"] == "bad_signature"
    assert got["safety"] == safety["expected"]
    assert got["unlocked"] == got["public"] and got["wrong"] == "wrong_passphrase"
    # web/src/ledger.js: vector 3's checkpoint and leaf hash, then every inclusion and
    # consistency proof of the trees of 1 to 13 leaves, each also with one bit flipped.
    assert ledger["checkpoint"] == {"origin": "fpg/kh-cnp", "size": 3,
                                    "root": base64.b64encode(root).decode()}
    assert ledger["forged_checkpoint"] == "unproven_member"
    assert ledger["leaf"] == trees["leaf"]
    assert ledger["inclusion"] == [["ok", "proof"]] * len(trees["inclusion"])
    assert ledger["consistency"] == [["ok", "proof"]] * len(trees["consistency"])


JS_VECTORS = """async ({cases, officer, safety}) => {
  const c = globalThis.fpgCrypto;
  const h = c.fromHex;
  const out = {envelopes: []};
  for (const v of cases) {
    const keys = new c.OfficerKeys(h(v.sender), h(v.sender));
    const sealed = c.sealEnvelope(v.header, c.bytes(v.payload), keys, v.recipients.map(h),
      {contentKey: h(v.content_key), nonce: h(v.nonce), ephemeralSeeds: v.ephemeral.map(h)});
    const reader = new c.OfficerKeys(h(v.sender), h(v.reader));
    const env = await c.verifyEnvelope(sealed, keys.signPublic);
    const bad = sealed.slice(); bad[bad.length - 100] ^= 1;
    let tampered = "verified";
    try { await c.verifyEnvelope(bad, keys.signPublic); } catch (e) { tampered = e.code; }
    out.envelopes.push({sealed: c.hex(sealed), opened: c.text(c.openEnvelope(env, reader)),
      key_id: keys.signKeyId, fingerprint: c.fingerprint(c.ROLE_OFFICER_SIGNING, keys.signPublic),
      tampered});
  }
  const me = new c.OfficerKeys(h(officer.sign), h(officer.enc));
  const s = c.b64(me.signPublic), e = c.b64(me.encPublic);
  out.enroll = c.hex(me.sign(c.enrollText("kh-cnp", officer.code, s, e)));
  out.session = c.hex(me.sign(c.sessionText("kh-cnp", "off-0011223344556677",
    h(officer.challenge))));
  out.read = c.hex(me.sign(c.readText("00112233445566778899aabbccddeeff", officer.digest,
    1767225720000)));
  out.binding_officer = c.openSignedJson(officer.binding, "fpg officer binding v1", "kh-cnp",
    [h(officer.gateway_key)]).officer;
  try {
    c.openSignedJson(officer.binding.replace("off-0011", "off-0012"), "fpg officer binding v1",
      "kh-cnp", [h(officer.gateway_key)]);
    out.binding_forged = "verified";
  } catch (err) { out.binding_forged = err.code; }
  out.safety = c.safetyCode(safety.desk, safety.officer, safety.sign, safety.enc);
  const fast = {alg: "argon2id13", opslimit: 1, memlimit: 8192};
  const sealedKeys = c.lockKeys(me, "pass phrase", "ad", fast);
  out.public = c.b64(me.signPublic);
  out.unlocked = c.b64(c.unlockKeys(sealedKeys, "pass phrase", "ad").signPublic);
  try { c.unlockKeys(sealedKeys, "wrong", "ad"); out.wrong = "opened"; }
  catch (err) { out.wrong = err.code; }
  return out;
}"""


def test_a_missing_chromium_skips_only_when_not_required(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    import tests.helpers as helpers

    monkeypatch.setattr(helpers, "CHROMIUM", tmp_path / "chromium")
    monkeypatch.delenv("FPG_REQUIRE_CHROMIUM", raising=False)
    with pytest.raises(pytest.skip.Exception):
        helpers.find_chromium()
    monkeypatch.setenv("FPG_REQUIRE_CHROMIUM", "1")
    with pytest.raises(pytest.fail.Exception):
        helpers.find_chromium()


async def enroll_in_browser(w: Any, gw: Gw, desk: str, *, wrong_first: bool = False) -> str:
    """Enroll through the page's form; the officer id the page shows. ``wrong_first``:
    try a fingerprint that is not the gateway's first, which must be refused."""
    page = w.page
    await page.goto(gw.url + "/app/")
    await page.wait_for_selector("body[data-ready='1']")
    if wrong_first:
        await page.fill("#enroll-fingerprint", "A" * 32)
        await page.fill("#enroll-code", await invite(gw, desk))
        await page.fill("#enroll-passphrase", PASSPHRASE)
        await page.fill("#enroll-passphrase2", PASSPHRASE)
        await page.click("#enroll-form button[type=submit]")
        await page.locator("#status").filter(has_text="(fingerprint)").wait_for()
        assert (await page.evaluate(JS_STORED))["officer"] is None
        assert await page.locator("#view-enroll").is_visible()
    await page.fill("#enroll-fingerprint", gw.key.public.fingerprint.lower().replace(" ", "-"))
    await page.fill("#enroll-code", (await invite(gw, desk)).lower())
    await page.fill("#enroll-passphrase", PASSPHRASE)
    await page.fill("#enroll-passphrase2", PASSPHRASE)
    await page.click("#enroll-form button[type=submit]")
    await page.wait_for_selector("#view-desk:not([hidden])")
    who = await page.text_content("#who")
    assert who is not None
    return who.split(" ")[0]


async def test_an_officer_works_a_desk_in_the_browser(vn_kh: tuple[Gw, Gw],
                                                      http: aiohttp.ClientSession) -> None:
    vn, kh = vn_kh
    k = await kh.officer(http, "anti-trafficking")  # a gateway-client officer of Cambodia
    watcher = await vn.officer(http, "trafficking")  # to see when vn knows kh's desks
    async with chromium() as context:
        w = await watched_page(context)
        page = w.page
        await page.clock.install()  # timers run on their own, until run forward below
        officer = await enroll_in_browser(w, vn, "border-liaison", wrong_first=True)
        assert officer.startswith("off-")

        # The keys at rest: sealed in IndexedDB; nothing in localStorage or cookies.
        stored = await page.evaluate(JS_STORED)
        assert stored["officer"] == officer and stored["local"] == 0 and stored["cookie"] == ""
        assert set(stored["sealed"]) == {"kdf", "nonce", "box"}
        assert stored["sealed_kdf"]["alg"] == "argon2id13"
        assert stored["fields"] == sorted(["v", "officer", "gateway", "gateway_key", "desks",
                                           "sign_key", "enc_key", "partners", "sealed"])
        assert PASSPHRASE not in json.dumps(stored)

        # A flash alert from the browser to Cambodia's desk, opened by gateway-client.
        await desk_known(watcher, "anti-trafficking@kh-cnp")
        await desk_known(k, "border-liaison@vn-mps")
        await page.click("#show-compose")
        await page.select_option("#compose-priority", "flash")
        await page.fill("#compose-to", "anti-trafficking@kh-cnp")
        await page.fill("#compose-text", "Xe tải biển số 51C-123 qua cửa khẩu Mộc Bài đêm nay")
        await page.click("#compose-form button[type=submit]")
        await page.locator("#status").filter(has_text="sealed and sent").wait_for()

        async def delivered() -> list[dict[str, Any]]:
            return list((await k.inbox("anti-trafficking"))["messages"])
        await until(delivered, "the alert in Cambodia's inbox")
        (item,) = await delivered()
        opened = await k.read(item["id"])  # verified against vn's directory, acknowledged
        assert opened.payload["text"] == "Xe tải biển số 51C-123 qua cửa khẩu Mộc Bài đêm nay"
        assert (opened.header.priority, opened.sender_officer) == ("flash", officer)
        reply = await k.reply(opened, {"type": "reply", "text": "Đã nhận. បានទទួល។"})

        # The reply comes live: unread first, with counts; opened, verified, acknowledged.
        await page.click("#desk-list button")
        await page.wait_for_selector(f"#inbox-list li.unread button[data-id='{reply['id']}']")
        assert "1" in (await page.text_content("#inbox-counts") or "")
        assert "FLASH" in (await page.text_content("#inbox-list li.unread") or "")
        await page.click(f"#inbox-list button[data-id='{reply['id']}']")
        article = page.locator(f"#thread article[data-id='{reply['id']}']")
        await article.locator(".signature.ok").wait_for()
        assert "Đã nhận. បានទទួល។" in (await article.text_content() or "")
        assert k.creds.officer_id in (await article.text_content() or "")
        parent = page.locator(f"#thread article[data-id='{item['id']}']")
        await parent.locator(".reads").filter(has_text=k.creds.officer_id).wait_for()

        async def acknowledged() -> bool:
            status = await k.status(reply["id"])
            return any(r["officer"].startswith(officer) for r in status["reads"])
        await until(acknowledged, "the browser's read acknowledgement at kh-cnp")

        # Reply in the thread; gateway-client opens it.
        await page.fill("#reply-text", "Cảm ơn")
        await page.click("#reply-form button[type=submit]")
        await page.wait_for_selector("#thread article.sent")

        async def answered() -> list[dict[str, Any]]:
            return [m for m in (await k.inbox("anti-trafficking"))["messages"]
                    if m["in_reply_to"] == reply["id"]]
        await until(answered, "the browser's reply in Cambodia's inbox")
        back = await k.open((await answered())[0]["id"])
        assert (back.payload["text"], back.header.thread) == ("Cảm ơn", item["id"])

        # A message altered in vn's store shows as failed, its text not shown.
        forged = await k.send("hotline", "border-liaison@vn-mps",
                              {"type": "hotline", "text": "SECRET-ORIGINAL"}, priority="routine")
        await page.click("#back-inbox")
        await page.wait_for_selector(f"#inbox-list button[data-id='{forged['id']}']")
        ((envelope,),) = vn.rows("SELECT envelope FROM messages WHERE id = ?", forged["id"])
        data = bytearray(envelope)
        data[-80] ^= 0x01  # a byte of the ciphertext: the signature no longer holds
        with sqlite3.connect(vn.database) as db:
            db.execute("UPDATE messages SET envelope = ? WHERE id = ?", (bytes(data), forged["id"]))
        await page.click(f"#inbox-list button[data-id='{forged['id']}']")
        failed = page.locator(f"#thread article[data-id='{forged['id']}']")
        await failed.locator(".signature.bad").wait_for()
        assert "bad_signature" in (await failed.text_content() or ""), await failed.text_content()
        assert "SECRET-ORIGINAL" not in (await page.content())
        assert await page.locator("#reply-form").is_hidden()

        # A request from Cambodia, H2 and already overdue: the handling code is shown
        # before the content, and the Requests view lists the request as overdue.
        case = await k.send("case", "border-liaison@vn-mps", {
            "type": "case", "case_ref": "KH-MLA-1", "legal_basis": "treaty",
            "offence": "trafficking in persons", "requested_actions": ["locate the victim"],
            "deadline": "2020-01-31", "text": "Yêu cầu tương trợ"},
            priority="priority", handling="H2")
        await page.click("#back-inbox")
        await page.wait_for_selector(f"#inbox-list button[data-id='{case['id']}']")
        await page.click(f"#inbox-list button[data-id='{case['id']}']")
        request = page.locator(f"#thread article[data-id='{case['id']}']")
        await request.locator(".signature.ok").wait_for()
        assert "H2" in (await request.locator(".handling").text_content() or "")
        await page.click("#show-cases")
        await page.check("#cases-overdue")
        row = page.locator(f"#case-list li.overdue[data-id='{case['id']}']")
        await row.wait_for()
        assert "Submitted" in (await row.text_content() or "")

        # A newcomer waits to join the desk: admitted once the safety code it reads out
        # matches; a wrong code is refused in the browser and nothing is sent.
        newcomer, _ = await enroll(http, vn.url, await invite(vn, "border-liaison"),
                                   OfficerSigningKey.generate(), OfficerEncryptionKey.generate(),
                                   fingerprint=vn.key.public.fingerprint)
        code = GatewayClient(http, newcomer).my_safety_code("border-liaison")
        await page.click("#show-members")
        form = page.locator(f"form.admit[data-officer='{newcomer.officer_id}']")
        await form.locator("input").fill("0000 0000 0000 0000 0000")
        await form.locator("button").click()
        await page.locator("#status.error").filter(has_text="safety code").wait_for()
        assert newcomer.officer_id in await page.inner_text("#pending-list")
        await form.locator("input").fill(code.replace(" ", "-"))
        await form.locator("button").click()
        await page.locator("#member-list li").filter(has_text=newcomer.officer_id).wait_for()
        members = await GatewayClient(http, newcomer).members("border-liaison")
        assert [m["admitted_by"] for m in members["members"]
                if m["officer"] == newcomer.officer_id] == [officer]

        # A dishonest gateway adds a reader with an admission the browser officer never
        # signed: the browser refuses to seal for the desk.
        liar, _ = await enroll(http, vn.url, await invite(vn, "border-liaison"),
                               OfficerSigningKey.generate(), OfficerEncryptionKey.generate(),
                               fingerprint=vn.key.public.fingerprint)
        assert vn.app is not None
        now = vn.app[CLOCK].now_ms()
        await vn.app[STORE].admit(liar.officer_id,
                                  AdmissionRow("border-liaison", officer, now, bytes(64)), now)
        await vn.app[DIRECTORY].reload()
        await page.click("#show-compose")
        await page.fill("#compose-to", "border-liaison@vn-mps")
        await page.fill("#compose-text", "for the desk")
        await page.click("#compose-form button[type=submit]")
        await page.locator("#status").filter(has_text="(unproven_member)").wait_for()

        # What the browser remembers of each gateway's ledger: a checkpoint of kh-cnp,
        # verified when it sealed for kh-cnp's desk. Changed behind its back (as if
        # kh-cnp had shown it another tree before), sealing there is refused: ledger_fork.
        remembered = (await page.evaluate(JS_STORED))["ledgers"]
        assert remembered["kh-cnp"]["origin"] == "fpg/kh-cnp" and remembered["kh-cnp"]["size"]
        await page.evaluate(JS_FORK, "kh-cnp")
        await page.reload()
        await page.wait_for_selector("#view-unlock:not([hidden])")
        await page.fill("#unlock-passphrase", PASSPHRASE)
        await page.click("#unlock-form button[type=submit]")
        await page.wait_for_selector("#view-desk:not([hidden])")
        await page.click("#show-compose")
        await page.fill("#compose-to", "anti-trafficking@kh-cnp")
        await page.fill("#compose-text", "again")
        await page.click("#compose-form button[type=submit]")
        await page.locator("#status").filter(has_text="(ledger_fork)").wait_for()

        # Sent view, partner desks, notices.
        await page.click("#show-sent")
        await page.locator("#sent-list li").filter(has_text=k.creds.officer_id).first.wait_for()
        await page.click("#show-partners")
        await page.fill("#partners-gateway", "kh-cnp")
        await page.click("#partners-form button[type=submit]")
        await page.locator("#partner-list li").filter(
            has_text="anti-trafficking@kh-cnp").wait_for()
        await page.click("#show-notices")
        await page.wait_for_selector("#pane-notices:not([hidden])")

        # Idle: after the time the officer chose without a key or pointer event, the
        # page locks by itself (the page's clock is Playwright's, run forward).
        await page.select_option("#idle", "5")
        await page.clock.fast_forward("04:50")
        assert await page.locator("#view-desk").is_visible()
        await page.keyboard.press("Shift")  # activity: the 5 minutes start again
        await page.clock.fast_forward("04:50")
        assert await page.locator("#view-desk").is_visible()
        await page.clock.fast_forward("00:20")
        await page.wait_for_selector("#view-unlock:not([hidden])")
        await page.fill("#unlock-passphrase", PASSPHRASE)
        await page.click("#unlock-form button[type=submit]")
        await page.wait_for_selector("#view-desk:not([hidden])")

        # Lock: the keys leave memory; the passphrase opens them again.
        await page.click("#lock")
        await page.wait_for_selector("#view-unlock:not([hidden])")
        await page.fill("#unlock-passphrase", "not the passphrase")
        await page.click("#unlock-form button[type=submit]")
        await page.wait_for_selector("#status.error")
        await page.fill("#unlock-passphrase", PASSPHRASE)
        await page.click("#unlock-form button[type=submit]")
        await page.wait_for_selector("#view-desk:not([hidden])")

        # Sign out: the record is gone from IndexedDB.
        await page.click("#signout")
        await page.wait_for_selector("#view-enroll:not([hidden])")
        assert (await page.evaluate(JS_STORED))["officer"] is None

        assert await w.violations() == []
        assert w.foreign(vn.url) == []


JS_STORED = """async () => {
  const db = await new Promise((ok, no) => {
    const r = indexedDB.open("fpg-webclient", 1); r.onsuccess = () => ok(r.result); r.onerror = no;
  });
  const record = await new Promise((ok, no) => {
    const r = db.transaction("officer").objectStore("officer").get("me");
    r.onsuccess = () => ok(r.result); r.onerror = no;
  });
  db.close();
  return {officer: record ? record.officer : null, fields: record ? Object.keys(record).sort() : [],
    sealed: record ? Object.keys(record.sealed) : [], sealed_kdf: record ? record.sealed.kdf : null,
    ledgers: record ? record.ledgers || {} : {},
    local: localStorage.length, cookie: document.cookie};
}"""


# --- message catalogs -----------------------------------------------------------------------

COMPLETE = ("en", "vi")  # web/src/i18n.js COMPLETE: every key, every placeholder
DYNAMIC = {  # keys the code builds from a value: t(`priority.${p}`) ...
    "priority.": ("flash", "immediate", "priority", "routine"),
    "kind.": ("hotline", "case", "reply", "status", "forward", "handover"),
    "notice.": ("membership", "breach", "escalation", "expired", "rejected", "case_due",
                "case_overdue"),
    "basis.": ("treaty", "reciprocity", "convention", "other"),
    "handling.": ("H0", "H1", "H2", "H3", "none"),
    "state.": ("submitted", "received", "returned_incomplete", "resubmitted", "in_progress",
               "executed", "partly_executed", "refused", "withdrawn"),
    "cases.role_": ("requester", "executor"),
}


def used_keys() -> set[str]:
    """Every catalog key the page and the scripts use."""
    src = WEB / "src"
    scripts = "".join(p.read_text("utf-8") for p in sorted(src.glob("*.js")))
    keys = set(re.findall(r'\b(?:t|say|fact)\(\s*"([a-z0-9_.]+)"', scripts))
    for prefix in re.findall(r"\bt\(`([a-z0-9_.]+)\$\{", scripts):
        assert prefix in DYNAMIC, f"a key built from a value: {prefix}..., list its values"
        keys |= {prefix + value for value in DYNAMIC[prefix]}
    page = (src / "index.html").read_text("utf-8")
    keys |= set(re.findall(r'data-i18n(?:-label|-placeholder)?="([a-z0-9_.]+)"', page))
    return keys


def test_every_key_the_ui_uses_is_in_every_complete_catalog() -> None:
    keys = used_keys()
    assert len(keys) > 60
    i18n = (WEB / "src" / "i18n.js").read_text("utf-8")
    assert re.search(r'COMPLETE = \["en", "vi"\]', i18n)
    for lang in COMPLETE:
        entries = catalog(lang)
        assert keys - entries.keys() == set(), f"{lang} lacks these keys"
        assert entries.keys() - keys == set(), f"{lang} has keys nothing uses"
        for key, text in entries.items():
            assert text.strip(), f"{lang} {key} is empty"
            assert set(re.findall(r"\{(\w+)\}", text)) == set(
                re.findall(r"\{(\w+)\}", catalog("en")[key])), f"{lang} {key}: placeholders"


def english_fragments() -> list[str]:
    """Pieces of English text the Vietnamese UI must not show (between placeholders)."""
    en, vi = catalog("en"), catalog("vi")
    pieces = set()
    for key, text in en.items():
        if vi[key] == text:
            continue
        for piece in re.split(r"\{\w+\}", text):
            piece = piece.strip(" .:;,()")
            if len(piece) >= 4 and re.search(r"[A-Za-z]{3}", piece):
                pieces.add(piece)
    return sorted(pieces)


async def test_the_vietnamese_ui_shows_no_english(vn_kh: tuple[Gw, Gw],
                                                  http: aiohttp.ClientSession) -> None:
    """With the browser in Vietnamese, every view an officer goes through (enrollment, the
    inbox, a verified case with its attachment, compose, sent, notices, partner desks,
    unlock) shows no English string of the catalog; and axe-core finds no serious or
    critical accessibility violation in any of them (every control labelled ...)."""
    vn, kh = vn_kh
    k = await kh.officer(http, "anti-trafficking")
    texts: dict[str, str] = {}
    async with chromium(locale="vi-VN") as context:
        w = await watched_page(context)
        page = w.page

        axe = (WEB / "node_modules" / "axe-core" / "axe.min.js").read_text("utf-8")
        problems: dict[str, list[str]] = {}

        async def seen(view: str) -> None:
            texts[view] = await page.inner_text("body")
            if not await page.evaluate("typeof axe !== 'undefined'"):
                await page.evaluate(axe)  # over DevTools, which the page's CSP does not govern
            found = await page.evaluate(JS_AXE)
            if found:
                problems[view] = found

        await page.goto(vn.url + "/app/")
        await page.wait_for_selector("body[data-ready='1']")
        assert await page.get_attribute("html", "lang") == "vi"
        await seen("enroll")
        await enroll_in_browser(w, vn, "border-liaison")
        await desk_known(k, "border-liaison@vn-mps")
        case = await k.send("case", "border-liaison@vn-mps", {
            "type": "case", "case_ref": "KH-1", "legal_basis": "reciprocity", "offence": "x",
            "deadline": "2026-12-31", "requested_actions": ["y"], "text": "z",
            "attachments": [{"name": "a.txt", "media_type": "text/plain", "data": "YQ=="}]},
            priority="flash")
        await page.click("#desk-list button")
        await page.click(f"#inbox-list button[data-id='{case['id']}']")
        await page.locator(f"#thread article[data-id='{case['id']}'] .signature.ok").wait_for()
        await seen("message")
        await page.click("#back-inbox")
        await page.wait_for_selector("#pane-inbox:not([hidden])")
        await seen("inbox")
        await page.click("#show-compose")
        await page.select_option("#compose-kind", "case")
        await seen("compose")
        for button, view in (("#show-sent", "sent"), ("#show-notices", "notices"),
                             ("#show-partners", "partners"), ("#show-members", "members")):
            await page.click(button)
            await page.wait_for_selector(f"#pane-{view}:not([hidden])")
            await seen(view)
        await page.click("#lock")
        await page.wait_for_selector("#view-unlock:not([hidden])")
        await seen("unlock")
        assert await w.violations() == []
    assert problems == {}, "axe-core: serious or critical accessibility violations"
    fragments = english_fragments()
    assert len(fragments) > 40
    for view, text in texts.items():
        left = [f for f in fragments if f in text]
        assert left == [], f"English in the Vietnamese {view} view"


JS_AXE = """async () => {
  const result = await axe.run(document, {resultTypes: ["violations"]});
  return result.violations.filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
}"""


JS_LEDGER = """async (t) => {
  const c = globalThis.fpgCrypto, L = c.ledger, h = c.fromHex;
  const flip = (hashes, root) => {  // one bit of the proof, or of the root if it is empty
    if (hashes.length) { const x = hashes.map((v) => v.slice()); x[0][5] ^= 4; return [x, root]; }
    const r = root.slice(); r[0] ^= 1; return [hashes, r];
  };
  const outcome = (f) => { try { f(); return "ok"; } catch (err) { return err.code; } };
  const out = {checkpoint: L.openCheckpoint(t.note, h(t.key)),
    leaf: c.hex(L.leafHash(c.bytes(t.entry))), inclusion: [], consistency: []};
  out.forged_checkpoint = outcome(() =>
    L.openCheckpoint(t.note.replace("\\n3\\n", "\\n4\\n"), h(t.key)));
  for (const [i, n, root, leaf, proof] of t.inclusion) {
    const hashes = proof.map(h);
    const [bad, badRoot] = flip(hashes, h(root));
    out.inclusion.push([outcome(() => L.verifyInclusion(h(leaf), i, n, hashes, h(root))),
      outcome(() => L.verifyInclusion(h(leaf), i, n, bad, badRoot))]);
  }
  for (const [m, n, oldRoot, newRoot, proof] of t.consistency) {
    const hashes = proof.map(h);
    const [bad, badRoot] = flip(hashes, h(newRoot));
    out.consistency.push([
      outcome(() => L.verifyConsistency(m, n, h(oldRoot), h(newRoot), hashes)),
      outcome(() => L.verifyConsistency(m, n, h(oldRoot), badRoot, bad))]);
  }
  return out;
}"""


JS_FORK = """async (gateway) => {  // another root for the remembered checkpoint of `gateway`
  const db = await new Promise((ok, no) => {
    const r = indexedDB.open("fpg-webclient", 1); r.onsuccess = () => ok(r.result); r.onerror = no;
  });
  const store = db.transaction("officer", "readwrite").objectStore("officer");
  await new Promise((ok, no) => {
    const r = store.get("me");
    r.onsuccess = () => {
      const record = r.result;
      record.ledgers[gateway].root = btoa(String.fromCharCode(...new Uint8Array(32).fill(7)));
      const w = store.put(record, "me"); w.onsuccess = ok; w.onerror = no;
    };
    r.onerror = no;
  });
  db.close();
}"""
