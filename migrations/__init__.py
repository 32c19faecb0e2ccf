"""Alembic migrations, shipped inside the package as nobill.migrations (see pyproject.toml)."""
