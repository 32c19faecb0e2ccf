"""`nobill dev`: the whole platform in one process on embedded defaults."""

from __future__ import annotations

import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from nobill.auth.permissions import ORG_PERMISSIONS, SERVICE_SCOPES
from nobill.config import Settings
from nobill.shutdown import stop_requested

log = logging.getLogger("nobill.dev")

DEV_STRIPE_KEY = "sk_test_nobill_dev"
DEV_USER = {"subject": "dev-user", "email": "dev@nobill.local"}


def _progress(step: str) -> None:
    print(f"==> {step}", flush=True)


def _ensure_database(url: str, name: str) -> str:
    """Create database `name` on the server at `url` if missing; returns its URL."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            connection.execute(f'CREATE DATABASE "{name}"')
    return url.replace("/postgres?", f"/{name}?", 1) if "/postgres?" in url else url


def _jwt_secret(settings: Settings, data_dir: Path) -> str:
    """The configured secret, or one generated once and kept so tokens survive restarts."""
    if settings.jwt_secret:
        return settings.jwt_secret
    path = data_dir / "jwt_secret"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def prepare(settings: Settings) -> tuple[Settings, list[Any]]:
    """Start whatever is not configured (PostgreSQL, Redis, the Stripe sandbox), apply
    migrations; returns the completed settings and handles to keep alive."""
    from nobill.db.migrate import upgrade
    from nobill.embedded import start_postgres, start_redis

    data_dir = Path(settings.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    keep: list[Any] = []
    changes: dict[str, Any] = {}
    if not settings.database_url:
        _progress(f"starting embedded PostgreSQL in {data_dir / 'postgres'}")
        postgres, url = start_postgres(data_dir)
        keep.append(postgres)
        changes["database_url"] = Settings.from_env({"NOBILL_DATABASE_URL": _ensure_database(url, "nobill")}).database_url
    if not settings.redis_url:
        _progress("starting embedded Redis")
        redis, url = start_redis(data_dir)
        keep.append(redis)
        changes["redis_url"] = url
    if not settings.stripe_api_key:
        from nobill.sandbox.server import start_sandbox

        _progress("starting the Stripe sandbox")
        sandbox = start_sandbox(host="127.0.0.1", port=0, state_file=str(data_dir / "sandbox.json"))
        keep.append(sandbox)
        changes["stripe_api_key"] = DEV_STRIPE_KEY
        changes["stripe_api_base"] = sandbox.url
    changes["jwt_secret"] = _jwt_secret(settings, data_dir)
    settings = settings.replace(**changes)
    _progress("applying database migrations")
    upgrade(settings.require("database_url"), app_role=settings.db_app_role)
    log.info("migrations applied")
    return settings, keep


def dev_tokens(settings: Settings) -> dict[str, str]:
    from nobill.auth.tokens import mint_token

    secret: str = settings.require("jwt_secret")
    issuer, audience = settings.jwt_issuer, settings.jwt_audience
    return {
        "token": mint_token(
            secret=secret, issuer=issuer, audience=audience,
            subject=DEV_USER["subject"], email=DEV_USER["email"], ttl_seconds=7 * 86400,
        ),
        "service_token": mint_token(
            secret=secret, issuer=issuer, audience=audience,
            subject="dev-service",
            service=True,
            scopes=sorted(ORG_PERMISSIONS | SERVICE_SCOPES),
            orgs=["*"],
            ttl_seconds=7 * 86400,
        ),
    }


def sync_catalog(settings: Settings) -> None:
    """`nobill stripe sync` against the dev Stripe (the sandbox unless STRIPE_API_KEY is set)."""
    from nobill.billing.catalog_sync import sync
    from nobill.stripe.errors import StripeFailure
    from nobill.stripe.gateway import StripeGateway

    _progress("syncing the plan catalog to Stripe")
    try:
        report = sync(StripeGateway.from_settings(settings))
    except StripeFailure as error:
        print(f"    catalog sync failed ({error.message}); run `nobill stripe sync` later", flush=True)
        return
    print(f"    {len(report.created)} created, {len(report.updated)} updated, {len(report.unchanged)} unchanged", flush=True)


def run_dev(settings: Settings, *, ready_file: str | None = None) -> None:
    from nobill.api.server import build_server
    from nobill.api.usage_server import start_usage_server
    from nobill.db.database import connect
    from nobill.jobs.runner import start_worker
    from nobill.jobs.scheduler import start_scheduler

    stop = stop_requested()
    settings, keep = prepare(settings)
    database = connect(settings.require("database_url"), app_role=settings.db_app_role, pool_size=settings.db_pool_size)
    sync_catalog(settings)
    _progress("starting the gRPC server, the worker and the scheduler")
    running = build_server(settings, database)
    if settings.grpc_addr.endswith(":0"):  # a free port for the main server: one for usage too
        settings = settings.replace(usage_grpc_addr=settings.usage_grpc_addr.rpartition(":")[0] + ":0")
    usage = start_usage_server(settings, database)
    worker = start_worker(
        settings.require("redis_url"), threads=2, namespace=settings.redis_namespace, settings=settings, database=database
    )
    scheduler = start_scheduler(settings, stop)
    host = settings.grpc_addr.rpartition(":")[0]
    address = f"{host}:{running.port}"
    usage_address = f"{settings.usage_grpc_addr.rpartition(':')[0]}:{usage.port}"
    info = {
        "grpc_addr": address,
        "usage_grpc_addr": usage_address,
        **dev_tokens(settings),
        "user": DEV_USER,
        "database_url": settings.database_url,
        "redis_url": settings.redis_url,
        "stripe_api_base": settings.stripe_api_base,
        "stripe_api_key": settings.stripe_api_key,
        "jwt_secret": settings.jwt_secret,
        "pid": os.getpid(),
    }
    dev_json = Path(settings.data_dir).resolve() / "dev.json"
    dev_json.write_text(json.dumps(info, indent=2))
    dev_json.chmod(0o600)
    print(f"NOBill is running.\n  gRPC:        {address}\n  usage gRPC:  {usage_address}\n  Stripe:      {settings.stripe_api_base or 'api.stripe.com'}")
    print(f"  dev.json:    {dev_json}\n  token (dev-user, dev@nobill.local):\n{info['token']}", flush=True)
    if ready_file:
        Path(ready_file).write_text(str(dev_json))

    stop.wait()
    print("stopping...", flush=True)
    running.stop(grace=5)
    usage.stop(grace=5)
    scheduler.join(timeout=5)
    worker.stop(timeout=10_000)
    database.dispose()
    for handle in reversed(keep):
        close = getattr(handle, "stop", None) or getattr(handle, "shutdown", None)
        if callable(close):
            close()
