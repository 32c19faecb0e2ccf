"""The one place that reads the environment.

Every setting is declared once in SETTINGS (name, default, meaning); README's
configuration table lists the same names and a test keeps the two in step.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from nobill.errors import ConfigError


@dataclass(frozen=True)
class Setting:
    env: str
    field: str
    default: str | None
    meaning: str
    parse: Callable[[str, str], Any]


def _text(name: str, value: str) -> str:
    return value


def _optional_text(name: str, value: str) -> str | None:
    return value or None


def _positive_int(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(name, f"expected a whole number, got {value!r}") from None
    if number <= 0:
        raise ConfigError(name, f"must be positive, got {number}")
    return number


def _non_negative_int(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(name, f"expected a whole number, got {value!r}") from None
    if number < 0:
        raise ConfigError(name, f"must not be negative, got {number}")
    return number


def _database_url(name: str, value: str) -> str | None:
    if not value:
        return None
    if not re.match(r"^postgres(ql)?(\+psycopg)?://", value):
        raise ConfigError(name, "expected a postgresql:// URL")
    # SQLAlchemy needs the driver named; psycopg 3 is the one we ship.
    return re.sub(r"^postgres(ql)?(\+psycopg)?://", "postgresql+psycopg://", value)


def _redis_url(name: str, value: str) -> str | None:
    if not value:
        return None
    if not re.match(r"^(redis|rediss|unix)://", value):
        raise ConfigError(name, "expected a redis://, rediss:// or unix:// URL")
    return value


def _address(name: str, value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(name, f"expected host:port, got {value!r}")
    return value


def _optional_address(name: str, value: str) -> str | None:
    return _address(name, value) if value else None


def parse_address(name: str, value: str) -> str:
    """host:port as NOBILL_GRPC_ADDR takes it, for a command-line flag; ConfigError names `name`."""
    return _address(name, value.strip())


def _http_url(name: str, value: str) -> str | None:
    if not value:
        return None
    if not re.match(r"^https?://[^/\s]+", value):
        raise ConfigError(name, "expected an http(s):// URL")
    return value.rstrip("/")


def _stripe_key(name: str, value: str) -> str | None:
    if not value:
        return None
    if not re.match(r"^(sk|rk)_(test|live)_[A-Za-z0-9_]+$", value):
        raise ConfigError(name, "expected a Stripe secret key (sk_test_..., sk_live_... or rk_...)")
    return value


def _webhook_secrets(name: str, value: str) -> tuple[str, ...]:
    secrets = tuple(part.strip() for part in value.split(",") if part.strip())
    for secret in secrets:
        if not secret.startswith("whsec_"):
            raise ConfigError(name, "each secret must start with whsec_ (comma-separated for rotation)")
    return secrets


def _text_list(name: str, value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


_AUDIT_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
MINIMUM_AUDIT_KEY_BYTES = 32


def _audit_keys(name: str, value: str) -> tuple[tuple[str, bytes], ...]:
    """`id:secret[,id:secret...]`: every key verifies, the last one listed signs."""
    keys: list[tuple[str, bytes]] = []
    for part in (entry.strip() for entry in value.split(",")):
        if not part:
            continue
        key_id, sep, secret = part.partition(":")
        if not sep or not _AUDIT_KEY_ID.fullmatch(key_id):
            raise ConfigError(name, "expected comma-separated id:secret pairs, ids of 1-32 letters, digits, _ or -")
        if len(secret.encode()) < MINIMUM_AUDIT_KEY_BYTES:
            raise ConfigError(name, f"key {key_id!r} must be at least {MINIMUM_AUDIT_KEY_BYTES} bytes")
        if any(existing == key_id for existing, _ in keys):
            raise ConfigError(name, f"key id {key_id!r} appears more than once")
        keys.append((key_id, secret.encode()))
    return tuple(keys)


def _bool(name: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("", "0", "false", "no", "off"):
        return False
    raise ConfigError(name, f"expected true or false, got {value!r}")


def _log_level(name: str, value: str) -> str:
    level = value.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(name, "expected DEBUG, INFO, WARNING or ERROR")
    return level


def _log_format(name: str, value: str) -> str:
    if value not in ("json", "text"):
        raise ConfigError(name, "expected json or text")
    return value


SETTINGS: tuple[Setting, ...] = (
    Setting("NOBILL_DATABASE_URL", "database_url", "", "PostgreSQL URL. Unset: `nobill dev` starts an embedded PostgreSQL; other commands refuse to start.", _database_url),
    Setting("NOBILL_DB_APP_ROLE", "db_app_role", "nobill_app", "Role every application connection switches to; it owns nothing and cannot bypass row-level security.", _text),
    Setting("NOBILL_DB_POOL_SIZE", "db_pool_size", "20", "Database connections per process.", _positive_int),
    Setting("NOBILL_REDIS_URL", "redis_url", "", "Redis URL for the job queues. Unset: `nobill dev` starts an embedded Redis.", _redis_url),
    Setting("NOBILL_REDIS_NAMESPACE", "redis_namespace", "nobill", "Prefix of every job-queue key in Redis; processes that share a namespace share queues.", _text),
    Setting("NOBILL_JOB_POISON_AFTER", "job_poison_after", "5", "A job (actor and arguments) that fails this many times the same way (exception class and message; not outages) is parked instead of retried: an ERROR log line, the metrics `nobill_jobs_parked_total` and `nobill_jobs_waiting_replay`, and `nobill jobs replay` to run it again.", _positive_int),
    Setting("NOBILL_GRPC_ADDR", "grpc_addr", "127.0.0.1:50051", "host:port the gRPC server listens on (port 0 picks a free one).", _address),
    Setting("NOBILL_GRPC_THREADS", "grpc_threads", "32", "Worker threads per server process.", _positive_int),
    Setting("NOBILL_GRPC_PROCESSES", "grpc_processes", "1", "Server processes sharing the port (SO_REUSEPORT).", _positive_int),
    Setting("NOBILL_METRICS_ADDR", "metrics_addr", "", "host:port of the Prometheus /metrics endpoint of `serve` and `worker` (and `dev`). Unset: no endpoint.", _optional_address),
    Setting("NOBILL_USAGE_GRPC_ADDR", "usage_grpc_addr", "127.0.0.1:50052", "host:port of the usage server (UsageService on grpc.aio, in the same process as the main server).", _address),
    Setting("NOBILL_USAGE_DB_THREADS", "usage_db_threads", "4", "Threads (and database connections) the usage server writes batches with.", _positive_int),
    Setting("NOBILL_USAGE_MAX_STREAMS", "usage_max_streams", "512", "Concurrent StreamUsage streams per process; beyond: RESOURCE_EXHAUSTED.", _positive_int),
    Setting("NOBILL_USAGE_MAX_STREAMS_PER_CALLER", "usage_max_streams_per_caller", "64", "Concurrent StreamUsage streams per caller (user or service) per process.", _positive_int),
    Setting("NOBILL_USAGE_STREAM_IDLE_SECONDS", "usage_stream_idle_seconds", "120", "A stream that sends no batch for this long is closed (status OK).", _positive_int),
    Setting("NOBILL_JWT_SECRET", "jwt_secret", "", "HS256 secret (32+ bytes) for verifying and minting tokens.", _optional_text),
    Setting("NOBILL_JWT_JWKS_FILE", "jwt_jwks_file", "", "Path of a JWKS file with the RS256/ES256 public keys of the identity provider.", _optional_text),
    Setting("NOBILL_JWT_ISSUER", "jwt_issuer", "nobill", "Required `iss` claim.", _text),
    Setting("NOBILL_JWT_AUDIENCE", "jwt_audience", "nobill", "Required `aud` claim.", _text),
    Setting("NOBILL_JWT_JWKS_URL", "jwt_jwks_url", "", "URL of the identity provider's JWKS (RS256/ES256 public keys); fetched, cached for 5 minutes and fetched again when a token names an unknown `kid`. Used when no JWKS file is set.", _http_url),
    Setting("NOBILL_JWT_LEEWAY_SECONDS", "jwt_leeway_seconds", "30", "Clock skew allowed on `exp` and `nbf`.", _non_negative_int),
    Setting("NOBILL_JWT_MAX_LIFETIME_SECONDS", "jwt_max_lifetime_seconds", "86400", "Longest token lifetime accepted, from `iat` (or from now when there is none) to `exp`.", _positive_int),
    Setting("NOBILL_JWT_TRUSTED_EMAIL_ISSUERS", "jwt_trusted_email_issuers", "", "Comma-separated issuers whose `email` claims count as verified without `email_verified: true` (an invitation is claimed only with a verified email).", _text_list),
    Setting("NOBILL_AUDIT_KEY", "audit_keys", "", "Audit-chain keys, `id:secret` (32+ bytes) comma-separated: every key verifies, the last one signs new events (rotation). Required by `serve`; `nobill dev` generates one.", _audit_keys),
    Setting("NOBILL_RATE_LIMIT_CALLS_PER_SECOND", "rate_limit_calls_per_second", "200", "Calls per second one principal (user or service) may make, across all server processes (Redis); 0 turns the limit off.", _non_negative_int),
    Setting("NOBILL_RATE_LIMIT_CONCURRENT_CALLS", "rate_limit_concurrent_calls", "16", "Calls one principal may have in flight in one server process; 0 turns the limit off.", _non_negative_int),
    Setting("NOBILL_RATE_LIMIT_ORGS_PER_DAY", "rate_limit_orgs_per_day", "10", "Organizations one user may create per 24 hours (Redis); 0 turns the limit off.", _non_negative_int),
    Setting("STRIPE_API_KEY", "stripe_api_key", "", "Stripe secret key. Unset: `nobill dev` starts the Stripe sandbox and uses a test key.", _stripe_key),
    Setting("NOBILL_STRIPE_API_BASE", "stripe_api_base", "", "Stripe API base URL; set it to the sandbox's URL. Unset: Stripe's own.", _http_url),
    Setting("NOBILL_STRIPE_WEBHOOK_SECRETS", "stripe_webhook_secrets", "", "Comma-separated `whsec_` signing secrets; any one may match (rotation).", _webhook_secrets),
    Setting("NOBILL_STRIPE_TEST_CLOCKS", "stripe_test_clocks", "false", "Test mode only: give each new org's Stripe customer its own test clock (tests, demos).", _bool),
    Setting("NOBILL_STRIPE_BREAKER_FAILURES", "stripe_breaker_failures", "5", "Transient Stripe failures in a row that open the circuit breaker (per process).", _positive_int),
    Setting("NOBILL_STRIPE_BREAKER_COOLDOWN_SECONDS", "stripe_breaker_cooldown_seconds", "30", "Seconds the open breaker refuses Stripe calls before one trial call.", _positive_int),
    Setting("NOBILL_STRIPE_EVENT_ATTEMPTS", "stripe_event_attempts", "8", "Attempts to apply a webhook event for a Stripe customer no org owns (yet) before it is parked.", _positive_int),
    Setting("NOBILL_STRIPE_UNROUTED_RETENTION_DAYS", "stripe_unrouted_retention_days", "7", "Days a handled webhook event whose Stripe customer no org owns waits (without its body) to be routed; the inbox sweep then deletes it.", _positive_int),
    Setting("NOBILL_STRIPE_EVENT_APPLY_DELAY_MS", "stripe_event_apply_delay_ms", "1000", "Milliseconds a stored batch of webhook events waits before the worker applies it: a burst of one org's events within it costs one Stripe read. Most of the usual apply lag.", _non_negative_int),
    Setting("NOBILL_PAST_DUE_GRACE_DAYS", "past_due_grace_days", "7", "Days a past_due subscription keeps access (GetEntitlements).", _non_negative_int),
    Setting("NOBILL_SEAT_SYNC_DELAY_SECONDS", "seat_sync_delay_seconds", "10", "Membership changes within this window coalesce into one Stripe seat update.", _non_negative_int),
    Setting("NOBILL_WEBHOOKS_ADDR", "webhooks_addr", "127.0.0.1:8088", "host:port the Stripe webhook sidecar listens on (`nobill webhooks`).", _address),
    Setting("NOBILL_CORE_ADDR", "core_addr", "", "gRPC address the sidecar forwards webhooks to. Unset: NOBILL_GRPC_ADDR.", _optional_text),
    Setting("NOBILL_WEBHOOKS_TOKEN", "webhooks_token", "", "The sidecar's service token (scope webhooks:ingest). Unset: minted from NOBILL_JWT_SECRET, renewed hourly.", _optional_text),
    Setting("NOBILL_DATA_DIR", "data_dir", ".nobill", "Where `nobill dev` keeps embedded PostgreSQL, Redis, sandbox state and dev.json.", _text),
    Setting("NOBILL_LOG_LEVEL", "log_level", "INFO", "DEBUG, INFO, WARNING or ERROR.", _log_level),
    Setting("NOBILL_LOG_FORMAT", "log_format", "json", "json (one object per line) or text.", _log_format),
)


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    db_app_role: str = "nobill_app"
    db_pool_size: int = 20
    redis_url: str | None = None
    redis_namespace: str = "nobill"
    job_poison_after: int = 5
    grpc_addr: str = "127.0.0.1:50051"
    grpc_threads: int = 32
    grpc_processes: int = 1
    metrics_addr: str | None = None
    usage_grpc_addr: str = "127.0.0.1:50052"
    usage_db_threads: int = 4
    usage_max_streams: int = 512
    usage_max_streams_per_caller: int = 64
    usage_stream_idle_seconds: int = 120
    jwt_secret: str | None = None
    jwt_jwks_file: str | None = None
    jwt_issuer: str = "nobill"
    jwt_audience: str = "nobill"
    jwt_jwks_url: str | None = None
    jwt_leeway_seconds: int = 30
    jwt_max_lifetime_seconds: int = 86400
    jwt_trusted_email_issuers: tuple[str, ...] = ()
    audit_keys: tuple[tuple[str, bytes], ...] = ()
    rate_limit_calls_per_second: int = 200
    rate_limit_concurrent_calls: int = 16
    rate_limit_orgs_per_day: int = 10
    stripe_api_key: str | None = None
    stripe_api_base: str | None = None
    stripe_webhook_secrets: tuple[str, ...] = ()
    stripe_test_clocks: bool = False
    stripe_breaker_failures: int = 5
    stripe_breaker_cooldown_seconds: int = 30
    stripe_event_attempts: int = 8
    stripe_unrouted_retention_days: int = 7
    stripe_event_apply_delay_ms: int = 1000
    past_due_grace_days: int = 7
    seat_sync_delay_seconds: int = 10
    webhooks_addr: str = "127.0.0.1:8088"
    core_addr: str | None = None
    webhooks_token: str | None = None
    data_dir: str = ".nobill"
    log_level: str = "INFO"
    log_format: str = "json"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every NOBILL_ setting; a bad value raises ConfigError naming it."""
        environ = os.environ if environ is None else environ
        values = {}
        for setting in SETTINGS:
            raw = environ.get(setting.env, setting.default or "").strip()
            values[setting.field] = setting.parse(setting.env, raw)
        settings = cls(**values)
        if settings.stripe_test_clocks and settings.stripe_api_key and "_live_" in settings.stripe_api_key:
            raise ConfigError("NOBILL_STRIPE_TEST_CLOCKS", "test clocks exist only in test mode; unset it with a live key")
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", settings.db_app_role):
            raise ConfigError("NOBILL_DB_APP_ROLE", "expected a lower-case PostgreSQL role name")
        return settings

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def require(self, field: str) -> Any:
        """The value of a setting this command cannot run without."""
        value = getattr(self, field)
        if value in (None, "", ()):
            env = next(s.env for s in SETTINGS if s.field == field)
            raise ConfigError(env, "is required by this command")
        return value

    def require_jwt_keys(self) -> None:
        if not self.jwt_secret and not self.jwt_jwks_file and not self.jwt_jwks_url:
            raise ConfigError("NOBILL_JWT_SECRET", "set NOBILL_JWT_SECRET, NOBILL_JWT_JWKS_FILE or NOBILL_JWT_JWKS_URL")


def log_level_number(settings: Settings) -> int:
    return getattr(logging, settings.log_level)
