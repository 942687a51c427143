"""Configuration: one TOML file per gateway, parsed once into frozen objects.

Nothing deeper in the gateway reads files or the environment for settings: ``load_config``
returns a :class:`Config` and that is passed down (read again by a reload,
gateway.reload, which applies what may change while serving). Each TOML table maps to one frozen
dataclass below; the dataclass fields are the schema (type, default, check), so the
annotated example in ``config/gateway.example.toml`` and this file say the same thing.

Every error names the file, the key and the problem on one line, e.g.
``config/vn.toml: [server] port: expected an integer, got a string``.
Relative paths are resolved against the directory of the config file.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from gateway.crypto.keys import normalize_fingerprint
from gateway.errors import BadKeyError, ConfigError
from gateway.protocol.names import is_name
from gateway.tls import TlsFileError, client_tls

_LEVELS = ("debug", "info", "warning", "error")

Check = Callable[[Any], str | None]


def _name(value: str) -> str | None:
    if not is_name(value):
        return "must be 1-63 lowercase letters, digits or inner hyphens"
    return None


def _one_of(*choices: str) -> Check:
    def check(value: str) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


def _range(low: float, high: float) -> Check:
    def check(value: float) -> str | None:
        return None if low <= value <= high else f"must be from {low:g} to {high:g}"

    return check


def _url(value: str) -> str | None:
    if not re.fullmatch(r"https?://[^\s/]+(/[^\s]*)?", value):
        return "must be an http:// or https:// URL"
    return None


def _opt(check: Check) -> Check:
    def wrapped(value: Any) -> str | None:
        return None if value is None else check(value)

    return wrapped


def _key(default: Any = MISSING, check: Check | None = None, *, doc: str = "") -> Any:
    """A config key: its default (none means required), its check and what it is for."""
    metadata = {"check": check, "doc": doc}
    if default is MISSING:
        return field(metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class GatewaySection:
    id: str = _key(check=_name, doc="stable id of this gateway, e.g. vn-mps")
    public_url: str = _key(check=_url, doc="base URL partners and clients use to reach us")
    data_dir: Path = _key(Path("data"), doc="directory of the database and runtime files")
    origin: str | None = _key(None, doc="ledger checkpoint origin; default fpg/<id>")

    @property
    def ledger_origin(self) -> str:
        return self.origin or f"fpg/{self.id}"


@dataclass(frozen=True)
class KeysSection:
    file: Path = _key(doc="the gateway's key file, made by `gateway init`")
    passphrase_env: str | None = _key(None, doc="environment variable holding the passphrase")
    passphrase_file: Path | None = _key(None, doc="file whose first line is the passphrase")
    insecure_dev_mode: bool = _key(False, doc="allow a plaintext key file (demo/tests only)")


@dataclass(frozen=True)
class ServerSection:
    host: str = _key("127.0.0.1", doc="address to listen on")
    port: int = _key(8443, _range(0, 65535), doc="TCP port; 0 picks a free one")
    tls_cert_file: Path | None = _key(None, doc="PEM certificate chain; required off loopback")
    tls_key_file: Path | None = _key(None, doc="PEM private key of the certificate")
    trusted_proxies: tuple[str, ...] = _key((), check=None, doc="addresses or networks "
                                            "(CIDR) of reverse proxies whose "
                                            "X-Forwarded-For names the client")
    allowed_hosts: tuple[str, ...] = _key((), doc="more Host names requests may name (a "
                                          "reverse proxy's); the public URL's host and "
                                          "loopback names always are")
    max_body_bytes: int = _key(
        8 * 1024 * 1024, _range(1024, 64 * 1024 * 1024), doc="largest request body accepted"
    )
    port_file: Path | None = _key(None, doc="write the bound port here once listening")
    header_timeout_seconds: float = _key(
        15.0, _range(0.1, 3600), doc="close a connection that has not sent a whole request "
        "head this many seconds after it opened or after its last answer")
    body_timeout_seconds: float = _key(
        120.0, _range(0.1, 3600), doc="answer 408 to a request whose body is not whole this "
        "many seconds after its head")
    max_connections: int = _key(
        1024, _range(1, 1_000_000), doc="open connections at most, all clients together; "
        "one more is closed as soon as it is accepted, before any of it is read")
    max_connections_per_address: int = _key(
        64, _range(1, 1_000_000), doc="open connections at most from one client address "
        "(a reverse proxy's address carries all of its clients)")

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class StoreSection:
    path: Path | None = _key(None, doc="SQLite database file; default <data_dir>/gateway.sqlite3")
    max_batch: int = _key(4096, _range(1, 100_000), doc="most operations per group commit")
    retention_days: int = _key(0, _range(0, 36_500),
                               doc="days after which a delivered message's ciphertext is "
                               "deleted (its row, digest and ledger entries stay); 0 keeps "
                               "everything")
    disk_reserve_bytes: int = _key(256 * 1024 * 1024, _range(0, 2**50),
                                   doc="free space kept on the database's file system: "
                                   "new messages are refused (507) rather than filling it")


@dataclass(frozen=True)
class LedgerSection:
    checkpoint_every: int = _key(1000, _range(1, 10_000_000),
                                 doc="sign a checkpoint after this many new entries")
    checkpoint_interval: float = _key(60.0, _range(0.01, 86_400),
                                      doc="... or after this many seconds, if anything is new")
    verify_on_start: bool = _key(True, doc="recompute the whole tree before serving")


@dataclass(frozen=True)
class OfficersSection:
    binding_days: float = _key(365.0, _range(0.01, 3650), doc="how long an officer binding lasts")
    invite_hours: float = _key(72.0, _range(0.01, 720), doc="default life of an enrollment code")
    session_minutes: float = _key(60.0, _range(0.1, 1440), doc="life of a signed-in session")
    clock_skew_seconds: float = _key(300.0, _range(1, 86_400),
                                     doc="how far a client's timestamps may be off")


@dataclass(frozen=True)
class LimitsSection:
    requests_per_second: float = _key(50.0, _range(0.1, 100_000),
                                      doc="sustained requests per officer")
    burst: int = _key(200, _range(1, 1_000_000), doc="requests an officer may make at once")
    anonymous_per_second: float = _key(
        5.0, _range(0.01, 100_000), doc="enrollment requests per client address, and sign-in "
        "requests (challenges and attempts) per client address and claimed officer id"
    )
    anonymous_burst: int = _key(30, _range(1, 1_000_000),
                                doc="... and how many a client address may make at once")
    officer_bytes_per_day: int = _key(512 * 1024 * 1024, _range(1024, 2**50),
                                      doc="bytes of messages an officer may send a day")
    desk_bytes_per_day: int = _key(2 * 1024 * 1024 * 1024, _range(1024, 2**50),
                                   doc="bytes of messages a desk's officers may send a day, "
                                   "together")
    enroll_per_second: float = _key(
        2.0, _range(0.01, 100_000),
        doc="enrollment requests from all addresses together (codes are guessed from many "
        "addresses at once; officers enroll rarely)")
    enroll_burst: int = _key(60, _range(1, 1_000_000),
                             doc="... and how many may come at once")
    signin_address_per_second: float = _key(
        50.0, _range(0.01, 100_000),
        doc="sign-in requests per client address, all officer ids together (a reverse "
        "proxy's address carries many officers)")
    signin_address_burst: int = _key(500, _range(1, 1_000_000),
                                     doc="... and how many a client address may make at once")
    signin_officer_per_second: float = _key(
        1.0, _range(0.001, 100_000),
        doc="sign-ins with a valid signature per officer (only the officer's key spends it)")
    signin_officer_burst: int = _key(30, _range(1, 1_000_000),
                                     doc="... and how many an officer may make at once")
    anonymous_line_per_second: float = _key(
        500.0, _range(0.1, 1_000_000),
        doc="anonymous requests (enrollment, challenges, sign-in attempts) served a second, "
        "all addresses together; more wait their turn")
    anonymous_line_wait_seconds: float = _key(
        10.0, _range(0.0, 600), doc="... and the longest such a request waits before it is "
        "refused")
    inbox_page: int = _key(100, _range(1, 1000), doc="most messages per inbox page")
    stream_queue: int = _key(1000, _range(10, 100_000),
                             doc="live events buffered per stream before it is cut")
    streams_per_officer: int = _key(
        4, _range(1, 10_000), doc="live streams one officer may hold; opening one more ends "
        "the officer's oldest (event `ended`, reason `too_many_streams`)")
    streams_total: int = _key(
        1000, _range(1, 1_000_000), doc="live streams on the gateway, all officers together; "
        "one more is refused with 429 too_many_streams")
    stream_write_seconds: float = _key(
        10.0, _range(0.05, 3600), doc="a stream whose write is not taken by its client "
        "within this many seconds is dropped")
    stream_buffer_bytes: int = _key(
        65_536, _range(1024, 64 * 1024 * 1024), doc="a stream with more than this many bytes "
        "written and not yet taken by its client is dropped")


def _fingerprint(value: str) -> str | None:
    try:
        normalize_fingerprint(value)
    except BadKeyError:
        return "must be a key fingerprint: 32 base32 characters, as `gateway keys show` prints"
    return None


@dataclass(frozen=True)
class PartnerSection:
    id: str = _key(check=_name, doc="the partner gateway's id, e.g. kh-cnp")
    url: str = _key(check=_url, doc="the partner's base URL")
    fingerprint: str = _key(check=_fingerprint,
                            doc="fingerprint of the partner's gateway signing key, "
                            "compared with its operator by telephone")
    ca_file: Path | None = _key(None, doc="PEM file of the CAs that vouch for the "
                                "partner's https:// certificate, trusted for it instead "
                                "of [federation] ca_file or the system's")
    client_cert_file: Path | None = _key(None, doc="PEM certificate chain shown to this "
                                         "partner if it asks for one, instead of "
                                         "[federation] client_cert_file")
    client_key_file: Path | None = _key(None, doc="PEM private key (unencrypted) of that "
                                        "certificate")


@dataclass(frozen=True)
class TrustAnchorSection:
    id: str = _key(check=_name, doc="the trust anchor's name, e.g. asean-ta")
    fingerprint: str = _key(check=_fingerprint,
                            doc="fingerprint of the anchor's signing key, from its operator")
    roster: Path = _key(doc="the roster file signed by this anchor (downloaded by the "
                        "operator); its gateways are trusted like pinned partners")


@dataclass(frozen=True)
class FederationSection:
    hop_window_seconds: float = _key(60.0, _range(1, 3600),
                                     doc="how far a hop request's timestamp may be from now")
    batch_size: int = _key(256, _range(1, 5000),
                           doc="most messages per relay batch sent (the protocol's limit is "
                           "5,000; batches of any size up to it are accepted)")
    batch_bytes: int = _key(8 * 1024 * 1024, _range(64 * 1024, 64 * 1024 * 1024),
                            doc="largest relay batch body sent (base64 and JSON included) "
                            "or accepted")
    retry_first_seconds: float = _key(0.5, _range(0.01, 60),
                                      doc="first wait after a failed relay attempt")
    retry_max_seconds: float = _key(120.0, _range(0.1, 3600),
                                    doc="cap of the exponential backoff (minutes, not days)")
    health_seconds: float = _key(5.0, _range(0.05, 3600),
                                 doc="how often a partner that is down is probed")
    refresh_seconds: float = _key(300.0, _range(1, 86_400),
                                  doc="how often partner descriptors and directories are renewed")
    directory_max_age_seconds: float = _key(
        10.0, _range(0, 86_400), doc="an officer asking for a partner's directory older than "
        "this gets it fetched again first (if the partner answers)")
    request_timeout_seconds: float = _key(15.0, _range(0.1, 600),
                                          doc="timeout of one request to a partner")
    witness_seconds: float = _key(60.0, _range(0.05, 86_400),
                                  doc="how often each partner's ledger checkpoint is fetched "
                                  "and checked against the last one seen")
    ca_file: Path | None = _key(None, doc="PEM file of the CAs that vouch for partners' "
                                "https:// certificates, trusted instead of the system's "
                                "(a private CA); a partner's own ca_file wins")
    client_cert_file: Path | None = _key(None, doc="PEM certificate chain shown to "
                                         "partners that ask for a client certificate")
    client_key_file: Path | None = _key(None, doc="PEM private key (unencrypted) of that "
                                        "certificate")


@dataclass(frozen=True)
class MetricsSection:
    enabled: bool = _key(True, doc="serve Prometheus metrics on a listener of their own")
    host: str = _key("127.0.0.1", doc="address of the metrics listener")
    port: int = _key(9464, _range(0, 65535), doc="TCP port of the metrics listener; 0 picks "
                     "a free one")
    port_file: Path | None = _key(None, doc="write the metrics port here once listening")
    token_file: Path | None = _key(None, doc="file whose first line is a bearer token "
                                   "scrapers must send; required off loopback")
    tls_cert_file: Path | None = _key(None, doc="PEM certificate chain of the metrics "
                                      "listener; required off loopback (the token would "
                                      "travel in clear)")
    tls_key_file: Path | None = _key(None, doc="PEM private key of that certificate")
    check_seconds: float = _key(15.0, _range(0.05, 3600),
                                doc="how often service levels are checked")


PRIORITIES = ("flash", "immediate", "priority", "routine")
SLO_STAGES = ("delivered", "read", "reply")


@dataclass(frozen=True)
class ServiceLevelSection:
    priority: str = _key(check=_one_of(*PRIORITIES), doc="message priority it applies to")
    stage: str = _key(check=_one_of(*SLO_STAGES), doc="delivered, read or reply")
    within_seconds: float = _key(check=_range(0.001, 90 * 86_400),
                                 doc="time allowed from accept to the stage")
    escalate: bool = _key(False, doc="also send a gateway-signed breach notice to the "
                          "desk's supervisor desk")

    @property
    def id(self) -> str:
        return f"{self.priority}/{self.stage}"


def _level(priority: str, stage: str, within: float, escalate: bool) -> ServiceLevelSection:
    return ServiceLevelSection(priority, stage, within, escalate)


#: One per priority and stage; a ``[[service_levels]]`` table replaces the one of its
#: priority and stage and leaves the others; ``service_levels = []`` turns them all off.
DEFAULT_SERVICE_LEVELS = (
    _level("flash", "delivered", 60, True),
    _level("flash", "read", 15 * 60, True),
    _level("flash", "reply", 2 * 3600, True),
    _level("immediate", "delivered", 5 * 60, False),
    _level("immediate", "read", 3600, True),
    _level("immediate", "reply", 8 * 3600, False),
    _level("priority", "read", 8 * 3600, False),
    _level("priority", "reply", 3 * 86_400, False),
    _level("routine", "read", 3 * 86_400, False),
)


@dataclass(frozen=True)
class CasesSection:
    remind_days: float = _key(7.0, _range(0, 3650),
                              doc="remind both desks of a request this many days before its "
                              "due day ends; 0: no reminders")
    check_seconds: float = _key(60.0, _range(0.01, 86_400),
                                doc="how often due days are checked")


@dataclass(frozen=True)
class CaseReminderSection:
    partner: str = _key(check=_name, doc="requests with this partner gateway")
    remind_days: float = _key(check=_range(0, 3650),
                              doc="days before the due day to remind, instead of [cases]'s")

    @property
    def id(self) -> str:
        return self.partner


@dataclass(frozen=True)
class LogSection:
    level: str = _key("info", _one_of(*_LEVELS), doc="least severe level written")
    format: str = _key("auto", _one_of("auto", "json", "console"), doc="auto: JSON unless a tty")


@dataclass(frozen=True)
class PartnerTls:
    """The TLS files of connections to one partner (None: the system's CAs; no client
    certificate)."""

    ca_file: Path | None
    client_cert_file: Path | None
    client_key_file: Path | None


@dataclass(frozen=True)
class Config:
    path: Path
    gateway: GatewaySection
    keys: KeysSection
    server: ServerSection
    store: StoreSection
    ledger: LedgerSection
    officers: OfficersSection
    limits: LimitsSection
    log: LogSection
    federation: FederationSection = field(default_factory=FederationSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    cases: CasesSection = field(default_factory=CasesSection)
    case_reminders: tuple[CaseReminderSection, ...] = ()
    service_levels: tuple[ServiceLevelSection, ...] = DEFAULT_SERVICE_LEVELS
    partners: tuple[PartnerSection, ...] = ()
    trust_anchors: tuple[TrustAnchorSection, ...] = ()

    @property
    def data_dir(self) -> Path:
        return self.gateway.data_dir

    @property
    def database(self) -> Path:
        return self.store.path or self.gateway.data_dir / "gateway.sqlite3"

    def partner_tls(self, partner: PartnerSection) -> PartnerTls:
        """The TLS files for connections to ``partner``: its own, else [federation]'s."""
        fed = self.federation
        pair: FederationSection | PartnerSection = (
            partner if partner.client_cert_file is not None else fed)
        return PartnerTls(partner.ca_file or fed.ca_file, pair.client_cert_file,
                          pair.client_key_file)

    @property
    def admin_socket(self) -> Path:
        """The operator API's Unix socket (gateway.channels.admin)."""
        return self.gateway.data_dir / "admin.sock"


