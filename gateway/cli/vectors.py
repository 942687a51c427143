"""Test vectors for docs/PROTOCOL.md: fixed keys and nonces in, exact bytes out.

Envelopes (section 3), signed notes and ledger entries, proofs and checkpoints (section 6).

``python -m gateway.cli.vectors`` prints the Markdown block that docs/PROTOCOL.md holds
between ``<!-- vectors:begin -->`` and ``<!-- vectors:end -->``; ``--write FILE`` replaces
that block in place. The tests check both directions: regenerating gives the document's
bytes, and the document's bytes verify and open with the keys it lists.

Every fixed input is ``SHA-256(label)`` of the label shown, so an implementer can
recompute them without copying hex.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.crypto.envelope import EnvelopeHeader, seal_envelope
from gateway.crypto.keys import (
    GatewaySigningKey,
    OfficerEncryptionKey,
    OfficerSigningKey,
)
from gateway.crypto.note import NoteSigner, note_key_id, sign_note
from gateway.federation.hop import sign_hop
from gateway.federation.hop import signing_string as hop_signing_string
from gateway.federation.receipts import Receipt
from gateway.ledger.events import ACCEPTED, DELIVERED, READ, LedgerEvent
from gateway.protocol.merkle import consistency_proof, inclusion_proof, leaf_hash, root_from_leaves
from gateway.protocol.notices import CaseDeadlineNotice
from gateway.protocol.officers import Binding, enroll_text, read_text, session_text
from gateway.protocol.rotation import sign_rotation
from gateway.service_levels.levels import BreachNotice

BEGIN = "<!-- vectors:begin -->"
END = "<!-- vectors:end -->"


def fixed(label: str) -> bytes:
    return hashlib.sha256(label.encode("ascii")).digest()


@dataclass(frozen=True)
class EnvelopeVector:
    name: str
    sender_label: str
    recipient_labels: tuple[str, ...]
    header: EnvelopeHeader
    payload: bytes
    content_key_label: str
    nonce_label: str
    ephemeral_labels: tuple[str, ...]

    @property
    def sender(self) -> OfficerSigningKey:
        return OfficerSigningKey(fixed(self.sender_label))

    @property
    def recipients(self) -> list[OfficerEncryptionKey]:
        return [OfficerEncryptionKey(fixed(label)) for label in self.recipient_labels]

    def seal(self) -> bytes:
        return seal_envelope(
            self.header,
            self.payload,
            self.sender,
            [k.public for k in self.recipients],
            content_key=fixed(self.content_key_label),
            nonce=fixed(self.nonce_label)[:24],
            ephemeral_seeds=[fixed(label) for label in self.ephemeral_labels],
        )


def _payload(doc: dict[str, object]) -> bytes:
    return json.dumps(doc, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


ALERT_ID = "00112233445566778899aabbccddeeff"
REPLY_ID = "ffeeddccbbaa99887766554433221100"
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z

VECTORS = (
    EnvelopeVector(
        name="flash hotline alert for a desk of three officers",
        sender_label="fpg vector sender signing",
        recipient_labels=("fpg vector recipient 1", "fpg vector recipient 2",
                          "fpg vector recipient 3"),
        header=EnvelopeHeader(
            id=ALERT_ID, kind="hotline", priority="flash", sender="border-liaison@vn-mps",
            recipient="anti-trafficking@kh-cnp", created=T0, expires=T0 + 86_400_000,
            thread=ALERT_ID,
        ),
        payload=_payload({"type": "hotline", "text": "Đã tìm thấy nạn nhân. រកឃើញជនរងគ្រោះ។"}),
        content_key_label="fpg vector content key 1",
        nonce_label="fpg vector nonce 1",
        ephemeral_labels=("fpg vector ephemeral 1", "fpg vector ephemeral 2",
                          "fpg vector ephemeral 3"),
    ),
    EnvelopeVector(
        name="reply to that alert, for one officer",
        sender_label="fpg vector recipient 2 signing",
        recipient_labels=("fpg vector sender encryption",),
        header=EnvelopeHeader(
            id=REPLY_ID, kind="reply", priority="flash", sender="anti-trafficking@kh-cnp",
            recipient="border-liaison@vn-mps", created=T0 + 600_000,
            expires=T0 + 86_400_000, thread=ALERT_ID, in_reply_to=ALERT_ID,
        ),
        payload=_payload({"type": "reply", "text": "Received; team dispatched. 已收到。"}),
        content_key_label="fpg vector content key 2",
        nonce_label="fpg vector nonce 2",
        ephemeral_labels=("fpg vector ephemeral 4",),
    ),
)

REQUEST_ID = "0123456789abcdef0123456789abcdef"
MOVE_ID = "fedcba9876543210fedcba9876543210"

#: A request and its first move (docs/PROTOCOL.md 3.2, 3.7): the optional header fields.
CASE_VECTORS = (
    EnvelopeVector(
        name="an MLA request with a due day and handling code H2",
        sender_label="fpg vector central authority vn signing",
        recipient_labels=("fpg vector central authority la",),
        header=EnvelopeHeader(
            id=REQUEST_ID, kind="case", priority="priority",
            sender="central-authority@vn-mps", recipient="central-authority@la-mps",
            created=T0, expires=T0 + 30 * 86_400_000, thread=REQUEST_ID, handling="H2",
            due="2026-03-31",
        ),
        payload=_payload({"type": "case", "case_ref": "VN-MLA-2026-0001",
                          "legal_basis": "treaty", "offence": "trafficking in persons",
                          "requested_actions": ["hear a witness"], "deadline": "2026-03-31",
                          "text": "Xin hỗ trợ tư pháp."}),
        content_key_label="fpg vector content key 3",
        nonce_label="fpg vector nonce 3",
        ephemeral_labels=("fpg vector ephemeral 5",),
    ),
    EnvelopeVector(
        name="the request returned incomplete",
        sender_label="fpg vector central authority la signing",
        recipient_labels=("fpg vector central authority vn",),
        header=EnvelopeHeader(
            id=MOVE_ID, kind="status", priority="priority",
            sender="central-authority@la-mps", recipient="central-authority@vn-mps",
            created=T0 + 86_400_000, expires=T0 + 31 * 86_400_000, thread=REQUEST_ID,
            in_reply_to=REQUEST_ID, handling="H2", state="returned_incomplete",
        ),
        payload=_payload({"type": "status", "state": "returned_incomplete",
                          "missing": ["certified translation into Lao"]}),
        content_key_label="fpg vector content key 4",
        nonce_label="fpg vector nonce 4",
        ephemeral_labels=("fpg vector ephemeral 6",),
    ),
)

NOTE_KEY_LABEL = "fpg vector gateway signing"
NOTE_NAME = "fpg/kh-cnp"  # the receiving gateway's ledger origin


def ledger_events() -> list[LedgerEvent]:
    """What the receiving gateway's ledger says about vector 1, in order."""
    envelope = VECTORS[0].seal()
    h = VECTORS[0].header
    digest = hashlib.sha256(envelope).hexdigest()
    reader = OfficerSigningKey(fixed("fpg vector recipient 2 signing"))
    return [
        LedgerEvent(ACCEPTED, h.id, T0 + 1_000, digest=digest, sender=h.sender,
                    recipient=h.recipient, kind=h.kind, priority=h.priority,
                    actor=VECTORS[0].sender.key_id, partner="vn-mps"),
        LedgerEvent(DELIVERED, h.id, T0 + 1_000, recipient=h.recipient, kind=h.kind,
                    priority=h.priority),
        LedgerEvent(READ, h.id, T0 + 120_000, actor=reader.key_id, kind=h.kind,
                    priority=h.priority),
    ]


