"""What an officer's client remembers between runs about the gateways it seals for.

For each gateway: the last ledger checkpoint it verified (docs/PROTOCOL.md 7.8), so that
the next membership proof must extend it; and for a partner gateway, the fingerprint of
its signing key, pinned the first time the client met it (trust on first use, like SSH)
and moved on only along the partner's signed key history (10.6). Kept in ``trust.json``
in the profile directory, replaced atomically; a client without a profile keeps it in
memory for its own lifetime.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from gateway.errors import ClientError, MalformedError
from gateway.protocol.membership import LogState

TRUST_FILE = "trust.json"
MAX_TRUST_FILE = 1 << 20


class TrustMemory:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._logs: dict[str, LogState] = {}
        self._keys: dict[str, str] = {}  # partner gateway id -> pinned fingerprint
        if path is not None and path.exists():
            self._load(path)

    def log(self, gateway: str) -> LogState | None:
        return self._logs.get(gateway)

    def fingerprint(self, gateway: str) -> str | None:
        return self._keys.get(gateway)

    def remember_log(self, gateway: str, state: LogState) -> None:
        if self._logs.get(gateway) != state:
            self._logs[gateway] = state
            self._save()

    def pin(self, gateway: str, fingerprint: str) -> None:
        if self._keys.get(gateway) != fingerprint:
            self._keys[gateway] = fingerprint
            self._save()

    def _load(self, path: Path) -> None:
        try:
            data = path.read_bytes()
            if len(data) > MAX_TRUST_FILE:
                raise MalformedError("too large")
            doc = json.loads(data)
            for gateway, entry in doc["gateways"].items():
                if "ledger" in entry:
                    self._logs[str(gateway)] = LogState.from_json(entry["ledger"])
                if "fingerprint" in entry:
                    self._keys[str(gateway)] = str(entry["fingerprint"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError, MalformedError) as exc:
            raise ClientError(f"{path} is damaged ({type(exc).__name__}); it holds the ledger "
                              "checkpoints and partner keys this client trusts. Restore it "
                              "from a backup; delete it only on your security officer's word",
                              code="trust_file") from None

    def _save(self) -> None:
        if self.path is None:
            return
        gateways: dict[str, dict[str, Any]] = {}
        for gateway, state in self._logs.items():
            gateways.setdefault(gateway, {})["ledger"] = state.to_json()
        for gateway, fingerprint in self._keys.items():
            gateways.setdefault(gateway, {})["fingerprint"] = fingerprint
        data = json.dumps({"v": 1, "gateways": gateways}, sort_keys=True, indent=1).encode()
        # Commands may run side by side: each writes its own file, the last replace wins
        # (both hold verified states; the other's is learnt again on its next fetch).
        fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name + ".")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