_SECTIONS: dict[str, tuple[type[Any], bool]] = {
    # table name: (dataclass, required)
    "gateway": (GatewaySection, True),
    "keys": (KeysSection, True),
    "server": (ServerSection, False),
    "store": (StoreSection, False),
    "ledger": (LedgerSection, False),
    "officers": (OfficersSection, False),
    "limits": (LimitsSection, False),
    "log": (LogSection, False),
    "federation": (FederationSection, False),
    "metrics": (MetricsSection, False),
    "cases": (CasesSection, False),
}

T = TypeVar("T")


def _type_name(value: Any) -> str:
    return {
        str: "a string", int: "an integer", float: "a number", bool: "a boolean",
        list: "an array", dict: "a table",
    }.get(type(value), type(value).__name__)


def _coerce(value: Any, hint: Any, base: Path) -> tuple[Any, str | None]:
    """Convert a TOML value to the annotated type; return (value, error)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None, None
        return _coerce(value, args[0], base)
    if hint is bool:
        return (value, None) if isinstance(value, bool) else (None, "expected a boolean")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return None, f"expected an integer, got {_type_name(value)}"
        return value, None
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None, f"expected a number, got {_type_name(value)}"
        return float(value), None
    if hint is str:
        if not isinstance(value, str):
            return None, f"expected a string, got {_type_name(value)}"
        return value, None
    if hint is Path:
        if not isinstance(value, str) or not value:
            return None, f"expected a path string, got {_type_name(value)}"
        p = Path(value).expanduser()
        return (p if p.is_absolute() else (base / p)), None
    if origin is tuple:
        (item,) = typing.get_args(hint)[:1]
        if not isinstance(value, list):
            return None, f"expected an array, got {_type_name(value)}"
        out = []
        for v in value:
            c, err = _coerce(v, item, base)
            if err:
                return None, f"array item: {err}"
            out.append(c)
        return tuple(out), None
    raise TypeError(f"unsupported config type {hint!r}")  # a bug in this module


def build_section(cls: type[T], table: Any, where: str, path: Path) -> T:
    assert is_dataclass(cls)
    """Validate one TOML table against dataclass ``cls``; ``where`` names it in errors."""
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: {where}: expected a table, got {_type_name(table)}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls) if f.init and f.name != "path"}
    for key in table:
        if key not in known:
            raise ConfigError(f"{path}: {where} {key}: unknown key")
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in known:
            continue
        if f.name not in table:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ConfigError(f"{path}: {where} {f.name}: required key is missing")
            default = f.default
            if isinstance(default, Path) and not default.is_absolute():
                default = path.parent / default
            values[f.name] = default
            continue
        value, err = _coerce(table[f.name], hints[f.name], path.parent)
        if err is None:
            check = f.metadata.get("check")
            if check is not None:
                err = check(value)
        if err is not None:
            raise ConfigError(f"{path}: {where} {f.name}: {err}")
        values[f.name] = value
    return cls(**values)


def parse_config(doc: dict[str, Any], path: Path) -> Config:
    """Build a :class:`Config` from a parsed TOML document."""
    path = Path(path)
    for name in doc:
        if name not in _SECTIONS and name not in _LISTS:
            raise ConfigError(f"{path}: [{name}]: unknown section")
    sections: dict[str, Any] = {}
    for name, (cls, required) in _SECTIONS.items():
        if name not in doc and required:
            raise ConfigError(f"{path}: [{name}]: required section is missing")
        sections[name] = build_section(cls, doc.get(name, {}), f"[{name}]", path)
    levels: tuple[ServiceLevelSection, ...] = DEFAULT_SERVICE_LEVELS
    if "service_levels" in doc:
        levels = _service_levels(doc["service_levels"], path)
    config = Config(path=path, **sections, partners=_partners(doc.get("partners", []), path),
                    trust_anchors=_trust_anchors(doc.get("trust_anchors", []), path),
                    case_reminders=_tables(CaseReminderSection, "case_reminders",
                                           doc.get("case_reminders", []), path),
                    service_levels=levels)
    _cross_checks(config)
    return config


_LISTS = ("partners", "trust_anchors", "service_levels", "case_reminders")
_Listed = TypeVar("_Listed", PartnerSection, TrustAnchorSection, ServiceLevelSection,
                   CaseReminderSection)


def _tables(cls: type[_Listed], name: str, tables: Any,
            path: Path) -> tuple[_Listed, ...]:
    """An array of tables ``[[name]]``, each a ``cls`` section, ids unique."""
    if not isinstance(tables, list):
        raise ConfigError(f"{path}: [[{name}]]: expected an array of tables "
                          f"([[{name}]]), got {_type_name(tables)}")
    sections: list[_Listed] = []
    for i, table in enumerate(tables):
        section = build_section(cls, table, f"[[{name}]] #{i + 1}", path)
        if any(other.id == section.id for other in sections):
            raise ConfigError(f"{path}: [[{name}]] #{i + 1} id: {section.id} is listed twice")
        sections.append(section)
    return tuple(sections)


def _partners(tables: Any, path: Path) -> tuple[PartnerSection, ...]:
    """``[[partners]]``: an array of tables, one per pinned partner gateway."""
    return _tables(PartnerSection, "partners", tables, path)


def _trust_anchors(tables: Any, path: Path) -> tuple[TrustAnchorSection, ...]:
    """``[[trust_anchors]]``: the anchors whose signed rosters name trusted gateways."""
    return _tables(TrustAnchorSection, "trust_anchors", tables, path)


def _service_levels(tables: Any, path: Path) -> tuple[ServiceLevelSection, ...]:
    """``[[service_levels]]``: each table sets the level of its priority and stage, on top
    of the defaults (an operator who tightens flash/read keeps the other eight); an empty
    array turns them all off. Ordered by priority, then stage."""
    listed = _tables(ServiceLevelSection, "service_levels", tables, path)
    if not listed:
        return ()
    levels = {level.id: level for level in DEFAULT_SERVICE_LEVELS}
    levels.update((level.id, level) for level in listed)
    return tuple(sorted(levels.values(), key=lambda level: (
        PRIORITIES.index(level.priority), SLO_STAGES.index(level.stage))))


def _cross_checks(config: Config) -> None:
    path, keys, server = config.path, config.keys, config.server
    for proxy in server.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(f"{path}: [server] trusted_proxies: {proxy!r} is not an "
                              "address or network (CIDR)") from None
    if keys.passphrase_env and keys.passphrase_file:
        raise ConfigError(
            f"{path}: [keys] passphrase_env: give passphrase_env or passphrase_file, not both"
        )
    if (server.tls_cert_file is None) != (server.tls_key_file is None):
        raise ConfigError(
            f"{path}: [server] tls_key_file: tls_cert_file and tls_key_file go together"
        )
    for i, partner in enumerate(config.partners):
        if partner.id == config.gateway.id:
            raise ConfigError(f"{path}: [[partners]] #{i + 1} id: {partner.id} is this gateway")
    _check_partner_tls(config)
    metrics = config.metrics
    if (metrics.tls_cert_file is None) != (metrics.tls_key_file is None):
        raise ConfigError(
            f"{path}: [metrics] tls_key_file: tls_cert_file and tls_key_file go together"
        )
    if metrics.enabled and metrics.token_file is None and not is_loopback(metrics.host):
        raise ConfigError(
            f"{path}: [metrics] token_file: required when metrics listen on"
            f" {metrics.host!r}; without a token they are served on loopback only"
        )
    if metrics.enabled and metrics.tls_cert_file is None and not is_loopback(metrics.host):
        raise ConfigError(
            f"{path}: [metrics] tls_cert_file: required when metrics listen on"
            f" {metrics.host!r}; the scrapers' token must not travel in clear"
        )
    if server.tls_cert_file is None and not server.loopback:
        raise ConfigError(
            f"{path}: [server] tls_cert_file: required when listening on {server.host!r};"
            " plain HTTP is only allowed on loopback"
        )
    if keys.insecure_dev_mode and not server.loopback:
        raise ConfigError(
            f"{path}: [keys] insecure_dev_mode: development keys (a key file that is not "
            f"encrypted) are only allowed on loopback, not on {server.host!r}"
        )


def plain_http_off_loopback(url: str) -> bool:
    """Whether ``url`` is plain ``http://`` to a host that is not this machine."""
    parts = urlsplit(url)
    return parts.scheme == "http" and not is_loopback(parts.hostname or "")


