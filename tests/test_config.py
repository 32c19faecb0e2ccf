"""Settings: read in one place, validated, documented in README."""

from __future__ import annotations

from pathlib import Path

import pytest

from nobill.config import SETTINGS, Settings
from nobill.errors import ConfigError

README = Path(__file__).resolve().parent.parent / "README.md"


def test_defaults_need_no_environment() -> None:
    settings = Settings.from_env({})
    assert settings.grpc_addr == "127.0.0.1:50051" and settings.database_url is None


def test_postgres_urls_get_the_psycopg_driver() -> None:
    assert Settings.from_env({"NOBILL_DATABASE_URL": "postgres://u@h/db"}).database_url == "postgresql+psycopg://u@h/db"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("NOBILL_DATABASE_URL", "mysql://x"),
        ("NOBILL_REDIS_URL", "http://x"),
        ("NOBILL_GRPC_ADDR", "nope"),
        ("NOBILL_GRPC_ADDR", "host:99999"),
        ("NOBILL_GRPC_THREADS", "0"),
        ("NOBILL_DB_POOL_SIZE", "many"),
        ("NOBILL_JWT_LEEWAY_SECONDS", "-1"),
        ("STRIPE_API_KEY", "pk_test_123"),
        ("NOBILL_STRIPE_API_BASE", "ftp://x"),
        ("NOBILL_STRIPE_WEBHOOK_SECRETS", "whsec_a,notasecret"),
        ("NOBILL_LOG_LEVEL", "LOUD"),
        ("NOBILL_DB_APP_ROLE", "Robert'); DROP"),
    ],
)
def test_a_bad_setting_names_itself(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as error:
        Settings.from_env({name: value})
    assert error.value.setting == name
    assert name in str(error.value)


def test_a_missing_required_setting_names_itself() -> None:
    with pytest.raises(ConfigError, match="NOBILL_DATABASE_URL"):
        Settings.from_env({}).require("database_url")
    with pytest.raises(ConfigError, match="NOBILL_JWT_SECRET"):
        Settings.from_env({}).require_jwt_keys()


def test_webhook_secrets_are_a_list() -> None:
    settings = Settings.from_env({"NOBILL_STRIPE_WEBHOOK_SECRETS": "whsec_a, whsec_b"})
    assert settings.stripe_webhook_secrets == ("whsec_a", "whsec_b")


def test_every_setting_is_in_the_readme_table() -> None:
    text = README.read_text()
    missing = [s.env for s in SETTINGS if f"`{s.env}`" not in text]
    assert missing == []


def test_every_settings_field_is_declared_once() -> None:
    fields = [s.field for s in SETTINGS]
    assert len(fields) == len(set(fields))
    assert set(fields) == set(Settings.__dataclass_fields__)
