"""Key rotation followed by partners, and trust through a roster signed by a trust anchor.

Real gateways on 127.0.0.1 (the in-process pattern of tests/test_federation.py), real
keys and signatures; rotation statements and rosters are made the way `gateway keys
rotate` and `gateway roster sign` make them.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from gateway.app import create_app
from gateway.appkeys import PARTNERS
from gateway.cli.process import ServerProcess
from gateway.clock import ManualClock
from gateway.config import parse_config
from gateway.crypto.keyfile import KeyBundle, load_bundle, read_history
from gateway.crypto.keys import (
    ROLE_GATEWAY_SIGNING,
    AnchorSigningKey,
    GatewaySigningKey,
    VerifyKey,
)
from gateway.crypto.note import NoteSigner, sign_note
from gateway.errors import ConfigError, CryptoError, ForbiddenError, KeyFileError
from gateway.federation.hop import HopVerifier, sign_hop
from gateway.federation.identity import Identity
from gateway.federation.partners import FEDERATION_MESSAGES_PATH, Partner, Partners
from gateway.federation.receiver import BATCH_MEDIA_TYPE
from gateway.federation.roster import RosterEntry, make_roster, open_roster
from gateway.protocol.descriptor import (
    DESCRIPTOR_PATH,
    Descriptor,
    sign_descriptor,
    verify_descriptor_history,
)
from gateway.protocol.officers import Binding
from gateway.protocol.rotation import (
    MAX_HISTORY,
    ChainKey,
    KeyHistoryError,
    Rotation,
    open_rotation,
    rotate_bundle,
    sign_rotation,
    verify_history,
)
from tests.helpers import (
    Gw,
    free_socket,
    free_socket_on,
    officers,
    pin,
    started,
    stop_all,
    until,
)
from tests.helpers import gateway as gateway_cmd

T0 = 1_767_225_600_000
ANCHOR = "asean-ta"


# --- chain verification (no network) -----------------------------------------------------


def chain(n: int, gateway: str = "kh-cnp") -> tuple[list[GatewaySigningKey], list[bytes]]:
    """Keys k0..kn and the n rotation statements between them (one minute apart)."""
    keys = [GatewaySigningKey.generate() for _ in range(n + 1)]
    statements = [sign_rotation(gateway, keys[i], keys[i + 1], T0 + 60_000 * i)
                  for i in range(n)]
    return keys, statements


def forged(gateway: str, old: VerifyKey, new: GatewaySigningKey, signer: GatewaySigningKey,
           when: int = T0) -> bytes:
    """A statement "old is replaced by new" signed by ``signer`` (not old) and by new."""
    text = Rotation(gateway, old, new.public, when).text()
    return sign_note(text, [NoteSigner(gateway, signer), NoteSigner(gateway, new)])


def test_a_chain_of_rotations_verifies_from_any_trusted_key() -> None:
    keys, statements = chain(3)
    history = verify_history(statements, "kh-cnp", keys[3].public)
    assert [k.key for k in history.keys] == [k.public for k in keys]
    assert history.keys[0] == ChainKey(keys[0].public, None, T0)
    assert history.keys[3] == ChainKey(keys[3].public, T0 + 120_000, None)
    # A partner that pinned k1 walks k1 -> k2 -> k3; one that knows k2 only the last step.
    assert [k.key for k in history.since_trusted({keys[1].public.fingerprint})] == [
        keys[1].public, keys[2].public, keys[3].public]
    newest = history.since_trusted({keys[0].public.fingerprint, keys[2].public.fingerprint})
    assert [k.key for k in newest] == [keys[2].public, keys[3].public]
    # No rotation at all: the key itself.
    assert [k.key for k in verify_history([], "kh-cnp", keys[0].public).keys] == [
        keys[0].public]


def test_a_history_that_starts_at_no_trusted_key_is_refused() -> None:
    keys, statements = chain(2)
    history = verify_history(statements, "kh-cnp", keys[2].public)
    with pytest.raises(KeyHistoryError, match="no key in the key history"):
        history.since_trusted({GatewaySigningKey.generate().public.fingerprint})


def test_a_rotation_not_signed_by_the_old_key_is_refused() -> None:
    keys, statements = chain(1)
    evil, other = GatewaySigningKey.generate(), GatewaySigningKey.generate()
    # Signed by another key (and the new one): the old key never said so.
    bad = forged("kh-cnp", keys[1].public, evil, other, T0 + 60_000)
    with pytest.raises(KeyHistoryError, match="no signature by a trusted key"):
        verify_history([*statements, bad], "kh-cnp", evil.public)
    # Signed by the new key only.
    text = Rotation("kh-cnp", keys[1].public, evil.public, T0 + 60_000).text()
    only_new = sign_note(text, [NoteSigner("kh-cnp", evil)])
    with pytest.raises(KeyHistoryError):
        verify_history([*statements, only_new], "kh-cnp", evil.public)
    # Signed by the old key only: the new key's holder never took part.
    only_old = sign_note(text, [NoteSigner("kh-cnp", keys[1])])
    with pytest.raises(KeyHistoryError):
        verify_history([*statements, only_old], "kh-cnp", evil.public)
    # Correctly signed, but it replaces a key that is not the previous one in the chain.
    skip = sign_rotation("kh-cnp", keys[0], evil, T0 + 60_000)
    with pytest.raises(KeyHistoryError, match="not the previous key"):
        verify_history([*statements, skip], "kh-cnp", evil.public)
    with pytest.raises(CryptoError):
        open_rotation(bad, "kh-cnp", keys[1].public)


def test_other_broken_histories_are_refused() -> None:
    keys, statements = chain(2)
    with pytest.raises(KeyHistoryError, match="ends at key"):
        verify_history(statements, "kh-cnp", keys[1].public)  # not the current key
    with pytest.raises(KeyHistoryError, match="names kh-cnp, not vn-mps"):
        verify_history(statements, "vn-mps", keys[2].public)  # another gateway's history
    with pytest.raises(KeyHistoryError):
        verify_history(statements[1:], "kh-cnp", keys[2].public) \
            .since_trusted({keys[0].public.fingerprint})  # a step left out
    backwards = [sign_rotation("kh-cnp", keys[0], keys[1], T0 + 60_000),
                 sign_rotation("kh-cnp", keys[1], keys[2], T0)]
    with pytest.raises(KeyHistoryError, match="older than the one before"):
        verify_history(backwards, "kh-cnp", keys[2].public)
    tampered = statements[0].replace(b'"time":', b'"time":1')
    with pytest.raises(KeyHistoryError):
        verify_history([tampered, statements[1]], "kh-cnp", keys[2].public)
    with pytest.raises(KeyHistoryError, match="at most"):
        verify_history([statements[0]] * (MAX_HISTORY + 1), "kh-cnp", keys[2].public)


def test_rotate_bundle_extends_the_history_and_identity_checks_it() -> None:
    first = GatewaySigningKey.generate()
    bundle = KeyBundle("kh-cnp", {ROLE_GATEWAY_SIGNING: first})
    once = rotate_bundle(bundle, "kh-cnp", T0)
    twice = rotate_bundle(once, "kh-cnp", T0 + 1)
    assert len(twice.history) == 2 and twice.history[0] == once.history[0]
    identity = Identity.from_bundle("kh-cnp", twice)
    assert identity.all_keys[0] == first.public
    assert identity.all_keys[-1] == twice.get(ROLE_GATEWAY_SIGNING).public
    assert len(identity.checkpoint_verifiers("fpg/kh-cnp")) == 3
    # A key file whose history does not lead to its key is refused.
    with pytest.raises(KeyFileError, match="key history"):
        Identity.from_bundle("kh-cnp", KeyBundle("kh-cnp", {
            ROLE_GATEWAY_SIGNING: GatewaySigningKey.generate()}, history=twice.history))


def descriptor_of(key: GatewaySigningKey, history: tuple[bytes, ...],
                  gateway: str = "kh-cnp") -> bytes:
    return sign_descriptor(Descriptor(gateway, "http://127.0.0.1:1", key.public,
                                      f"fpg/{gateway}", T0, T0 + 1, history), key)


def test_a_descriptor_is_verified_through_its_key_history() -> None:
    keys, statements = chain(2)
    data = descriptor_of(keys[2], tuple(statements))
    descriptor, walked = verify_descriptor_history(data, "kh-cnp",
                                                   {keys[0].public.fingerprint})
    assert descriptor.signing_key == keys[2].public
    assert descriptor.key_history == tuple(statements)
    assert [k.key for k in walked] == [k.public for k in keys]
    with pytest.raises(KeyHistoryError):
        verify_descriptor_history(data, "kh-cnp", {GatewaySigningKey.generate().public
                                                   .fingerprint})
    # The history is inside the signed text: swapping it breaks the descriptor signature.
    with pytest.raises(CryptoError):
        verify_descriptor_history(data.replace(b"fpg/kh-cnp", b"fpg/kh-cnq"), "kh-cnp",
                                  {keys[0].public.fingerprint})


def test_old_bindings_verify_only_with_a_key_of_the_chain_from_before_it_was_replaced(
        ) -> None:
    keys, statements = chain(1)
    history = verify_history(statements, "kh-cnp", keys[1].public)
    partner = Partner(parse_config(_minimal("vn-mps", [("kh-cnp", keys[0])]),
                                   Path("/x/gateway.toml")).partners[0],
                      frozenset({keys[1].public.fingerprint}), chain=history.keys)
    from gateway.crypto.keys import OfficerEncryptionKey, OfficerSigningKey
    officer = OfficerSigningKey.generate().public, OfficerEncryptionKey.generate().public

    def binding(key: GatewaySigningKey, made: int) -> bytes:
        return Binding("kh-cnp", "off-0011223344556677", ("anti-trafficking@kh-cnp",),
                       *officer, made, made + 86_400_000).sign(key)

    # Made with the old key before the rotation (T0): still good after it.
    assert partner.open_binding(binding(keys[0], T0 - 1000), keys[1].public).officer
    # Made with the new key: good.
    assert partner.open_binding(binding(keys[1], T0 + 1000), keys[1].public).officer
    # "Made" with the old key after it was replaced: refused.
    with pytest.raises(CryptoError):
        partner.open_binding(binding(keys[0], T0 + 1000), keys[1].public)
    # Another key altogether: refused.
    with pytest.raises(CryptoError):
        partner.open_binding(binding(GatewaySigningKey.generate(), T0 - 1000), keys[1].public)


async def test_the_hop_check_asks_to_learn_a_new_key_only_for_a_well_signed_request() -> None:
    old, new = GatewaySigningKey.generate(), GatewaySigningKey.generate()
    trusted = {"vn-mps": frozenset({old.public.fingerprint})}
    asked: list[str] = []

    async def learn(caller: str, key: VerifyKey) -> bool:
        asked.append(caller)
        ok = key == new.public
        if ok:
            trusted[caller] = frozenset({key.fingerprint})
        return ok

    clock = ManualClock(T0)
    verifier = HopVerifier("kh-cnp", clock, 60_000, trusted.get, learn)
    headers = sign_hop(new, "vn-mps", "kh-cnp", "GET", "/x", b"", T0)
    assert await verifier.authenticate("GET", "/x", headers, b"") == ("vn-mps", new.public)
    assert asked == ["vn-mps"]
    # A bad signature by an unknown key does not make the receiver fetch anything.
    evil = GatewaySigningKey.generate()
    bad = sign_hop(evil, "vn-mps", "kh-cnp", "GET", "/x", b"", T0)
    with pytest.raises(ForbiddenError) as refused:
        await verifier.authenticate("GET", "/y", bad, b"")
    assert refused.value.code == "untrusted_key" and asked == ["vn-mps"]
    # A well-signed one is asked about, and refused when learning does not trust it.
    with pytest.raises(ForbiddenError):
        await verifier.authenticate("GET", "/x", bad, b"")
    assert asked == ["vn-mps", "vn-mps"]


# --- gateways with a key history and trust anchors ----------------------------------------


def _minimal(me: str, partners: list[tuple[str, GatewaySigningKey]]) -> dict[str, Any]:
    return {"gateway": {"id": me, "public_url": "http://127.0.0.1:1"},
            "keys": {"file": "k.key"},
            "partners": [{"id": p, "url": "http://127.0.0.1:2",
                          "fingerprint": k.public.fingerprint} for p, k in partners]}


@dataclass
class RGw(Gw):
    """A test gateway whose key file may hold a key history and whose configuration may
    name trust anchors (id, fingerprint, roster file)."""

    history: tuple[bytes, ...] = ()
    anchors: list[tuple[str, str, Path]] = field(default_factory=list)

    def config_doc(self) -> dict[str, Any]:
        return {**super().config_doc(),
                "trust_anchors": [{"id": a, "fingerprint": fp, "roster": str(path)}
                                  for a, fp, path in self.anchors]}

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.sock.fileno() < 0:  # stopped before: listen on the same port again
            self.sock = free_socket_on(self.port_was)
        bundle = KeyBundle(self.id, {ROLE_GATEWAY_SIGNING: self.key}, history=self.history)
        self.app = create_app(self.config(), bundle)
        self.runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await self.runner.setup()
        await web.SockSite(self.runner, self.sock).start()

    def rotate(self) -> GatewaySigningKey:
        """What `gateway keys rotate` does to the key file (while the gateway is stopped)."""
        bundle = rotate_bundle(KeyBundle(self.id, {ROLE_GATEWAY_SIGNING: self.key},
                                         history=self.history), self.id, int(time.time() * 1000))
        old, self.history = self.key, bundle.history
        new = bundle.get(ROLE_GATEWAY_SIGNING)
        assert isinstance(new, GatewaySigningKey)
        self.key = new
        return old


def make(tmp_path: Path, name: str) -> RGw:
    return RGw(name, GatewaySigningKey.generate(), tmp_path / name, free_socket())


def partner_of(gw: Gw, other: str) -> Partner:
    assert gw.app is not None
    partner = gw.app[PARTNERS].get(other)
    assert partner is not None
    return partner


async def relayed(sender_gw: Gw, client: Any, to: str, text: str) -> str:
    """Send, and wait for the partner's receipt at the sending gateway. (A batch in flight
    while the sender learns the partner's new key gets receipts signed by a key it did not
    know when it sent: it sends again and hears "duplicate", the message stored once.)"""
    sent = await client.send("hotline", to, {"type": "hotline", "text": text},
                             priority="flash")
    assert sent["status"] == "accepted"
    mid = sent["id"]
    await until(lambda: sender_gw.rows(
        "SELECT outcome FROM receipts WHERE message_id = ?", mid) in (
            [("accepted",)], [("duplicate",)]), f"the receipt for {text!r}")
    return str(mid)


async def test_kh_rotates_its_key_and_vn_follows_without_operator_action(tmp_path, http) -> None:
    vn, kh = make(tmp_path, "vn-mps"), make(tmp_path, "kh-cnp")
    pin(vn, kh)
    await started(vn, kh)
    try:
        a, k = await officers(vn, kh, http)
        await relayed(vn, a, "anti-trafficking@kh-cnp", "before")
        pinned = kh.key.public.fingerprint

        await kh.stop()
        kh.rotate()
        await kh.start()
        new = kh.key.public.fingerprint
        assert vn.partners["kh-cnp"][1] == pinned  # VN's configuration is unchanged

        # VN -> KH: relayed to the new key, receipts signed by it accepted.
        mid = await relayed(vn, a, "anti-trafficking@kh-cnp", "after the rotation")
        assert partner_of(vn, "kh-cnp").fingerprints == {new}
        assert kh.rows("SELECT COUNT(*) FROM inbox WHERE message_id = ?", mid) == [(1,)]
        assert vn.rows("SELECT COUNT(*) FROM partner_keys WHERE partner = 'kh-cnp'") == [(1,)]
        # KH's officer (enrolled, and bound, under the OLD key) reads it and answers; its
        # client follows its own gateway's rotation, VN accepts the old-key binding.
        opened = await k.read(mid)
        assert opened.payload["text"] == "after the rotation"
        assert k.creds.gateway_key == kh.key.public
        reply = await relayed(kh, k, "border-liaison@vn-mps", "đã nhận")
        assert vn.rows("SELECT COUNT(*) FROM inbox WHERE message_id = ?", reply) == [(1,)]
        assert (await a.read(reply)).payload["text"] == "đã nhận"

        # VN restarts: it still trusts KH's new key, from its database, before any fetch.
        await vn.stop()
        await vn.start()
        assert partner_of(vn, "kh-cnp").fingerprints == {new}
        a2, _ = await officers(vn, kh, http)
        await relayed(vn, a2, "anti-trafficking@kh-cnp", "after VN restarted")

        # And KH rotates again: VN walks on from the key it learnt.
        await kh.stop()
        kh.rotate()
        await kh.start()
        await relayed(vn, a2, "anti-trafficking@kh-cnp", "second rotation")
        assert partner_of(vn, "kh-cnp").fingerprints == {kh.key.public.fingerprint}
        assert [k.key for k in partner_of(vn, "kh-cnp").chain][-1] == kh.key.public
    finally:
        await stop_all(vn, kh)


async def test_a_partner_that_rotated_is_learnt_from_its_first_hop_request(tmp_path,
                                                                           http) -> None:
    """VN does not fetch KH's descriptor on its own (long refresh): KH's first signed
    request with the new key makes VN look, follow, and answer it."""
    vn, kh = make(tmp_path, "vn-mps"), make(tmp_path, "kh-cnp")
    pin(vn, kh)
    await started(vn, kh)
    try:
        await until(lambda: partner_of(vn, "kh-cnp").up, "VN to see KH")
        await kh.stop()
        kh.rotate()
        await kh.start()
        headers = sign_hop(kh.key, "kh-cnp", "vn-mps", "GET", "/v1/federation/directory", b"",
                           int(time.time() * 1000))
        async with http.get(vn.url + "/v1/federation/directory", headers=headers) as answer:
            assert answer.status == 200
        assert partner_of(vn, "kh-cnp").fingerprints == {kh.key.public.fingerprint}
    finally:
        await stop_all(vn, kh)


async def test_a_forged_rotation_is_refused_and_vn_keeps_khs_old_key(tmp_path, http) -> None:
    vn, kh = make(tmp_path, "vn-mps"), make(tmp_path, "kh-cnp")
    pin(vn, kh)
    await started(vn, kh)
    try:
        a, _ = await officers(vn, kh, http)
        await relayed(vn, a, "anti-trafficking@kh-cnp", "before")
        pinned = kh.key.public
        await kh.stop()
        # Someone without KH's key takes its address and announces a "rotation" signed by
        # another key of theirs: KH's real key never said so.
        evil, other = GatewaySigningKey.generate(), GatewaySigningKey.generate()
        history = (forged("kh-cnp", pinned, evil, other),)
        descriptor = descriptor_of(evil, history)

        async def serve_descriptor(request: web.Request) -> web.Response:
            return web.Response(body=descriptor, content_type="text/plain")

        async def refuse(request: web.Request) -> web.Response:
            return web.json_response({"error": "nope"}, status=500)
        app = web.Application()
        app.router.add_get(DESCRIPTOR_PATH, serve_descriptor)
        app.router.add_route("*", "/{tail:.*}", refuse)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        await web.SockSite(runner, free_socket_on(kh.port_was)).start()
        try:
            # The partner's id comes from the log context (bound for the request's check).
            with capture_logs(processors=[merge_contextvars]) as logs:
                # It calls VN signed with its key: refused, after VN looked at its descriptor.
                body = json.dumps({"v": 1, "messages": [{"envelope": "AA==", "binding": None}]})
                headers = sign_hop(evil, "kh-cnp", "vn-mps", "POST", FEDERATION_MESSAGES_PATH,
                                   body.encode(), int(time.time() * 1000))
                headers["Content-Type"] = BATCH_MEDIA_TYPE
                async with http.post(vn.url + FEDERATION_MESSAGES_PATH, data=body,
                                     headers=headers) as answer:
                    assert answer.status == 403
                    assert (await answer.json())["error"] == "untrusted_key"
                # VN's own refresh refuses the descriptor too.
                with pytest.raises(Exception, match="not trusted"):
                    await vn.app[PARTNERS].refresh(partner_of(vn, "kh-cnp"))
            refused = [e for e in logs if e["event"] == "partner_key_untrusted"]
            assert refused and refused[0]["partner"] == "kh-cnp"
            assert refused[0]["fingerprint"] == evil.public.fingerprint
            assert any(e["event"] == "hop_key_untrusted" for e in logs)
            assert partner_of(vn, "kh-cnp").fingerprints == {pinned.fingerprint}
            assert vn.rows("SELECT COUNT(*) FROM partner_keys") == [(0,)]
            # Nothing was stored from the impostor.
            assert vn.rows("SELECT COUNT(*) FROM messages WHERE origin = 'kh-cnp'") == [(0,)]
        finally:
            await runner.cleanup()
        # The real KH comes back with its real key: all is as before.
        await kh.start()
        await relayed(vn, a, "anti-trafficking@kh-cnp", "the real one")
    finally:
        await stop_all(vn, kh)


# --- rosters -------------------------------------------------------------------------------


def roster_file(path: Path, anchor: AnchorSigningKey, gateways: list[Gw], *,
                valid_ms: int = 86_400_000, now: int | None = None,
                name: str = ANCHOR) -> Path:
    now = now if now is not None else int(time.time() * 1000)
    entries = [RosterEntry(g.id, g.url, g.key.public.fingerprint, now - 1000, now + valid_ms)
               for g in gateways]
    path.write_bytes(make_roster(name, anchor, entries, now - 1000, now + valid_ms))
    return path


async def test_gateways_listed_in_a_roster_are_trusted_and_relay(tmp_path, http) -> None:
    anchor = AnchorSigningKey.generate()
    vn, kh, la = make(tmp_path, "vn-mps"), make(tmp_path, "kh-cnp"), make(tmp_path, "la-mps")
    roster = roster_file(tmp_path / "asean.roster", anchor, [vn, kh])  # not la-mps
    for gw in (vn, kh):
        gw.anchors = [(ANCHOR, anchor.public.fingerprint, roster)]
    await started(vn, kh)
    try:
        assert partner_of(vn, "kh-cnp").source == f"roster {ANCHOR}"
        assert vn.app is not None and vn.app[PARTNERS].get("vn-mps") is None  # not itself
        a, k = await officers(vn, kh, http)
        mid = await relayed(vn, a, "anti-trafficking@kh-cnp", "through the roster")
        assert (await k.read(mid)).payload["text"] == "through the roster"
        # A gateway the roster does not list is refused, whatever it signs.
        headers = sign_hop(la.key, "la-mps", "vn-mps", "GET", "/v1/federation/directory",
                           b"", int(time.time() * 1000))
        async with http.get(vn.url + "/v1/federation/directory", headers=headers) as answer:
            assert answer.status == 403
            assert (await answer.json())["error"] == "unknown_partner"
        # A listed gateway id with a key the roster does not name: refused too.
        headers = sign_hop(la.key, "kh-cnp", "vn-mps", "GET", "/v1/federation/directory",
                           b"", int(time.time() * 1000))
        async with http.get(vn.url + "/v1/federation/directory", headers=headers) as answer:
            assert answer.status == 403
            assert (await answer.json())["error"] == "untrusted_key"
    finally:
        await stop_all(vn, kh)


async def test_a_roster_with_a_bad_signature_another_anchor_or_expired_stops_the_gateway(
        tmp_path) -> None:
    anchor, impostor = AnchorSigningKey.generate(), AnchorSigningKey.generate()
    vn, kh = make(tmp_path, "vn-mps"), make(tmp_path, "kh-cnp")
    good = roster_file(tmp_path / "good.roster", anchor, [kh])
    tampered = tmp_path / "tampered.roster"
    tampered.write_bytes(good.read_bytes().replace(b'"gateway":"kh-cnp"',
                                                   b'"gateway":"kh-cnq"'))
    other = roster_file(tmp_path / "other.roster", impostor, [kh])
    expired = roster_file(tmp_path / "expired.roster", anchor, [kh], valid_ms=-500)
    cases = [(tampered, "does not verify"), (other, "not the configured one"),
             (expired, "expired"), (tmp_path / "missing.roster", "cannot read")]
    for path, expected in cases:
        vn.anchors = [(ANCHOR, anchor.public.fingerprint, path)]
        with pytest.raises(ConfigError, match=expected) as refused:
            await vn.start()
        assert "[[trust_anchors]] #1 roster" in refused.value.message
        assert str(path) in refused.value.message
        assert vn.runner is not None
        await vn.runner.cleanup()
        vn.runner = vn.app = None


def test_roster_entries_are_valid_only_in_their_time_and_pins_win(tmp_path) -> None:
    anchor = AnchorSigningKey.generate()
    kh_key, la_key, pinned_la = (GatewaySigningKey.generate() for _ in range(3))
    now = int(time.time() * 1000)
    entries = [RosterEntry("kh-cnp", "http://127.0.0.1:3", kh_key.public.fingerprint,
                           now + 60_000, now + 120_000),
               RosterEntry("la-mps", "http://127.0.0.1:4", la_key.public.fingerprint,
                           now - 1000, now + 120_000)]
    path = tmp_path / "r.roster"
    path.write_bytes(make_roster(ANCHOR, anchor, entries, now - 1000, now + 90_000))
    doc = _minimal("vn-mps", [("la-mps", pinned_la)])
    doc["trust_anchors"] = [{"id": ANCHOR, "fingerprint": anchor.public.fingerprint,
                             "roster": str(path)}]
    config = parse_config(doc, tmp_path / "gateway.toml")
    clock = ManualClock(now)
    identity = Identity("vn-mps", GatewaySigningKey.generate())
    with capture_logs() as logs:
        partners = Partners(config, identity, clock)
    # Pinned wins: the roster's other key for la-mps is ignored, loudly.
    assert partners.trusted("la-mps") == {pinned_la.public.fingerprint}
    assert any(e["event"] == "roster_entry_ignored" for e in logs)
    # kh-cnp: not before its not_before, then until the roster's end (earlier than its own).
    assert partners.trusted("kh-cnp") is None
    clock_at(clock, now + 60_000)
    assert partners.trusted("kh-cnp") == {kh_key.public.fingerprint}
    clock_at(clock, now + 90_000)
    assert partners.trusted("kh-cnp") is None
    # open_roster says why, for each problem.
    with pytest.raises(CryptoError, match="expired"):
        open_roster(path.read_bytes(), ANCHOR, anchor.public.fingerprint, now + 90_000)
    with pytest.raises(CryptoError, match="not asean-tb"):
        open_roster(path.read_bytes(), "asean-tb", anchor.public.fingerprint, now)


def clock_at(clock: ManualClock, ms: int) -> None:
    clock.advance((ms - clock.now_ms()) / 1000)


# --- the commands -----------------------------------------------------------------------


def test_keys_rotate_command_keeps_the_ledger_verifiable_and_the_descriptor_serves_history(
        tmp_path) -> None:
    directory = tmp_path / "kh"
    out = gateway_cmd("init", str(directory), "--id", "kh-cnp", "--port", "0",
                      "--insecure-dev-keys")
    assert out.returncode == 0, out.stderr
    config = directory / "gateway.toml"
    key_file = directory / "keys" / "gateway.key"
    first = load_bundle(key_file, None, allow_insecure=True).get(ROLE_GATEWAY_SIGNING)
    server = ServerProcess.gateway(config)
    server.start()
    assert server.stop() == 0  # a clean stop signs a checkpoint with the first key
    out = gateway_cmd("keys", "rotate", "--config", str(config))
    assert out.returncode == 0, out.stderr
    rotated = load_bundle(key_file, None, allow_insecure=True)
    new = rotated.get(ROLE_GATEWAY_SIGNING)
    assert new.public != first.public and len(rotated.history) == 1
    assert read_history(key_file) == rotated.history
    assert new.public.fingerprint in out.stdout
    retired = key_file.with_name(f"gateway.key.{first.key_id}.retired")
    assert load_bundle(retired, None, allow_insecure=True).get(
        ROLE_GATEWAY_SIGNING).public == first.public
    assert (key_file.stat().st_mode & 0o777) == 0o600
    shown = gateway_cmd("keys", "show", "--config", str(config))
    assert f"replaced:    {first.key_id}" in shown.stdout
    verified = gateway_cmd("ledger", "verify", "--config", str(config))
    assert verified.returncode == 0, verified.stderr  # old checkpoints, old key
    with server:
        import urllib.request
        with urllib.request.urlopen(server.url + DESCRIPTOR_PATH, timeout=10) as answer:
            data = answer.read()
    descriptor, walked = verify_descriptor_history(data, "kh-cnp", {first.public.fingerprint})
    assert descriptor.signing_key == new.public and len(walked) == 2
    assert gateway_cmd("ledger", "verify", "--config", str(config)).returncode == 0
    # A second rotation refuses to overwrite a retired file of the same key? No: new name.
    again = gateway_cmd("keys", "rotate", "--config", str(config))
    assert again.returncode == 0, again.stderr
    assert len(read_history(key_file)) == 2


def test_roster_commands_and_config_check(tmp_path) -> None:
    anchor_key = tmp_path / "anchor.key"
    out = gateway_cmd("roster", "anchor-init", str(anchor_key), "--id", ANCHOR,
                      "--insecure-dev-keys")
    assert out.returncode == 0, out.stderr
    anchor_fp = out.stdout.split("fingerprint: ")[1].strip()
    kh = GatewaySigningKey.generate()
    source = tmp_path / "gateways.toml"
    source.write_text(f'[[gateways]]\nid = "kh-cnp"\nurl = "https://kh.example"\n'
                      f'fingerprint = "{kh.public.fingerprint.lower()}"\n')
    roster = tmp_path / "asean.roster"
    out = gateway_cmd("roster", "sign", str(source), "--anchor-key", str(anchor_key),
                      "--insecure-dev-keys", "--days", "7", "--out", str(roster))
    assert out.returncode == 0, out.stderr
    opened = open_roster(roster.read_bytes(), ANCHOR, anchor_fp, int(time.time() * 1000))
    assert [(g.gateway, g.url, g.fingerprint) for g in opened.gateways] == [
        ("kh-cnp", "https://kh.example", kh.public.fingerprint)]
    shown = gateway_cmd("roster", "show", str(roster))
    assert anchor_fp in shown.stdout and "kh-cnp" in shown.stdout
    directory = tmp_path / "vn"
    assert gateway_cmd("init", str(directory), "--id", "vn-mps",
                       "--insecure-dev-keys").returncode == 0
    config = directory / "gateway.toml"
    with open(config, "a", encoding="utf-8") as fh:
        fh.write(f'\n[[trust_anchors]]\nid = "{ANCHOR}"\nfingerprint = "{anchor_fp}"\n'
                 f'roster = "{roster}"\n')
    checked = gateway_cmd("config", "check", "--config", str(config))
    assert checked.returncode == 0, checked.stderr
    assert "1 gateway(s) in 1 roster(s)" in checked.stdout
    roster.write_bytes(roster.read_bytes().replace(b"kh.example", b"kh.exampla"))
    checked = gateway_cmd("config", "check", "--config", str(config))
    assert checked.returncode == 2
    assert "roster of asean-ta refused" in checked.stderr
    assert len(checked.stderr.strip().splitlines()) == 1


def test_key_files_keep_their_history(tmp_path) -> None:
    from gateway.crypto.keyfile import TEST_KDF, replace_bundle, save_bundle
    path = tmp_path / "gateway.key"
    bundle = KeyBundle("kh-cnp", {ROLE_GATEWAY_SIGNING: GatewaySigningKey.generate()})
    save_bundle(path, bundle, b"secret", TEST_KDF)
    rotated = rotate_bundle(bundle, "kh-cnp", T0)
    replace_bundle(path, rotated, b"secret", keep_old_as=tmp_path / "old.key")
    loaded = load_bundle(path, b"secret")
    assert loaded.history == rotated.history
    assert loaded.get(ROLE_GATEWAY_SIGNING).public == rotated.get(ROLE_GATEWAY_SIGNING).public
    assert json.loads(path.read_text())["kdf"]["opslimit"] == TEST_KDF.opslimit
    assert load_bundle(tmp_path / "old.key", b"secret").history == ()
    with pytest.raises(KeyFileError, match="already exists"):
        replace_bundle(path, rotated, b"secret", keep_old_as=tmp_path / "old.key")
    assert base64.b64decode(json.loads(path.read_text())["key_history"][0]) == \
        rotated.history[0]