def _check_partner_tls(config: Config) -> None:
    """Partners' URLs and TLS files: plain http:// on loopback only (hop requests are
    signed and messages sealed, but who writes to whom, and when, would travel in
    clear); every CA file and client certificate loads (checked now, not at the first
    relay); the client certificate and its key go together."""
    path, fed = config.path, config.federation
    tables: list[tuple[str, FederationSection | PartnerSection]] = [("[federation]", fed)]
    tables += [(f"[[partners]] #{i + 1}", p) for i, p in enumerate(config.partners)]
    for where, table in tables:
        if (table.client_cert_file is None) != (table.client_key_file is None):
            raise ConfigError(f"{path}: {where} client_key_file: client_cert_file and "
                              "client_key_file go together")
        if table.ca_file is None and table.client_cert_file is None:
            continue
        try:
            client_tls(table.ca_file, table.client_cert_file, table.client_key_file)
        except TlsFileError as exc:
            named = [name for name in ("ca_file", "client_cert_file", "client_key_file")
                     if exc.message.startswith(f"{getattr(table, name)}:")]
            key = named[0] if named else "client_cert_file"
            raise ConfigError(f"{path}: {where} {key}: {exc.message}") from None
    for i, partner in enumerate(config.partners):
        if plain_http_off_loopback(partner.url):
            raise ConfigError(
                f"{path}: [[partners]] #{i + 1} url: plain http:// is only allowed on "
                f"loopback; give the partner's https:// URL")
        if partner.url.startswith("http://") and partner.ca_file is not None:
            raise ConfigError(f"{path}: [[partners]] #{i + 1} ca_file: the partner's URL "
                              "is plain http://, no certificate is verified")


def load_config(path: str | Path) -> Config:
    """Read, parse and validate the TOML file at ``path``."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return parse_config(doc, path.resolve())
