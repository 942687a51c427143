"""No plaintext, private key or passphrase reaches a log line."""

from __future__ import annotations

import asyncio
import functools
import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog
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
from gateway.tasks import background

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


# --- the partner id, bound once per partner task ------------------------------------------------


@pytest.fixture
def json_lines() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The process's log configuration at debug level, into a buffer; the lines written."""
    saved = structlog.get_config()
    stream = io.StringIO()
    configure_logging("debug", "json", stream)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    structlog.configure(**saved)


async def test_a_background_task_binds_its_log_context_to_its_lines_only(json_lines) -> None:
    log = get_logger("t")

    async def loop(name: str) -> None:
        log.info("tick", loop=name)
        await asyncio.sleep(3600)

    async with background("a", functools.partial(loop, "a"), partner="kh-cnp"), \
            background("b", functools.partial(loop, "b"), partner="la-mps"), \
            background("c", functools.partial(loop, "c")):
        await asyncio.sleep(0.01)
        log.info("caller")
    by_loop = {line.get("loop", line["event"]): line.get("partner") for line in json_lines()}
    assert by_loop == {"a": "kh-cnp", "b": "la-mps", "c": None, "caller": None}


async def test_partner_tasks_log_lines_carry_the_partner(tmp_path, aiohttp_client,
                                                         json_lines) -> None:
    config = parse_config(
        {"gateway": {"id": "vn-mps", "public_url": "http://127.0.0.1:1"},
         "keys": {"file": "unused.key"},
         "partners": [{"id": "kh-cnp", "url": "http://127.0.0.1:1",  # nobody listens
                       "fingerprint": GatewaySigningKey.generate().public.fingerprint}]},
        tmp_path / "gw.toml")
    bundle = KeyBundle("vn-mps", {ROLE_GATEWAY_SIGNING: GatewaySigningKey.generate()})
    client = await aiohttp_client(create_app(config, bundle))
    expected = {"partner_down", "witness_unreachable"}  # its refresh and witness tasks
    for _ in range(200):
        if expected <= {line["event"] for line in json_lines()}:
            break
        await asyncio.sleep(0.02)
    await client.close()
    lines = [line for line in json_lines() if line["event"] in expected]
    assert {line["event"] for line in lines} == expected
    assert all(line["partner"] == "kh-cnp" for line in lines), lines
