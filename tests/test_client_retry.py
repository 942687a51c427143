"""The officers' client library signs in again once when its session has ended (the
gateway restarted), and sends the retried request exactly as the first: same headers."""

from __future__ import annotations

import base64

import aiohttp
from aiohttp import web

from gateway.client.api import Credentials, GatewayClient
from gateway.crypto.keys import GatewaySigningKey, OfficerEncryptionKey, OfficerSigningKey


async def test_the_retry_after_a_new_sign_in_keeps_the_request_headers(aiohttp_server) -> None:
    seen: list[tuple[str, str]] = []
    tokens = iter(["first", "second"])

    async def challenge(request: web.Request) -> web.Response:
        return web.json_response({"challenge": base64.b64encode(b"c" * 32).decode()})

    async def session(request: web.Request) -> web.Response:
        return web.json_response({"token": next(tokens)})

    async def messages(request: web.Request) -> web.Response:
        seen.append((request.headers["Authorization"], request.content_type))
        if request.headers["Authorization"] == "Bearer first":  # that session has ended
            return web.json_response({"error": "no_session", "message": "x"}, status=401)
        return web.json_response({"status": "accepted"}, status=201)

    app = web.Application()
    app.router.add_post("/v1/session/challenge", challenge)
    app.router.add_post("/v1/session", session)
    app.router.add_post("/v1/messages", messages)
    server = await aiohttp_server(app)
    creds = Credentials(str(server.make_url("")).rstrip("/"), "vn-mps",
                        GatewaySigningKey.generate().public, "off-1", ("a@vn-mps",),
                        OfficerSigningKey.generate(), OfficerEncryptionKey.generate())
    async with aiohttp.ClientSession() as http:
        client = GatewayClient(http, creds)
        status, _, _ = await client.request(
            "POST", "/v1/messages", data=b"sealed",
            headers={"Content-Type": "application/vnd.fpg.envelope"})
    assert status == 201
    assert seen == [("Bearer first", "application/vnd.fpg.envelope"),
                    ("Bearer second", "application/vnd.fpg.envelope")]