def ledger_checkpoint() -> tuple[list[bytes], bytes, bytes]:
    """Entries, root and signed checkpoint note of the vector ledger."""
    entries = [event.encode(seq) for seq, event in enumerate(ledger_events())]
    root = root_from_leaves([leaf_hash(e) for e in entries])
    text = f"{NOTE_NAME}\n{len(entries)}\n{base64.b64encode(root).decode('ascii')}\n"
    note = sign_note(text, [NoteSigner(NOTE_NAME, GatewaySigningKey(fixed(NOTE_KEY_LABEL)))])
    return entries, root, note


def _hex_block(data: bytes, width: int = 64) -> str:
    return "\n".join(textwrap.wrap(data.hex(), width))


def _envelope_vector(number: int, vector: EnvelopeVector) -> list[str]:
    out: list[str] = []
    envelope = vector.seal()
    sender = vector.sender
    out.append(f"### Vector {number}: {vector.name}")
    out.append("")
    out.append(f"- sender officer signing seed: SHA-256(\"{vector.sender_label}\")")
    out.append(f"  - public key: `{sender.public.raw.hex()}`")
    out.append(f"  - key id: `{sender.key_id}`, fingerprint: `{sender.public.fingerprint}`")
    for label, key in zip(vector.recipient_labels, vector.recipients, strict=True):
        out.append(f"- recipient X25519 secret: SHA-256(\"{label}\")")
        out.append(f"  - public key: `{key.public.raw.hex()}`, key id: `{key.key_id}`")
    out.append(f"- content key: SHA-256(\"{vector.content_key_label}\")")
    out.append(f"- nonce: first 24 bytes of SHA-256(\"{vector.nonce_label}\")")
    out.append("- ephemeral X25519 seeds (`crypto_box_seed_keypair`), one per recipient: "
               + ", ".join(f"SHA-256(\"{label}\")" for label in vector.ephemeral_labels))
    out.append("- payload (UTF-8):")
    out.append("")
    out.append("```")
    out.append(vector.payload.decode("utf-8"))
    out.append("```")
    out.append("")
    header_len = int.from_bytes(envelope[13:15], "big")
    out.append("- header bytes (UTF-8):")
    out.append("")
    out.append("```")
    out.append(envelope[15 : 15 + header_len].decode("utf-8"))
    out.append("```")
    out.append("")
    out.append(f"- envelope SHA-256: `{hashlib.sha256(envelope).hexdigest()}`")
    out.append(f"- signature: `{envelope[-64:].hex()}`")
    out.append(f"- envelope ({len(envelope)} bytes, hex):")
    out.append("")
    out.append("```")
    out.append(_hex_block(envelope))
    out.append("```")
    out.append("")
    return out


