"""`nobill audit ...`: checkpoint, verify and seal the organizations' audit chains."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nobill import startup
from nobill.config import Settings
from nobill.errors import ConfigError


def _checkpoint(args: argparse.Namespace, settings: Settings) -> int:
    from nobill.audit import checkpoints, keys
    from nobill.audit import service as audit
    from nobill.db.unit_of_work import transaction

    with startup.start(settings, audit_keys="required", database=True, pool_size=1) as runtime:
        keyring = keys.current()
        with transaction(runtime.database) as uow:
            heads = audit.heads(uow=uow)
    wanted = set(args.org or ())
    taken = [
        checkpoints.sign(keyring, org_id=head.org_id, sequence=head.sequence, hash=head.hash)
        for head in heads
        if not wanted or head.org_id in wanted
    ]
    missing = wanted - {checkpoint.org_id for checkpoint in taken}
    if missing:
        raise ConfigError("--org", f"no audit chain for {', '.join(sorted(missing))}")
    document = checkpoints.dumps(taken)
    if args.output in (None, "-"):
        sys.stdout.write(document)
    else:
        path = Path(args.output)
        path.write_text(document)
        print(f"checkpoint of {len(taken)} organization(s) written to {path}", file=sys.stderr)
    return 0


def _verify(args: argparse.Namespace, settings: Settings) -> int:
    from nobill.audit import checkpoints, keys
    from nobill.audit import service as audit
    from nobill.db.unit_of_work import transaction
    from nobill.errors import InvalidArgument

    runtime = startup.start(settings, audit_keys="required")
    keyring = keys.current()
    entries: list[tuple[str, checkpoints.Checkpoint | None]] = []
    # NOTE: a bad --checkpoint stops before the database is opened (nothing to close yet).
    if args.checkpoint is not None:
        try:
            text = sys.stdin.read() if args.checkpoint == "-" else Path(args.checkpoint).read_text()
        except OSError as error:
            raise ConfigError("--checkpoint", f"cannot read {args.checkpoint}: {error.strerror or error}") from None
        try:
            entries = [(entry.org_id, entry) for entry in checkpoints.loads(text)]
        except InvalidArgument as error:
            raise ConfigError("--checkpoint", error.message) from None
    runtime.database = database = startup.connect_database(settings, pool_size=1)
    broken = 0
    try:
        if args.checkpoint is None:  # every org's chain alone
            with transaction(database) as uow:
                entries = [(org_id, None) for org_id in audit.org_ids(uow=uow)]
        if args.org:
            entries = [(org_id, entry) for org_id, entry in entries if org_id in set(args.org)]
        for position, (org_id, entry) in enumerate(entries, 1):
            try:
                if entry is not None:
                    checkpoints.check_signature(keyring, entry)
                with transaction(database, org_id=org_id) as uow:
                    report = audit.verify_chain(uow=uow, checkpoint=entry)
            except InvalidArgument as error:
                report = audit.ChainReport(False, 0, 0, error.message)
            status = "valid" if report.valid else f"BROKEN at event {report.first_broken_sequence}: {report.reason}"
            print(f"[{position}/{len(entries)}] {org_id}: {status} ({report.events_checked} events checked)")
            broken += not report.valid
    finally:
        runtime.close()
    print(f"{len(entries) - broken} of {len(entries)} organization(s) verified", file=sys.stderr)
    return 1 if broken else 0


def _seal(args: argparse.Namespace, settings: Settings) -> int:
    from nobill.audit import service as audit
    from nobill.db.unit_of_work import transaction

    refused = 0
    with startup.start(settings, audit_keys="required", database=True, pool_size=1) as runtime:
        with transaction(runtime.database) as uow:
            org_ids = [org_id for org_id in audit.org_ids(uow=uow) if not args.org or org_id in set(args.org)]
        for org_id in org_ids:
            with transaction(runtime.database, org_id=org_id) as uow:
                report = audit.seal_chain(uow=uow)
            print(f"{org_id}: {report.message}" if report.sealed else f"{org_id}: NOT SEALED: {report.message}")
            refused += not report.sealed
    return 1 if refused else 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add `nobill audit` to the `nobill` command."""
    audit = commands.add_parser(
        "audit",
        help="checkpoint and verify the audit chains",
        description="Export signed checkpoints of every organization's audit chain head, and verify the chains "
        "against them (NOBILL_DATABASE_URL, NOBILL_AUDIT_KEY). Keep checkpoints outside the database.",
    )
    audit_commands = audit.add_subparsers(dest="audit_command", required=True, metavar="SUBCOMMAND")
    checkpoint = audit_commands.add_parser(
        "checkpoint",
        help="write a signed checkpoint of each organization's chain head",
        description="Write a signed checkpoint (JSON) of each organization's audit chain head.",
    )
    checkpoint.add_argument("--output", "-o", help="file to write (default: stdout)")
    checkpoint.add_argument("--org", action="append", help="only this organization (repeatable)")
    checkpoint.set_defaults(handler=_checkpoint)
    verify = audit_commands.add_parser(
        "verify",
        help="verify the audit chains, alone or against a checkpoint",
        description="Verify each organization's chain (each checkpointed one, with --checkpoint): every keyed hash, "
        "the head's seal, and that a checkpointed event is still there unchanged. Exit 1 if any chain is broken.",
    )
    verify.add_argument("--checkpoint", help="checkpoint file written by `nobill audit checkpoint` (- for stdin)")
    verify.add_argument("--org", action="append", help="only this organization (repeatable)")
    verify.set_defaults(handler=_verify)
    seal = audit_commands.add_parser(
        "seal",
        help="seal the chain heads from before sealed heads (once, after upgrading)",
        description="Seal the head of each chain that has no seal (history from before migration 0007, or from "
        "before audit keys), once, right after upgrading. Exit 1 if a chain is refused: a chain that was sealed "
        "before and lost its seal was tampered with.",
    )
    seal.add_argument("--org", action="append", help="only this organization (repeatable)")
    seal.set_defaults(handler=_seal)
