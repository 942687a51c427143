"""docs/PROTOCOL.md's test vectors, checked in both directions."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

from gateway.cli import vectors
from gateway.crypto.envelope import open_envelope, verify_envelope
from gateway.crypto.keys import GatewaySigningKey, OfficerEncryptionKey, OfficerSigningKey
from gateway.crypto.note import NoteVerifier
from gateway.ledger.events import decode_entry
from gateway.protocol.checkpoint import open_checkpoint
from gateway.protocol.merkle import leaf_hash, verify_consistency, verify_inclusion
from gateway.protocol.notices import open_case_deadline_notice
from gateway.protocol.officers import open_binding
from gateway.service_levels.levels import open_breach_notice
from tests.helpers import members_of

PROTOCOL = Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md"


def block() -> str:
    return vectors.extract_block(PROTOCOL.read_text("utf-8"))


def test_regenerating_gives_the_documented_bytes() -> None:
    assert vectors.render() == block()


def _code_blocks(section: str) -> list[str]:
    return re.findall(r"```\n(.*?)\n```", section, flags=re.S)


def test_documented_envelopes_verify_and_open() -> None:
    sections = block().split("### Vector ")[1:]
    assert len(sections) == len(vectors.VECTORS) + len(vectors.CASE_VECTORS) + 6
    first_case = len(vectors.VECTORS) + 5
    envelopes = [*zip(sections, vectors.VECTORS, strict=False),
                 *zip(sections[first_case:], vectors.CASE_VECTORS, strict=False)]
    for section, vector in envelopes:
        payload_text, header_text, hex_text = _code_blocks(section)
        data = bytes.fromhex("".join(hex_text.split()))
        # Keys are derived from the labels as the document says, not taken from our objects.
        sender_label = re.search(r'signing seed: SHA-256\("([^"]+)"\)', section).group(1)
        sender = OfficerSigningKey(vectors.fixed(sender_label))
        assert sender.public.raw.hex() in section
        envelope = verify_envelope(data, sender.public)
        assert envelope.header_bytes.decode() == header_text
        labels = re.findall(r'recipient X25519 secret: SHA-256\("([^"]+)"\)', section)
        assert labels == list(vector.recipient_labels)
        for label in labels:
            assert open_envelope(envelope, OfficerEncryptionKey(vectors.fixed(label))) == (
                payload_text.encode("utf-8")
            )


def test_documented_ledger_and_checkpoint_verify() -> None:
    section = block().split("### Vector ")[len(vectors.VECTORS) + 1]
    entries_text, note_text = _code_blocks(section)
    entries = [line.encode("utf-8") for line in entries_text.split("\n")]
    leaves = [leaf_hash(e) for e in entries]
    for seq, (entry, leaf) in enumerate(zip(entries, leaves, strict=True)):
        assert f"leaf hash {seq}: `{leaf.hex()}`" in section
        assert decode_entry(entry)["seq"] == seq
    key = GatewaySigningKey(vectors.fixed(vectors.NOTE_KEY_LABEL))
    checkpoint = open_checkpoint((note_text + "\n").encode(), vectors.NOTE_NAME,
                                 [NoteVerifier(vectors.NOTE_NAME, key.public)])
    assert checkpoint.size == 3
    hexes = re.findall(r"`([0-9a-f]{64})`", section.split("inclusion proof of entry 1")[1]
                       .split("\n")[0])
    verify_inclusion(leaves[1], 1, 3, [bytes.fromhex(h) for h in hexes], checkpoint.root)
    old_root = bytes.fromhex(re.search(r"root of size 2: `([0-9a-f]{64})`", section).group(1))
    hexes = re.findall(r"`([0-9a-f]{64})`", section.split("consistency proof from size 2")[1]
                       .split("\n")[0])
    verify_consistency(2, 3, old_root, checkpoint.root, [bytes.fromhex(h) for h in hexes])
    # The first entry records vector 1's envelope by its SHA-256.
    first_envelope = vectors.VECTORS[0].seal()
    assert decode_entry(entries[0])["digest"] == hashlib.sha256(first_envelope).hexdigest()


def test_documented_officer_statements_verify() -> None:
    section = block().split("### Vector ")[len(vectors.VECTORS) + 2]
    binding_text, enroll, session, read = _code_blocks(section)
    gateway_key = GatewaySigningKey(vectors.fixed(vectors.NOTE_KEY_LABEL)).public
    binding = open_binding((binding_text + "\n").encode(), "kh-cnp", gateway_key)
    assert binding.officer == vectors.OFFICER_ID
    assert binding.desks == ("anti-trafficking@kh-cnp",)
    signatures = re.findall(r"signature: `([0-9a-f]{128})`", section)
    for text, signature in zip((enroll, session, read), signatures, strict=True):
        binding.sign_key.verify((text + "\n").encode(), bytes.fromhex(signature))
    assert read.split("\n")[0] == "fpg read v1"


def test_documented_hop_request_and_receipt_verify() -> None:
    from gateway.cli.vectors import NOTE_KEY_LABEL, VN_GATEWAY_LABEL, federation_statements
    from gateway.clock import ManualClock
    from gateway.federation.hop import HopVerifier
    from gateway.federation.receipts import open_receipt

    f = federation_statements()
    vn = GatewaySigningKey(vectors.fixed(VN_GATEWAY_LABEL)).public
    kh = GatewaySigningKey(vectors.fixed(NOTE_KEY_LABEL)).public
    verifier = HopVerifier("kh-cnp", ManualClock(vectors.T0 + 2000), 60_000,
                           lambda g: frozenset({vn.fingerprint}) if g == "vn-mps" else None)
    assert verifier.verify("POST", "/v1/federation/messages", f["headers"], f["body"]) == (
        "vn-mps", vn)
    receipt = open_receipt(f["receipt"], "kh-cnp", [kh])
    assert receipt.outcome == "accepted" and receipt.sender == "vn-mps"
    assert receipt.digest == hashlib.sha256(vectors.VECTORS[0].seal()).hexdigest()
    # The documented bytes are these: the block in docs/PROTOCOL.md shows them.
    assert f["receipt"].decode("utf-8").rstrip("\n") in block()
    assert f["headers"]["FPG-Hop-Signature"] in block()


async def test_a_gateway_answers_the_documented_hop_request_with_the_documented_receipt(
        tmp_path, aiohttp_client) -> None:
    """Vector 5 is a valid relay batch: kh-cnp, running with the vector keys, its desk's
    three officers holding vector 1's recipient keys, and its clock at T0 + 1.5 s, accepts
    the documented request (with the sending officer's binding, section 10.4) and answers
    exactly the documented receipt."""
    from gateway.app import create_app
    from gateway.appkeys import CLOCK, STORE
    from gateway.cli.vectors import NOTE_KEY_LABEL, VN_GATEWAY_LABEL, federation_statements
    from gateway.client.api import enroll
    from gateway.clock import ManualClock
    from gateway.config import parse_config
    from gateway.crypto.keyfile import KeyBundle
    from gateway.crypto.keys import ROLE_GATEWAY_SIGNING
    from gateway.federation.hop import sign_hop
    from gateway.federation.partners import FEDERATION_MESSAGES_PATH
    from gateway.federation.receipts import open_receipt
    from gateway.federation.receiver import BATCH_MEDIA_TYPE
    from gateway.officers.enrollment import code_hash, new_code

    f = federation_statements()
    section = block().split("### Vector ")[len(vectors.VECTORS) + 3]
    binding_text = _code_blocks(section)[0]
    assert f["binding"] == (binding_text + "\n").encode()
    vn = GatewaySigningKey(vectors.fixed(VN_GATEWAY_LABEL))
    kh = GatewaySigningKey(vectors.fixed(NOTE_KEY_LABEL))
    config = parse_config({
        "gateway": {"id": "kh-cnp", "public_url": "http://127.0.0.1:1",
                    "data_dir": str(tmp_path)},
        "keys": {"file": "unused.key"},
        "partners": [{"id": "vn-mps", "url": "http://127.0.0.1:1",
                      "fingerprint": vn.public.fingerprint}],
    }, tmp_path / "gateway.toml")
    clock = ManualClock(vectors.T0 + 1500)
    app = create_app(config, KeyBundle("kh-cnp", {ROLE_GATEWAY_SIGNING: kh}), clock=clock)
    client = await aiohttp_client(app)
    store, now = app[STORE], app[CLOCK].now_ms()
    await store.add_desk("anti-trafficking", None, now)
    for reader in vectors.VECTORS[0].recipients:
        code = new_code()
        await store.add_enrollment_code(code_hash(code), ["anti-trafficking"], now,
                                        now + 3_600_000)
        creds, answer = await enroll(client.session, str(client.make_url("/")), code,
                                     OfficerSigningKey.generate(), reader,
                                     fingerprint=kh.public.fingerprint)
        await members_of(app).join(client.session, creds, answer)
    answer = await client.post(FEDERATION_MESSAGES_PATH, data=f["body"],
                               headers={**f["headers"], "Content-Type": BATCH_MEDIA_TYPE})
    assert answer.status == 200, await answer.text()
    assert (await answer.json())["receipts"] == [f["receipt"].decode("utf-8")]
    # Without the binding, the same envelope is refused: nothing vouches for its signer.
    unbound = f["body"].replace(b'"binding":"' + base64.b64encode(f["binding"]) + b'"',
                                b'"binding":null')
    assert json.loads(unbound)["messages"][0]["binding"] is None
    answer = await client.post(FEDERATION_MESSAGES_PATH, data=unbound, headers={
        **sign_hop(vn, "vn-mps", "kh-cnp", "POST", FEDERATION_MESSAGES_PATH, unbound,
                   vectors.T0 + 1000), "Content-Type": BATCH_MEDIA_TYPE})
    (note,) = (await answer.json())["receipts"]
    receipt = open_receipt(note.encode(), "kh-cnp", [kh.public])
    assert (receipt.outcome, receipt.reason) == ("rejected", "bad_binding")


def test_documented_rotation_statement_verifies() -> None:
    from gateway.cli.vectors import NOTE_KEY_LABEL, ROTATED_KEY_LABEL, ROTATION_TIME
    from gateway.protocol.rotation import verify_history

    section = block().split("### Vector ")[len(vectors.VECTORS) + 4]
    assert section.startswith(f"{len(vectors.VECTORS) + 4}: a gateway key rotation")
    (note,) = _code_blocks(section)
    old = GatewaySigningKey(vectors.fixed(NOTE_KEY_LABEL)).public
    new = GatewaySigningKey(vectors.fixed(ROTATED_KEY_LABEL)).public
    history = verify_history([(note + "\n").encode("utf-8")], "kh-cnp", new)
    assert [k.key for k in history.keys] == [old, new]
    assert history.keys[0].retired == ROTATION_TIME
    assert history.since_trusted({old.fingerprint})[-1].key == new


def test_documented_request_and_move_carry_the_optional_fields() -> None:
    sections = block().split("### Vector ")[1:]
    first_case = len(vectors.VECTORS) + 5
    request, move = (json.loads(_code_blocks(section)[1])
                     for section in sections[first_case:first_case + 2])
    assert (request["kind"], request["due"], request["handling"]) == ("case", "2026-03-31",
                                                                      "H2")
    assert (move["kind"], move["state"], move["in_reply_to"]) == (
        "status", "returned_incomplete", request["id"])
    assert "state" not in request and "due" not in move


def test_documented_case_deadline_notice_verifies() -> None:
    section = block().split("### Vector ")[-1]
    (note_text,) = _code_blocks(section)
    key = GatewaySigningKey(vectors.fixed(vectors.NOTE_KEY_LABEL))
    notice = open_case_deadline_notice((note_text + "\n").encode(), "vn-mps", key.public)
    assert (notice.case, notice.what, notice.told, notice.due) == (
        vectors.REQUEST_ID, "overdue", "supervisors@vn-mps", "2026-03-31")


def test_documented_breach_notice_verifies() -> None:
    section = block().split("### Vector ")[len(vectors.VECTORS) + 5]
    (note_text,) = _code_blocks(section)
    key = GatewaySigningKey(vectors.fixed(vectors.NOTE_KEY_LABEL))
    notice = open_breach_notice((note_text + "\n").encode(), "kh-cnp", key.public)
    assert (notice.message_id, notice.stage, notice.priority) == (
        vectors.VECTORS[0].header.id, "read", "flash")
    assert notice.due_ms - notice.accepted_ms == 900_000