def render() -> str:
    out: list[str] = [BEGIN, ""]
    out.append("Generated by `python -m gateway.cli.vectors`; every fixed input is")
    out.append("`SHA-256(label)` of the ASCII label in quotes (nonces take its first 24 bytes).")
    out.append("")
    for number, vector in enumerate(VECTORS, start=1):
        out.extend(_envelope_vector(number, vector))
    gw = GatewaySigningKey(fixed(NOTE_KEY_LABEL))
    entries, root, note = ledger_checkpoint()
    leaves = [leaf_hash(e) for e in entries]
    out.append(f"### Vector {len(VECTORS) + 1}: the receiving ledger's entries and checkpoint")
    out.append("")
    out.append("The ledger of `kh-cnp` after vector 1 was accepted from `vn-mps`, delivered to")
    out.append("the desk and read by one of its officers (entry bytes, one per line):")
    out.append("")
    out.append("```")
    out.extend(e.decode("utf-8") for e in entries)
    out.append("```")
    out.append("")
    for seq, leaf in enumerate(leaves):
        out.append(f"- leaf hash {seq}: `{leaf.hex()}`")
    out.append(f"- root of size 2: `{root_from_leaves(leaves[:2]).hex()}`")
    out.append(f"- root of size 3: `{root.hex()}`")
    out.append("- inclusion proof of entry 1 in size 3: "
               + ", ".join(f"`{h.hex()}`" for h in inclusion_proof(1, 3, leaves)))
    out.append("- consistency proof from size 2 to 3: "
               + ", ".join(f"`{h.hex()}`" for h in consistency_proof(2, 3, leaves)))
    out.append(f"- gateway signing seed: SHA-256(\"{NOTE_KEY_LABEL}\")")
    out.append(f"  - public key: `{gw.public.raw.hex()}`")
    out.append(f"  - key id: `{gw.key_id}`, fingerprint: `{gw.public.fingerprint}`")
    out.append(f"  - note key name `{NOTE_NAME}`, note key id: "
               f"`{note_key_id(NOTE_NAME, gw.public).hex()}`")
    out.append("- signed checkpoint:")
    out.append("")
    out.append("```")
    out.append(note.decode("utf-8").rstrip("\n"))
    out.append("```")
    out.append("")
    out.extend(_officer_vectors(len(VECTORS) + 2))
    out.extend(_federation_vectors(len(VECTORS) + 3))
    out.extend(_rotation_vectors(len(VECTORS) + 4))
    out.extend(_breach_vectors(len(VECTORS) + 5))
    for number, vector in enumerate(CASE_VECTORS, start=len(VECTORS) + 6):
        out.extend(_envelope_vector(number, vector))
    out.extend(_case_deadline_vectors(len(VECTORS) + len(CASE_VECTORS) + 6))
    out.append(END)
    return "\n".join(out) + "\n"


