"""TLS contexts: of the gateway's listeners (the officers' and partners', the metrics'),
of its connections to partners (the CA that vouches for them, the client certificate
shown to them), and the check of a certificate and key before they are used."""

from __future__ import annotations

import ssl
from pathlib import Path

#: Largest PEM file read (a certificate chain, a key, a CA bundle).
MAX_PEM_BYTES = 1024 * 1024


class TlsFileError(Exception):
    """A certificate, key or CA file that cannot be used; ``message`` says why (never
    what the key holds)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _no_passphrase() -> bytes:
    # OpenSSL would otherwise prompt on the terminal for an encrypted key.
    raise TlsFileError("the key is encrypted with a passphrase; give it unencrypted "
                       "(readable by the gateway's user only)")


def _readable(path: Path) -> None:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise TlsFileError(f"{path}: cannot read ({exc.strerror})") from None
    if not path.is_file():
        raise TlsFileError(f"{path}: not a file")
    if size > MAX_PEM_BYTES:
        raise TlsFileError(f"{path}: larger than {MAX_PEM_BYTES} bytes, not a PEM file")


def read_bounded(path: Path) -> bytes:
    """The bytes of a PEM file, at most :data:`MAX_PEM_BYTES`. Raises TlsFileError."""
    _readable(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise TlsFileError(f"{path}: cannot read ({exc.strerror})") from None
    if len(data) > MAX_PEM_BYTES:
        raise TlsFileError(f"{path}: larger than {MAX_PEM_BYTES} bytes, not a PEM file")
    return data


def _load_pair(ctx: ssl.SSLContext, cert: Path, key: Path) -> None:
    _readable(cert)
    _readable(key)
    try:
        ctx.load_cert_chain(cert, key, password=_no_passphrase)
    except ssl.SSLError as exc:
        raise TlsFileError(f"{cert} and {key}: not a PEM certificate chain and the key "
                           f"it was issued for ({exc.reason or exc.strerror})") from None
    except OSError as exc:
        raise TlsFileError(f"{cert}: cannot read ({exc.strerror})") from None


def server_tls(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """A server's TLS context, TLS 1.2 at least, from a PEM chain and key (None: none)."""
    if cert is None or key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def client_tls(ca_file: Path | None = None, cert: Path | None = None,
               key: Path | None = None) -> ssl.SSLContext:
    """The TLS context of connections to a partner, TLS 1.2 at least: its certificate
    must verify (chain and host name) against ``ca_file``'s CAs only if given, else the
    system's; ``cert``/``key`` is the client certificate shown if the partner asks.
    Raises TlsFileError."""
    if ca_file is not None:
        ctx = _only(ca_file)
    else:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None and key is not None:
        _load_pair(ctx, cert, key)
    return ctx


def _only(ca_file: Path) -> ssl.SSLContext:
    """A client context that trusts ``ca_file``'s CAs and no other."""
    _readable(ca_file)
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    except ssl.SSLError as exc:
        raise TlsFileError(f"{ca_file}: no PEM CA certificate in it "
                           f"({exc.reason or exc.strerror})") from None
    except OSError as exc:
        raise TlsFileError(f"{ca_file}: cannot read ({exc.strerror})") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def check_server_pair(cert: Path, key: Path) -> None:
    """Whether ``cert`` (a PEM chain, the server's certificate first) and ``key`` can
    serve TLS now: both load, the key is the certificate's, and the chain is valid at
    this time (not expired, not yet valid) and for serving. Raises TlsFileError.

    Checked by a TLS handshake in memory between a server holding the pair and a client
    that trusts the chain's own certificates (the CA that issued it may not be on this
    machine): it is what a connecting client's TLS library checks, less the CA and the
    host name."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _load_pair(server, cert, key)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    client.load_verify_locations(cert)
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    ends = (client.wrap_bio(to_client, to_server, server_side=False),
            server.wrap_bio(to_server, to_client, server_side=True))
    try:
        for _ in range(8):  # TLS 1.3 needs two round trips; bounded anyway
            pending = False
            for end in ends:
                try:
                    end.do_handshake()
                except ssl.SSLWantReadError:
                    pending = True
            if not pending:
                return
    except ssl.SSLCertVerificationError as exc:
        raise TlsFileError(f"{cert}: {exc.verify_message}") from None
    except ssl.SSLError as exc:
        raise TlsFileError(f"{cert} and {key}: a TLS handshake with them fails "
                           f"({exc.reason or exc.strerror})") from None
    raise TlsFileError(f"{cert} and {key}: a TLS handshake with them does not end")
