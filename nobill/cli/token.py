"""`nobill token`: mint a development token."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nobill import startup
from nobill.config import Settings
from nobill.errors import ConfigError


def _token(args: argparse.Namespace, settings: Settings) -> int:
    from nobill.auth.tokens import mint_token

    startup.start(settings, audit_keys="off")
    secret = settings.jwt_secret or _dev_secret(settings)
    if not secret:
        raise ConfigError("NOBILL_JWT_SECRET", "required to mint tokens (or run `nobill dev` first)")
    if args.service and not args.scope:
        raise ConfigError("--scope", "a service token needs at least one --scope")
    if not 0 < args.ttl <= settings.jwt_max_lifetime_seconds:
        # A longer-lived token would be refused by every server (NOBILL_JWT_MAX_LIFETIME_SECONDS).
        raise ConfigError("--ttl", f"must be between 1 and {settings.jwt_max_lifetime_seconds} seconds")
    token = mint_token(
        secret=secret,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        subject=args.subject,
        email=args.email,
        service=args.service,
        scopes=args.scope or (),
        orgs=args.org or (),
        ttl_seconds=args.ttl,
    )
    print(token)
    return 0


def _dev_secret(settings: Settings) -> str | None:
    path = Path(settings.data_dir) / "dev.json"
    if path.exists():
        return json.loads(path.read_text()).get("jwt_secret")
    return None


def register(commands: argparse._SubParsersAction) -> None:
    """Add `nobill token` to the `nobill` command."""
    token = commands.add_parser(
        "token",
        help="mint a development token",
        description="Mint an HS256 token with NOBILL_JWT_SECRET (or the secret `nobill dev` created).",
    )
    token.add_argument("--subject", "--sub", default="dev-user", help="the `sub` claim (default: dev-user)")
    token.add_argument("--email", help="the `email` claim of a user token")
    token.add_argument("--service", action="store_true", help="mint a service token instead of a user token")
    token.add_argument("--scope", action="append", help="a scope of a service token (repeatable)")
    token.add_argument("--org", action="append", help="an org id a service token may act for, or * (repeatable)")
    token.add_argument("--ttl", type=int, default=24 * 3600, help="lifetime in seconds (default: 86400)")
    token.set_defaults(handler=_token)