OFFICER_ID = "off-0011223344556677"
READER_SIGNING_LABEL = "fpg vector recipient 2 signing"
READER_ENCRYPTION_LABEL = "fpg vector recipient 2"
CHALLENGE_LABEL = "fpg vector session challenge"
ENROLL_CODE = "FPG-ABCD-EFGH-IJKL-MNOP-QRST"


def officer_statements() -> dict[str, bytes]:
    """The signed statements of officer OFFICER_ID of kh-cnp (vector 1's recipient 2)."""
    gw = GatewaySigningKey(fixed(NOTE_KEY_LABEL))
    signing = OfficerSigningKey(fixed(READER_SIGNING_LABEL))
    encryption = OfficerEncryptionKey(fixed(READER_ENCRYPTION_LABEL))
    binding = Binding("kh-cnp", OFFICER_ID, ("anti-trafficking@kh-cnp",), signing.public,
                      encryption.public, T0, T0 + 365 * 86_400_000).sign(gw)
    enroll = enroll_text("kh-cnp", ENROLL_CODE, signing.public.b64(), encryption.public.b64())
    challenge = fixed(CHALLENGE_LABEL)
    session = session_text("kh-cnp", OFFICER_ID, challenge)
    digest = hashlib.sha256(VECTORS[0].seal()).hexdigest()
    read = read_text(VECTORS[0].header.id, digest, T0 + 120_000)
    return {
        "binding": binding,
        "enroll": enroll, "enroll_signature": signing.sign(enroll),
        "session": session, "session_signature": signing.sign(session),
        "read": read, "read_signature": signing.sign(read),
    }


def _officer_vectors(number: int) -> list[str]:
    s = officer_statements()
    out = [f"### Vector {number}: an officer's binding, enrollment proof, sign-in and read "
           "acknowledgement", ""]
    out.append(f"Officer `{OFFICER_ID}` of `anti-trafficking@kh-cnp`, signing seed "
               f"SHA-256(\"{READER_SIGNING_LABEL}\"), X25519 secret "
               f"SHA-256(\"{READER_ENCRYPTION_LABEL}\"); the gateway key of vector 3.")
    out.append("")
    out.append("- binding (signed note by `kh-cnp`):")
    out.append("")
    out.append("```")
    out.append(s["binding"].decode("utf-8").rstrip("\n"))
    out.append("```")
    out.append("")
    for name, what in (("enroll", f"enrollment proof for code `{ENROLL_CODE}`"),
                       ("session", f"sign-in, challenge = SHA-256(\"{CHALLENGE_LABEL}\")"),
                       ("read", "read acknowledgement of vector 1, read at T0 + 120 s")):
        out.append(f"- {what}: signed bytes (UTF-8, each line ends in a newline):")
        out.append("")
        out.append("```")
        out.append(s[name].decode("utf-8").rstrip("\n"))
        out.append("```")
        out.append("")
        out.append(f"  signature: `{s[name + '_signature'].hex()}`")
        out.append("")
    return out


VN_GATEWAY_LABEL = "fpg vector vn-mps gateway signing"
HOP_NONCE_LABEL = "fpg vector hop nonce"
SENDER_OFFICER_ID = "off-8899aabbccddeeff"
SENDER_ENCRYPTION_LABEL = "fpg vector sender encryption"  # vector 2's recipient


