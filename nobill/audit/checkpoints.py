"""Signed checkpoints of audit chains: an org's head (sequence and hash) at a moment,
signed with the audit key, exported by `nobill audit checkpoint` and kept outside the
database. Verifying against one detects history rewritten or cut short after it, even by
someone who can change the database and recompute everything they can see."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from nobill.audit.keys import AuditKeyring
from nobill.errors import InvalidArgument

FORMAT = "nobill-audit-checkpoint/1"


@dataclass(frozen=True)
class Checkpoint:
    org_id: str
    sequence: int
    hash: str
    created_at: str  # ISO 8601, UTC
    key_id: str = ""
    signature: str = ""

    def message(self) -> bytes:
        """What the signature covers."""
        return json.dumps(
            [FORMAT, self.org_id, self.sequence, self.hash, self.created_at], separators=(",", ":")
        ).encode()


def sign(keyring: AuditKeyring, *, org_id: str, sequence: int, hash: str, now: dt.datetime | None = None) -> Checkpoint:
    """A checkpoint of one org's head, signed with the newest audit key."""
    created_at = (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc).isoformat(timespec="seconds")
    unsigned = Checkpoint(org_id, sequence, hash, created_at)
    key_id, signature = keyring.sign(unsigned.message())
    return Checkpoint(org_id, sequence, hash, created_at, key_id, signature)


def check_signature(keyring: AuditKeyring, checkpoint: Checkpoint) -> None:
    """InvalidArgument unless the checkpoint was signed by one of the configured keys."""
    verified = keyring.verify(checkpoint.key_id, checkpoint.message(), checkpoint.signature)
    if verified is None:
        raise InvalidArgument(
            f"the checkpoint is signed with audit key {checkpoint.key_id!r}, which is not configured", field="checkpoint"
        )
    if not verified:
        raise InvalidArgument("the checkpoint's signature does not verify (altered or forged)", field="checkpoint")


def dumps(checkpoints: Iterable[Checkpoint]) -> str:
    """The checkpoint file: JSON with one entry per org."""
    return json.dumps({"format": FORMAT, "checkpoints": [asdict(c) for c in checkpoints]}, indent=2) + "\n"


def loads(text: str) -> list[Checkpoint]:
    """Parse a checkpoint file; InvalidArgument if it is not one."""
    try:
        document = json.loads(text)
        if document.get("format") != FORMAT:
            raise ValueError(f"format is not {FORMAT}")
        return [
            Checkpoint(
                org_id=str(entry["org_id"]),
                sequence=int(entry["sequence"]),
                hash=str(entry["hash"]),
                created_at=str(entry["created_at"]),
                key_id=str(entry["key_id"]),
                signature=str(entry["signature"]),
            )
            for entry in document["checkpoints"]
        ]
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise InvalidArgument(f"not a NOBill audit checkpoint file: {error}", field="checkpoint") from None
