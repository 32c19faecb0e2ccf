"""The one start-up path of every `nobill` command (and `nobill dev`).

A command asks for what it needs; `start` builds it in one order, the same for every
command: settings (given; the JWT keys checked for a server) → logging → audit keys → metrics → database → Stripe gateway →
job broker. `Runtime.close()` takes it down in the reverse order.

Audit keys matter most: a command that changes an org writes an audit event in the same
transaction, and that fails (and rolls the change back) in a process whose keyring was
never installed. So the keyring is installed here, before anything that can write."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from nobill.config import Settings
from nobill.errors import ConfigError
from nobill.logs import configure_logging

log = logging.getLogger("nobill.startup")

AuditKeys = Literal["required", "optional", "off"]


# The sandbox is its own distribution (sandbox/pyproject.toml), for development and tests
# only; a production install does not have it.
SANDBOX_MISSING = "the Stripe sandbox is not installed (pip install nobill-sandbox, part of the dev extra)"


def sandbox_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("nobill.sandbox") is not None


def setup_logging(settings: Settings, *, log_file: Path | None = None, console_level: int = logging.NOTSET) -> None:
    """NOBILL_LOG_LEVEL / NOBILL_LOG_FORMAT; with `log_file`, the terminal shows only `console_level` and up."""
    configure_logging(settings.log_level, settings.log_format, log_file=log_file, console_level=console_level)


def install_audit_keys(settings: Settings, *, required: bool) -> bool:
    """Install NOBILL_AUDIT_KEY as this process's keyring; ConfigError when `required` and unset.
    Returns whether a keyring was installed."""
    from nobill.audit import keys

    if not settings.audit_keys:
        if required:
            raise ConfigError(keys.SETTING, "is required by this command (it writes or verifies audit events)")
        return False
    keys.install(keys.from_settings(settings.audit_keys))
    return True


def serve_metrics(settings: Settings) -> Any:
    """Serve /metrics on NOBILL_METRICS_ADDR when it is set; returns the endpoint or None."""
    if not settings.metrics_addr:
        return None
    from nobill.api.server import bind_problem
    from nobill.metrics import serve_metrics as serve

    try:
        return serve(settings.metrics_addr, redis_url=settings.redis_url, redis_namespace=settings.redis_namespace)
    except OSError:
        problem = bind_problem(settings.metrics_addr) or "the address is not available"
        raise ConfigError("NOBILL_METRICS_ADDR", f"cannot listen on {settings.metrics_addr}: {problem}") from None


def connect_database(settings: Settings, *, pool_size: int | None = None) -> Any:
    from nobill.db.database import connect

    return connect(
        settings.require("database_url"), app_role=settings.db_app_role, pool_size=pool_size or settings.db_pool_size
    )


def stripe_gateway(settings: Settings) -> Any:
    from nobill.stripe.gateway import StripeGateway

    settings.require("stripe_api_key")
    return StripeGateway.from_settings(settings)


@dataclass
class Runtime:
    """What a command runs with. Attributes it did not ask for are None."""

    settings: Settings
    audit_keys_installed: bool = False
    metrics: Any = None
    database: Any = None
    gateway: Any = None
    broker: Any = None
    _closed: bool = field(default=False, repr=False)

    def close(self) -> None:
        """Stop what `start` started, last first."""
        if self._closed:
            return
        self._closed = True
        if self.broker is not None:
            self.broker.close()
        if self.database is not None:
            self.database.dispose()
        if self.metrics is not None:
            self.metrics.stop()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def start(
    settings: Settings,
    *,
    logs: bool = True,
    log_file: Path | None = None,
    console_level: int = logging.NOTSET,
    jwt_keys: bool = False,
    audit_keys: AuditKeys = "optional",
    metrics: bool = False,
    database: bool = False,
    pool_size: int | None = None,
    stripe: bool = False,
    broker: bool = False,
) -> Runtime:
    """Build what a command needs, in the one order. `audit_keys="optional"` installs
    NOBILL_AUDIT_KEY when it is set (a worker's actors write audit events when it is)."""
    if logs:
        setup_logging(settings, log_file=log_file, console_level=console_level)
    if jwt_keys:  # a server verifies tokens: refuse to start without a key to do it
        settings.require_jwt_keys()
    runtime = Runtime(settings)
    try:
        if audit_keys != "off":
            runtime.audit_keys_installed = install_audit_keys(settings, required=audit_keys == "required")
        if metrics:
            runtime.metrics = serve_metrics(settings)
        if database:
            runtime.database = connect_database(settings, pool_size=pool_size)
        if stripe:
            runtime.gateway = stripe_gateway(settings)
        if broker:
            from nobill.jobs import runtime as jobs_runtime
            from nobill.jobs.broker import configure_broker

            runtime.broker = configure_broker(
                settings.require("redis_url"), namespace=settings.redis_namespace, poison_after=settings.job_poison_after
            )
            # Actors sent or run from this process use the same settings and database.
            jobs_runtime.configure(settings, database=runtime.database)
    except BaseException:
        runtime.close()
        raise
    return runtime
