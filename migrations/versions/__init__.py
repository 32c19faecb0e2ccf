"""Alembic revisions (loaded by Alembic from this directory, not imported)."""
