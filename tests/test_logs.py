"""No plaintext, private key or passphrase reaches a log line."""

from __future__ import annotations

import io
import json

from structlog.testing import capture_logs

from gateway.app import create_app
from gateway.config import parse_config
from gateway.crypto.envelope import (
    EnvelopeHeader,
    new_message_id,
    open_envelope,
    seal_envelope,
    verify_envelope,
)
from gateway.crypto.keyfile import TEST_KDF, KeyBundle, load_bundle, save_bundle
from gateway.crypto.keys import (
    ROLE_GATEWAY_SIGNING,
    GatewaySigningKey,
    OfficerEncryptionKey,
    OfficerSigningKey,
)
from gateway.logs import configure_logging, get_logger

PLAINTEXT = "Nạn nhân ở Phnom Penh, xe biển số 29A-12345"
PASSPHRASE = b"a passphrase nobody may log"


async def test_flow_logs_no_secret(tmp_path, aiohttp_client) -> None:
    gw_key = GatewaySigningKey.generate()
    bundle = KeyBundle("vn-mps", {ROLE_GATEWAY_SIGNING: gw_key})
    save_bundle(tmp_path / "gw.key", bundle, PASSPHRASE, TEST_KDF)
    config = parse_config(
        {"gateway": {"id": "vn-mps", "public_url": "http://127.0.0.1:1"},
         "keys": {"file": "gw.key"}},
        tmp_path / "gw.toml",
    )
    sender, reader = OfficerSigningKey.generate(), OfficerEncryptionKey.generate()
    with capture_logs() as logs:
        unlocked = load_bundle(tmp_path / "gw.key", PASSPHRASE)
        client = await aiohttp_client(create_app(config, unlocked))
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/.well-known/fpg/descriptor")).status == 200
        assert (await client.get("/no/such/path")).status == 404
        mid = new_message_id()
        header = EnvelopeHeader(id=mid, kind="hotline", priority="flash",
                                sender="a@vn-mps", recipient="b@kh-cnp", created=1,
                                expires=2, thread=mid)
        env = verify_envelope(seal_envelope(header, PLAINTEXT.encode(), sender,
                                            [reader.public]), sender.public)
        assert open_envelope(env, reader) == PLAINTEXT.encode()
    assert logs, "the flow should have logged something"
    dumped = json.dumps(logs, default=str, ensure_ascii=False)
    forbidden = [PLAINTEXT, PASSPHRASE.decode(), gw_key.seed.hex(), sender.seed.hex(),
                 reader.seed.hex()]
    for secret in forbidden:
        assert secret not in dumped


def test_redaction_processor_is_a_second_line_of_defence() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    get_logger("t").info("careless", passphrase="hunter2", plaintext="victim name",
                         message_id="abc")
    line = json.loads(stream.getvalue())
    assert line["passphrase"] == "[redacted]" and line["plaintext"] == "[redacted]"
    assert line["message_id"] == "abc" and "hunter2" not in stream.getvalue()