def sender_binding() -> bytes:
    """vn-mps's binding of vector 1's sender, the officer SENDER_OFFICER_ID of
    border-liaison@vn-mps, valid for a year from T0: what vn-mps relays with the envelope."""
    sender = VECTORS[0].sender
    encryption = OfficerEncryptionKey(fixed(SENDER_ENCRYPTION_LABEL))
    return Binding("vn-mps", SENDER_OFFICER_ID, (VECTORS[0].header.sender,), sender.public,
                   encryption.public, T0, T0 + 365 * 86_400_000).sign(
                       GatewaySigningKey(fixed(VN_GATEWAY_LABEL)))


def federation_statements() -> dict[str, Any]:
    """Vector 1 relayed from vn-mps to kh-cnp: the sending officer's binding, the batch,
    its hop headers, the receipt."""
    vn = GatewaySigningKey(fixed(VN_GATEWAY_LABEL))
    kh = GatewaySigningKey(fixed(NOTE_KEY_LABEL))
    envelope = VECTORS[0].seal()
    binding = sender_binding()
    body = json.dumps({"v": 1, "messages": [
        {"envelope": base64.b64encode(envelope).decode("ascii"),
         "binding": base64.b64encode(binding).decode("ascii")}]},
        separators=(",", ":")).encode("ascii")
    nonce = base64.urlsafe_b64encode(fixed(HOP_NONCE_LABEL)[:16]).decode("ascii").rstrip("=")
    when = T0 + 1000
    signed = hop_signing_string("POST", "/v1/federation/messages", "kh-cnp", "vn-mps", when,
                                nonce, body)
    headers = sign_hop(vn, "vn-mps", "kh-cnp", "POST", "/v1/federation/messages", body, when,
                       nonce)
    receipt = Receipt("kh-cnp", "vn-mps", VECTORS[0].header.id,
                      hashlib.sha256(envelope).hexdigest(), "accepted", None, T0 + 1500)
    return {"binding": binding, "body": body, "signed": signed, "headers": headers,
            "receipt": receipt.sign(kh), "vn_public": vn.public.raw.hex()}


def _federation_vectors(number: int) -> list[str]:
    f = federation_statements()
    assert isinstance(f["body"], bytes) and isinstance(f["signed"], bytes)
    assert isinstance(f["headers"], dict) and isinstance(f["receipt"], bytes)
    out = [f"### Vector {number}: a hop request relaying vector 1, and its receipt", ""]
    out.append(f"`vn-mps` (gateway signing seed SHA-256(\"{VN_GATEWAY_LABEL}\"), public key "
               f"`{f['vn_public']}`) posts to `kh-cnp` (the gateway key of vector 3) at "
               f"T0 + 1 s, nonce = base64url of the first 16 bytes of "
               f"SHA-256(\"{HOP_NONCE_LABEL}\"). Vector 1's sender is officer "
               f"`{SENDER_OFFICER_ID}` of `{VECTORS[0].header.sender}` (X25519 secret "
               f"SHA-256(\"{SENDER_ENCRYPTION_LABEL}\")), bound by `vn-mps` (section 7.1):")
    out.append("")
    out.append("```")
    out.append(f["binding"].decode("utf-8").rstrip("\n"))
    out.append("```")
    out.append("")
    out.append("The body is `{\"v\":1,\"messages\":[{\"envelope\":\"<base64 of vector 1>\","
               "\"binding\":\"<base64 of that binding note>\"}]}` (no spaces; the note's "
               "bytes end in a newline), "
               f"SHA-256 `{hashlib.sha256(f['body']).hexdigest()}`.")
    out.append("")
    out.append("- signing string (UTF-8, each line ends in a newline):")
    out.append("")
    out.append("```")
    out.append(f["signed"].decode("utf-8").rstrip("\n"))
    out.append("```")
    out.append("")
    out.append("- headers:")
    out.append("")
    out.append("```")
    out.extend(f"{k}: {v}" for k, v in f["headers"].items())
    out.append("```")
    out.append("")
    out.append("- the receipt `kh-cnp` answers (signed note), accepted at T0 + 1.5 s:")
    out.append("")
    out.append("```")
    out.append(f["receipt"].decode("utf-8").rstrip("\n"))
    out.append("```")
    out.append("")
    return out


