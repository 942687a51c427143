"""Both error families, the gateway's and crypto's own, reach a person or a client the same
way: the error middleware answers each with its stable code and HTTP status, and
``run_command`` turns each into one line and an exit status. Refusals are logged at a
bounded rate, with a count of those held back."""

from __future__ import annotations

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from gateway import errors
from gateway.channels.errors import RefusalLog, error_middleware
from gateway.cliutil import EXIT_CONFIG, EXIT_FAILURE, run_command
from gateway.crypto import errors as crypto_errors

#: crypto's family: code and HTTP status, as they were when the family was GatewayErrors.
CRYPTO = {
    crypto_errors.CryptoError: ("crypto_error", 400),
    crypto_errors.MalformedError: ("malformed", 400),
    crypto_errors.BadSignatureError: ("bad_signature", 400),
    crypto_errors.SignerMismatchError: ("signer_mismatch", 400),
    crypto_errors.NotARecipientError: ("not_a_recipient", 403),
    crypto_errors.DecryptionError: ("decryption_failed", 400),
    crypto_errors.BadKeyError: ("bad_key", 400),
    crypto_errors.KeyFileError: ("key_file", 400),
    crypto_errors.WrongPassphraseError: ("wrong_passphrase", 400),
}
SOME_OF_THE_GATEWAYS = {
    errors.ConfigError: ("config_invalid", 500),
    errors.ClientError: ("bad_request", 400),
    errors.ForbiddenError: ("forbidden", 403),
    errors.UnavailableError: ("unavailable", 503),
    errors.TooLargeError: ("too_large", 413),
}
ANSWERS = {**CRYPTO, **SOME_OF_THE_GATEWAYS}


def test_the_table_names_all_of_cryptos_family() -> None:
    family = {value for value in vars(crypto_errors).values()
              if isinstance(value, type) and issubclass(value, crypto_errors.CryptoError)}
    assert family == set(CRYPTO)
    for cls in family:  # re-exported: callers import any error from gateway.errors
        assert getattr(errors, cls.__name__) is cls
        assert issubclass(cls, ValueError) and not issubclass(cls, errors.GatewayError)


@pytest.mark.parametrize("cls", list(ANSWERS), ids=lambda c: c.__name__)
async def test_the_middleware_answers_each_error_with_its_code(aiohttp_client, cls) -> None:
    async def refuse(request: web.Request) -> web.Response:
        raise cls("refused for a reason")

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/", refuse)
    client = await aiohttp_client(app)
    response = await client.get("/")
    code, status = ANSWERS[cls]
    assert response.status == status
    assert await response.json() == {"error": code, "message": "refused for a reason"}
    assert response.headers["X-Request-Id"]


async def test_retry_after_and_challenge_still_reach_the_client(aiohttp_client) -> None:
    async def refuse(request: web.Request) -> web.Response:
        if request.path == "/busy":
            raise errors.UnavailableError("partner down")
        raise errors.HopAuthError("no hop signature")

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/busy", refuse)
    app.router.add_get("/hop", refuse)
    client = await aiohttp_client(app)
    busy = await client.get("/busy")
    assert busy.status == 503 and busy.headers["Retry-After"] == "5"
    hop = await client.get("/hop")
    assert hop.status == 401 and hop.headers["WWW-Authenticate"] == "FPG-Hop"


@pytest.mark.parametrize("cls", list(ANSWERS), ids=lambda c: c.__name__)
def test_run_command_turns_each_error_into_one_line(cls, capsys) -> None:
    def command() -> int:
        raise cls("refused for a reason")

    status = run_command("prog", command)
    assert status == (EXIT_CONFIG if cls is errors.ConfigError else EXIT_FAILURE)
    assert capsys.readouterr().err == "prog: error: refused for a reason\n"


def test_a_flood_of_refusals_is_logged_at_a_bounded_rate_with_a_count() -> None:
    """12,000 refusals of one code and 12 of another in 12 seconds: twenty lines of each
    code per ten seconds, and one line with what was held back."""
    now = [0.0]
    limiter = RefusalLog(lines=20, every=10.0, now=lambda: now[0])
    with capture_logs() as logs:
        for n in range(12_000):
            now[0] = n / 1000
            limiter.refused("rate_limited", 429, "/v1/session/challenge")
            if n % 1000 == 0:
                limiter.refused("bad_json", 400, "/v1/enroll")
    refused = [e for e in logs if e["event"] == "request_refused"]
    assert sum(e["code"] == "rate_limited" for e in refused) == 40  # 20 at 0 s, 20 at 10 s
    assert sum(e["code"] == "bad_json" for e in refused) == 12  # all: never past the bound
    assert refused[0] == {"event": "request_refused", "code": "rate_limited", "status": 429,
                          "path": "/v1/session/challenge", "log_level": "info"}
    held = [e for e in logs if e["event"] == "request_refused_held_back"]
    assert [e["held_back"] for e in held] == [{"rate_limited": 10_000 - 20}]
    assert limiter.held_back == {"rate_limited": 2_000 - 20}  # said at the next window
