"""Every refusal code the protocol documents is asserted by some test.

A refusal that no test names is a check that can be deleted unseen. The codes are read
from the two documents an implementer works from:

- docs/PROTOCOL.md: a backquoted status and code (`403 unknown_partner`, also broken
  over a line) and the codes given as alternatives right after it (`` / `hop_malformed` ``);
  the first column of the relay refusal table (header `reason`); the list of reasons a
  relayed read acknowledgement is rejected with (after `` `rejected` with ``); the
  quoted codes of an `{"error": "a" | "b"}` answer; the witness alarm reasons.
- docs/openapi.yaml: the `const` or `enum` of every `error` property, and the codes its
  descriptions give with a status (`` `404 not_found` ``, `` `internal` (500) ``, and the
  list after `` `5XX` ``).

A code is covered when some file under tests/ other than this one holds it as a string
literal (``"code"`` or ``'code'``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = ROOT / "docs" / "PROTOCOL.md"
OPENAPI = ROOT / "docs" / "openapi.yaml"
CODE = r"[a-z][a-z0-9_]*"


def protocol_codes(text: str) -> set[str]:
    codes: set[str] = set()
    # `403 unknown_partner`, `401 hop_unsigned` / `hop_malformed`, `409\nrecipients_mismatch`
    for first, rest in re.findall(rf"`\d{{3}}\s+({CODE})`((?:\s*/\s*`{CODE}`)*)", text):
        codes.add(first)
        codes.update(re.findall(rf"`({CODE})`", rest))
    # The relay refusal table: | `code` / `code` | meaning |, under a header | reason |.
    for table in re.findall(r"^\| reason \|.*\n\|[-| ]+\|\n((?:\|.*\n)+)", text, re.M):
        for row in table.splitlines():
            codes.update(re.findall(rf"`({CODE})`", row.split("|")[1]))
    # A relayed read acknowledgement is "`rejected` with `a`, `b`, ... or `z`."
    for listed in re.findall(rf"`rejected` with\s+((?:`{CODE}`(?:,|\s+or)?\s*)+)", text):
        codes.update(re.findall(rf"`({CODE})`", listed))
    # {"error": "bad_parameter" | "bad_proof_request", ...}
    for alternatives in re.findall(rf'\{{"error": ((?:"{CODE}"(?:\s*\|\s*)?)+)', text):
        codes.update(re.findall(rf'"({CODE})"', alternatives))
    # The witness: (`reason` = `shrank`, `forked` or `bad_signature`)
    for listed in re.findall(rf"`reason` = ((?:`{CODE}`(?:,|\s+or)?\s*)+)", text):
        codes.update(re.findall(rf"`({CODE})`", listed))
    return codes


def openapi_codes(text: str) -> set[str]:
    codes: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "error" and isinstance(value, dict):
                    if "const" in value:
                        codes.add(value["const"])
                    codes.update(value.get("enum", ()))
                elif key == "description" and isinstance(value, str):
                    codes.update(re.findall(rf"`\d{{3}}\s+({CODE})`", value))
                    codes.update(re.findall(rf"`({CODE})` \(\d{{3}}", value))
                    for listed in re.findall(rf"`5XX` \(((?:`{CODE}`,?\s*)+)\)", value):
                        codes.update(re.findall(rf"`({CODE})`", listed))
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)
    walk(yaml.safe_load(text))
    return codes


def test_the_documented_codes_are_found() -> None:
    """The collectors read what the documents say (so a change of wording that hides the
    codes from them fails here, not silently)."""
    protocol = protocol_codes(PROTOCOL.read_text("utf-8"))
    assert {"unknown_partner", "hop_malformed", "recipients_mismatch", "session_expired",
            "sender_not_bound", "malformed_envelope", "id_conflict", "outside_binding",
            "bad_proof_request", "forked", "too_large", "body_timeout"} <= protocol
    openapi = openapi_codes(OPENAPI.read_text("utf-8"))
    assert {"enrollment_code_invalid", "signer_mismatch", "unsupported_media_type",
            "not_found", "method_not_allowed", "internal", "partner_directory_unknown",
            "unknown_gateway"} <= openapi
    assert len(protocol) > 30 and len(openapi) > 30


def test_every_documented_refusal_code_is_asserted_by_a_test() -> None:
    me = Path(__file__).resolve()
    sources = "\n".join(p.read_text("utf-8") for p in sorted((ROOT / "tests").rglob("*.py"))
                        if p.resolve() != me)
    literals = set(re.findall(rf"""["']({CODE})["']""", sources))
    documented = protocol_codes(PROTOCOL.read_text("utf-8")) | openapi_codes(
        OPENAPI.read_text("utf-8"))
    unasserted = sorted(documented - literals)
    assert not unasserted, f"refusal codes no test asserts: {unasserted}"
