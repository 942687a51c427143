"""Acceptance of issue 23: the web client against two real gateway processes, vn-mps and
kh-cnp, as ``gateway demo --setup-only`` configures them (pinned to each other, on
127.0.0.1), in a real headless Chromium.

An officer enrolls in the browser on vn-mps (its code from ``gateway officers invite``,
the gateway's fingerprint from ``gateway keys show``, both run as processes) and sends a
flash alert to kh-cnp's anti-trafficking desk; a gateway-client officer there reads it
(verified against vn-mps's directory) and replies; the browser shows the reply live,
verified, and the read acknowledgement of its alert. A case notification with a 2 MB
attachment goes the other way and downloads byte-identical under a safe name. A message
altered in vn-mps's database shows as failed verification, its text not shown. The page
makes no request off the gateway's origin and reports no CSP violation. Screenshots of
the inbox, a message and the compose form are saved: into docs/screenshots/ (the README's)
when FPG_SCREENSHOTS is set (`make screenshots`), else into the test's temporary directory,
so that a test run leaves the working tree as it found it.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.cli.process import ServerProcess
from gateway.client import payload
from gateway.client.api import GatewayClient, enroll
from gateway.crypto.keys import OfficerEncryptionKey, OfficerSigningKey
from tests.helpers import chromium, gateway, until, watched_page

pytestmark = pytest.mark.slow

DOCS_SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
PASSPHRASE = "a long passphrase for the border post"
ALERT = "Nghi phạm đưa 3 trẻ em qua cửa khẩu Mộc Bài lúc 22:00, xe tải 51C-123.45"
REPLY = "បានទទួល។ Received: our team is at the Bavet post."
HOSTILE_NAME = "../../evidence\u202egpj.exe"


def saved(path: Path) -> bytes:
    return Path(path).read_bytes()


class Federation:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.servers: dict[str, ServerProcess] = {}
        self.fingerprints: dict[str, str] = {}

    def cfg(self, gw: str) -> Path:
        return self.root / gw / "gateway.toml"

    def url(self, gw: str) -> str:
        return self.servers[gw].url

    def invite(self, gw: str, desk: str) -> str:
        result = gateway("officers", "invite", "--desk", desk, "--config", str(self.cfg(gw)))
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    fed = Federation(tmp_path_factory.mktemp("webclient") / "fed")
    setup = gateway("demo", "--setup-only", "--free-ports", "--dir", str(fed.root))
    assert setup.returncode == 0, setup.stderr
    with ServerProcess.gateway(fed.cfg("vn-mps")) as vn, \
            ServerProcess.gateway(fed.cfg("kh-cnp")) as kh:
        fed.servers = {"vn-mps": vn, "kh-cnp": kh}
        for gw in fed.servers:
            shown = gateway("keys", "show", "--config", str(fed.cfg(gw)))
            fed.fingerprints[gw] = shown.stdout.split("fingerprint: ")[1].strip()
        yield fed


async def known(client: GatewayClient, address: str) -> None:
    gw = address.split("@")[1]

    async def listed() -> bool:
        try:
            desk = (await client.directory(refresh=True, gateway=gw)).get(address)
            return desk is not None and bool(desk.members)
        except Exception:
            return False
    await until(listed, f"{address} through {client.creds.gateway_id}", seconds=30)


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    return DOCS_SCREENSHOTS if os.environ.get("FPG_SCREENSHOTS") else tmp_path


async def test_a_browser_officer_and_a_gateway_client_officer_across_the_border(
        federation: Federation, screenshots: Path) -> None:
    fed = federation
    vn_url = fed.url("vn-mps")
    attachment = hashlib.shake_256(b"fpg webclient attachment").digest(2 * 1024 * 1024)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http, \
            chromium() as context:
        w = await watched_page(context)
        page = w.page
        await page.set_viewport_size({"width": 1200, "height": 800})

        # Enroll in the browser with what the operator gives.
        await page.goto(vn_url + "/app/")
        await page.wait_for_selector("body[data-ready='1']")
        await page.fill("#enroll-fingerprint", fed.fingerprints["vn-mps"])
        await page.fill("#enroll-code", fed.invite("vn-mps", "border-liaison"))
        await page.fill("#enroll-passphrase", PASSPHRASE)
        await page.fill("#enroll-passphrase2", PASSPHRASE)
        await page.click("#enroll-form button[type=submit]")
        await page.wait_for_selector("#view-desk:not([hidden])")
        officer = ((await page.text_content("#who")) or "").split(" ")[0]

        # A gateway-client officer of Cambodia's desk.
        creds, _ = await enroll(http, fed.url("kh-cnp"), fed.invite("kh-cnp", "anti-trafficking"),
                                OfficerSigningKey.generate(), OfficerEncryptionKey.generate(),
                                fingerprint=fed.fingerprints["kh-cnp"])
        k = GatewayClient(http, creds)
        await known(k, "border-liaison@vn-mps")

        # The browser's flash alert; Cambodia reads it and replies.
        await page.click("#show-compose")
        await page.select_option("#compose-priority", "flash")
        await page.fill("#compose-to", "anti-trafficking@kh-cnp")
        await page.fill("#compose-text", ALERT)
        await page.screenshot(path=str(screenshots / "compose.png"))

        async def sent() -> bool:
            await page.click("#compose-form button[type=submit]")
            try:
                await page.locator("#status").filter(has_text="sealed and sent").wait_for(
                    timeout=2000)
                return True
            except Exception:  # vn-mps has not fetched kh-cnp's directory yet: again
                await page.fill("#compose-text", ALERT)
                return False
        await until(sent, "the alert sealed and sent", seconds=30)

        async def inbox() -> list[dict[str, Any]]:
            return list((await k.inbox("anti-trafficking"))["messages"])
        await until(inbox, "the alert in kh-cnp's inbox", seconds=30)
        (item,) = await inbox()
        opened = await k.read(item["id"])
        assert (opened.payload["text"], opened.header.priority) == (ALERT, "flash")
        assert opened.sender_officer == officer
        reply = await k.reply(opened, {"type": "reply", "text": REPLY})

        # Live in the browser: the reply, verified, and the alert's read acknowledgement.
        await page.click("#desk-list button")
        await page.wait_for_selector(f"#inbox-list li.unread button[data-id='{reply['id']}']",
                                     timeout=30_000)
        await page.screenshot(path=str(screenshots / "inbox.png"))
        await page.click(f"#inbox-list button[data-id='{reply['id']}']")
        shown = page.locator(f"#thread article[data-id='{reply['id']}']")
        await shown.locator(".signature.ok").filter(has_text=creds.officer_id).wait_for()
        assert REPLY in (await shown.text_content() or "")
        await page.locator(f"#thread article[data-id='{item['id']}'] .reads").filter(
            has_text=f"{creds.officer_id}@kh-cnp").wait_for(timeout=30_000)
        await page.screenshot(path=str(screenshots / "message.png"))
        for name in ("compose.png", "inbox.png", "message.png"):
            assert (screenshots / name).read_bytes().startswith(b"\x89PNG")

        # A case notification with a 2 MB attachment, the other way; saved byte-identical.
        case = {"type": "case", "case_ref": "KH-2026-0042", "legal_basis": "treaty",
                "offence": "trafficking in children", "deadline": "2026-12-31",
                "requested_actions": ["locate the victims", "serve documents"],
                "text": "Hồ sơ kèm theo.",
                "attachments": [payload.attachment(HOSTILE_NAME, "application/pdf",
                                                   attachment)]}
        notified = await k.send("case", "border-liaison@vn-mps", case, priority="immediate")
        await page.click("#back-inbox")
        await page.click(f"#inbox-list button[data-id='{notified['id']}']", timeout=30_000)
        article = page.locator(f"#thread article[data-id='{notified['id']}']")
        await article.locator(".signature.ok").wait_for()
        assert "KH-2026-0042" in (await article.text_content() or "")
        async with page.expect_download() as info:
            await article.locator("button.download").click()
        download = await info.value
        name = download.suggested_filename
        assert "/" not in name and "\u202e" not in name and not name.startswith(".")
        assert saved(await download.path()) == attachment

        # A message altered in vn-mps's database: failed, its text not shown.
        forged = await k.send("hotline", "border-liaison@vn-mps",
                              {"type": "hotline", "text": "ORIGINAL-TEXT-7731"})
        db = fed.cfg("vn-mps").parent / "data" / "gateway.sqlite3"
        await until(lambda: bool(sqlite3.connect(db).execute(
            "SELECT 1 FROM messages WHERE id = ?", (forged["id"],)).fetchall()),
            "the message stored at vn-mps", seconds=30)
        with sqlite3.connect(db) as conn:
            ((envelope,),) = conn.execute("SELECT envelope FROM messages WHERE id = ?",
                                          (forged["id"],)).fetchall()
            changed = bytearray(envelope)
            changed[-70] ^= 0x40
            conn.execute("UPDATE messages SET envelope = ? WHERE id = ?",
                         (bytes(changed), forged["id"]))
        await page.click("#back-inbox")
        await page.click(f"#inbox-list button[data-id='{forged['id']}']", timeout=30_000)
        await page.locator(f"#thread article[data-id='{forged['id']}'] .signature.bad").wait_for()
        assert "ORIGINAL-TEXT-7731" not in await page.content()

        assert await w.violations() == []
        assert w.foreign(vn_url) == []
