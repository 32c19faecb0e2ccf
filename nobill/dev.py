"""`nobill dev`: the whole platform in one process on embedded defaults."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import shlex
from pathlib import Path
from typing import IO, Any

from nobill import startup
from nobill.auth.permissions import ORG_PERMISSIONS, SERVICE_SCOPES
from nobill.config import Settings
from nobill.errors import ConfigError
from nobill.shutdown import stop_requested

log = logging.getLogger("nobill.dev")

DEV_STRIPE_KEY = "sk_test_nobill_dev"
DEV_USER = {"subject": "dev-user", "email": "dev@nobill.local"}


def _progress(step: str) -> None:
    print(f"==> {step}", flush=True)
    log.info(step)


def lock_data_dir(data_dir: Path, *, source: str = "NOBILL_DATA_DIR") -> IO[str]:
    """Hold an exclusive lock on the data dir for this process's lifetime (the kernel drops
    it when the process dies, even by SIGKILL); refuse a dir another `nobill dev` holds."""
    data_dir.mkdir(parents=True, exist_ok=True)
    handle = open(data_dir / "dev.lock", "a+")  # noqa: SIM115 - kept open while running
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise ConfigError(
            source, f"{data_dir} is in use by another `nobill dev` (pid {holder}); stop it or choose another data dir"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def log_to_file(settings: Settings, data_dir: Path) -> Path:
    """Keep the terminal for progress and errors: everything else is logged to a file."""
    import warnings

    path = data_dir / "dev.log"
    startup.setup_logging(settings, log_file=path, console_level=logging.ERROR)
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    return path


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


def _audit_keys(settings: Settings, data_dir: Path) -> tuple[tuple[str, bytes], ...]:
    """The configured audit keys, or one generated once and kept beside the JWT secret."""
    if settings.audit_keys:
        return settings.audit_keys
    path = data_dir / "audit_key"
    if not path.exists():
        path.write_text(f"dev-1:{secrets.token_urlsafe(48)}")
        path.chmod(0o600)
    return Settings.from_env({"NOBILL_AUDIT_KEY": path.read_text().strip()}).audit_keys


def _start_sandbox(data_dir: Path) -> Any:
    """The sandbox on the port it had last time (kept in the data dir), so URLs it handed
    out (Checkout, the portal) keep working across restarts; a free port if that one is taken."""
    from nobill.sandbox.server import start_sandbox

    port_file = data_dir / "sandbox_port"
    try:
        port = int(port_file.read_text().strip()) if port_file.exists() else 0
    except ValueError:
        port = 0
    state_file = str(data_dir / "sandbox.json")
    try:
        sandbox = start_sandbox(host="127.0.0.1", port=port, state_file=state_file)
    except OSError as error:
        if not port:
            raise
        _progress(f"sandbox port {port} is taken ({error.strerror or error}); URLs it handed out before will not work")
        sandbox = start_sandbox(host="127.0.0.1", port=0, state_file=state_file)
    port_file.write_text(f"{sandbox.url.rpartition(':')[2]}\n")
    return sandbox


def prepare(settings: Settings, *, keep: list[Any] | None = None) -> tuple[Settings, list[Any]]:
    """Start whatever is not configured (PostgreSQL, Redis, the Stripe sandbox), apply
    migrations; returns the completed settings and handles to keep alive (also appended to
    `keep` as they start, so a failure half-way can still stop them)."""
    from nobill.db.migrate import upgrade
    from nobill.embedded import start_postgres, start_redis

    data_dir = Path(settings.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    keep = [] if keep is None else keep
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
        if not startup.sandbox_installed():
            raise ConfigError(
                "STRIPE_API_KEY", f"set it to a Stripe test key, or install the sandbox: {startup.SANDBOX_MISSING}"
            )
        _progress("starting the Stripe sandbox")
        sandbox = _start_sandbox(data_dir)
        keep.append(sandbox)
        changes["stripe_api_key"] = DEV_STRIPE_KEY
        changes["stripe_api_base"] = sandbox.url
    changes["jwt_secret"] = _jwt_secret(settings, data_dir)
    changes["audit_keys"] = _audit_keys(settings, data_dir)
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
            subject=DEV_USER["subject"], email=DEV_USER["email"], ttl_seconds=settings.jwt_max_lifetime_seconds,
        ),
        "service_token": mint_token(
            secret=secret, issuer=issuer, audience=audience,
            subject="dev-service",
            service=True,
            scopes=sorted(ORG_PERMISSIONS | SERVICE_SCOPES),
            orgs=["*"],
            ttl_seconds=settings.jwt_max_lifetime_seconds,
        ),
    }


def sync_catalog(gateway: Any) -> None:
    """`nobill stripe sync` against the dev Stripe (the sandbox unless STRIPE_API_KEY is set)."""
    from nobill.billing.catalog_sync import sync
    from nobill.stripe.errors import StripeFailure

    _progress("syncing the plan catalog to Stripe")
    try:
        report = sync(gateway)
    except StripeFailure as error:
        _progress(f"catalog sync failed ({error.message}); run `nobill stripe sync` later")
        return
    _progress(f"catalog: {len(report.created)} created, {len(report.updated)} updated, {len(report.unchanged)} unchanged")


def run_dev(
    settings: Settings, *, ready_file: str | None = None, addr_source: str = "NOBILL_GRPC_ADDR",
    data_dir_source: str = "NOBILL_DATA_DIR",
) -> None:
    stop = stop_requested()
    data_dir = Path(settings.data_dir).resolve()
    lock = lock_data_dir(data_dir, source=data_dir_source)
    _progress(f"details go to {log_to_file(settings, data_dir)}")
    keep: list[Any] = []
    try:
        settings, _ = prepare(settings, keep=keep)
        _serve(settings, stop, ready_file=ready_file, addr_source=addr_source)
    finally:
        # The embedded servers stop last, once everything that uses them has stopped.
        for handle in reversed(keep):
            close = getattr(handle, "stop", None) or getattr(handle, "shutdown", None)
            if callable(close):
                close()
        lock.close()
    print("stopped.", flush=True)


def _start_webhooks(settings: Settings, data_dir: Path, core: dict[str, str], gateway: Any) -> tuple[Settings, Any]:
    """Start the webhook sidecar (forwarding to the core once `core["addr"]` is known). On
    the dev sandbox, also point a webhook endpoint at it and trust that endpoint's secret;
    with a real Stripe key, deliveries reach it through `stripe listen --forward-to`."""
    from nobill.billing import webhook_endpoint
    from nobill.stripe.errors import StripeFailure
    from nobill.webhooks.core_client import CoreClient
    from nobill.webhooks.runner import service_token
    from nobill.webhooks.sidecar import start_sidecar

    _progress("starting the webhook sidecar")
    try:
        sidecar = start_sidecar(settings.webhooks_addr, CoreClient(lambda: core.get("addr"), service_token(settings)))
    except OSError as error:
        raise ConfigError("NOBILL_WEBHOOKS_ADDR", f"cannot listen on {settings.webhooks_addr}: {error.strerror or error}") from None
    if settings.stripe_api_key != DEV_STRIPE_KEY:
        return settings, sidecar
    remembered = data_dir / "webhook_endpoint.json"
    known = None
    if remembered.exists():
        saved = json.loads(remembered.read_text())
        known = webhook_endpoint.WebhookEndpoint(saved["id"], saved["secret"])
    try:
        endpoint = webhook_endpoint.register(gateway=gateway, url=sidecar.url, known=known)
    except StripeFailure as error:
        sidecar.stop(grace=1)
        raise ConfigError("STRIPE_API_KEY", f"cannot register the webhook endpoint on the sandbox: {error.message}") from None
    remembered.write_text(json.dumps({"id": endpoint.id, "secret": endpoint.secret}))
    remembered.chmod(0o600)
    return settings.replace(stripe_webhook_secrets=(*settings.stripe_webhook_secrets, endpoint.secret)), sidecar


def _serve(settings: Settings, stop: Any, *, ready_file: str | None, addr_source: str) -> None:
    """Run the servers, the worker, the scheduler and the sidecar until `stop` is set."""
    # Logging went to dev.log in run_dev; the rest starts the way every command does.
    with startup.start(settings, logs=False, jwt_keys=True, audit_keys="required", metrics=True, database=True, stripe=True) as runtime:
        _serve_with(runtime, stop, ready_file=ready_file, addr_source=addr_source)


def _serve_with(runtime: startup.Runtime, stop: Any, *, ready_file: str | None, addr_source: str) -> None:
    from nobill.api.server import build_server
    from nobill.api.usage_server import start_usage_server
    from nobill.jobs.runner import start_worker
    from nobill.jobs.scheduler import start_scheduler

    settings, database = runtime.settings, runtime.database
    sync_catalog(runtime.gateway)
    core: dict[str, str] = {}
    settings, sidecar = _start_webhooks(settings, Path(settings.data_dir).resolve(), core, runtime.gateway)
    _progress("starting the gRPC server, the worker and the scheduler")
    try:
        running = build_server(settings, database, addr_source=addr_source)
        if settings.grpc_addr.endswith(":0"):  # a free port for the main server: one for usage too
            settings = settings.replace(usage_grpc_addr=settings.usage_grpc_addr.rpartition(":")[0] + ":0")
        usage = start_usage_server(settings, database)
    except BaseException:
        sidecar.stop(grace=1)
        raise
    worker = start_worker(
        settings.require("redis_url"), threads=2, namespace=settings.redis_namespace, settings=settings, database=database
    )
    scheduler = start_scheduler(settings, stop)
    host = settings.grpc_addr.rpartition(":")[0]
    address = f"{host}:{running.port}"
    core["addr"] = address
    usage_address = f"{settings.usage_grpc_addr.rpartition(':')[0]}:{usage.port}"
    info = {
        "grpc_addr": address,
        "usage_grpc_addr": usage_address,
        "webhooks_url": sidecar.url,
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
    write_dev_env(settings, address, Path(settings.data_dir).resolve() / "dev.env")
    print(f"NOBill is running.\n  gRPC:        {address}\n  usage gRPC:  {usage_address}\n  Stripe:      {settings.stripe_api_base or 'api.stripe.com'}")
    print(f"  webhooks:    {sidecar.url}")
    print(f"  dev.json:    {dev_json}\n  token (dev-user, dev@nobill.local):\n{info['token']}", flush=True)
    if ready_file:
        Path(ready_file).write_text(str(dev_json))

    stop.wait()
    print("stopping...", flush=True)
    # Refuse new work first (webhooks, then calls), let calls in flight finish, stop
    # enqueueing, then let the worker finish what it holds. The caller stops the metrics
    # endpoint and the database, and run_dev the embedded servers, after this.
    sidecar.stop(grace=5)
    running.stop(grace=5)
    usage.stop(grace=5)
    scheduler.join(timeout=5)
    worker.stop(timeout=10_000)
    worker.broker.close()


def write_dev_env(settings: Settings, grpc_addr: str, path: Path) -> None:
    """The settings another `nobill` command needs to act on this platform, as a file a
    shell can source (`. .nobill/dev.env`): the same database, queues, Stripe and keys."""
    values = {
        "NOBILL_DATABASE_URL": settings.database_url,
        "NOBILL_REDIS_URL": settings.redis_url,
        "NOBILL_REDIS_NAMESPACE": settings.redis_namespace,
        "STRIPE_API_KEY": settings.stripe_api_key,
        "NOBILL_STRIPE_API_BASE": settings.stripe_api_base,
        "NOBILL_STRIPE_WEBHOOK_SECRETS": ",".join(settings.stripe_webhook_secrets),
        "NOBILL_JWT_SECRET": settings.jwt_secret,
        "NOBILL_AUDIT_KEY": ",".join(f"{key_id}:{secret.decode()}" for key_id, secret in settings.audit_keys),
        "NOBILL_CORE_ADDR": grpc_addr,
    }
    lines = ["# Written by `nobill dev`: the settings other nobill commands need to act on it.", "# . " + str(path)]
    lines += [f"export {name}={shlex.quote(value or '')}" for name, value in values.items()]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
