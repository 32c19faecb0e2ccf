"""The audit keys (NOBILL_AUDIT_KEY): secrets kept outside the database that key the
audit chain, so someone who can rewrite the database cannot recompute valid hashes.

Every configured key verifies; the last one listed signs new events and checkpoints. The
process installs its keyring once at start-up (`nobill serve`, `worker`, `dev`, `audit`)."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from nobill.errors import ConfigError

SETTING = "NOBILL_AUDIT_KEY"


@dataclass(frozen=True)
class AuditKeyring:
    keys: tuple[tuple[str, bytes], ...]  # (key id, secret), oldest first

    def __post_init__(self) -> None:
        if not self.keys:
            raise ConfigError(SETTING, "is required: id:secret with a secret of at least 32 bytes")

    @property
    def signing_key_id(self) -> str:
        return self.keys[-1][0]

    def sign(self, message: bytes) -> tuple[str, str]:
        """(key id, hex HMAC-SHA256) of `message` with the newest key."""
        key_id, secret = self.keys[-1]
        return key_id, hmac.new(secret, message, hashlib.sha256).hexdigest()

    def verify(self, key_id: str, message: bytes, signature: str) -> bool | None:
        """Whether `signature` is key `key_id`'s HMAC of `message`; None for an unknown key id."""
        secret = dict(self.keys).get(key_id)
        if secret is None:
            return None
        return hmac.compare_digest(hmac.new(secret, message, hashlib.sha256).hexdigest(), signature)


_installed: AuditKeyring | None = None


def install(keyring: AuditKeyring) -> None:
    """Make `keyring` the process's audit keys."""
    global _installed
    _installed = keyring


def from_settings(keys: tuple[tuple[str, bytes], ...]) -> AuditKeyring:
    return AuditKeyring(keys)


def current() -> AuditKeyring:
    """The installed keyring; ConfigError when the process started without one."""
    if _installed is None:
        raise ConfigError(SETTING, "no audit key is installed in this process")
    return _installed