ROTATED_KEY_LABEL = "fpg vector kh-cnp rotated gateway signing"
ROTATION_TIME = T0 + 30 * 86_400_000


def rotation_statement() -> bytes:
    """kh-cnp rotates from the gateway key of vector 3 to a new one, 30 days after T0."""
    old = GatewaySigningKey(fixed(NOTE_KEY_LABEL))
    new = GatewaySigningKey(fixed(ROTATED_KEY_LABEL))
    return sign_rotation("kh-cnp", old, new, ROTATION_TIME)


def _rotation_vectors(number: int) -> list[str]:
    new = GatewaySigningKey(fixed(ROTATED_KEY_LABEL))
    out = [f"### Vector {number}: a gateway key rotation statement", ""]
    out.append("`kh-cnp` replaces the gateway key of vector 3 by the key with seed "
               f"SHA-256(\"{ROTATED_KEY_LABEL}\") at T0 + 30 days; signed by the old key, "
               "then by the new one (section 10.6).")
    out.append("")
    out.append(f"- new public key: `{new.public.raw.hex()}`")
    out.append(f"  - key id: `{new.key_id}`, fingerprint: `{new.public.fingerprint}`")
    out.append(f"  - note key name `kh-cnp`, note key id: "
               f"`{note_key_id('kh-cnp', new.public).hex()}`")
    out.append("- statement (signed note):")
    out.append("")
    out.append("```")
    out.append(rotation_statement().decode("utf-8").rstrip("\n"))
    out.append("```")
    out.append("")
    return out


def breach_notice() -> bytes:
    """kh-cnp's anti-trafficking desk has not read vector 1's alert 15 minutes after kh-cnp
    accepted it (T0 + 5 s); kh-cnp tells the desk's supervisor desk, 60 s later."""
    accepted = T0 + 5_000
    notice = BreachNotice("kh-cnp", ALERT_ID, "anti-trafficking@kh-cnp",
                          "duty-officer@kh-cnp", "hotline", "flash", "read", accepted,
                          accepted + 900_000, accepted + 960_000)
    return notice.sign(GatewaySigningKey(fixed(NOTE_KEY_LABEL)))


def _breach_vectors(number: int) -> list[str]:
    return [f"### Vector {number}: a service-level breach notice", "",
            "Signed by `kh-cnp` with the gateway key of vector 3 (section 11.2): vector 1's "
            "flash alert, accepted by kh-cnp at T0 + 5 s, was not read within 900 s.", "",
            "```", breach_notice().decode("utf-8").rstrip("\n"), "```", ""]


def case_deadline_notice() -> bytes:
    """vn-mps tells its central authority's supervisor desk that the request of the
    case vectors is overdue, the day after its due day, signed with vector 3's key."""
    notice = CaseDeadlineNotice(
        "vn-mps", REQUEST_ID, "overdue", "central-authority@vn-mps", "supervisors@vn-mps",
        "central-authority@vn-mps", "central-authority@la-mps", "2026-03-31",
        "returned_incomplete", T0 + 90 * 86_400_000)
    return notice.sign(GatewaySigningKey(fixed(NOTE_KEY_LABEL)))


def _case_deadline_vectors(number: int) -> list[str]:
    return [f"### Vector {number}: a case deadline notice", "",
            "Signed by `vn-mps` with the gateway key of vector 3 (section 8.1): the request "
            "of the case vectors, returned incomplete, is overdue; its supervisor desk is "
            "told.", "",
            "```", case_deadline_notice().decode("utf-8").rstrip("\n"), "```", ""]


def replace_block(document: str, block: str) -> str:
    start, end = document.index(BEGIN), document.index(END) + len(END) + 1
    return document[:start] + block + document[end:]


def extract_block(document: str) -> str:
    start, end = document.index(BEGIN), document.index(END) + len(END) + 1
    return document[start:end]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, metavar="FILE",
                        help="replace the vectors block of FILE (docs/PROTOCOL.md)")
    args = parser.parse_args(argv)
    block = render()
    if args.write:
        args.write.write_text(replace_block(args.write.read_text("utf-8"), block), "utf-8")
    else:
        sys.stdout.write(block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
